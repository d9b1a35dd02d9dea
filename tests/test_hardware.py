"""The precision default follows the hardware; an explicit --trainer.precision always wins."""

from pathlib import Path

import pytest
import torch

from video_cnn_rnn import hardware
from video_cnn_rnn.cli import run_cli
from video_cnn_rnn.hardware import default_precision


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx512f", "amx_bf16", "amx_tile"}, "bf16-mixed"),  # Sapphire Rapids and later
        ({"avx512f", "avx512_bf16"}, "bf16-mixed"),  # Cooper Lake, Zen 4
        ({"avx512f", "avx2"}, "32-true"),  # AVX-512 without bf16: emulated, slower
        (set(), "32-true"),  # no /proc/cpuinfo (macOS, Windows)
    ],
)
def test_cpu_precision_follows_the_bf16_flags(flags: set[str], expected: str) -> None:
    precision, reason = default_precision("cpu", flags)
    assert precision == expected
    assert ("natively" in reason) == (expected == "bf16-mixed")


def test_gpu_precision_follows_the_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert default_precision("auto", set())[0] == "16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert default_precision("gpu", set())[0] == "bf16-mixed"
    assert default_precision("cpu", set())[0] == "32-true"  # accelerator cpu on a GPU machine: the CPU's rule


def _args(synthetic_root: Path, tmp_path: Path) -> list[str]:
    return [
        "--trainer.accelerator", "cpu",
        "--trainer.logger", "false",
        "--trainer.default_root_dir", str(tmp_path),
        "--model.backbone", "test_efficientnet",
        "--data.train", str(synthetic_root / "train.csv"),
        "--data.num_workers", "0",
    ]  # fmt: skip


@pytest.mark.parametrize("flags", [{"avx512_bf16"}, set()])
def test_cli_uses_the_hardware_default_and_says_why(synthetic_root, tmp_path, monkeypatch, caplog, flags) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    with caplog.at_level("INFO"):
        cli = run_cli(_args(synthetic_root, tmp_path), run=False)
    expected = "bf16-mixed" if flags else "32-true"
    assert cli.trainer.precision == expected
    said = [record.getMessage() for record in caplog.records if record.getMessage().startswith("precision ")]
    assert len(said) == 1 and expected in said[0] and "--trainer.precision" in said[0]


def test_explicit_precision_wins(synthetic_root, tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"amx_bf16"})
    with caplog.at_level("INFO"):
        cli = run_cli([*_args(synthetic_root, tmp_path), "--trainer.precision", "32-true"], run=False)
    assert cli.trainer.precision == "32-true"
    assert not [record for record in caplog.records if record.getMessage().startswith("precision ")]


def test_cuda_gets_tf32_matmuls_only_on_ampere_and_later_and_only_when_unset(monkeypatch) -> None:
    chosen: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch, "set_float32_matmul_precision", chosen.append)
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "highest")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (7, 5))  # T4: no TF32
    assert hardware.configure_cuda() == [] and chosen == []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (8, 0))  # A100
    assert hardware.configure_cuda() and chosen == ["high"]
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "medium")  # the user chose already
    assert hardware.configure_cuda() == [] and chosen == ["high"]
