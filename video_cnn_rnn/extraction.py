"""Feature extraction: run a network's frozen backbone over datasets once, into a feature cache.

The Keras examples extract features once and train on arrays; this makes that path safe. A cache folder is named
by a fingerprint of everything that changes its content (manifest with file sizes and mtimes, backbone name and
weights, frame settings, clip counts, sampling seed), so a changed input means a new folder, never a stale cache.
Extraction writes into a temporary folder and renames it only when every split is written. The on-disk format and
its reader are ``video_cnn_rnn.data.feature_cache``; this module sits above the data and model layers.
"""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from video_cnn_rnn.data.collate import collate_clips, flatten_clips
from video_cnn_rnn.data.datamodule import VideoDataModule
from video_cnn_rnn.data.dataset import VideoDataset
from video_cnn_rnn.data.feature_cache import CACHE_FORMAT, is_complete, write_split
from video_cnn_rnn.models.network import VideoNetwork


def _weights_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_fingerprint(network: VideoNetwork, datasets: dict[str, VideoDataset]) -> str:
    """A hash of everything that determines the cached features."""
    manifest = {}
    for split, dataset in sorted(datasets.items()):
        entries = []
        # LitData shards (data.streaming): the id of their write stands for the items and the files' sizes and times.
        for path, label in dataset.items if not getattr(dataset, "shard_id", None) else []:
            stat = os.stat(path)
            entries.append((path, stat.st_size, stat.st_mtime_ns, label))
        manifest[split] = {
            "items": entries,
            "num_frames": dataset.num_frames,
            "img_size": dataset.img_size,
            "sampling": dataset.sampling,
            "stride": dataset.stride,
            "target_fps": dataset.target_fps,
            "clips": dataset.clips_per_video,
            "random_flip": dataset.random_flip,
            "mirrored_views": dataset.mirrored_views,
            "training": dataset.augment,  # the key keeps existing caches valid
            "seed": dataset.seed,
        }
        if getattr(dataset, "shard_id", None):
            manifest[split]["shards"] = dataset.shard_id
        if dataset.on_error == "warn":  # damaged videos cached with their clean frames; only then, so that
            manifest[split]["on_error"] = "warn"  # caches made before the setting existed stay valid
    key = {
        "format": CACHE_FORMAT,
        "backbone": network.backbone_name,
        "weights": _weights_digest(network.backbone),
        "manifest": manifest,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


class _RoundRobinBatches(Sampler[list[int]]):
    """Consecutive batches of ``batch_size`` indices, every ``world``-th one starting at ``rank``."""

    def __init__(self, length: int, batch_size: int, rank: int, world: int) -> None:
        batches = [list(range(i, min(i + batch_size, length))) for i in range(0, length, batch_size)]
        # Lightning needs a batch on every rank; a repeated batch is harmless, the writer keys rows by path.
        self.batches = batches[rank::world] or batches[:1]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _Extractor(L.LightningModule):
    """Runs a VideoNetwork's backbone on real frames only, for Trainer.predict (and so for DDP).

    Its loader cuts the dataset into the same batches whatever the number of processes and deals whole batches
    to ranks round-robin: a clip is always computed in the same batch, so a DDP cache is bit-identical to a
    single-process one (CPU and GPU kernels may round differently for different batch compositions).
    """

    def __init__(self, network: VideoNetwork, dataset: VideoDataset, batch_size: int, num_workers: int) -> None:
        super().__init__()
        self.network = network
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers

    def predict_dataloader(self) -> DataLoader:
        # Called after the processes started, so global_rank is this process's.
        batches = _RoundRobinBatches(
            len(self.dataset), self.batch_size, self.trainer.global_rank, self.trainer.world_size
        )
        return DataLoader(
            self.dataset,
            batch_sampler=batches,
            collate_fn=collate_clips,
            num_workers=self.num_workers,
            persistent_workers=False,
        )

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        frames, mask, clips = flatten_clips(batch["frames"], batch["mask"].bool())
        features = self.network.extract_features(frames, mask)  # [B * K, T, D]
        features = features.unflatten(0, (-1, clips or 1))  # [B * K, T, D] -> [B, K, T, D]
        return {"paths": batch["paths"], "features": features.half().cpu(), "lengths": batch["lengths"].cpu()}


class _ShardWriter(L.Callback):
    """Each rank saves what it extracted, and the reasons of the videos it skipped or kept damaged; rank 0 later
    assembles the shards in dataset order."""

    def __init__(self, shard_path: Path) -> None:
        self.shard_path = shard_path
        self.rows: dict[str, tuple[np.ndarray, int]] = {}
        self.reasons: dict[str, str] = {}
        self.damaged: set[str] = set()

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        for path, features, length in zip(outputs["paths"], outputs["features"], outputs["lengths"], strict=True):
            self.rows[path] = (features.numpy(), int(length))
        self.reasons.update(batch.get("skipped", []))
        self.reasons.update(batch.get("damaged", []))
        self.damaged.update(path for path, _ in batch.get("damaged", []))

    def on_predict_end(self, trainer, pl_module) -> None:
        shard = {"rows": self.rows, "reasons": self.reasons, "damaged": sorted(self.damaged)}
        torch.save(shard, self.shard_path.with_name(f"{self.shard_path.name}.{trainer.global_rank}"))


def _extraction_trainer(trainer: L.Trainer, callback: L.Callback) -> L.Trainer:
    """A Trainer on the same devices, processes and precision as ``trainer``, without its callbacks/loggers."""
    distributed = trainer.world_size > 1
    return L.Trainer(
        # A string, not the Accelerator object: Lightning picks the autocast device from it ("cpu" -> CPU autocast).
        accelerator=trainer.strategy.root_device.type,
        devices=trainer.num_devices,
        num_nodes=trainer.num_nodes,
        strategy="ddp" if distributed else "auto",
        precision=trainer.precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=trainer.progress_bar_callback is not None,
        callbacks=[callback],
        inference_mode=True,
        use_distributed_sampler=False,  # the extractor deals batches to ranks itself
    )


def build_feature_cache(
    network: VideoNetwork,
    datasets: dict[str, VideoDataset],
    root: str | Path,
    trainer: L.Trainer,
    batch_size: int = 8,
    num_workers: int = 0,
) -> Path:
    """Reuse or create the cache for ``datasets`` under ``root``; returns the cache folder.

    ``trainer`` supplies devices, DDP world size and precision: under DDP every rank extracts its share and
    rank 0 assembles a cache identical to a single-process one (same rows, same order).
    """
    if network.freeze != "frozen":
        raise ValueError("a feature cache needs a frozen backbone (model.freeze: frozen); fine-tuning changes features")
    root = Path(root)
    folder = root / cache_fingerprint(network, datasets)
    if is_complete(folder):
        return folder
    root.mkdir(parents=True, exist_ok=True)
    # Shards go to a folder every rank agrees on: its name is the fingerprint, not a random temp name.
    shards = root / f".{folder.name}.shards"
    shards.mkdir(exist_ok=True)
    skipped: dict[str, list[str]] = {}
    damaged: dict[str, list[str]] = {}
    reasons: dict[str, str] = {}
    for split, dataset in sorted(datasets.items()):
        extractor = _Extractor(network, dataset, batch_size, num_workers)
        _extraction_trainer(trainer, _ShardWriter(shards / split)).predict(extractor, return_predictions=False)
    distributed = trainer.world_size > 1 and torch.distributed.is_initialized()
    if distributed:
        torch.distributed.barrier()  # every rank's shards are on disk before rank 0 reads them
    if trainer.is_global_zero:
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
        for split, dataset in sorted(datasets.items()):
            rows: dict[str, tuple[np.ndarray, int]] = {}
            damaged_here: set[str] = set()
            for shard in sorted(shards.glob(f"{split}.*")):
                part = torch.load(shard, weights_only=False)
                rows.update(part["rows"])
                reasons.update(part["reasons"])
                damaged_here.update(part["damaged"])
            skipped[split] = write_split(staging / split, dataset, rows)
            damaged[split] = [path for path, _ in dataset.items if path in damaged_here and path in rows]
        # Skipped videos are left out of the cache; damaged ones (on_error="warn") are cached with their clean
        # frames. "reasons" says why, for both.
        listed = {path for paths in (*skipped.values(), *damaged.values()) for path in paths}
        summary = {
            "skipped": skipped,
            "damaged": damaged,
            "reasons": {path: reason for path, reason in sorted(reasons.items()) if path in listed},
            "format": CACHE_FORMAT,
        }
        (staging / "complete.json").write_text(json.dumps(summary, indent=2))
        if not is_complete(folder):
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(staging, folder)
        shutil.rmtree(shards, ignore_errors=True)
    if distributed:
        torch.distributed.barrier()
    if not is_complete(folder):
        raise RuntimeError(f"feature cache {folder} was not completed")
    return folder


def prepare_feature_cache(data: VideoDataModule, network: VideoNetwork, trainer: L.Trainer) -> Path:
    """Reuse or extract the cache of ``data``'s labelled splits (``data.feature_cache``), then make ``data`` serve
    fit / validate / test from it. Returns the cache folder."""
    if not data.hparams.feature_cache:
        raise ValueError("a feature cache needs data.feature_cache (the cache's root folder)")
    folder = build_feature_cache(
        network,
        data.cache_datasets(),
        data.hparams.feature_cache,
        trainer,
        batch_size=data.hparams.batch_size,
        num_workers=data.hparams.num_workers,
    )
    data.use_feature_cache(folder)
    return folder
