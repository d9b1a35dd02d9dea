"""ResumableSampler, SeededItems and ResumableDataLoader: shuffles by (seed, epoch), items seeded per
(seed, epoch, index), DDP shards, and mid-epoch resumption with the remaining batches and the same random draws.

The end-to-end check (a real fit killed with SIGKILL and resumed from its checkpoint) is
``tests/test_distributed.py::test_exact_resume_after_sigkill``; these tests drive the classes directly, with a
dataset whose items are ``(index, a draw from the global random module)``.
"""

import io
import pickle
import random
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from video_cnn_rnn.data.resumable import ResumableDataLoader, ResumableSampler, SeededItems


@pytest.fixture(autouse=True)
def _restore_global_rngs():
    """These tests seed and draw from the global generators on purpose; later tests get them back untouched."""
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()
    yield
    torch.set_rng_state(states[0])
    random.setstate(states[1])
    np.random.set_state(states[2])


class DrawingItems(Dataset):
    """Item ``i`` is ``(i, random.random())``: which index was loaded, and what its random choice was."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[int, float]:
        return index, random.random()


def _sampler(size: int = 10, seed: int = 3, **kwargs) -> ResumableSampler:
    return ResumableSampler(DrawingItems(size), seed=seed, **kwargs)


def _loader(size: int = 11, batch_size: int = 2, seed: int = 3, num_replicas: int = 1, rank: int = 0, **kwargs):
    dataset = DrawingItems(size)
    sampler = ResumableSampler(dataset, num_replicas=num_replicas, rank=rank, seed=seed)
    return ResumableDataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=list, **kwargs)


def _seed_globals(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def _training_step_draws() -> tuple[float, float, float]:
    """What a training step draws from the main process's generators (dropout, augmentation, ...)."""
    return torch.rand(1).item(), random.random(), float(np.random.rand())


def _epoch(loader, epoch: int, save_after: int | None = None) -> tuple[list, dict | None]:
    """One epoch as Lightning runs it: per batch, a training step's draws; the checkpointed loader state
    (written in ``on_train_batch_end``, after the step) after ``save_after`` batches."""
    loader.sampler.set_epoch(epoch)
    steps, state = [], None
    for batch in loader:
        steps.append((batch, _training_step_draws()))
        if len(steps) == save_after:
            state = _checkpoint(loader.state_dict())
    return steps, state


def _checkpoint(state: dict) -> dict:
    """The state as a resumed run reads it back: through ``torch.save`` and ``torch.load(weights_only=True)``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _resume(loader, state: dict, epoch: int | None = None) -> list:
    """The resumed run's first epoch, in Lightning's order: ``load_state_dict``, create the iterator, then
    ``set_epoch`` (the epoch Lightning's loop resumes in; by default the checkpoint's) and some unrelated draws
    (sanity check, ...) before the first batch."""
    loader.load_state_dict(state)
    iterator = iter(loader)
    loader.sampler.set_epoch(state["epoch"] if epoch is None else epoch)
    _training_step_draws()
    return [(batch, _training_step_draws()) for batch in iterator]


def _indices(steps: list) -> list[int]:
    return [index for batch, _ in steps for index, _ in batch]


# ---------------------------------------------------------------- ResumableSampler


def test_sampler_order_depends_only_on_seed_and_epoch():
    first, second = _sampler(seed=3), _sampler(seed=3)
    orders = {}
    for epoch in range(3):
        first.set_epoch(epoch)
        second.set_epoch(epoch)
        torch.manual_seed(epoch)  # the global RNG plays no part
        orders[epoch] = list(first)
        torch.manual_seed(100 + epoch)
        assert list(second) == orders[epoch] == list(first)  # and iterating again repeats it
        assert sorted(orders[epoch]) == list(range(10))
    assert len({tuple(order) for order in orders.values()}) == 3  # a new order every epoch
    other_seed = _sampler(seed=4)
    assert list(other_seed) != orders[0]


def test_shards_across_ranks_are_disjoint_cover_the_dataset_and_split_one_shared_order():
    full = list(_sampler(size=12, num_replicas=1, rank=0))
    shares = [list(_sampler(size=12, num_replicas=3, rank=rank)) for rank in range(3)]
    assert [len(share) for share in shares] == [4, 4, 4]
    assert sorted(index for share in shares for index in share) == list(range(12))  # disjoint and covering
    assert shares == [full[rank::3] for rank in range(3)]  # every rank computes the same permutation


def test_uneven_dataset_is_padded_so_every_rank_has_as_many_samples_or_trimmed_with_drop_last():
    shares = [list(_sampler(size=7, num_replicas=2, rank=rank)) for rank in range(2)]
    assert [len(share) for share in shares] == [4, 4]
    assert set(shares[0]) | set(shares[1]) == set(range(7))
    assert len(shares[0] + shares[1]) - len(set(shares[0] + shares[1])) == 1  # one video repeated as padding
    trimmed = [list(_sampler(size=7, num_replicas=2, rank=rank, drop_last=True)) for rank in range(2)]
    assert [len(share) for share in trimmed] == [3, 3] and not set(trimmed[0]) & set(trimmed[1])


def test_skip_drops_the_first_samples_of_the_next_iteration_only():
    sampler = _sampler()
    full = list(sampler)
    sampler.skip(3)
    assert list(sampler) == full[3:]
    assert list(sampler) == full  # the skip was used up
    sampler.skip(-2)
    assert list(sampler) == full
    sampler.skip(100)
    assert list(sampler) == []


def test_yield_epoch_pairs_carry_the_epoch_the_iteration_started_in():
    sampler = _sampler(yield_epoch=True)
    sampler.set_epoch(2)
    iterator = iter(sampler)
    sampler.set_epoch(3)  # too late for the running iteration
    pairs = list(iterator)
    sampler.yield_epoch = False
    sampler.set_epoch(2)
    assert pairs == [(2, index) for index in sampler]


# ---------------------------------------------------------------- SeededItems


def test_seeded_items_draw_by_seed_epoch_and_index_whatever_the_global_state():
    items = SeededItems(DrawingItems(10), seed=5)
    random.seed(1)
    draw = items[(0, 4)]
    random.seed(2)
    assert items[(0, 4)] == draw and draw[0] == 4
    assert items[(1, 4)][1] != draw[1]  # another epoch
    assert items[(0, 5)][1] != draw[1]  # another video
    assert SeededItems(DrawingItems(10), seed=6)[(0, 4)][1] != draw[1]  # another seed


def test_seeded_items_leave_the_callers_random_stream_untouched():
    items = SeededItems(DrawingItems(10), seed=5)
    random.seed(7)
    expected = [random.random(), random.random()]
    random.seed(7)
    first = random.random()
    items[(0, 3)]
    assert [first, random.random()] == expected


def test_seeded_items_pass_plain_indices_through_unseeded():
    items = SeededItems(DrawingItems(10), seed=5)
    random.seed(9)
    index, draw = items[4]
    random.seed(9)
    assert index == 4 and draw == random.random()  # the caller's stream, not a seeded one


def test_seeded_items_forward_attributes_and_survive_pickling_for_workers():
    items = SeededItems(DrawingItems(6), seed=2)
    assert len(items) == 6 and items.size == 6
    with pytest.raises(AttributeError):
        items.no_such_attribute  # noqa: B018
    copy = pickle.loads(pickle.dumps(items))
    assert copy.seed == 2 and copy.size == 6 and copy[(1, 3)] == items[(1, 3)]


# ---------------------------------------------------------------- ResumableDataLoader


def test_loader_wraps_the_dataset_in_seeded_items_with_the_samplers_seed():
    loader = _loader(seed=8)
    assert isinstance(loader.dataset, SeededItems) and loader.dataset.seed == 8 and loader.dataset.size == 11
    assert loader.sampler.yield_epoch  # turned on by the loader
    generator = torch.Generator().manual_seed(1)
    dataset = DrawingItems(4)
    given = ResumableDataLoader(dataset, sampler=ResumableSampler(dataset), generator=generator)
    assert given.generator is generator


def test_loader_rejects_shuffle_batch_sampler_and_positional_arguments():
    dataset = DrawingItems(4)
    with pytest.raises(ValueError, match="keyword arguments only"):
        ResumableDataLoader(dataset, 2, sampler=ResumableSampler(dataset))
    with pytest.raises(ValueError, match="shuffle"):
        ResumableDataLoader(dataset, shuffle=True, sampler=ResumableSampler(dataset))
    with pytest.raises(ValueError, match="batch_sampler"):
        ResumableDataLoader(dataset, batch_sampler=[[0, 1], [2, 3]], sampler=ResumableSampler(dataset))


def test_loader_with_another_sampler_is_an_ordinary_stateless_dataloader():
    dataset = DrawingItems(5)
    loader = ResumableDataLoader(dataset, batch_size=2, sampler=SequentialSampler(dataset), collate_fn=list)
    assert loader.dataset is dataset and loader.state_dict() == {}
    loader.load_state_dict({"epoch": 3, "batches_consumed": 1, "batch_size": 2, "num_replicas": 1})
    assert [index for batch in loader for index, _ in batch] == [0, 1, 2, 3, 4]


def test_loader_yields_every_index_once_per_epoch_in_the_samplers_order():
    loader = _loader(size=11, batch_size=2)
    steps, _ = _epoch(loader, epoch=1)
    assert [len(batch) for batch, _ in steps] == [2, 2, 2, 2, 2, 1] and len(loader) == 6
    sampler = _sampler(size=11)
    sampler.set_epoch(1)
    assert _indices(steps) == list(sampler)


def test_item_draws_depend_on_seed_epoch_and_index_not_on_batching():
    by_two, _ = _epoch(_loader(batch_size=2), epoch=1)
    by_three, _ = _epoch(_loader(batch_size=3), epoch=1)
    draws = {index: draw for batch, _ in by_two for index, draw in batch}
    assert draws == {index: draw for batch, _ in by_three for index, draw in batch}
    reference = SeededItems(DrawingItems(11), seed=3)
    assert draws == {index: reference[(1, index)][1] for index in range(11)}
    next_epoch, _ = _epoch(_loader(batch_size=2), epoch=2)
    assert all(draws[index] != draw for batch, _ in next_epoch for index, draw in batch)


def test_loader_iteration_does_not_draw_from_the_global_torch_rng():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    list(_loader())
    assert torch.equal(torch.get_rng_state(), before)
    dataset = DrawingItems(4)
    list(DataLoader(dataset, batch_size=2, collate_fn=list))  # a plain DataLoader does (its workers' base seed)
    assert not torch.equal(torch.get_rng_state(), before)


def test_state_counts_the_batches_handed_out_this_epoch():
    loader = _loader(size=11, batch_size=2)
    assert loader.state_dict()["batches_consumed"] == 0
    loader.sampler.set_epoch(4)
    iterator = iter(loader)
    next(iterator), next(iterator)
    state = loader.state_dict()
    assert {key: state[key] for key in ("epoch", "batches_consumed", "batch_size", "num_replicas")} == {
        "epoch": 4,
        "batches_consumed": 2,
        "batch_size": 2,
        "num_replicas": 1,
    }
    assert set(state["rng"]) >= {"torch", "numpy", "python"}
    list(iterator)
    assert loader.state_dict()["batches_consumed"] == 6
    iter(loader)
    assert loader.state_dict()["batches_consumed"] == 0  # a new epoch's iterator starts counting again


@pytest.mark.parametrize("save_after", [1, 4])
def test_mid_epoch_resume_gives_the_remaining_batches_and_the_same_random_draws(save_after):
    _seed_globals(0)
    uninterrupted = _loader()
    steps, state = _epoch(uninterrupted, epoch=1, save_after=save_after)
    next_epoch, _ = _epoch(uninterrupted, epoch=2)

    _seed_globals(123)  # a new process, seeded differently
    resumed = _loader()
    rest = _resume(resumed, state)
    assert rest == steps[save_after:]  # the same videos, frames drawn alike, and the same training-step draws
    assert sorted(_indices(steps[:save_after]) + _indices(rest)) == list(range(11))
    assert _epoch(resumed, epoch=2)[0] == next_epoch  # the skip applied to the interrupted epoch only


def test_a_resumed_epoch_interrupted_again_resumes_again_exactly():
    _seed_globals(0)
    steps, first_state = _epoch(_loader(), epoch=1, save_after=2)
    _seed_globals(123)
    once = _loader()
    once.load_state_dict(first_state)
    iterator = iter(once)
    next(iterator), _training_step_draws()
    second_state = _checkpoint(once.state_dict())
    assert second_state["batches_consumed"] == 3  # counted from the start of the epoch, not of the resumed run
    _seed_globals(456)
    assert _resume(_loader(), second_state) == steps[3:]


def test_resume_with_two_workers_matches_an_uninterrupted_run_in_the_main_process():
    _seed_globals(0)
    steps, state = _epoch(_loader(), epoch=1, save_after=2)
    _seed_globals(123)
    rest = _resume(_loader(num_workers=2), state)
    assert rest == steps[2:]


def test_resume_under_ddp_gives_each_rank_the_rest_of_its_own_shard():
    consumed, remaining = [], []
    _seed_globals(0)
    _, rank_zero_state = _epoch(_loader(size=12, num_replicas=2, rank=0), epoch=3, save_after=2)
    for rank in range(2):
        _seed_globals(0)  # ranks seeded alike, as seed_everything does
        steps, _ = _epoch(_loader(size=12, num_replicas=2, rank=rank), epoch=3, save_after=2)
        _seed_globals(123)
        rest = _resume(_loader(size=12, num_replicas=2, rank=rank), rank_zero_state)  # only rank 0 checkpoints
        assert rest == steps[2:]
        consumed += _indices(steps[:2])
        remaining += _indices(rest)
    assert len(consumed) == 8 and sorted(consumed + remaining) == list(range(12))


def test_state_saved_after_the_last_batch_resumes_at_the_start_of_the_next_epoch():
    _seed_globals(0)
    uninterrupted = _loader()
    _, state = _epoch(uninterrupted, epoch=1, save_after=6)  # 11 items, batches of 2: 6 batches
    check = _loader()
    check.load_state_dict(state)
    assert check.sampler.epoch == 2 and check.state_dict()["batches_consumed"] == 0
    next_epoch, _ = _epoch(uninterrupted, epoch=2)
    _seed_globals(123)
    resumed = _loader()
    assert _resume(resumed, state, epoch=2) == next_epoch


@pytest.mark.parametrize(
    ("batch_size", "num_replicas", "remaining"), [(3, 1, list(range(11))), (2, 2, None)], ids=["batch", "ranks"]
)
def test_changed_batch_size_or_process_count_warns_and_takes_the_epochs_order_from_its_start(
    batch_size, num_replicas, remaining
):
    _, state = _epoch(_loader(), epoch=1, save_after=2)
    resumed = _loader(batch_size=batch_size, num_replicas=num_replicas)
    with pytest.warns(UserWarning, match="batch_size 2 on 1 process"):
        resumed.load_state_dict(state)
    assert resumed.sampler.epoch == 1
    expected = _sampler(size=11, num_replicas=num_replicas, rank=0)
    expected.set_epoch(1)
    assert [index for batch in resumed for index, _ in batch] == list(expected)
    assert remaining is None or sorted(expected) == remaining


def test_empty_and_fresh_states_leave_the_epoch_as_it_is():
    loader = _loader()
    loader.sampler.set_epoch(2)
    full = [index for batch in loader for index, _ in batch]
    loader.load_state_dict({})
    assert loader.sampler.epoch == 2 and [index for batch in loader for index, _ in batch] == full
    loader.load_state_dict({"epoch": 2, "batches_consumed": 0, "batch_size": 5, "num_replicas": 1})  # no warning
    assert loader.sampler.epoch == 2 and [index for batch in loader for index, _ in batch] == full


def test_empty_dataset_yields_no_batches_before_or_after_a_resume():
    loader = _loader(size=0)
    assert list(loader) == [] and len(loader) == 0
    state = loader.state_dict()
    assert state["batches_consumed"] == 0
    resumed = _loader(size=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resumed.load_state_dict(state)
    assert list(resumed) == []


def test_state_between_set_epoch_and_the_next_epochs_iterator_resumes_that_epoch_from_its_start():
    loader = _loader()
    _epoch(loader, epoch=0)
    loader.sampler.set_epoch(1)  # Lightning's on_advance_start, before on_train_epoch_start
    state = loader.state_dict()
    resumed = _loader()
    resumed.load_state_dict(state)
    assert resumed.sampler.epoch == 1


def test_state_saved_at_an_epoch_end_moves_on_to_the_next_epoch_even_with_another_batch_size():
    _, state = _epoch(_loader(batch_size=2), epoch=1, save_after=6)
    resumed = _loader(batch_size=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resumed.load_state_dict(state)
    assert resumed.sampler.epoch == 2
