"""What a ``VideoClassifier``'s hyperparameters record, and checkpoints of earlier versions.

Settings the model does not use are recorded as None (``clear_unused_settings``), so a checkpoint and a model
folder's config.json say only what applies. Checkpoints and model folders saved by earlier versions get their
hyperparameters in today's names and meanings (``upgrade_hparams``) and their weights under today's module names
(``prefix_legacy_keys``), whenever the model loads: ``load_from_checkpoint``, ``from_pretrained``, the CLI's
``--ckpt_path``. A model's frame settings left None take the data module's when a run starts
(``take_frame_settings``).
"""

from __future__ import annotations

import warnings
from collections.abc import MutableMapping
from typing import Any

import torch
from torch import nn

from video_cnn_rnn.data.frame_settings import DEFAULTS, FRAME_SETTINGS, merge_frame_settings
from video_cnn_rnn.models.heads import HEAD_SETTINGS, TransformerHead

# Hyperparameter names of checkpoints saved before they were renamed: old name -> new name.
_RENAMED_HPARAMS = {"test_clips": "eval_clips", "test_flip": "eval_flip"}
# Settings that only spatial_pool="attention" takes.
_ATTENTION_SETTINGS = ("spatial_maps", "spatial_dim")
# The network's modules sat on the classifier itself before it had a ``network``: their state-dict prefixes.
_LEGACY_MODULES = ("backbone.", "head.", "classifier.")
# The frame settings' defaults before they defaulted to the data module's: what a checkpoint that does not record one
# was trained and evaluated with.
_FORMER_FRAME_DEFAULTS = dict(
    num_frames=20, img_size=224, crop="centre", sampling="uniform", eval_clips=1, eval_flip=False
)


def clear_unused_settings(hparams: MutableMapping[str, Any], head: str, spatial_pool: str) -> dict[str, Any]:
    """Set to None, in ``hparams``, another head's settings (ignored: ``build_head`` warns about them) and, without
    ``spatial_pool="attention"``, the attention settings (warned about here). -> every head's settings as given,
    for ``build_head``."""
    head_settings = {name: hparams[name] for names in HEAD_SETTINGS.values() for name in names}
    for name in head_settings:
        if name not in HEAD_SETTINGS.get(head, (name,)):
            hparams[name] = None  # another head's setting: ignored (build_head warns), so not recorded
    if spatial_pool != "attention":
        given = [name for name in _ATTENTION_SETTINGS if hparams[name] is not None]
        if given:
            warnings.warn(
                f"spatial_pool='{spatial_pool}' ignores {', '.join(given)} (settings of spatial_pool='attention'); "
                "set them to null to silence this",
                stacklevel=3,  # the line that built the VideoClassifier
            )
        for name in given:
            hparams[name] = None
    return head_settings


def upgrade_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters of a checkpoint saved by an earlier version, in today's names and meanings.

    ``head: gru`` with ``rnn_cell: lstm`` is now ``head: lstm``; ``test_clips`` / ``test_flip`` are
    ``eval_clips`` / ``eval_flip``; settings of heads other than the checkpoint's were ignored, and are dropped.
    Frame settings it does not record (``crop``, added since) take the value it was trained with, the default of
    its day, so the data module that evaluates it (``VideoCLI``) makes the same frames, whatever the config says.
    """
    hparams = {_RENAMED_HPARAMS.get(name, name): value for name, value in hparams.items()}
    if hparams:  # an empty dict stays empty: no hyperparameters to hand on
        for name in FRAME_SETTINGS:
            # A setting added after these were fixed defaults to what reproduces the clips of before (DEFAULTS).
            hparams.setdefault(name, _FORMER_FRAME_DEFAULTS.get(name, DEFAULTS.get(name)))
    if hparams.pop("rnn_cell", None) == "lstm" and hparams.get("head") == "gru":
        hparams["head"] = "lstm"
    head = hparams.get("head", "gru")
    for name in {name for names in HEAD_SETTINGS.values() for name in names} - set(HEAD_SETTINGS.get(head, ())):
        if name in hparams:
            hparams[name] = None
    return hparams


def upgraded_overrides(checkpoint_path: Any) -> dict[str, Any]:
    """The hyperparameters of the checkpoint at ``checkpoint_path`` (a path or a file-like object, rewound after
    reading) that ``upgrade_hparams`` changes, with their upgraded values: overrides for ``load_from_checkpoint``."""
    saved = torch.load(checkpoint_path, map_location="cpu", weights_only=True).get("hyper_parameters", {})
    if hasattr(checkpoint_path, "seek"):
        checkpoint_path.seek(0)
    return {name: value for name, value in upgrade_hparams(saved).items() if saved.get(name) != value}


def prefix_legacy_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Checkpoints saved before the network was its own module keep loading: ``backbone.*`` -> ``network.*``.
    A load_state_dict pre-hook."""
    for key in [key for key in state_dict if key.startswith(tuple(prefix + name for name in _LEGACY_MODULES))]:
        state_dict[prefix + "network." + key[len(prefix) :]] = state_dict.pop(key)


def take_frame_settings(model: Any, datamodule: Any) -> None:
    """Give ``model`` (a ``VideoClassifier`` in its ``setup``) the frame settings of the run's ``datamodule`` (None
    without one) where it has none; ``merge_frame_settings`` refuses settings that disagree.

    Its hyperparameters then say what it runs with: the checkpoint records them, and Lightning's logging, which
    compares the model's initial hyperparameters with the data module's after ``setup``, finds them equal. A
    transformer head built before the clip length was known gets its positional embedding for ``num_frames``.
    """
    if datamodule is None:
        return
    merged = merge_frame_settings(model.hparams, getattr(datamodule, "hparams", {}))
    taken = {name: value for name, value in merged.items() if value != model.hparams.get(name)}
    if not taken:
        return
    model.hparams.update(taken)
    model._hparams_initial.update(taken)  # what Lightning logs and compares: no public setter
    head = model.network.head
    if "num_frames" in taken and isinstance(head, TransformerHead):
        head.resize_positions(taken["num_frames"])
