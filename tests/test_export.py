"""Export: every head in every format gives the eager model's logits on padded batches; the CLI and its sidecar."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import timm
import torch
from torch import nn

from video_cnn_rnn import export
from video_cnn_rnn.cli import main
from video_cnn_rnn.export import FORMATS, ExportError, export_model
from video_cnn_rnn.models.classifier import VideoClassifier

STEPS, IMG = 4, 32
LENGTHS = [4, 2, 1]  # a full clip, a half-padded one, a single frame
CLASSES = ["jump", "run", "wave"]
TOLERANCE = 1e-4  # max abs logit difference, fp32
# Loading a TorchScript file warns that torch.jit is deprecated (README: prefer exported_program).
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.load` is deprecated:FutureWarning")
HEADS: dict[str, dict[str, Any]] = {
    "gru": {"head": "gru"},
    "lstm": {"head": "lstm"},
    "bilstm_stacked": {"head": "lstm", "bidirectional": True, "rnn_hidden_sizes": [6, 4], "rnn_dropout": 0.3},
    "transformer": {"head": "transformer", "d_model": 16, "num_heads": 2},
    "mean": {"head": "mean"},
    "max": {"head": "max"},
}


def make_model(**kwargs: Any) -> VideoClassifier:
    torch.manual_seed(0)
    settings = {"backbone": "test_efficientnet", "class_names": CLASSES, "num_frames": STEPS, "img_size": IMG}
    return VideoClassifier(**{**settings, **kwargs}).eval()


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 frames [3, T, 3, S, S] (padding holds noise too) and the mask of LENGTHS."""
    generator = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (len(LENGTHS), STEPS, 3, IMG, IMG), generator=generator).to(torch.uint8)
    mask = torch.arange(STEPS).unsqueeze(0) < torch.tensor(LENGTHS).unsqueeze(1)
    return frames, mask


def run_exported(path: Path, fmt: str, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits of an exported file, loaded as a user would: onnxruntime, torch.jit.load or torch.export.load."""
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime", reason="the ONNX runtime is in the 'export' extra")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(["logits"], {"frames": frames.numpy(), "mask": mask.numpy()})[0])
    module = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()
    with torch.no_grad():
        return module(frames, mask)


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("head", list(HEADS))
def test_exported_file_gives_the_eager_logits(head: str, fmt: str, tmp_path: Path) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnx", reason="ONNX export needs the 'export' extra")
    model = make_model(**HEADS[head])
    frames, mask = padded_batch()
    with torch.no_grad():
        eager = model(frames, mask)  # packed recurrent path, backbone on the real frames only
    path = tmp_path / f"model{FORMATS[fmt]}"
    export_model(model, path, fmt)
    # Batch 3 and batch 1, where the export traced batch 2: the batch size is dynamic.
    batched = run_exported(path, fmt, frames, mask)
    alone = run_exported(path, fmt, frames[2:], mask[2:])
    assert batched.shape == (3, len(CLASSES))
    assert (batched - eager).abs().max() <= TOLERANCE
    assert (alone - eager[2:]).abs().max() <= TOLERANCE


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_spatial_attention_exports_with_the_eager_logits(fmt: str, tmp_path: Path) -> None:
    """spatial_pool="attention" on a 2 x 2 feature map (64 px): the export pools every frame, padding included."""
    if fmt == "onnx":
        pytest.importorskip("onnx", reason="ONNX export needs the 'export' extra")
    size = 64
    model = make_model(head="gru", spatial_pool="attention", spatial_maps=2, spatial_dim=8, img_size=size)
    with torch.no_grad():
        for parameter in model.network.spatial.parameters():  # off the uniform start, so position matters
            parameter.normal_(0, 0.5)
    frames = torch.nn.functional.interpolate(padded_batch()[0].flatten(0, 1).float(), size=size).round()
    frames, mask = frames.to(torch.uint8).unflatten(0, (len(LENGTHS), STEPS)), padded_batch()[1]
    with torch.no_grad():
        eager = model(frames, mask)
    path = tmp_path / f"model{FORMATS[fmt]}"
    sidecar = json.loads(export_model(model, path, fmt).read_text())
    assert sidecar["spatial_pool"] == "attention" and sidecar["inputs"]["frames"]["shape"][-1] == size
    assert (run_exported(path, fmt, frames, mask) - eager).abs().max() <= TOLERANCE
    assert (run_exported(path, fmt, frames[2:], mask[2:]) - eager[2:]).abs().max() <= TOLERANCE


def test_onnx_file_is_a_valid_model(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx", reason="ONNX export needs the 'export' extra")
    path = tmp_path / "model.onnx"
    export_model(make_model(head="gru"), path, "onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [value.name for value in proto.graph.input] == ["frames", "mask"]
    batch_dims = [value.type.tensor_type.shape.dim[0].dim_param for value in proto.graph.input]
    assert batch_dims == ["batch", "batch"]


def test_export_leaves_out_backbone_chunking_and_dropout(tmp_path: Path) -> None:
    """backbone_batch_size splits the eager backbone call; the export runs one call with the same result, in eval."""
    model = make_model(head="gru", backbone_batch_size=3, feature_dropout=0.5).train()
    export_model(model, tmp_path / "model.pt2", "exported_program")
    frames, mask = padded_batch()
    with torch.no_grad():
        eager = model.eval()(frames, mask)
    assert (run_exported(tmp_path / "model.pt2", "exported_program", frames, mask) - eager).abs().max() <= TOLERANCE


class LoopHead(nn.Module):
    """A head with no mask-free path (stands for any head the exporter does not know)."""

    out_features = 8

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.stack([row[keep].mean(dim=0) for row, keep in zip(features, mask, strict=True)])


def test_head_without_a_mask_free_path_is_refused_by_name(tmp_path: Path) -> None:
    model = make_model(head="mean")
    model.network.head = LoopHead()
    with pytest.raises(ExportError, match=r"head 'mean' \(LoopHead\) cannot run without data-dependent shapes"):
        export_model(model, tmp_path / "model.pt2", "exported_program")
    assert not list(tmp_path.iterdir())


def test_unknown_format_and_missing_onnx_are_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model(head="mean")
    with pytest.raises(ExportError, match=r"unknown export format 'tflite'; expected one of \['onnx', "):
        export_model(model, tmp_path / "model.tflite", "tflite")
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the 'export' extra were not installed
    with pytest.raises(ExportError, match=r"pip install 'video_cnn_rnn\[export\]'"):
        export_model(model, tmp_path / "model.onnx", "onnx")


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A checkpoint as the CLI would read it, naming a local weights file that no longer exists."""
    model = make_model(head="gru", sampling="segment", eval_clips=2, eval_flip=True)
    path = tmp_path / "run" / "best.ckpt"
    path.parent.mkdir()
    hparams = {**model.hparams, "pretrained": str(tmp_path / "gone.pth")}
    state = {"state_dict": model.state_dict(), "hyper_parameters": hparams, "pytorch-lightning_version": L.__version__}
    torch.save(state, path)
    return path


def test_cli_export_writes_the_file_and_its_sidecar(checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    main(["export", "--ckpt_path", str(checkpoint), "--format", "exported_program"])
    path = checkpoint.with_suffix(".pt2")
    assert f"exported {path}" in capsys.readouterr().out
    frames, mask = padded_batch()
    model = VideoClassifier.load_from_checkpoint(checkpoint, pretrained=False)
    with torch.no_grad():
        eager = model.eval()(frames, mask)
    assert (run_exported(path, "exported_program", frames, mask) - eager).abs().max() <= TOLERANCE

    sidecar = json.loads(Path(f"{path}.json").read_text())
    data_config = timm.data.resolve_model_data_config(timm.create_model("test_efficientnet"))
    expected = {
        "file": "best.pt2",
        "format": "exported_program",
        "torch_version": torch.__version__,
        "class_names": CLASSES,
        "backbone": "test_efficientnet",
        "head": "gru",
        "spatial_pool": "avg",
        "num_frames": STEPS,
        "img_size": IMG,
        "sampling": "segment",
        "eval_clips": 2,
        "eval_flip": True,
        "mean": pytest.approx(list(data_config["mean"])),
        "std": pytest.approx(list(data_config["std"])),
    }
    assert {name: sidecar[name] for name in expected} == expected
    assert sidecar["inputs"]["frames"]["shape"] == ["batch", STEPS, 3, IMG, IMG]
    assert sidecar["inputs"]["frames"]["dtype"] == "uint8" and sidecar["inputs"]["mask"]["dtype"] == "bool"
    assert sidecar["outputs"]["logits"]["shape"] == ["batch", len(CLASSES)]


def test_cli_export_to_a_chosen_path(checkpoint: Path, tmp_path: Path) -> None:
    output = tmp_path / "out" / "clip_model.torchscript.pt"
    main(["export", "--ckpt_path", str(checkpoint), "--format", "torchscript", "--output", str(output)])
    assert output.is_file()
    assert json.loads(Path(f"{output}.json").read_text())["format"] == "torchscript"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "onnx", "--ckpt_path", "missing.ckpt"], "--ckpt_path missing.ckpt: no such file"),
        (["--format", "tflite", "--ckpt_path", "x.ckpt"], "argument --format: invalid choice: 'tflite'"),
        (["--format", "onnx"], "the following arguments are required: --ckpt_path"),
    ],
)
def test_cli_export_bad_arguments(args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_export_names_a_head_it_cannot_export(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.delitem(export._MASK_FREE_CALLS, export.RecurrentHead)  # as for a head without a mask-free path
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--ckpt_path", str(checkpoint), "--format", "onnx"])
    assert exit_info.value.code == 2
    assert "head 'gru' (RecurrentHead) cannot run without data-dependent shapes" in capsys.readouterr().err
    assert not checkpoint.with_suffix(".onnx").exists()


def test_the_sidecar_records_the_crop(tmp_path: Path) -> None:
    from video_cnn_rnn.export import describe

    assert describe(make_model(crop="pad"), tmp_path / "model.pt2", "exported_program")["crop"] == "pad"
    assert describe(make_model(), tmp_path / "model.pt2", "exported_program")["crop"] == "centre"


def test_help_lists_export(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "  export     " in capsys.readouterr().out


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_temporal_shift_exports_with_the_eager_logits(fmt: str, tmp_path: Path) -> None:
    """The shift in the exported graph reads each frame's neighbours from the mask input: padding never leaks."""
    if fmt == "onnx":
        pytest.importorskip("onnx", reason="ONNX export needs the 'export' extra")
    model = make_model(backbone="test_resnet", freeze="last_n", trainable_blocks=2, temporal_shift=0.25, head="mean")
    for module in model.network.backbone.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)  # timm zero-initialises the last one of each branch: let the shift show
    frames, mask = padded_batch()
    with torch.no_grad():
        eager = model(frames, mask)
    path = tmp_path / f"model{FORMATS[fmt]}"
    export_model(model, path, fmt)
    assert (run_exported(path, fmt, frames, mask) - eager).abs().max() <= TOLERANCE
    assert (run_exported(path, fmt, frames[1:], mask[1:]) - eager[1:]).abs().max() <= TOLERANCE
