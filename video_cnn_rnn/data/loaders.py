"""The data module's DataLoaders: the arguments they all share, the training sampler (shuffled, sharded across DDP
ranks, resumable mid-epoch: ``resumable.py``) and, under DDP, evaluation's (every video exactly once).
"""

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from video_cnn_rnn.data.collate import collate_clips
from video_cnn_rnn.data.resumable import BalancedSampler, ResumableDataLoader, ResumableSampler


def loader_settings(
    batch_size: int, num_workers: int, pin_memory: bool, persistent_workers: bool, seed: int
) -> dict[str, Any]:
    """DataLoader arguments every loader shares, the streaming training loader's included."""
    return dict(
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_clips,
        pin_memory=pin_memory and torch.cuda.is_available(),
        persistent_workers=persistent_workers and num_workers > 0,
        # Each loader (each new epoch's iterator) draws its workers' base seed from its own generator, never from
        # the global torch RNG: otherwise the moment an iterator is first created (it differs between a resumed
        # run and an uninterrupted one, e.g. the skipped sanity check; a resume restores the global RNG after the
        # iterator exists) would shift the dropout RNG of all later steps.
        generator=torch.Generator().manual_seed(seed),
    )


def video_loader(dataset: Dataset, sampler: Sampler | None, settings: dict[str, Any]) -> DataLoader:
    """A ResumableSampler comes with its stateful loader (checkpointed position and RNG, see resumable.py)."""
    loader_class = ResumableDataLoader if isinstance(sampler, ResumableSampler) else DataLoader
    return loader_class(dataset, sampler=sampler, **settings)


def training_sampler(
    dataset: Dataset, trainer: L.Trainer | None, seed: int, labels: list[int] | None = None
) -> ResumableSampler:
    """Shuffled by ``seed + epoch``, sharded across the trainer's DDP ranks, resumable mid-epoch; with ``labels`` (each
    index's class), a class-balanced draw (``BalancedSampler``)."""
    distributed = trainer is not None and trainer.world_size > 1
    shards = dict(num_replicas=trainer.world_size if distributed else 1, rank=trainer.global_rank if distributed else 0)
    if labels is not None:
        return BalancedSampler(dataset, labels, seed=seed, **shards)
    return ResumableSampler(dataset, shuffle=True, seed=seed, **shards)


def evaluation_sampler(dataset: Dataset, trainer: L.Trainer | None) -> Sampler | None:
    """Under DDP, every evaluation video exactly once: Lightning's default DistributedSampler pads the
    dataset by repeating videos, which would count them twice in test metrics and predictions."""
    if trainer is None or trainer.world_size <= 1:
        return None
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(
        dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
    )
