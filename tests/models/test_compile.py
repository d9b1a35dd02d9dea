"""``compile_backbone``: torch.compile of the backbone gives the eager model's outputs and state-dict keys."""

import pytest
import torch

from video_cnn_rnn.models.classifier import VideoClassifier


@pytest.mark.slow
def test_compiled_backbone_matches_eager() -> None:
    torch.manual_seed(0)
    eager = VideoClassifier(backbone="test_efficientnet", num_classes=3, num_frames=4, img_size=32).eval()
    compiled = VideoClassifier(
        backbone="test_efficientnet", num_classes=3, num_frames=4, img_size=32, compile_backbone=True
    ).eval()
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints stay interchangeable
    compiled.load_state_dict(eager.state_dict())
    frames = torch.randint(0, 256, (2, 4, 3, 32, 32), dtype=torch.uint8)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    with torch.no_grad():
        torch.testing.assert_close(compiled(frames, mask), eager(frames, mask), atol=1e-5, rtol=1e-4)
