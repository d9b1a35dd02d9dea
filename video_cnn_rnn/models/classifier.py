"""LightningModule: timm backbone per real frame -> temporal head -> small classifier."""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from video_cnn_rnn.models.backbone import (
    FreezePolicy,
    apply_freeze_policy,
    backbone_data_config,
    create_backbone,
    is_convolutional,
    keep_frozen_in_eval,
)
from video_cnn_rnn.models.heads import HeadKind, Pooling, build_head

Stage = Literal["train", "val", "test"]


def _stage_metrics(num_classes: int, stage: Stage) -> MetricCollection:
    """Epoch-level metrics for one stage; torchmetrics syncs their states across DDP ranks on compute."""
    metrics: dict[str, Any] = {"acc": MulticlassAccuracy(num_classes, average="micro")}
    if stage != "train":
        if num_classes > 5:
            metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
        metrics["precision"] = MulticlassPrecision(num_classes, average="macro")
        metrics["recall"] = MulticlassRecall(num_classes, average="macro")
        metrics["f1"] = MulticlassF1Score(num_classes, average="macro")
    # No compute groups: torchmetrics merges metrics whose states are equal after the first batch, and a first
    # batch whose labels are all in the top 1 makes top-5 accuracy's states equal the macro metrics' states, after
    # which precision/recall/F1 were computed from top-5 predictions (F1 1.0 beside 78% accuracy).
    return MetricCollection(metrics, prefix=f"{stage}_", compute_groups=False)


class VideoClassifier(L.LightningModule):
    """Video classifier: a timm CNN on every real frame, a GRU/LSTM/Transformer/mean head over time.

    Defaults reproduce the Keras CNN-RNN seed head (GRU 16 -> GRU 8 -> Dropout 0.4 -> Dense 8 ReLU ->
    Dense classes). The Transformer seed is ``head="transformer", d_model=None, num_heads=1, dense_dim=4,
    pooling="max", dropout=0.5, fc_hidden=None``.

    Batches are dicts with ``"frames"`` uint8 [B, T, C, H, W] (or [B, K, T, C, H, W] for K test-time
    clips) or precomputed ``"features"`` [B, T, D], plus ``"mask"`` bool [B, T] (True = real frame),
    ``"labels"`` int64 [B] and ``"paths"``.

    Args:
        backbone: timm model name.
        pretrained: False, True (timm weights, needs network or cache) or a local weights file path.
        freeze: "frozen" (feature extractor), "finetune" (all trains) or "last_n".
        trainable_blocks: number of trailing backbone blocks that train with ``freeze="last_n"``.
        backbone_lr: learning rate of trainable backbone params; None = the optimizer's lr.
        head: temporal head kind.
        rnn_cell: recurrent cell for ``head="gru"``.
        rnn_hidden_sizes: widths of the stacked recurrent layers; None = [16, 8].
        bidirectional: bidirectional recurrent layers.
        rnn_dropout: dropout between recurrent layers.
        d_model: Transformer width; None keeps the backbone's feature size.
        num_heads: attention heads.
        dense_dim: Transformer feed-forward width.
        num_layers: Transformer layers.
        pooling: Transformer pooling over time.
        attention_dropout: dropout inside the Transformer layers.
        fc_hidden: width of the hidden ReLU layer before the output; None skips it.
        dropout: dropout before the classifier layers.
        feature_dropout: dropout on the per-frame backbone features, before the head: a regulariser for
            small datasets, where a head otherwise memorises a few hundred clips' features.
        num_classes: number of classes; inferred from ``class_names`` when omitted.
        class_names: class names in label order.
        label_smoothing: cross-entropy label smoothing.
        class_weights: per-class cross-entropy weights.
        optimizer: optimizer factory (LightningCLI injects it; set ``--model.optimizer.lr``).
        lr_scheduler: optional scheduler factory, stepped every epoch.
        num_frames: frames per clip, stored so ``predict_video`` rebuilds the input pipeline.
        img_size: frame side length, stored for the same reason.
        sampling: frame sampling strategy name, stored for the same reason.
        test_clips: clips averaged per video at evaluation (the data module's), stored for the same reason.
        test_flip: whether evaluation also averages the mirrored clips (the data module's), stored likewise.
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
        head: HeadKind = "gru",
        rnn_cell: Literal["gru", "lstm"] = "gru",
        rnn_hidden_sizes: list[int] | None = None,
        bidirectional: bool = False,
        rnn_dropout: float = 0.0,
        d_model: int | None = None,
        num_heads: int = 1,
        dense_dim: int = 4,
        num_layers: int = 1,
        pooling: Pooling = "max",
        attention_dropout: float = 0.1,
        fc_hidden: int | None = 8,
        dropout: float = 0.4,
        feature_dropout: float = 0.0,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        label_smoothing: float = 0.0,
        class_weights: list[float] | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        num_frames: int = 20,
        img_size: int = 224,
        sampling: str = "uniform",
        test_clips: int = 1,
        test_flip: bool = False,
        channels_last: bool = True,
        compile_backbone: bool = False,
        backbone_batch_size: int | None = None,
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
        if rnn_hidden_sizes is None:
            rnn_hidden_sizes = [16, 8]
        # Callables cannot be serialised; LightningCLI re-injects them and load_from_checkpoint uses the
        # defaults, which only matter for further training.
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.hparams["num_classes"] = num_classes
        self.hparams["rnn_hidden_sizes"] = rnn_hidden_sizes
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.num_classes = num_classes

        self.backbone = create_backbone(backbone, pretrained)
        apply_freeze_policy(self.backbone, freeze, trainable_blocks)
        data_config = backbone_data_config(self.backbone)
        # Folding /255 into the stats lets extract_features normalise uint8 frames in one step. Not
        # persistent: they derive from the backbone name, which the hyperparameters already record.
        mean = torch.tensor(data_config["mean"]).view(1, -1, 1, 1) * 255.0
        std = torch.tensor(data_config["std"]).view(1, -1, 1, 1) * 255.0
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self.use_channels_last = channels_last and is_convolutional(self.backbone)
        if self.use_channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if compile_backbone:
            # In-place compile keeps the state-dict keys free of an "_orig_mod." prefix.
            self.backbone.compile()

        self.feature_dim: int = self.backbone.num_features
        self.head = build_head(
            head,
            self.feature_dim,
            rnn_cell=rnn_cell,
            rnn_hidden_sizes=rnn_hidden_sizes,
            bidirectional=bidirectional,
            rnn_dropout=rnn_dropout,
            d_model=d_model,
            num_heads=num_heads,
            dense_dim=dense_dim,
            num_layers=num_layers,
            pooling=pooling,
            attention_dropout=attention_dropout,
            max_len=num_frames,
        )
        self.feature_dropout = nn.Dropout(feature_dropout)
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        width = self.head.out_features
        if fc_hidden:
            layers += [nn.Linear(width, fc_hidden), nn.ReLU()]
            width = fc_hidden
        layers.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*layers)

        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights, persistent=False)

        self.train_metrics = _stage_metrics(num_classes, "train")
        self.val_metrics = _stage_metrics(num_classes, "val")
        self.test_metrics = _stage_metrics(num_classes, "test")
        self.test_loss_mean = MeanMetric()
        self.test_per_class = MetricCollection(
            {
                "precision": MulticlassPrecision(num_classes, average=None),
                "recall": MulticlassRecall(num_classes, average=None),
                "f1": MulticlassF1Score(num_classes, average=None),
                "confusion_matrix": MulticlassConfusionMatrix(num_classes),
            }
        )
        self.test_report: dict[str, Any] = {}

    # ------------------------------------------------------------------ properties and modes

    @property
    def class_names(self) -> list[str]:
        """Class names in label order ("class_0", ... when none were given)."""
        names = self.hparams.get("class_names")
        return list(names) if names else [f"class_{i}" for i in range(self.num_classes)]

    def train(self, mode: bool = True) -> VideoClassifier:
        """Switch modes, keeping frozen backbone parts (and their BatchNorm statistics) in eval mode."""
        super().train(mode)
        if mode:
            keep_frozen_in_eval(self.backbone)
        return self

    # ------------------------------------------------------------------ forward paths

    def extract_features(self, frames: torch.Tensor, mask: torch.Tensor, real_frames_only: bool = True) -> torch.Tensor:
        """Backbone features of the real frames: uint8 [B, T, C, H, W], bool [B, T] -> [B, T, D].

        Only ``frames[mask]`` go through the backbone, so compute scales with the real frame count;
        padding positions are zeros. ``real_frames_only=False`` runs every frame (benchmark baseline) and
        then zeroes the padding, giving the same result.
        """
        batch, steps = mask.shape
        if real_frames_only:
            images = frames[mask]  # [B, T, C, H, W] -> [N, C, H, W], N = real frames
        else:
            images = frames.flatten(0, 1)  # [B, T, C, H, W] -> [B * T, C, H, W]
        chunk = self.hparams.get("backbone_batch_size") or max(len(images), 1)
        feats = torch.cat([self._backbone_forward(part) for part in images.split(chunk)])  # [N, D]
        if not real_frames_only:
            feats = feats.view(batch, steps, -1)  # [B * T, D] -> [B, T, D]
            return feats * mask.unsqueeze(-1).to(feats.dtype)
        out = feats.new_zeros(batch, steps, feats.shape[-1])
        out[mask] = feats  # [N, D] -> [B, T, D]
        return out

    def _backbone_forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, C, H, W] (any device) -> normalised on the model's device -> features [N, D]."""
        images = (images.to(self.pixel_mean.device).float() - self.pixel_mean) / self.pixel_std
        if self.use_channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.backbone(images)

    def forward_features(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Head and classifier only: features [B, T, D], mask [B, T] -> logits [B, num_classes]."""
        return self.classifier(self.head(self.feature_dropout(features.float()), mask))

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """uint8 frames [B, T, C, H, W] and mask [B, T] -> logits [B, num_classes]."""
        return self.forward_features(self.extract_features(frames, mask), mask)

    def _batch_logits(self, batch: dict[str, Any]) -> torch.Tensor:
        """Logits for a frames or features batch, averaging K test-time clips when present.

        For K clips the result is log(mean softmax): softmax/argmax/cross-entropy of it are those of the
        averaged probabilities, so callers treat it like ordinary logits.
        """
        mask = batch["mask"].bool()
        inputs = batch["features"] if "features" in batch else batch["frames"]
        clips = mask.shape[1] if mask.dim() == 3 else 0
        if clips:
            mask = mask.flatten(0, 1)  # [B, K, T] -> [B * K, T]
            inputs = inputs.flatten(0, 1)  # [B, K, T, ...] -> [B * K, T, ...]
        if "features" in batch:
            logits = self.forward_features(inputs, mask)
        else:
            logits = self(inputs, mask)
        if not clips:
            return logits
        probs = logits.float().softmax(dim=-1).view(-1, clips, logits.shape[-1])  # -> [B, K, C]
        return probs.mean(dim=1).clamp_min(1e-12).log()

    # ------------------------------------------------------------------ steps

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.float(),
            labels,
            weight=self.class_weights,
            label_smoothing=self.hparams.label_smoothing,
        )

    def _shared_step(self, batch: dict[str, Any], stage: Stage) -> tuple[torch.Tensor, torch.Tensor] | None:
        """-> (loss, logits), or None for a batch whose videos were all skipped."""
        labels = batch["labels"]
        if len(labels) == 0:
            return None  # every video of the batch failed to decode and was skipped (on_error="skip")
        logits = self._batch_logits(batch)
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
        probs = self._batch_logits(batch).float().softmax(dim=-1)
        return {"paths": list(batch.get("paths", [])), "probs": probs.cpu()}

    def _log_epoch_metrics(self, metrics: MetricCollection) -> dict[str, float]:
        # The sanity check or an empty loader can end an epoch without updates; compute() would warn.
        if not any(m.update_count for m in metrics.values()):
            return {}
        values = {name: float(value) for name, value in metrics.compute().items()}
        metrics.reset()
        # compute() already reduced the states across ranks (torchmetrics sync_on_compute).
        # The values are identical on every rank; sync_dist only stops Lightning warning about that.
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
        per_class = {name: value.cpu() for name, value in self.test_per_class.compute().items()}
        self.test_loss_mean.reset()
        self.test_per_class.reset()
        confusion = per_class["confusion_matrix"]
        support = confusion.sum(dim=1)  # rows are true classes
        self.test_report = {
            "class_names": self.class_names,
            "per_class": [
                {
                    "class": name,
                    "precision": float(per_class["precision"][i]),
                    "recall": float(per_class["recall"][i]),
                    "f1": float(per_class["f1"][i]),
                    "support": int(support[i]),
                }
                for i, name in enumerate(self.class_names)
            ],
            "confusion_matrix": confusion.long().tolist(),
            "metrics": values,
        }

    # ------------------------------------------------------------------ optimisation and checkpoints

    def configure_optimizers(self) -> Any:
        """Head/classifier at the optimizer's lr; trainable backbone params at ``backbone_lr`` if set."""
        backbone_ids = {id(p) for p in self.backbone.parameters()}
        head_params = [p for p in self.parameters() if p.requires_grad and id(p) not in backbone_ids]
        backbone_params = [p for p in self.backbone.parameters() if p.requires_grad]
        groups: list[dict[str, Any]] = [{"params": head_params}]
        if backbone_params:
            group: dict[str, Any] = {"params": backbone_params}
            if self.hparams.backbone_lr is not None:
                group["lr"] = self.hparams.backbone_lr
            groups.append(group)
        optimizer = self.optimizer_factory(groups)
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        config: dict[str, Any] = {"scheduler": scheduler, "interval": "epoch"}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = "val_loss"
        return {"optimizer": optimizer, "lr_scheduler": config}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The state dict holds every backbone weight, so rebuilding from the checkpoint must not try to
        # download timm weights or read a local file that may not exist on the loading machine.
        key = self.CHECKPOINT_HYPER_PARAMS_KEY
        if key in checkpoint:
            checkpoint[key] = {**checkpoint[key], "pretrained": False}

    # ------------------------------------------------------------------ inference helpers

    @torch.inference_mode()
    def predict_video(self, path_or_frames: str | torch.Tensor, top_k: int = 5) -> list[tuple[str, float]]:
        """Top-k (class name, probability) pairs for one video, highest first.

        Args:
            path_or_frames: a video path, decoded and evaluated as ``test`` and ``predict`` do with this
                model's stored frame settings (num_frames, img_size, sampling, test_clips, test_flip), or
                uint8 frames [L, C, H, W] already at the model's input size (one clip, as given).
            top_k: number of classes returned.
        """
        if isinstance(path_or_frames, torch.Tensor):
            frames, length = path_or_frames, path_or_frames.shape[0]
        else:
            from video_cnn_rnn.data import VideoDataset  # lazy: the data stack is optional for inference

            video = VideoDataset(
                [(str(path_or_frames), None)],
                num_frames=self.hparams.num_frames,
                img_size=self.hparams.img_size,
                sampling=self.hparams.sampling,
                clips_per_video=self.hparams.get("test_clips", 1),
                mirrored_views=self.hparams.get("test_flip", False),
            )[0]
            frames, length = video["frames"], video["length"]
        mask = (torch.arange(frames.shape[-4]) < int(length)).expand(frames.shape[:-3])  # [L] or [K, L]
        batch = {"frames": frames.unsqueeze(0).to(self.device), "mask": mask.unsqueeze(0).to(self.device)}
        was_training = self.training
        self.eval()
        try:
            logits = self._batch_logits(batch)
        finally:
            self.train(was_training)
        probs = logits.float().softmax(dim=-1)[0].cpu()
        values, indices = probs.topk(min(top_k, self.num_classes))
        names = self.class_names
        return [(names[i], float(v)) for v, i in zip(values.tolist(), indices.tolist(), strict=True)]
