"""How a decoded frame becomes the model's square input (``crop``), for every reader: clips, shards, windows.

- ``centre``: the centre square, the Keras examples' crop; the decoder scales the short side to ``img_size``.
- ``pad``: the whole frame letterboxed, its longer side at ``img_size``, the rest black, centred.
- ``motion``: one square per clip around where the clip moves (``motion.py``), from frames decoded at up to
  ``MOTION_ZOOM`` x ``img_size`` on the short side, so a small subject keeps its pixels.

Frames arrive upright (readers turn them by the file's display matrix first), so every crop is taken from the frame
as a person sees it.
"""

from typing import Literal

import numpy as np
import torch

from video_cnn_rnn.data.frames import Scale
from video_cnn_rnn.data.motion import MOTION_ZOOM, MotionBox, motion_box

Crop = Literal["centre", "pad", "motion"]
CROPS: tuple[str, ...] = ("centre", "pad", "motion")


def check_crop(crop: str) -> None:
    if crop not in CROPS:
        raise ValueError(f"unknown crop {crop!r}; choose one of {CROPS}")


def decoded_short_side(img_size: int, crop: Crop) -> int:
    """The short side ``crop`` wants decoded frames to have (at most: the motion crop never upscales to reach it);
    a letterbox wants its long side at ``img_size``, so any short side up to ``img_size`` serves it."""
    return img_size * MOTION_ZOOM if crop == "motion" else img_size


def decoder_scale(img_size: int, crop: Crop) -> Scale:
    """What the decoder scales to for ``crop``: the shorter side for a centre crop, the longer side for a letterbox,
    the shorter side at ``MOTION_ZOOM`` x ``img_size`` (no larger than stored) for the motion crop to zoom into."""
    if crop == "motion":
        return Scale(decoded_short_side(img_size, crop), upscale=False)
    return Scale(img_size, fit=crop == "pad")


def to_clip(
    frames: np.ndarray, img_size: int, crop: Crop = "centre", boxes: list[MotionBox] | None = None
) -> torch.Tensor:
    """Upright [L, H, W, 3] uint8 -> [L, 3, img_size, img_size] uint8: the centre square (``centre``), the whole
    frame letterboxed (``pad``) or the clip's motion box (``motion``; appended to ``boxes`` when given), resized
    to img_size. The frames are one clip: the motion box is computed over all of them."""
    from torchvision.transforms.v2.functional import resize

    height, width = frames.shape[1:3]
    if crop == "pad":
        # The whole frame, its longer side at img_size (the decoder already scaled it, unless it could not).
        fitted_width, fitted_height = Scale(img_size, fit=True).size(width, height)
        if (fitted_height, fitted_width) != (height, width):
            clip = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))  # [L, H, W, 3] -> [L, 3, H, W]
            clip = resize(clip, [fitted_height, fitted_width], antialias=True)
            frames = clip.permute(0, 2, 3, 1).numpy()  # -> [L, H, W, 3]
        top, left = (img_size - fitted_height) // 2, (img_size - fitted_width) // 2
        # Black bars, the frame centred: numpy's strided copy into a zeroed array measured >10x faster than
        # torchvision's pad of the channel-first frames.
        canvas = np.zeros((len(frames), 3, img_size, img_size), dtype=np.uint8)
        canvas[:, :, top : top + fitted_height, left : left + fitted_width] = frames.transpose(0, 3, 1, 2)
        return torch.from_numpy(canvas)
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    if crop == "motion":
        box = motion_box(frames)
        top, left, side = box.top, box.left, box.side
        if boxes is not None:
            boxes.append(box)
    # Crop, then copy only the crop channel-first: numpy's strided copy measured 2x faster than torch's here.
    square = frames[:, top : top + side, left : left + side].transpose(0, 3, 1, 2)  # [L, H, W, 3] -> [L, 3, H, W]
    clip = torch.from_numpy(np.ascontiguousarray(square))
    if side != img_size:
        # The decoder already scaled the shorter side; this only runs for decoders that could not.
        clip = resize(clip, [img_size, img_size], antialias=True).contiguous()
    return clip
