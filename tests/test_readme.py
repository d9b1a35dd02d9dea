"""The README's "From Python" example runs as written: the ``python`` block under ``## From Python`` is read from
README.md and executed, so the page and this test cannot drift apart.

Two things are shrunk, not changed: the synthetic dataset it generates (2 training and 1 test video per class of at
most 12 frames at 48x40 px, not 24 and 8 of up to 32 at 96x72) and the ``Trainer``'s run (one epoch of two batches,
on the CPU). Slow (about 20 s of CPU): efficientnet_lite0 runs on real frames. The rest runs as printed: the offline
efficientnet_lite0 weights that ``.ci/install`` puts in ``weights/``, the data module's frame settings taken by a
model given none, Lightning's default logger (which compares the model's and the data module's hyperparameters),
the checkpoint, ``predict_video`` and ``load_clip``.
"""

import functools
import re
from pathlib import Path
from typing import Any

import lightning
import pytest
import torch

from video_cnn_rnn.data import synthetic
from video_cnn_rnn.models.classifier import VideoClassifier

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights" / "efficientnet_lite0.pth"
SHRUNK_TRAINER = dict(
    max_epochs=1,
    limit_train_batches=2,
    limit_val_batches=1,
    limit_test_batches=1,
    accelerator="cpu",
    devices=1,
    enable_progress_bar=False,
    enable_model_summary=False,
)


def python_block(markdown: str, heading: str = "## From Python") -> str:
    """The first ``python`` code block after ``heading``."""
    section = markdown[markdown.index(heading) :]
    match = re.search(r"```python\n(.*?)\n```", section, flags=re.DOTALL)
    assert match, f"no python block under {heading!r}"
    return match.group(1)


def test_the_example_is_found() -> None:
    block = python_block((ROOT / "README.md").read_text())
    assert "lightning.Trainer(" in block and "generate_synthetic_dataset(" in block  # what the test shrinks
    assert 'pretrained="weights/efficientnet_lite0.pth"' in block
    constructor = block[block.index("VideoClassifier(") : block.index("trainer =")]
    assert "num_frames" not in constructor.replace("(num_frames", "")  # the settings are not repeated


@pytest.mark.slow
def test_readme_python_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not WEIGHTS.is_file():
        pytest.skip(f"{WEIGHTS} not found: .ci/install copies it from the efficientnet_lite0 package")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / WEIGHTS.name).symlink_to(WEIGHTS)
    monkeypatch.chdir(tmp_path)
    small = functools.partial(
        synthetic.generate_synthetic_dataset, train_per_class=2, test_per_class=1, max_frames=12, width=48, height=40
    )
    monkeypatch.setattr(synthetic, "generate_synthetic_dataset", small)
    real_trainer = lightning.Trainer

    def shrunk_trainer(**kwargs: Any) -> lightning.Trainer:
        return real_trainer(**{**kwargs, **SHRUNK_TRAINER})

    monkeypatch.setattr(lightning, "Trainer", shrunk_trainer)

    namespace: dict[str, Any] = {}
    exec(compile(python_block((ROOT / "README.md").read_text()), "README.md", "exec"), namespace)

    model, data = namespace["model"], namespace["data"]
    assert isinstance(model, VideoClassifier)  # loaded back from the checkpoint the run wrote
    settings = {name: model.hparams[name] for name in ("num_frames", "img_size", "sampling")}
    assert (
        settings
        == {"num_frames": 8, "img_size": 112, "sampling": "segment"}
        == {name: getattr(data, name) for name in settings}
    )
    assert namespace["logits"].shape == (1, len(data.class_names))
    assert model.network.head.pos_embedding.shape[1] == 8  # the transformer sized for the data module's clips
    checkpoint = torch.load(namespace["trainer"].checkpoint_callback.best_model_path, weights_only=True)
    assert checkpoint["hyper_parameters"]["crop"] == "centre"  # recorded, though the model was given none
