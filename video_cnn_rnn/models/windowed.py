"""The timeline of a long video: class probabilities window by window, the one loop behind
``VideoClassifier.predict_timeline``, the CLI's timeline mode (``video_cnn_rnn.timeline.run_timeline``, which also
writes the files) and ``serve`` (through ``predict_timeline``).

The windows of ``video_cnn_rnn.data.decode.iter_windows`` are decoded on a background thread (PyAV and torch
both release the GIL), a few batches ahead, while batches of ``batch_size`` windows go through the network, so
decoding and the backbone overlap and memory stays bounded by the queue.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from video_cnn_rnn.data.decode import VideoDecodeError, Window, check_window, iter_windows
from video_cnn_rnn.data.frame_settings import ClipSpec
from video_cnn_rnn.models.network import VideoNetwork

_DONE = object()


def prefetched(items: Iterable[Any], depth: int) -> Iterator[Any]:
    """``items`` produced on a background thread, at most ``depth`` ahead; its exception is re-raised here, after
    the items produced before it. Closing the iterator early stops the thread."""
    slots: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as error:  # handed to the consumer's thread
            put(error)

    thread = threading.Thread(target=produce, name="timeline-decode", daemon=True)
    thread.start()
    try:
        while (item := slots.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _batch(windows: list[Window], num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows -> frames uint8 [B, T, C, H, W] padded to ``num_frames`` and mask [B, T] (True = real frame)."""
    channels, height, width = windows[0].frames.shape[1:]
    frames = torch.zeros(len(windows), num_frames, channels, height, width, dtype=torch.uint8)
    mask = torch.zeros(len(windows), num_frames, dtype=torch.bool)
    for row, window in enumerate(windows):
        frames[row, : window.length] = window.frames
        mask[row, : window.length] = True
    return frames, mask


def iter_timeline(
    network: VideoNetwork,
    path: str | Path,
    window_s: float,
    hop_s: float,
    spec: ClipSpec,
    batch_size: int = 16,
    prefetch: bool = True,
) -> Iterator[dict[str, Any]]:
    """One row per window of ``path``, in order: ``{"path", "start_s", "end_s", "probs": [C floats], "note"}``;
    each window one clip as ``spec`` makes it (``eval_clips`` / ``eval_flip`` are not applied to windows).

    Runs ``network`` as it is (the caller puts it in eval mode, on its device, under autocast if wanted). A file
    that fails mid-way yields the rows of the windows read before the failure, then raises ``VideoDecodeError``.
    """
    check_window(window_s, hop_s)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = network.pixel_mean.device
    windows = iter_windows(path, window_s, hop_s, **spec.clip_arguments())
    if prefetch:
        windows = prefetched(windows, depth=2 * batch_size)
    pending: list[Window] = []

    def flush() -> list[dict[str, Any]]:
        frames, mask = _batch(pending, spec.num_frames)
        with torch.inference_mode():
            probs = network(frames.to(device), mask.to(device)).float().softmax(dim=-1).cpu()  # [B, C]
        rows = [
            {"path": str(path), "start_s": w.start_s, "end_s": w.end_s, "probs": p.tolist(), "note": w.note}
            for w, p in zip(pending, probs, strict=True)
        ]
        pending.clear()
        return rows

    try:
        for window in windows:
            pending.append(window)
            if len(pending) == batch_size:
                yield from flush()
    except VideoDecodeError:
        if pending:  # the windows read before the failure still count
            yield from flush()
        raise
    if pending:
        yield from flush()


def timeline_rows(
    model: Any,
    path: str | Path,
    window_s: float,
    hop_s: float,
    batch_size: int = 16,
    top_k: int = 3,
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> tuple[list[dict[str, Any]], VideoDecodeError | None]:
    """One video's timeline through ``model`` (a ``VideoClassifier``): one row per window, in order, ``{"path",
    "start_s", "end_s", "probs": [one per class], "top_k": [(class name, probability)], "note"}``, each window a clip
    of the model's frame settings (``num_frames``, ``img_size``, ``crop``, ``sampling``).

    The model runs in eval mode under ``context`` (e.g. the Trainer's autocast) and is given back in the mode it was
    in. -> (rows, None); for a file that fails mid-way, (the rows of the windows read before the failure, the
    ``VideoDecodeError``), for the caller's ``on_error`` to raise or report.
    """
    spec = ClipSpec.of(model.hparams, needed_by="predict_timeline")
    rows: list[dict[str, Any]] = []
    was_training = model.training
    model.eval()
    try:
        with context():
            for row in iter_timeline(model.network, path, window_s, hop_s, spec, batch_size=batch_size):
                ranked = sorted(zip(model.class_names, row["probs"], strict=True), key=lambda pair: -pair[1])
                rows.append({**row, "top_k": ranked[:top_k]})
    except VideoDecodeError as error:
        return rows, error
    finally:
        model.train(was_training)
    return rows, None
