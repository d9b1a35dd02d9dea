"""VideoClassifier, the LightningModule: a VideoNetwork trained with cross-entropy, its metrics and optimiser.

The network itself (backbone, head, classifier layers) is ``network.py``; metrics are ``metrics.py``; the optimiser
and scheduler ``optimization.py``; what the hyperparameters record, and earlier versions' checkpoints ``hparams.py``;
``predict_video`` and ``predict_timeline`` (inference on files) ``predict.py``; the frame settings, which the data
module owns, ``data/frame_settings.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torchmetrics import MeanMetric, MetricCollection

from video_cnn_rnn.data.balance import loss_weights
from video_cnn_rnn.data.crops import Crop
from video_cnn_rnn.models.backbone import FreezePolicy
from video_cnn_rnn.models.heads import HeadKind, Pooling
from video_cnn_rnn.models.hparams import (
    clear_unused_settings,
    prefix_legacy_keys,
    take_frame_settings,
    upgrade_hparams,
    upgraded_overrides,
)
from video_cnn_rnn.models.metrics import Stage, assemble_test_report, epoch_values, per_class_metrics, stage_metrics
from video_cnn_rnn.models.network import VideoNetwork
from video_cnn_rnn.models.optimization import configure_optimizers, set_run_length
from video_cnn_rnn.models.predict import PredictionMixin
from video_cnn_rnn.models.pretrained import load_pretrained, save_pretrained
from video_cnn_rnn.models.spatial import SpatialPool


class VideoClassifier(PredictionMixin, L.LightningModule):
    """Video classifier: a timm CNN on every real frame, a GRU/LSTM/Transformer/mean/max head over time.

    Defaults reproduce the Keras CNN-RNN example's head (GRU 16 -> GRU 8 -> Dropout 0.4 -> Dense 8 ReLU ->
    Dense classes). The Keras Transformer example is ``head="transformer", num_heads=1, dense_dim=4,
    pooling="max", dropout=0.5, fc_hidden=None``.

    Batches are dicts with ``"frames"`` uint8 [B, T, C, H, W] (or [B, K, T, C, H, W] for K evaluation
    clips) or precomputed ``"features"`` [B, T, D] ([B, T, D, h, w] feature maps with ``spatial_pool="attention"``),
    plus ``"mask"`` bool [B, T] (True = real frame),
    ``"labels"`` int64 [B] and ``"paths"``.

    Args:
        backbone: timm model name.
        pretrained: False, True (ImageNet weights: for efficientnet_lite0/1/2 the file their package ships, read
            offline (the ``offline-weights`` extra); for other backbones timm's, which need network or cache) or a
            local weights file path.
        freeze: "frozen" (feature extractor), "finetune" (all trains) or "last_n".
        trainable_blocks: number of trailing backbone blocks that train with ``freeze="last_n"``.
        backbone_lr: learning rate of trainable backbone params; None = the optimizer's lr.
        temporal_shift: temporal shift module (TSM) in the trainable stages: this share of the channels of every
            residual block's branch comes from the previous frame of the clip and as many from the next
            (0.125 = the paper's 1/8); 0 turns it off. No parameters; needs ``freeze`` last_n or finetune.
        head: temporal head: ``gru`` / ``lstm`` (stacked recurrent layers over packed sequences),
            ``transformer``, ``mean`` or ``max`` (over time).
        rnn_hidden_sizes: (gru, lstm) widths of the stacked recurrent layers; default [16, 8].
        bidirectional: (gru, lstm) bidirectional recurrent layers; default False.
        rnn_dropout: (gru, lstm) dropout between recurrent layers; default 0.
        d_model: (transformer) width; default the backbone's feature size.
        num_heads: (transformer) attention heads; default 1.
        dense_dim: (transformer) feed-forward width; default 4.
        num_layers: (transformer) layers; default 1.
        pooling: (transformer) pooling over time, ``max``, ``mean`` or ``cls``; default max.
        attention_dropout: (transformer) dropout inside the layers; default 0.1.
        spatial_pool: how each frame becomes one vector for the head. ``avg``: the backbone's global average
            (one pooled vector per frame). ``attention``: the backbone keeps its last feature map (e.g. 1280 x 7 x 7
            for efficientnet_lite0 at 224 px; a feature cache then stores the maps) and a small learned module
            pools it by attention over space, with each map's attended position, so the head knows where in the
            frame things happen. Needs a convolutional backbone.
        spatial_maps: (attention) learned attention maps per frame; default 4.
        spatial_dim: (attention) width of a linear projection of the maps' concatenation (spatial_maps x
            (channels + 2) values per frame); default none (no projection).
        fc_hidden: width of the hidden ReLU layer before the output; None skips it.
        dropout: dropout before the classifier layers.
        feature_dropout: dropout on the per-frame features (after spatial pooling), before the head: a regulariser
            for small datasets, where a head otherwise memorises a few hundred clips' features.
        num_classes: number of classes; inferred from ``class_names`` when omitted.
        class_names: class names in label order (the CLI links the data module's).
        label_smoothing: cross-entropy label smoothing.
        class_weights: per-class cross-entropy weights (``data.balance: loss`` sets them from the training counts).
        optimizer: optimizer factory (LightningCLI injects it; set ``--model.optimizer.lr``).
        lr_scheduler: optional scheduler factory, stepped every epoch, or as its ``interval`` says: e.g.
            ``video_cnn_rnn.models.schedules.WarmupCosineLR`` (linear warm-up, cosine decay, stepped per
            optimizer step).
        num_frames: frames per clip. This and the next five are the frame settings, which the data module owns
            (``data/frame_settings.py``): None (the default) takes the data module's when fit / validate / test /
            predict starts, and a value that disagrees with it is an error. They are recorded, so a checkpoint
            evaluates videos as it was trained; a model that never ran with a data module needs them given for
            ``predict_video``, the timeline and export.
        img_size: frame side length.
        crop: how a frame becomes the ``img_size`` square (``data.crop``).
        sampling: frame sampling strategy name.
        eval_clips: clips averaged per video at validation, test and predict.
        eval_flip: whether evaluation also averages the mirrored clips.
        channels_last: run convolutional backbones in channels_last memory format.
        compile_backbone: ``torch.compile`` the backbone in place (state-dict keys are unchanged).
        backbone_batch_size: at most this many frames per backbone call; ``None`` runs all real frames of a
            batch at once. Chunks bound inference memory, and on CPUs ~32 frames per call is faster than
            one large call (benchmarks/bench_cache.py).
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        pretrained: bool | str = False,
        freeze: FreezePolicy = "frozen",
        trainable_blocks: int = 1,
        backbone_lr: float | None = None,
        temporal_shift: float = 0.0,
        head: HeadKind = "gru",
        rnn_hidden_sizes: list[int] | None = None,
        bidirectional: bool | None = None,
        rnn_dropout: float | None = None,
        d_model: int | None = None,
        num_heads: int | None = None,
        dense_dim: int | None = None,
        num_layers: int | None = None,
        pooling: Pooling | None = None,
        attention_dropout: float | None = None,
        spatial_pool: SpatialPool = "avg",
        spatial_maps: int | None = None,
        spatial_dim: int | None = None,
        fc_hidden: int | None = 8,
        dropout: float = 0.4,
        feature_dropout: float = 0.0,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        label_smoothing: float = 0.0,
        class_weights: list[float] | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        num_frames: int | None = None,
        img_size: int | None = None,
        sampling: str | None = None,
        eval_clips: int | None = None,
        eval_flip: bool | None = None,
        channels_last: bool = True,
        compile_backbone: bool = False,
        backbone_batch_size: int | None = None,
        crop: Crop | None = None,
    ) -> None:
        super().__init__()
        if class_names is not None:
            if num_classes is not None and num_classes != len(class_names):
                raise ValueError(f"num_classes={num_classes} disagrees with {len(class_names)} class_names")
            num_classes = len(class_names)
        if num_classes is None:
            raise ValueError("Pass num_classes or class_names")
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"class_weights has {len(class_weights)} entries for {num_classes} classes")
        # Callables cannot be serialised; LightningCLI re-injects them and load_from_checkpoint uses the
        # defaults, which only matter for further training.
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.hparams["num_classes"] = num_classes
        head_settings = clear_unused_settings(self.hparams, head, spatial_pool)
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.num_classes = num_classes

        self.network = VideoNetwork(
            num_classes,
            backbone,
            pretrained,
            freeze,
            trainable_blocks,
            head,
            head_settings,
            max_len=num_frames or 64,  # the data module's num_frames replaces 64 at setup (take_frame_settings)
            fc_hidden=fc_hidden,
            dropout=dropout,
            feature_dropout=feature_dropout,
            channels_last=channels_last,
            compile_backbone=compile_backbone,
            backbone_batch_size=backbone_batch_size,
            spatial_pool=spatial_pool,
            spatial_maps=self.hparams.spatial_maps,
            spatial_dim=self.hparams.spatial_dim,
            temporal_shift=temporal_shift,
        )
        self.register_load_state_dict_pre_hook(prefix_legacy_keys)

        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights, persistent=False)

        self.train_metrics = stage_metrics(num_classes, "train")
        self.val_metrics = stage_metrics(num_classes, "val")
        self.test_metrics = stage_metrics(num_classes, "test")
        self.test_loss_mean = MeanMetric()
        self.test_per_class = per_class_metrics(num_classes)
        self.test_report: dict[str, Any] = {}

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> VideoClassifier:
        """Lightning's ``load_from_checkpoint``, with checkpoints of earlier versions upgraded
        (``upgrade_hparams``); ``kwargs`` override the checkpoint's hyperparameters as in Lightning."""
        upgraded = upgraded_overrides(checkpoint_path)
        return super().load_from_checkpoint(checkpoint_path, *args, **{**upgraded, **kwargs})

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write a portable model folder: ``model.safetensors``, ``config.json`` (every hyperparameter, classes
        and frame settings included) and, when the folder has none, a ``README.md`` model card. -> the folder."""
        return save_pretrained(self, directory)

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike[str], map_location: Any = "cpu", strict: bool = True, **overrides: Any
    ) -> VideoClassifier:
        """The model ``save_pretrained`` wrote to ``directory``, in eval mode on ``map_location``: config.json
        read as JSON (hyperparameters of earlier versions upgraded), weights from safetensors, nothing unpickled
        or downloaded. ``overrides`` replace hyperparameters (say ``backbone_batch_size``)."""
        return load_pretrained(cls, directory, upgrade_hparams, map_location=map_location, strict=strict, **overrides)

    @property
    def class_names(self) -> list[str]:
        """Class names in label order ("class_0", ... when none were given)."""
        names = self.hparams.get("class_names")
        return list(names) if names else [f"class_{i}" for i in range(self.num_classes)]

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """uint8 frames [B, T, C, H, W] and mask [B, T] -> logits [B, num_classes]."""
        return self.network(frames, mask)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        smoothing = self.hparams.label_smoothing
        return F.cross_entropy(logits.float(), labels, weight=self.class_weights, label_smoothing=smoothing)

    def setup(self, stage: str) -> None:
        """Frame settings left None take the data module's, checked against those given (``take_frame_settings``);
        ``data.balance: loss`` sets ``class_weights`` (and the hparam: checkpoints say) from the training counts."""
        take_frame_settings(self, self.trainer.datamodule)
        if stage == "fit" and (weights := loss_weights(self.trainer.datamodule, self.hparams.class_weights)):
            self.hparams["class_weights"], self.class_weights = weights, torch.tensor(weights, dtype=torch.float32)

    def _shared_step(self, batch: dict[str, Any], stage: Stage) -> tuple[torch.Tensor, torch.Tensor] | None:
        """-> (loss, logits), or None for a batch whose videos were all skipped."""
        labels = batch["labels"]
        if len(labels) == 0:
            return None  # every video of the batch failed to decode and was skipped (on_error="skip")
        logits = self.network.batch_logits(batch)
        loss = self._loss(logits, labels)
        batch_size = len(labels)
        self.log(
            f"{stage}_loss",
            loss,
            on_step=stage == "train",
            on_epoch=True,
            prog_bar=True,
            sync_dist=True,
            batch_size=batch_size,
        )
        preds = logits.detach().float()
        getattr(self, f"{stage}_metrics").update(preds, labels)
        if stage == "test":
            self.test_loss_mean.update(loss.detach(), weight=batch_size)
            self.test_per_class.update(preds, labels)
        return loss, preds

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        result = self._shared_step(batch, "train")
        return None if result is None else result[0]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        result = self._shared_step(batch, "val")
        return None if result is None else result[0]

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        """-> {"loss", "paths", "labels" int64 [B], "probs" float32 [B, C] on CPU} (per-video test predictions)."""
        result = self._shared_step(batch, "test")
        if result is None:
            return None
        loss, logits = result
        probs = logits.softmax(dim=-1).cpu()
        return {"loss": loss, "paths": list(batch.get("paths", [])), "labels": batch["labels"].cpu(), "probs": probs}

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """-> {"paths": list[str], "probs": float32 [B, C] on CPU}."""
        if len(batch["labels"]) == 0:
            return {"paths": [], "probs": torch.zeros(0, self.num_classes)}
        probs = self.network.batch_logits(batch).float().softmax(dim=-1)
        return {"paths": list(batch.get("paths", [])), "probs": probs.cpu()}

    def _log_epoch_metrics(self, metrics: MetricCollection) -> dict[str, float]:
        values = epoch_values(metrics)
        if values:  # identical on every rank (compute() reduced them); sync_dist only stops Lightning warning
            self.log_dict(values, prog_bar=True, sync_dist=True)
        return values

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics(self.train_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics(self.val_metrics)

    def on_test_epoch_end(self) -> None:
        values = self._log_epoch_metrics(self.test_metrics)
        if not values:
            return
        values = {"test_loss": float(self.test_loss_mean.compute()), **values}
        self.test_report = assemble_test_report(self.test_per_class, self.class_names, values)
        self.test_loss_mean.reset()
        self.test_per_class.reset()

    def configure_optimizers(self) -> Any:
        """Head/classifier at the optimizer's lr; trainable backbone params at ``backbone_lr`` if set. A scheduler
        scales both groups alike; one with an ``interval`` attribute (``WarmupCosineLR``) is stepped at that
        interval, told the run's optimizer steps by ``on_train_start``."""
        return configure_optimizers(
            self, self.network.backbone, self.optimizer_factory, self.lr_scheduler_factory, self.hparams.backbone_lr
        )

    def on_train_start(self) -> None:
        """Tell schedulers with ``set_run_length`` (``WarmupCosineLR``) the run's optimizer steps and steps per
        epoch (``optimization.set_run_length`` says why here and not in ``configure_optimizers``)."""
        set_run_length(self.trainer)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The state dict holds every backbone weight, so rebuilding from the checkpoint must not try to
        # download timm weights or read a local file that may not exist on the loading machine.
        key = self.CHECKPOINT_HYPER_PARAMS_KEY
        if key in checkpoint:
            checkpoint[key] = {**checkpoint[key], "pretrained": False}
