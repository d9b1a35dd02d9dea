"""A portable model folder: ``model.safetensors`` + ``config.json`` (+ a ``README.md`` model card), the layout a
model hub expects.

Loading reads JSON and safetensors only, so nothing is unpickled, and the backbone is built with
``pretrained=False`` (the folder has all its weights), so nothing is downloaded. ``VideoClassifier.save_pretrained``
and ``VideoClassifier.from_pretrained`` are the entry points; this module holds the format.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import warnings
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
from safetensors.torch import load_model, save_model

from video_cnn_rnn.models.backbone import backbone_data_config

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
LIBRARY_NAME = "video_cnn_rnn"
# Raised when a change to the folder's format would make an older loader misread it.
FORMAT_VERSION = 1
# Keys of config.json that describe the folder rather than being constructor arguments.
METADATA_KEYS = ("library_name", "model_class", "format_version", "package_version", "backbone_mean", "backbone_std")

ModelT = TypeVar("ModelT", bound=L.LightningModule)


def constructor_arguments(cls: type) -> list[str]:
    """Names of the keyword arguments ``cls(...)`` takes, in signature order."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]  # without self
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def package_version() -> str:
    try:
        return version(LIBRARY_NAME)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def save_pretrained(model: L.LightningModule, directory: str | os.PathLike[str]) -> Path:
    """Write ``model`` (a ``VideoClassifier``) to ``directory``, created if missing: ``model.safetensors``,
    ``config.json`` (written last) and, when the folder has none, a ``README.md`` model card. -> the folder.

    config.json holds every constructor hyperparameter the model recorded, with ``pretrained: false`` (the
    weights are in the file), beside the format's metadata (``METADATA_KEYS``); the backbone's mean / std are
    for reading, the model derives them from the backbone name again.
    """
    arguments = constructor_arguments(type(model))
    hparams = {name: model.hparams[name] for name in arguments if name in model.hparams}
    hparams["pretrained"] = False
    for name, value in hparams.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise TypeError(f"hyperparameter {name}={value!r} cannot be written to {CONFIG_NAME}: {error}") from None
    data_config = backbone_data_config(model.network.backbone)
    config = {
        "library_name": LIBRARY_NAME,
        "model_class": type(model).__name__,
        "format_version": FORMAT_VERSION,
        "package_version": package_version(),
        "backbone_mean": [float(v) for v in data_config["mean"]],
        "backbone_std": [float(v) for v in data_config["std"]],
        **hparams,
    }
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    # save_model drops the duplicate names of tied weights (safetensors stores no shared tensors) and makes
    # channels_last tensors contiguous; load_model ties them back.
    save_model(model, str(folder / WEIGHTS_NAME), metadata={"format": "pt"}, force_contiguous=True)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    if not (folder / CARD_NAME).exists():  # a card edited by hand is kept
        (folder / CARD_NAME).write_text(model_card(config, model.class_names))
    return folder


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The folder's config.json, checked to be this package's and of a format this version reads."""
    folder = Path(directory)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} is not a model folder: it has no {name} (save_pretrained writes one)")
    path = folder / CONFIG_NAME
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(config, dict) or config.get("library_name") != LIBRARY_NAME:
        raise ValueError(f'{path} is not a {LIBRARY_NAME} model config (no "library_name": "{LIBRARY_NAME}")')
    found = config.get("format_version")
    if not isinstance(found, int) or not 1 <= found <= FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {found!r}; this version of {LIBRARY_NAME} ({package_version()}) reads "
            f"1 to {FORMAT_VERSION} (a newer format needs a newer {LIBRARY_NAME})"
        )
    return config


def load_pretrained(
    cls: type[ModelT],
    directory: str | os.PathLike[str],
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] = dict,
    map_location: Any = "cpu",
    strict: bool = True,
    **overrides: Any,
) -> ModelT:
    """``cls`` built from the folder's config.json (hyperparameters passed through ``upgrade``, then
    ``overrides``; always ``pretrained=False``), its weights from model.safetensors, on ``map_location``, in
    eval mode. ``strict=False`` tolerates missing or unexpected weight names, never mismatching shapes."""
    folder = Path(directory)
    config = read_config(folder)
    hparams = upgrade({name: value for name, value in config.items() if name not in METADATA_KEYS})
    arguments = constructor_arguments(cls)
    unknown = sorted(set(hparams) - set(arguments))
    if unknown:
        raise ValueError(f"{folder / CONFIG_NAME} has keys {cls.__name__} does not take: {', '.join(unknown)}")
    unknown = sorted(set(overrides) - set(arguments))
    if unknown:
        raise TypeError(f"{cls.__name__}.from_pretrained got unknown hyperparameters: {', '.join(unknown)}")
    model = cls(**{**hparams, **overrides, "pretrained": False})
    _warn_if_normalisation_changed(model, config)

    path = folder / WEIGHTS_NAME
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except RuntimeError as error:  # shapes that differ from the model config.json describes
        raise ValueError(f"{path} does not fit the model {CONFIG_NAME} describes: {error}") from None
    if strict and (missing or unexpected):
        problems = [
            f"{kind}: {', '.join(sorted(names))}"
            for kind, names in (("missing", missing), ("unexpected", unexpected))
            if names
        ]
        raise ValueError(
            f"{path} does not fit the model {CONFIG_NAME} describes ({'; '.join(problems)}); "
            "from_pretrained(..., strict=False) loads the weights that do"
        )
    return model.to(map_location).eval()


def _warn_if_normalisation_changed(model: L.LightningModule, config: dict[str, Any]) -> None:
    """The model normalises frames with its backbone's pretrained_cfg; a timm that changed it gives other outputs."""
    data_config = backbone_data_config(model.network.backbone)
    for key in ("mean", "std"):
        saved, now = config.get(f"backbone_{key}"), [float(v) for v in data_config[key]]
        same = saved is None or (
            len(saved) == len(now) and all(math.isclose(a, b) for a, b in zip(saved, now, strict=True))
        )
        if not same:
            warnings.warn(
                f"the backbone's {key} was {saved} when the model was saved and is {now} with this timm: "
                "frames are normalised differently, so predictions will differ",
                stacklevel=4,  # the caller of from_pretrained
            )


CROP_WORDS = {
    "pad": "letterboxed whole frames",
    "motion": "a square around each clip's motion",
    "centre": "centre square",
}


def model_card(config: dict[str, Any], class_names: list[str]) -> str:
    """A short README.md for a model hub: what the model is, its classes and frame settings, how to load it."""
    head = config.get("head", "gru")
    frames = (
        f"{config.get('num_frames')} frames, {config.get('img_size')} px "
        f"({CROP_WORDS.get(config.get('crop'), 'centre square')}), "
        f"`{config.get('sampling')}` sampling; "
        f"{config.get('eval_clips')} clip(s) per video at evaluation"
        + (", each also mirrored" if config.get("eval_flip") else "")
    )
    lines = [
        "---",
        f"library_name: {LIBRARY_NAME}",
        "pipeline_tag: video-classification",
        "tags:",
        "- video-classification",
        "- timm",
        "---",
        "",
        f"# {config.get('backbone')} + {head} video classifier",
        "",
        f"A `{LIBRARY_NAME}` VideoClassifier: the timm backbone `{config.get('backbone')}` on every frame, a "
        f"`{head}` head over time, then a classifier.",
        "",
        f"- Classes ({len(class_names)}, in label order): " + ", ".join(f"`{name}`" for name in class_names),
        f"- Input: {frames}.",
        f"- Frames are normalised with mean {config.get('backbone_mean')} and std {config.get('backbone_std')}.",
        "",
        "```python",
        "from video_cnn_rnn import VideoClassifier",
        "",
        'model = VideoClassifier.from_pretrained("path/to/this/folder")',
        'model.predict_video("video.mp4", top_k=3)',
        "```",
        "",
    ]
    return "\n".join(lines)
