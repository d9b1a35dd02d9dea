"""Export a trained model to ONNX, TorchScript or a ``torch.export`` program, with a JSON sidecar.

video-cnn-rnn export --ckpt_path runs/demo/checkpoints/best.ckpt --format onnx   # -> best.onnx, best.onnx.json

The exported graph has no shape that depends on the data: the clip length is fixed at the checkpoint's
``num_frames``, the mask is an input, the backbone runs on every frame (padding included, then zeroed, so what a
padded frame holds does not matter) and a recurrent head runs its mask-based path instead of packing. The batch
size stays dynamic. Inputs: uint8 ``frames`` [B, T, C, H, W] (RGB, the model normalises them itself) and bool
``mask`` [B, T] (True = real frame, real frames first, at least one per row); output: float32 ``logits``
[B, num_classes].
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from video_cnn_rnn.data.frame_settings import ClipSpec
from video_cnn_rnn.models.backbone import backbone_data_config
from video_cnn_rnn.models.classifier import VideoClassifier
from video_cnn_rnn.models.heads import MaxHead, MeanHead, RecurrentHead, TransformerHead
from video_cnn_rnn.models.network import VideoNetwork, zero_padding

# Format -> file suffix. ``torchscript`` is a traced module (torch.jit.load), ``exported_program`` a
# torch.export.ExportedProgram (torch.export.load).
FORMATS: dict[str, str] = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported_program": ".pt2"}
# ONNX goes through torch.onnx.export(dynamo=False), the TorchScript-based exporter: torch 2.14's default, the
# torch.export-based one, needs the onnxscript package besides onnx, and took 12-35 s per tiny test model here
# against 1-3 s, for the same logits.
ONNX_OPSET = 17
# Heads whose forward has no data-dependent shape, and the keyword arguments that select that path.
_MASK_FREE_CALLS: dict[type[nn.Module], dict[str, Any]] = {
    RecurrentHead: {"packed": False},
    TransformerHead: {},
    MeanHead: {},
    MaxHead: {},
}


class ExportError(ValueError):
    """A model that cannot be exported, or an export that cannot be written."""


class ExportableNetwork(nn.Module):
    """A VideoNetwork's forward with fixed shapes: uint8 frames [B, T, C, H, W], bool mask [B, T] -> logits.

    Same logits as ``VideoNetwork.forward`` (to float rounding) on any padded batch. The backbone sees all
    B * T frames in one call (``backbone_batch_size`` chunks by a count that would tie the graph to one batch size).
    """

    def __init__(self, network: VideoNetwork, head_name: str | None = None) -> None:
        super().__init__()
        head = network.head
        if type(head) not in _MASK_FREE_CALLS:
            name = f"'{head_name}' ({type(head).__name__})" if head_name else type(head).__name__
            raise ExportError(
                f"head {name} cannot run without data-dependent shapes (a fixed clip length and the mask as an "
                f"input), so it cannot be exported; heads that can: {[cls.__name__ for cls in _MASK_FREE_CALLS]}"
            )
        self.network = network
        self.head_kwargs = _MASK_FREE_CALLS[type(head)]

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """uint8 frames [B, T, C, H, W], bool mask [B, T] -> logits [B, num_classes]."""
        batch, steps = frames.shape[:2]
        # Every frame goes through the backbone (frames[mask] would have a data-dependent size); padding is
        # then zeroed as VideoNetwork.extract_features does.
        images = frames.flatten(0, 1)  # [B, T, C, H, W] -> [B * T, C, H, W]
        features = self.network._backbone_forward(images, mask, real_frames_only=False)  # -> [B * T, D(, h, w)]
        features = zero_padding(features.unflatten(0, (batch, steps)), mask)  # -> [B, T, D(, h, w)]
        # Attention pooling (spatial_pool="attention") runs on every frame already: no data-dependent shape.
        per_frame = self.network.pool_frames(features.float(), mask)  # -> [B, T, D']
        pooled = self.network.head(self.network.feature_dropout(per_frame), mask, **self.head_kwargs)
        return self.network.classifier(pooled)  # [B, D''] -> [B, num_classes]


def example_inputs(num_frames: int, img_size: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded example batch: random uint8 frames [B, T, 3, S, S] and a mask whose rows have different lengths."""
    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (batch, num_frames, 3, img_size, img_size), generator=generator)
    lengths = torch.linspace(num_frames, 1, batch).round().long()  # [T, ..., 1]
    mask = torch.arange(num_frames).unsqueeze(0) < lengths.unsqueeze(1)  # [B, T]
    return frames.to(torch.uint8), mask


def default_output(ckpt_path: str | Path, fmt: str) -> Path:
    """``runs/x/best.ckpt`` -> ``runs/x/best.onnx`` (``.torchscript.pt``, ``.pt2``)."""
    return Path(ckpt_path).with_suffix(FORMATS[fmt])


def export_model(model: VideoClassifier, path: str | Path, fmt: str) -> Path:
    """Write ``model`` (put in eval mode) to ``path`` in format ``fmt`` and its sidecar to ``<path>.json``.

    Returns the sidecar's path. Raises ``ExportError`` for an unknown format or a head that cannot run mask-free.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format '{fmt}'; expected one of {list(FORMATS)}")
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
        raise ExportError("--format onnx needs the onnx package: pip install 'video_cnn_rnn[export]'")
    spec = ClipSpec.of(model.hparams, needed_by="export")  # the file's input shape and its sidecar's
    wrapper = ExportableNetwork(model.network, model.hparams.get("head")).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = model.network.pixel_mean.device
    frames, mask = (tensor.to(device) for tensor in example_inputs(spec.num_frames, spec.img_size))
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # Eval-mode nn.TransformerEncoderLayer otherwise takes its fused kernel (even head counts), which the
    # ONNX exporter cannot translate; the unfused layer computes the same.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        _write(wrapper, path, fmt, frames, mask)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    sidecar = Path(f"{path}.json")
    sidecar.write_text(json.dumps(describe(model, path, fmt), indent=2) + "\n")
    return sidecar


def _write(wrapper: ExportableNetwork, path: Path, fmt: str, frames: torch.Tensor, mask: torch.Tensor) -> None:
    """Trace ``wrapper`` on the example batch and write it to ``path`` in format ``fmt``."""
    with torch.no_grad(), warnings.catch_warnings():
        _ignore_export_noise()
        if fmt == "onnx":
            # torch < 2.5 has no dynamo argument: its only exporter is the TorchScript-based one.
            legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
            torch.onnx.export(
                wrapper,
                (frames, mask),
                str(path),
                **legacy,
                opset_version=ONNX_OPSET,
                input_names=["frames", "mask"],
                output_names=["logits"],
                dynamic_axes={"frames": {0: "batch"}, "mask": {0: "batch"}, "logits": {0: "batch"}},
            )
        elif fmt == "torchscript":
            torch.jit.trace(wrapper, (frames, mask)).save(str(path))
        else:
            batch = torch.export.Dim("batch", min=1)
            program = torch.export.export(
                wrapper, (frames, mask), dynamic_shapes={"frames": {0: batch}, "mask": {0: batch}}
            )
            torch.export.save(program, str(path))


def _ignore_export_noise() -> None:
    """Silence the exporters' warnings that do not apply here (inside ``warnings.catch_warnings``)."""
    # Python values turned into constants: the clip length and image size, fixed on purpose (the batch size is
    # traced as a dimension, and the tests run other batch sizes than the example's).
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", message=".*with a batch_size other than 1.*")
    # The chosen exporters are deprecated in torch 2.14 (the README says so); they still work, and are tested.
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace(_method)?` is deprecated.*")
    warnings.filterwarnings("ignore", message=".*The feature will be removed.*", category=DeprecationWarning)
    # nn.GRU / nn.LSTM reassign _flat_weights (views of their parameters) on every call; the program reads the
    # parameters themselves.
    warnings.filterwarnings("ignore", message=r".*_flat_weights\[\d+\].*were assigned during export.*")
    # channels_last weights are not "complete" (contiguous) tensors to torch.export.save; their storage is saved.
    warnings.filterwarnings("ignore", message=".*No complete tensor found in the group.*")


def describe(model: VideoClassifier, path: Path, fmt: str) -> dict[str, Any]:
    """The sidecar: what the file expects and returns, and how the checkpoint evaluates a video."""
    hparams, spec = model.hparams, ClipSpec.of(model.hparams, needed_by="export")
    num_frames, img_size = spec.num_frames, spec.img_size
    data_config = backbone_data_config(model.network.backbone)
    return {
        "file": path.name,
        "format": fmt,
        "torch_version": torch.__version__,
        "class_names": model.class_names,
        "backbone": hparams.backbone,
        "head": hparams.head,
        "spatial_pool": hparams.get("spatial_pool", "avg"),
        **spec.as_dict(),
        "mean": [float(value) for value in data_config["mean"]],
        "std": [float(value) for value in data_config["std"]],
        "normalisation": "inside the model: (frames / 255 - mean) / std per RGB channel",
        "inputs": {
            "frames": {
                "dtype": "uint8",
                "shape": ["batch", num_frames, 3, img_size, img_size],
                "layout": "[batch, time, channel (RGB), height, width]",
            },
            "mask": {
                "dtype": "bool",
                "shape": ["batch", num_frames],
                "meaning": "True = real frame; real frames first, at least one per row; padded frames are ignored",
            },
        },
        "outputs": {"logits": {"dtype": "float32", "shape": ["batch", len(model.class_names)]}},
        "preprocessing": "turn each frame upright by its file's display rotation, then with crop 'centre' take the "
        "centre square, with 'pad' letterbox the whole frame (longer side to img_size, black bars, centred), with "
        "'motion' take each clip's motion square (video_cnn_rnn.load_clip(..., crop='motion') computes it: the "
        "exported model expects frames already cropped); resize to img_size",
        "evaluation": "with eval_clips > 1 or eval_flip, average the softmax over a video's clips (and their "
        "mirror images, flipped along width) as the checkpoint was evaluated",
    }


def export_main(args: list[str]) -> None:
    """``video-cnn-rnn export --ckpt_path X --format onnx|torchscript|exported_program [--output PATH]``."""
    parser = argparse.ArgumentParser(
        prog="video-cnn-rnn export",
        description="Export a checkpoint to a file with fixed clip length and dynamic batch, plus a JSON sidecar "
        "(<file>.json: classes, frame settings, mean/std, inputs).",
    )
    parser.add_argument("--ckpt_path", required=True, help="the checkpoint (a .ckpt from fit); nothing else needed")
    parser.add_argument(
        "--format",
        required=True,
        choices=list(FORMATS),
        dest="fmt",
        help="onnx (needs the 'export' extra), torchscript (torch.jit.trace, which torch deprecates: prefer "
        "exported_program), exported_program (torch.export, load with torch.export.load)",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="the file to write; default: the checkpoint's path with "
        f"the format's suffix ({', '.join(FORMATS.values())})",
    )
    options = parser.parse_args(args)
    if not Path(options.ckpt_path).is_file():
        parser.error(f"--ckpt_path {options.ckpt_path}: no such file")
    # pretrained=False: the weights come from the checkpoint, and a local weights file named in its
    # hyperparameters need not exist here. An export traces the backbone, so it is not compiled.
    model = VideoClassifier.load_from_checkpoint(
        options.ckpt_path, map_location="cpu", pretrained=False, compile_backbone=False
    )
    output = Path(options.output) if options.output else default_output(options.ckpt_path, options.fmt)
    try:
        sidecar = export_model(model, output, options.fmt)
    except ExportError as error:
        parser.error(str(error))
    print(f"exported {output} ({options.fmt}) and {sidecar}")
