"""Clip-consistent spatial augmentation of uint8 training batches, on the device they are on.

One random resized crop, horizontal flip and colour jitter is drawn per clip and applied alike to all its
frames, so motion between frames stays what the camera saw. ``torchvision.transforms.v2`` does the work: a
``tv_tensors.Video`` [T, C, H, W] is one sample, so one call draws one set of parameters for all T frames.
Parameters come from the global torch generator (on the CPU), so ``seed_everything`` makes them reproducible and
a resumed run (``resumable.py`` restores that generator) draws what the uninterrupted run drew.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


class ClipAugment:
    """Random resized crop / horizontal flip / colour jitter, one draw per clip, for uint8 clip batches.

    Args:
        img_size: side of the square output frames (the input's size: the crop is resized back to it).
        crop_scale: (min, max) share of the frame's area the crop keeps; ``(1, 1)`` keeps the whole frame.
        crop_ratio: (min, max) aspect ratio of the crop before it is resized back to a square.
        flip: mirror half of the clips left-right.
        color_jitter: strength of the brightness, contrast and saturation jitter (each factor drawn from
            ``[1 - color_jitter, 1 + color_jitter]``); 0 disables it. Hue is left alone.
    """

    def __init__(
        self,
        img_size: int,
        crop_scale: Sequence[float] = (1.0, 1.0),
        crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
        flip: bool = False,
        color_jitter: float = 0.0,
    ) -> None:
        scale, ratio = tuple(float(v) for v in crop_scale), tuple(float(v) for v in crop_ratio)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"crop_scale must be two numbers 0 < min <= max <= 1, got {list(crop_scale)}")
        if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"crop_ratio must be two numbers 0 < min <= max, got {list(crop_ratio)}")
        if color_jitter < 0:
            raise ValueError(f"color_jitter must be >= 0, got {color_jitter}")
        transforms: list[v2.Transform] = []
        if scale != (1.0, 1.0):
            transforms.append(v2.RandomResizedCrop(img_size, scale=scale, ratio=ratio, antialias=True))  # type: ignore[arg-type]
        if flip:
            transforms.append(v2.RandomHorizontalFlip())
        if color_jitter > 0:
            transforms.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
        self.transform = v2.Compose(transforms) if transforms else None

    def __call__(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """uint8 frames [B, T, C, H, W] (or [B, K, T, C, H, W]) and mask [B, T] ([B, K, T]; True = real frame,
        real frames first as ``collate_clips`` pads) -> augmented uint8 frames of the same shape. Padded frames
        are neither transformed nor read: they stay as they were."""
        if self.transform is None:
            return frames
        clips = frames.flatten(0, -5)  # [B, (K,) T, C, H, W] -> [B * K, T, C, H, W]
        lengths = mask.reshape(clips.shape[0], -1).sum(-1).tolist()  # one host sync per batch
        out = clips.clone()
        for row, length in enumerate(lengths):
            if length:
                video = tv_tensors.Video(clips[row, :length])  # [L, C, H, W]: one sample, one parameter draw
                out[row, :length] = self.transform(video).as_subclass(torch.Tensor)
        return out.view(frames.shape)
