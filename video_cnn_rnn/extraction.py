"""Feature extraction: run a network's frozen backbone over videos once, into the feature store.

The Keras examples extract features once and train on arrays; this makes that path safe and shared. Features are
stored per video (``video_cnn_rnn.data.feature_cache``), keyed by the file's identity and everything that changes
them (backbone name and weights, precision, per-frame feature shape, every frame setting, format version): any
manifest, fold or recipe that needs a video's features again reads them, so a 5-fold cross-validation extracts each
video once, and adding videos extracts only the new ones. Each entry is written atomically as soon as its batch
is computed; an interrupted extraction keeps what it finished. This module sits above the data and model layers.
"""

import copy
import hashlib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from video_cnn_rnn.data.collate import collate_clips, flatten_clips
from video_cnn_rnn.data.datamodule import VideoDataModule
from video_cnn_rnn.data.dataset import VideoDataset
from video_cnn_rnn.data.feature_cache import (
    STORE_FORMAT,
    entry_path,
    entry_problem,
    frame_settings,
    read_entry_meta,
    video_identity,
    write_entry,
    write_view,
)
from video_cnn_rnn.models.network import VideoNetwork


def _weights_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _frame_feature_shape(network: VideoNetwork, img_size: int) -> list[int]:
    """The per-frame feature shape ``network.extract_features`` gives (``[D]``, or ``[C, h, w]`` for feature maps),
    from one black frame; modules are put back in the mode they were in (BatchNorm statistics must not move)."""
    modes = {module: module.training for module in network.modules()}
    network.eval()
    try:
        with torch.no_grad():
            frame = torch.zeros(1, 1, 3, img_size, img_size, dtype=torch.uint8)
            features = network.extract_features(frame, torch.ones(1, 1, dtype=torch.bool))  # [1, 1, *frame]
    finally:
        for module, training in modes.items():
            module.training = training
    return list(features.shape[2:])


def recipe_key(network: VideoNetwork, dataset: VideoDataset, precision: str, weights: str) -> dict[str, Any]:
    """Everything but the video that determines a stored entry's features."""
    return {
        "format": STORE_FORMAT,
        "backbone": network.backbone_name,
        "weights": weights,
        "precision": str(precision),
        "frame_features": _frame_feature_shape(network, dataset.img_size),
        "frames": frame_settings(getattr(dataset, "clips", dataset)),  # shards: their VideoDataset's settings
    }


def _entries(
    store: Path, recipe: dict[str, Any], shard_id: str | None = None
) -> Callable[[str], tuple[Path, dict[str, Any]]]:
    """path -> (entry file, full key) of one recipe. Items of LitData shards are known by the id of the shards'
    write and their source path (the source file need not exist here)."""

    def locate(path: str) -> tuple[Path, dict[str, Any]]:
        video = {"shards": shard_id, "path": path} if shard_id else video_identity(path)
        key = {"recipe": recipe, "video": video}
        return entry_path(store, key), key

    return locate


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
    to ranks round-robin: a clip is always computed in the same batch, so a DDP store is bit-identical to a
    single-process one (CPU and GPU kernels may round differently for different batch compositions).
    """

    def __init__(self, network: VideoNetwork, dataset: VideoDataset, batch_size: int, num_workers: int) -> None:
        super().__init__()
        self.network = network
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers

    def predict_dataloader(self) -> DataLoader:
        # Called after the processes started, so global_rank is this process's. Every rank extracts from rank 0's
        # list of missing videos, so the ranks' shares are disjoint and cover it even if another run wrote
        # entries in between.
        dataset = copy.copy(self.dataset)
        dataset.items = self.trainer.strategy.broadcast(self.dataset.items, src=0)
        batches = _RoundRobinBatches(len(dataset), self.batch_size, self.trainer.global_rank, self.trainer.world_size)
        return DataLoader(
            dataset,
            batch_sampler=batches,
            collate_fn=collate_clips,
            num_workers=self.num_workers,
            persistent_workers=False,
        )

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        frames, mask, clips = flatten_clips(batch["frames"], batch["mask"].bool())
        features = self.network.extract_features(frames, mask)  # [B * K, T, *frame]
        features = features.unflatten(0, (-1, clips or 1))  # [B * K, T, *frame] -> [B, K, T, *frame]
        return {"paths": batch["paths"], "features": features.half().cpu(), "lengths": batch["lengths"].cpu()}


class _EntryWriter(L.Callback):
    """Each rank writes the entries of the videos it extracted as soon as their batch is done, and an entry
    with the reason for each video it could not decode."""

    def __init__(self, locate: Callable[[str], tuple[Path, dict[str, Any]]]) -> None:
        self.locate = locate

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        damaged, crop_fallback = dict(batch.get("damaged", [])), dict(batch.get("crop_fallback", []))
        for path, features, length in zip(outputs["paths"], outputs["features"], outputs["lengths"], strict=True):
            clips = features[:, : int(length)].numpy()  # [K, L, *frame]
            write_entry(*self.locate(path), clips, damaged.get(path), crop_fallback.get(path))
        for path, reason in batch.get("skipped", []):
            write_entry(*self.locate(path), None, reason)


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


def _barrier(trainer: L.Trainer) -> None:
    if trainer.world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _usable(file: Path, key: dict[str, Any], path: str) -> bool:
    """Whether the store's entry of ``path`` can be read as it is: its meta is this key's and every clip member
    reads back intact (checked once per run, before anything trains); a damaged one is extracted again."""
    if read_entry_meta(file, key) is None:
        return False
    problem = entry_problem(file, key)
    if problem is not None:
        warnings.warn(f"feature store entry {file} of {path} is damaged ({problem}); extracting it again", stacklevel=3)
    return problem is None


def build_feature_cache(
    network: VideoNetwork,
    datasets: dict[str, VideoDataset],
    root: str | Path,
    trainer: L.Trainer,
    batch_size: int = 8,
    num_workers: int = 0,
) -> Path:
    """Extract the videos of ``datasets`` that the store under ``root`` lacks; returns the view of ``datasets``.

    ``trainer`` supplies devices, DDP world size and precision: under DDP every rank extracts its share of the
    missing videos, and every rank returns the same complete view, identical to a single-process one.
    """
    if network.freeze != "frozen":
        raise ValueError("a feature cache needs a frozen backbone (model.freeze: frozen); fine-tuning changes features")
    store = Path(root) / f"v{STORE_FORMAT}"
    weights = _weights_digest(network.backbone)
    _barrier(trainer)  # no rank is still writing while the others look
    locators = {
        split: _entries(store, recipe_key(network, d, trainer.precision, weights), getattr(d, "shard_id", None))
        for split, d in datasets.items()
    }
    planned: set[Path] = set()
    for split, dataset in sorted(datasets.items()):
        locate = locators[split]
        missing = []
        for path, label in dataset.items:
            file, key = locate(path)
            if file not in planned and not _usable(file, key, path):
                missing.append((path, label))
                planned.add(file)
        if missing:
            extractor = _Extractor(network, copy.copy(dataset), batch_size, num_workers)
            extractor.dataset.items = missing
            _extraction_trainer(trainer, _EntryWriter(locate)).predict(extractor, return_predictions=False)
    _barrier(trainer)  # every rank's entries are on disk
    view: dict[str, Any] = {"splits": {}, "skipped": {}, "damaged": {}, "reasons": {}, "crop_fallback": {}}
    for split, dataset in sorted(datasets.items()):
        rows, skipped, damaged = [], [], []
        for path, label in dataset.items:
            file, key = locators[split](path)
            meta = read_entry_meta(file, key)
            if meta is None:
                raise RuntimeError(f"feature store {store}: the entry of {path} ({file}) was not completed")
            if meta["status"] == "skipped":
                skipped.append(path)
            else:
                rows.append([path, -1 if label is None else label, str(file.relative_to(store))])
                if meta["status"] == "damaged":
                    damaged.append(path)
            if meta["reason"]:
                view["reasons"][path] = meta["reason"]
            if meta.get("crop_fallback"):  # entries written before it was recorded have none
                view["crop_fallback"][path] = meta["crop_fallback"]
        if not rows:
            raise RuntimeError(f"feature store: no video of {split} could be decoded")
        view["splits"][split], view["skipped"][split], view["damaged"][split] = rows, skipped, damaged
    if trainer.is_global_zero:
        write_view(store, view)
    _barrier(trainer)
    file = write_view(store, view)  # every rank names the same file, which rank 0 has written
    if trainer.is_global_zero:
        print(f"feature store {store}: extracted {len(planned)} of {sum(len(d) for d in datasets.values())} videos")
    return file


def prepare_feature_cache(data: VideoDataModule, network: VideoNetwork, trainer: L.Trainer) -> Path:
    """Reuse or extract the features of ``data``'s labelled splits in the store under ``data.feature_cache``, then
    make ``data`` serve fit / validate / test from them. Returns the view file."""
    if not data.hparams.feature_cache:
        raise ValueError("a feature cache needs data.feature_cache (the cache's root folder)")
    view = build_feature_cache(
        network,
        data.cache_datasets(),
        data.hparams.feature_cache,
        trainer,
        batch_size=data.hparams.batch_size,
        num_workers=data.hparams.num_workers,
    )
    data.use_feature_cache(view)
    return view
