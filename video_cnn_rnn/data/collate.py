"""Batching: pad each batch to its own longest clip, never to a global maximum."""

from typing import Any

import torch


def _reason(path: str, message: str) -> str:
    """An error message without the path it starts with, on one line (a report lists ``path<TAB>reason``)."""
    return " ".join(message.removeprefix(f"{path}: ").split())


def collate_clips(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack dataset items into a padded batch.

    Items hold ``frames`` (videos) or ``features`` (a feature store: float16 ``[L, *frame]`` -> ``[B, T, *frame]``,
    where a frame is a vector ``[D]`` or a map ``[C, h, w]``, as the item's ``frame_dims`` says); both are padded
    the same way.

    Returns ``frames`` uint8 ``[B, T, C, H, W]`` (``[B, K, T, C, H, W]`` for multi-clip items) with zero padding,
    ``mask`` bool ``[B, T]`` (``[B, K, T]``; True = real frame), ``lengths`` int64 ``[B]``, ``labels`` int64
    ``[B]`` (-1 when unlabelled), ``paths``, ``skipped`` (``(path, reason)`` of items that failed to decode and
    were dropped, ``on_error="skip"`` or ``"warn"``) and ``damaged`` (``(path, reason)`` of items kept with the
    frames that decoded cleanly, ``on_error="warn"``) and ``crop_fallback`` (``(path, reason)`` of items whose motion
    crop did not zoom in). Frames stay uint8 so only bytes cross to the device;
    normalisation happens there.
    """
    skipped = [(item["path"], _reason(item["path"], item["error"])) for item in items if "error" in item]
    items = [item for item in items if "error" not in item]
    damaged = [(item["path"], _reason(item["path"], item["damaged"])) for item in items if "damaged" in item]
    crop_fallback = [
        (item["path"], _reason(item["path"], item["crop_fallback"])) for item in items if "crop_fallback" in item
    ]
    if not items:
        return {
            "frames": torch.zeros(0, 0, 3, 1, 1, dtype=torch.uint8),
            "mask": torch.zeros(0, 0, dtype=torch.bool),
            "lengths": torch.zeros(0, dtype=torch.long),
            "labels": torch.zeros(0, dtype=torch.long),
            "paths": [],
            "skipped": skipped,
            "damaged": damaged,
            "crop_fallback": crop_fallback,
        }
    lengths = torch.tensor([item["length"] for item in items], dtype=torch.long)
    max_length = int(lengths.max())
    key = "frames" if "frames" in items[0] else "features"
    first = items[0][key]
    # Frames are [L, C, H, W] and features [L, *frame] ([K, L, ...] for multi-clip items).
    frame_dims = 3 if key == "frames" else items[0].get("frame_dims", 1)
    time_dim = first.dim() - 1 - frame_dims
    shape = (len(items), *first.shape[:time_dim], max_length, *first.shape[time_dim + 1 :])
    padded = torch.zeros(shape, dtype=first.dtype)
    for row, item in enumerate(items):
        padded[row].narrow(time_dim, 0, item["length"]).copy_(item[key])
    steps = torch.arange(max_length)
    mask = steps[None, :] < lengths[:, None]  # [B, T]
    if time_dim:
        mask = mask[:, None, :].expand(-1, first.shape[0], -1).contiguous()  # [B, T] -> [B, K, T]
    labels = torch.tensor([-1 if item["label"] is None else item["label"] for item in items], dtype=torch.long)
    return {
        key: padded,
        "mask": mask,
        "lengths": lengths,
        "labels": labels,
        "paths": [item["path"] for item in items],
        "skipped": skipped,
        "damaged": damaged,
        "crop_fallback": crop_fallback,
    }


def flatten_clips(inputs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """A batch's K clips per video as K times as many videos: the one place that knows the multi-clip layout.

    ``inputs`` [B, K, T, ...] with ``mask`` [B, K, T] -> ([B * K, T, ...], [B * K, T], K); a single-clip batch
    ([B, T, ...], [B, T]) comes back as it is, with K = None. Row ``b * K + k`` is clip k of video b.
    """
    if mask.dim() == 2:
        return inputs, mask, None
    return inputs.flatten(0, 1), mask.flatten(0, 1), mask.shape[1]
