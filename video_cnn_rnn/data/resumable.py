"""A training DataLoader that Lightning can checkpoint and resume mid-epoch, exactly.

Lightning 2.x saves ``state_dict()`` of every *stateful* train DataLoader into a checkpoint (``FitLoop``'s
``combined_loader`` state) and calls ``load_state_dict()`` before the resumed run iterates it again; a plain
``DataLoader`` has no state, so a resumed run restarts the epoch's data from the beginning and sees some videos
twice and others never. Three pieces make a resumed run continue as if it had never stopped:

- ``ResumableSampler``: a ``DistributedSampler`` (so Lightning keeps it under DDP instead of injecting its own)
  whose shuffle is seeded by ``seed + epoch`` and which can skip the first samples of the current epoch.
  ``BalancedSampler`` is one whose epoch is a class-balanced draw (``data.balance: sampler``).
- ``SeededItems``: wraps the dataset so that each item's random choices (``segment`` frame sampling uses the
  global ``random`` module) are seeded by ``(seed, epoch, index)``; the same item therefore gets the same
  frames whichever worker loads it, in whichever order, before or after a restart.
- ``ResumableDataLoader``: counts the batches it has handed out this epoch and checkpoints that count, the
  sampler's epoch and the main process's RNG states (dropout etc.); on resume it skips the consumed batches and
  restores the RNG states just before the first batch after the restart.

The count is the number of batches *yielded* by the loader. Lightning's training fetcher does not prefetch
when the loader has a length (``_PrefetchDataFetcher`` only prefetches for unsized iterables), so at the time a
checkpoint is saved in ``on_train_batch_end`` the count equals the number of batches trained on.
"""

from __future__ import annotations

import itertools
import math
import random
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler


def rng_states() -> dict[str, Any]:
    """The main process's RNG states, as checkpoint-safe types (``torch.load(weights_only=True)`` loads them)."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    version, internal, gauss = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_kind, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "python": [version, list(internal), gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


@contextmanager
def seeded_random(key: str) -> Iterator[None]:
    """Python's ``random`` seeded by ``key`` inside the block, the caller's state restored after it (the main
    process's stream, with ``num_workers=0``, is left untouched). A str seed hashes with SHA-512: the same key
    draws the same numbers in every process, worker and run."""
    saved = random.getstate()
    random.seed(key)
    try:
        yield
    finally:
        random.setstate(saved)


def restore_rng_states(states: dict[str, Any]) -> None:
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "numpy" in states:
        kind, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "python" in states:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that shuffles by ``seed + epoch`` (as torch's does: neighbouring seeds see the same
    orders one epoch apart) and can start part-way into an epoch.

    Without DDP use ``num_replicas=1, rank=0`` (no process group is needed). ``skip(n)`` drops the first ``n``
    samples of this rank's share of the *next* iteration only; later epochs start from the beginning again.
    With ``yield_epoch=True`` it yields ``(epoch, index)`` pairs for ``SeededItems`` instead of plain indices.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        yield_epoch: bool = False,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.yield_epoch = yield_epoch
        self._skip = 0

    def skip(self, num_samples: int) -> None:
        self._skip = max(int(num_samples), 0)

    def __iter__(self) -> Iterator[Any]:
        start, self._skip = self._skip, 0  # consumed here, once: the skip applies to this iteration only
        epoch = self.epoch
        indices = itertools.islice(self.epoch_indices(), start, None)
        if self.yield_epoch:
            return ((epoch, index) for index in indices)
        return indices

    def epoch_indices(self) -> Iterator[int]:
        """This rank's share of the current epoch's order, from its start."""
        return super().__iter__()


class BalancedSampler(ResumableSampler):
    """A ``ResumableSampler`` whose epoch is a draw of as many clips as the dataset has, with replacement, each with
    probability inversely proportional to its class's frequency (``labels``: each index's class): every class is
    drawn about equally often, a rare class's clips several times an epoch (``data.balance: sampler``).

    The draw is seeded by ``seed + epoch`` only, so every DDP rank makes the same one and takes its own positions
    of it (``rank::num_replicas``): the ranks' shares are disjoint parts of one draw. Skipping into the draw resumes
    an epoch exactly, as for ``ResumableSampler``.
    """

    def __init__(self, dataset: Dataset, labels: Sequence[int], **kwargs: Any) -> None:
        super().__init__(dataset, shuffle=True, **kwargs)
        if len(labels) != len(dataset):  # type: ignore[arg-type]
            raise ValueError(f"BalancedSampler: {len(labels)} labels for {len(dataset)} items")  # type: ignore[arg-type]
        counts = Counter(labels)
        self.weights = torch.tensor([1.0 / counts[label] for label in labels], dtype=torch.float64)

    def epoch_indices(self) -> Iterator[int]:
        if self.total_size == 0 or len(self.weights) == 0:
            return iter([])
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, self.total_size, replacement=True, generator=generator)
        return iter(drawn[self.rank : self.total_size : self.num_replicas].tolist())


class SeededItems(Dataset):
    """A dataset whose items are drawn with the global ``random`` module seeded by ``(seed, epoch, index)``.

    Indexed with the ``(epoch, index)`` pairs of a ``ResumableSampler(yield_epoch=True)``; a plain index is
    passed through unseeded. The caller's ``random`` state is restored afterwards, so the main process's
    random stream (``num_workers=0``) is left untouched.
    """

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        epoch, index = key
        with seeded_random(f"{self.seed}:{epoch}:{index}"):
            return self.dataset[index]

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "seed") or name.startswith("__"):
            raise AttributeError(name)  # not set yet (e.g. while unpickling in a worker)
        return getattr(self.dataset, name)


class _CountingIterator:
    """Wraps one epoch's DataLoader iterator: counts batches and restores RNG states before the first one."""

    def __init__(self, loader: ResumableDataLoader, iterator: Iterator[Any]) -> None:
        self.loader, self.iterator = loader, iterator

    def __iter__(self) -> _CountingIterator:
        return self

    def __next__(self) -> Any:
        loader = self.loader
        if loader._pending_rng is not None:
            # Exactly where the interrupted run was when the checkpoint was written: after the consumed batches,
            # before the next one. Restoring here (not in load_state_dict) also undoes whatever Lightning drew
            # between loading the checkpoint and this batch (sanity check, iterator creation, ...).
            restore_rng_states(loader._pending_rng)
            loader._pending_rng = None
        batch = next(self.iterator)
        loader._batches_consumed += 1
        return batch


class ResumableDataLoader(DataLoader):
    """Training DataLoader with ``state_dict()`` / ``load_state_dict()`` for exact mid-epoch resumption.

    Takes the usual DataLoader keyword arguments with a ``ResumableSampler`` as ``sampler`` (no ``shuffle`` or
    ``batch_sampler``). The dataset is wrapped in ``SeededItems`` with the sampler's seed. Should Lightning
    re-create the loader with a sampler of its own (``overfit_batches``), it is an ordinary DataLoader whose
    state is empty.

    The state is ``{"epoch", "batches_consumed", "batch_size", "num_replicas", "rng"}``. A run resumes
    mid-epoch only with the same batch size and number of processes (otherwise it warns and takes the rest of
    that epoch's batches from the start of its order). Under DDP only rank 0's checkpoint is written, so every
    rank resumes with rank 0's batch count (the same on all ranks) and RNG states (the same on all ranks when
    they are seeded alike, as ``seed_everything`` does).
    """

    def __init__(self, dataset: Dataset, *args: Any, sampler: Any = None, **kwargs: Any) -> None:
        self._resumable = isinstance(sampler, ResumableSampler)
        if self._resumable:
            if args or kwargs.get("shuffle") or kwargs.get("batch_sampler") is not None:
                raise ValueError("ResumableDataLoader takes keyword arguments only, and no shuffle / batch_sampler")
            kwargs.pop("shuffle", None)
            if not isinstance(dataset, SeededItems):
                dataset = SeededItems(dataset, sampler.seed)
            sampler.yield_epoch = True
            # A private generator: creating an iterator (its workers' base seed) must not draw from the global
            # torch RNG, or a resumed run would be one draw out of step with an uninterrupted one.
            if kwargs.get("generator") is None:
                kwargs["generator"] = torch.Generator().manual_seed(sampler.seed)
        super().__init__(dataset, *args, sampler=sampler, **kwargs)
        self._batches_consumed = 0  # batches handed out by the current epoch's iterator
        self._counted_epoch: int | None = None  # the epoch that iterator belongs to
        self._resume_batches = 0  # batches the next iterator starts after (set by load_state_dict)
        self._pending_rng: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        iterator = super().__iter__()
        if not self._resumable:
            return iterator
        self._batches_consumed, self._resume_batches = self._resume_batches, 0
        self._counted_epoch = int(self.sampler.epoch)
        return _CountingIterator(self, iterator)

    def state_dict(self) -> dict[str, Any]:
        if not self._resumable:
            return {}
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        # Between set_epoch(e + 1) and epoch e + 1's iterator, the count is still epoch e's: none of e + 1 is consumed.
        consumed = self._batches_consumed if self._counted_epoch == sampler.epoch else 0
        return {
            "epoch": int(sampler.epoch),
            "batches_consumed": int(consumed),
            "batch_size": self.batch_size,
            "num_replicas": sampler.num_replicas,
            "rng": rng_states(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not self._resumable or not state:
            return
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        epoch, consumed = int(state["epoch"]), int(state["batches_consumed"])
        saved = (state.get("batch_size", self.batch_size), state.get("num_replicas", sampler.num_replicas))
        if consumed >= _batches_per_epoch(len(self.dataset), *saved, sampler.drop_last):  # type: ignore[arg-type]
            epoch, consumed = (
                epoch + 1,
                0,
            )  # saved after the epoch's last batch: the next epoch starts from the beginning
        if consumed and saved != (self.batch_size, sampler.num_replicas):
            warnings.warn(
                f"the checkpoint was written with batch_size {saved[0]} on {saved[1]} process(es), this run uses"
                f" {self.batch_size} on {sampler.num_replicas}: the rest of epoch {epoch} takes its batches from the"
                " start of the epoch's order, not from where the interrupted run stopped",
                stacklevel=2,
            )
            consumed = 0
        # Lightning calls this before it creates the resumed iterator, and calls set_epoch only afterwards
        # (worker processes may already be reading by then), so the epoch is set here too.
        sampler.set_epoch(epoch)
        sampler.skip(consumed * (self.batch_size or 1))
        self._resume_batches = consumed
        self._pending_rng = state.get("rng")


def _batches_per_epoch(num_samples: int, batch_size: int | None, num_replicas: int, drop_last: bool) -> int:
    """Batches per epoch on each rank of a run with this batch size and process count (the sampler pads or, with
    ``drop_last``, trims the dataset to a multiple of ``num_replicas``; the loader keeps a last partial batch)."""
    per_rank = num_samples // num_replicas if drop_last else math.ceil(num_samples / num_replicas)
    return math.ceil(per_rank / (batch_size or 1))
