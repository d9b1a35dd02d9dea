"""Checkpoints saved before the restructuring (tests/fixtures, made by the code of commit 6b050e4) still load,
with the same logits, through load_from_checkpoint and through the command line."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from video_cnn_rnn.cli import run_cli
from video_cnn_rnn.models.classifier import VideoClassifier, upgrade_hparams

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _fixed_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs the fixtures' logits were recorded on: two clips of 3 frames, the second padded."""
    frames = torch.randint(0, 256, (2, 3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return frames, torch.tensor([[True, True, True], [True, True, False]])


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_old_checkpoint_loads_with_the_same_logits(name: str) -> None:
    expected = json.loads((FIXTURES / f"legacy_{name}.json").read_text())
    model = VideoClassifier.load_from_checkpoint(FIXTURES / f"legacy_{name}.ckpt").eval()
    with torch.no_grad():
        logits = model(*_fixed_batch())
    torch.testing.assert_close(logits, torch.tensor(expected["logits"]), atol=1e-5, rtol=1e-5)
    assert model.class_names == expected["class_names"]
    assert model.hparams.head == name  # "gru" + rnn_cell "lstm" became head "lstm"
    assert "rnn_cell" not in model.hparams and "test_clips" not in model.hparams
    assert model.hparams.crop == "centre"  # trained before crop existed: on centre crops


def test_old_lstm_checkpoint_builds_an_lstm() -> None:
    model = VideoClassifier.load_from_checkpoint(FIXTURES / "legacy_lstm.ckpt")
    assert isinstance(model.network.head.layers[0], nn.LSTM)


def test_upgrade_renames_and_drops_what_the_old_head_ignored() -> None:
    old = {"head": "gru", "rnn_cell": "lstm", "test_clips": 2, "test_flip": True, "num_heads": 1, "d_model": None}
    new = upgrade_hparams(old)
    assert new["head"] == "lstm" and new["eval_clips"] == 2 and new["eval_flip"] is True
    assert new["num_heads"] is None and "rnn_cell" not in new and "test_clips" not in new
    assert upgrade_hparams(new) == new  # today's hparams pass unchanged


def test_old_checkpoint_is_evaluated_through_the_cli_with_its_own_settings(
    synthetic_root: Path, tmp_path: Path
) -> None:
    checkpoint = FIXTURES / "legacy_transformer.ckpt"
    args = [
        "--trainer.accelerator", "cpu",
        "--trainer.logger", "false",
        "--trainer.default_root_dir", str(tmp_path),
        "--trainer.enable_progress_bar", "false",
        "--data.test", str(synthetic_root / "test.csv"),
        "--data.num_workers", "0",
        "--reports.output_dir", str(tmp_path),
        "--ckpt_path", str(checkpoint),
        "--data.crop", "pad",  # overruled: the checkpoint was trained on centre crops
    ]  # fmt: skip
    cli = run_cli(["test", *args])
    # The checkpoint's frame and evaluation settings went to the data module, renamed (test_clips -> eval_clips).
    data = cli.datamodule.hparams
    assert (data.num_frames, data.img_size, data.eval_clips, data.eval_flip) == (3, 32, 2, True)
    assert data.crop == "centre" and cli.datamodule.datasets["test"].crop == "centre"
    assert (
        cli.datamodule.class_names
        == cli.model.class_names
        == json.loads((FIXTURES / "legacy_transformer.json").read_text())["class_names"]
    )
    metrics = json.loads((tmp_path / "test_metrics.json").read_text())
    assert 0.0 <= metrics["test_acc"] <= 1.0
