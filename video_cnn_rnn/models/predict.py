"""What a trained ``VideoClassifier`` does with a video file, outside a Trainer: ``predict_video`` (its top classes,
decoded and evaluated as ``test`` does) and ``predict_timeline`` (class probabilities over time, window by window:
the loop is ``windowed.timeline_rows``, which the CLI and ``serve`` share). Both run in eval mode and give the
model back in the mode they found it in.

A mixin, as transformers' ``GenerationMixin`` gives its models ``generate``: the classifier's module holds
training (steps, loss, metrics, optimiser), this one inference on files.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch

from video_cnn_rnn.data.dataset import VideoDataset
from video_cnn_rnn.data.frame_settings import ClipSpec
from video_cnn_rnn.models.windowed import timeline_rows


class PredictionMixin:
    """``predict_video`` and ``predict_timeline`` for a LightningModule with a ``network``, ``class_names`` and
    ``num_classes``, whose ``hparams`` hold the frame settings (``data/frame_settings.ClipSpec``)."""

    @torch.inference_mode()
    def predict_video(self: Any, path_or_frames: str | torch.Tensor, top_k: int = 5) -> list[tuple[str, float]]:
        """Top-k (class name, probability) pairs for one video, highest first.

        Args:
            path_or_frames: a video path, decoded and evaluated as ``test`` and ``predict`` do with this
                model's frame settings (num_frames, img_size, crop, sampling, eval_clips, eval_flip), or
                uint8 frames [L, C, H, W] already at the model's input size (one clip, as given).
            top_k: number of classes returned.
        """
        if isinstance(path_or_frames, torch.Tensor):
            frames, length = path_or_frames, path_or_frames.shape[0]
        else:
            spec = ClipSpec.of(self.hparams, needed_by="predict_video")
            video = VideoDataset([(str(path_or_frames), None)], **spec.dataset_arguments())[0]
            frames, length = video["frames"], video["length"]
        mask = (torch.arange(frames.shape[-4]) < int(length)).expand(frames.shape[:-3])  # [L] or [K, L]
        batch = {"frames": frames.unsqueeze(0).to(self.device), "mask": mask.unsqueeze(0).to(self.device)}
        was_training = self.training
        self.eval()
        try:
            logits = self.network.batch_logits(batch)
        finally:
            self.train(was_training)
        probs = logits.float().softmax(dim=-1)[0].cpu()
        values, indices = probs.topk(min(top_k, self.num_classes))
        names = self.class_names
        return [(names[i], float(v)) for v, i in zip(values.tolist(), indices.tolist(), strict=True)]

    def predict_timeline(
        self: Any,
        path: str | os.PathLike[str],
        window_s: float = 2.0,
        hop_s: float = 1.0,
        batch_size: int = 16,
        top_k: int = 3,
        on_error: str = "raise",
    ) -> list[dict[str, Any]]:
        """Class probabilities over time: one row per window of ``window_s`` seconds, every ``hop_s`` seconds.

        Each window is one clip sampled from its frames with this model's ``num_frames``, ``img_size``, ``crop`` and
        ``sampling`` (``eval_clips`` / ``eval_flip`` are not applied); the file is decoded once, streaming
        (``video_cnn_rnn.data.decode.iter_windows``). Rows: ``{"path", "start_s", "end_s", "probs": [one per class],
        "top_k": [(class name, probability)], "note"}``. A file that fails mid-way raises ``VideoDecodeError``
        with ``on_error="raise"``; otherwise it warns and returns the rows of the windows read before the failure.
        """
        rows, error = timeline_rows(self, path, window_s, hop_s, batch_size, top_k)
        if error is not None:
            if on_error == "raise":
                raise error
            warnings.warn(f"timeline cut short, {len(rows)} window(s) kept: {error}", stacklevel=2)
        return rows
