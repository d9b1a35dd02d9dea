"""One video through a trained ``VideoClassifier``, the work behind its ``predict_video`` (the top classes of a
video, decoded as ``test`` does) and ``predict_timeline`` (class probabilities over time, window by window).
Both run in eval mode and leave the model in the mode they found it in.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import lightning as L
import torch

from video_cnn_rnn.data.dataset import VideoDataset
from video_cnn_rnn.data.decoding import VideoDecodeError
from video_cnn_rnn.models.windowed import iter_timeline


@torch.inference_mode()
def predict_video(model: L.LightningModule, path_or_frames: str | torch.Tensor, top_k: int) -> list[tuple[str, float]]:
    """``VideoClassifier.predict_video``: top-k (class name, probability) pairs, highest first."""
    hp = model.hparams
    if isinstance(path_or_frames, torch.Tensor):
        frames, length = path_or_frames, path_or_frames.shape[0]
    else:
        video = VideoDataset(
            [(str(path_or_frames), None)],
            num_frames=hp.num_frames,
            img_size=hp.img_size,
            sampling=hp.sampling,
            clips_per_video=hp.eval_clips,
            mirrored_views=hp.eval_flip,
            crop=hp.crop,
        )[0]
        frames, length = video["frames"], video["length"]
    mask = (torch.arange(frames.shape[-4]) < int(length)).expand(frames.shape[:-3])  # [L] or [K, L]
    batch = {"frames": frames.unsqueeze(0).to(model.device), "mask": mask.unsqueeze(0).to(model.device)}
    was_training = model.training
    model.eval()
    try:
        logits = model.network.batch_logits(batch)
    finally:
        model.train(was_training)
    probs = logits.float().softmax(dim=-1)[0].cpu()
    values, indices = probs.topk(min(top_k, model.num_classes))
    names = model.class_names
    return [(names[i], float(v)) for v, i in zip(values.tolist(), indices.tolist(), strict=True)]


def predict_timeline(
    model: L.LightningModule,
    path: str | os.PathLike[str],
    window_s: float,
    hop_s: float,
    batch_size: int,
    top_k: int,
    on_error: str,
) -> list[dict[str, Any]]:
    """``VideoClassifier.predict_timeline``: one row per window, with its ``top_k`` classes."""
    hp = model.hparams
    rows: list[dict[str, Any]] = []
    was_training = model.training
    model.eval()
    try:
        timeline = iter_timeline(
            model.network, path, window_s, hop_s, hp.num_frames, hp.img_size, hp.sampling, batch_size, crop=hp.crop
        )
        for row in timeline:
            ranked = sorted(zip(model.class_names, row["probs"], strict=True), key=lambda pair: -pair[1])
            rows.append({**row, "top_k": ranked[:top_k]})
    except VideoDecodeError as error:
        if on_error == "raise":
            raise
        # stacklevel 3: the warning names the caller of VideoClassifier.predict_timeline, as before the move
        warnings.warn(f"timeline cut short, {len(rows)} window(s) kept: {error}", stacklevel=3)
    finally:
        model.train(was_training)
    return rows
