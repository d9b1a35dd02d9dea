"""Temporal shift module (TSM; Lin, Gan and Han, ICCV 2019): motion for a 2D CNN at no parameter cost.

Inside each residual block of the trainable stages, a share of the channels entering the residual branch is
taken from the previous frame of the same clip and as many from the next frame; the shortcut keeps the frame's
own. Implemented as forward pre-hooks on each block's first convolution, so no module is added or renamed and the
state dict is unchanged. The backbone sees frames, not clips: the network says, per call, which rows of its input
are neighbouring frames of one clip (``clip_layout``); a row at a clip's edge, or next to a padded frame, takes
zeros, so nothing crosses between clips or leaks from padding.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, EdgeResidual, InvertedResidual
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

# timm's residual blocks: the first convolution of each reads the residual branch's input.
SHIFTABLE_BLOCKS: tuple[type[nn.Module], ...] = (
    BasicBlock,
    Bottleneck,
    InvertedResidual,
    DepthwiseSeparableConv,
    EdgeResidual,
)


@dataclass
class ClipLayout:
    """Neighbours of the rows of a backbone input [N, C, H, W]: row ``i``'s previous / next frame of its clip is
    row ``prev_index[i]`` / ``next_index[i]`` where ``prev_valid[i]`` / ``next_valid[i]`` (bool [N]), else none."""

    prev_index: torch.Tensor
    prev_valid: torch.Tensor
    next_index: torch.Tensor
    next_valid: torch.Tensor


def clip_layout(mask: torch.Tensor, real_frames_only: bool = True) -> ClipLayout:
    """The layout of ``frames[mask]`` (``real_frames_only``: each clip's real frames, clips one after another) or of
    ``frames.flatten(0, 1)`` (every frame, padding included) for a mask [B, T] (True = real frame)."""
    batch, steps = mask.shape
    if real_frames_only:
        clip = torch.arange(batch, device=mask.device).repeat_interleave(mask.sum(1))  # [N]: each row's clip
        follows = clip[1:] == clip[:-1]  # [N - 1]: row i + 1 is the next real frame of row i's clip
    else:
        real = mask.flatten()  # [B * T]
        rows = torch.arange(1, batch * steps, device=mask.device)
        follows = (rows % steps != 0) & real[1:] & real[:-1]  # same clip, both frames real
    rows = torch.arange(follows.shape[0] + 1, device=mask.device)
    none = follows.new_zeros(1)
    return ClipLayout(
        prev_index=(rows - 1).clamp(min=0),
        prev_valid=torch.cat([none, follows]),
        next_index=(rows + 1).clamp(max=follows.shape[0]),
        next_valid=torch.cat([follows, none]),
    )


def shift_channels(x: torch.Tensor, layout: ClipLayout, fraction: float) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, H, W]: channels ``[0, f)`` from the previous frame, ``[f, 2f)`` from the next one
    (zeros where there is none), the rest unchanged; ``f = int(C * fraction)``."""
    fold = int(x.shape[1] * fraction)
    if fold == 0:
        return x
    prev_valid = layout.prev_valid.to(x.dtype).view(-1, 1, 1, 1)
    next_valid = layout.next_valid.to(x.dtype).view(-1, 1, 1, 1)
    from_prev = x[:, :fold].index_select(0, layout.prev_index) * prev_valid
    from_next = x[:, fold : 2 * fold].index_select(0, layout.next_index) * next_valid
    return torch.cat([from_prev, from_next, x[:, 2 * fold :]], dim=1)


class TemporalShift:
    """The shift as forward pre-hooks on a backbone; ``with shift.clips(layout):`` around each backbone call.

    Args:
        fraction: share of the channels shifted in each direction (TSM's 1/8 is 0.125), in (0, 0.5].
    """

    def __init__(self, fraction: float) -> None:
        if not 0 < fraction <= 0.5:
            raise ValueError(f"temporal_shift must be in (0, 0.5] (the share shifted each way), got {fraction}")
        self.fraction = fraction
        self.layout: ClipLayout | None = None
        self.hooked: list[str] = []

    def attach(self, backbone: nn.Module, name: str = "backbone") -> None:
        """Hook the first convolution of every residual block whose parameters all train (the trainable stages).

        Raises:
            ValueError: naming ``name`` when no such block exists (a frozen backbone, or a family without
                ``SHIFTABLE_BLOCKS``).
        """
        for block_name, block in backbone.named_modules():
            if not isinstance(block, SHIFTABLE_BLOCKS) or not all(p.requires_grad for p in block.parameters()):
                continue
            conv_name, conv = next((n, m) for n, m in block.named_modules() if isinstance(m, nn.Conv2d))
            conv.register_forward_pre_hook(self)
            self.hooked.append(f"{block_name}.{conv_name}")
        if not self.hooked:
            families = ", ".join(cls.__name__ for cls in SHIFTABLE_BLOCKS)
            raise ValueError(
                f"temporal_shift: {name} has no trainable residual block to shift ({families}); it needs trainable "
                "stages (freeze: last_n or finetune) of a ResNet- or EfficientNet/MobileNet-style timm backbone"
            )

    @contextmanager
    def clips(self, layout: ClipLayout) -> Iterator[None]:
        """The rows of the backbone calls inside this block are frames laid out as ``layout`` says."""
        self.layout = layout
        try:
            yield
        finally:
            self.layout = None

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        if self.layout is None:
            raise RuntimeError(
                "temporal_shift: the backbone was called on frames without their clip layout; call it through "
                "VideoNetwork (extract_features / forward), which knows which frames are neighbours"
            )
        return (shift_channels(args[0], self.layout, self.fraction), *args[1:])
