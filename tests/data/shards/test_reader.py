"""data.streaming: LitData shards through VideoDataModule: fair sharding across ranks, exact mid-epoch resume,
every evaluation item once, and the errors a bad shard folder or item gives."""

import pytest
import torch

pytest.importorskip("litdata")

from litdata.utilities.env import _DistributedEnv  # noqa: E402

from video_cnn_rnn.data.annotations import ManifestError  # noqa: E402
from video_cnn_rnn.data.datamodule import VideoDataModule  # noqa: E402


def _module(root, **kwargs) -> VideoDataModule:
    settings = dict(num_frames=4, img_size=32, sampling="segment", batch_size=2, num_workers=0, seed=3)
    return VideoDataModule(streaming=str(root), **{**settings, **kwargs})


def _batches(loader, count=None):
    """(paths, frames) of the next ``count`` batches (all when None), with a torch draw after each (dropout)."""
    seen = []
    for batch in loader:
        seen.append((tuple(batch["paths"]), batch["frames"].clone(), torch.rand(1)))
        if count is not None and len(seen) == count:
            break
    return seen


@pytest.mark.parametrize("num_workers, consumed", [(0, 2), (1, 2), (0, 6)])  # 6: the epoch's last batch
def test_resume_mid_epoch_continues_the_same_sequence(shard_root, num_workers, consumed):
    """Two epochs straight through, against two batches, a checkpoint (the data module's state), and a new data
    module restored from it: the same videos in the same order, the same frames, the same RNG draws after."""
    straight = _module(shard_root, num_workers=num_workers)
    straight.setup("fit")
    loader = straight.train_dataloader()
    torch.manual_seed(0)
    expected = _batches(loader) + _batches(loader)
    assert len(expected) == 12  # 12 training videos, 2 epochs, batch 2

    interrupted = _module(shard_root, num_workers=num_workers)
    interrupted.setup("fit")
    torch.manual_seed(0)
    seen = _batches(interrupted.train_dataloader(), count=consumed)
    state = interrupted.state_dict()
    assert state["streaming_loader"]["loader"]["num_samples_yielded"] == 2 * consumed

    resumed = _module(shard_root, num_workers=num_workers)
    resumed.load_state_dict(state)
    resumed.setup("fit")
    torch.manual_seed(123)  # whatever happens between loading and the first batch is undone
    loader = resumed.train_dataloader()
    seen += _batches(loader) + (_batches(loader) if consumed < 6 else [])
    assert [paths for paths, _, _ in seen] == [paths for paths, _, _ in expected]
    for (_, frames_a, draw_a), (_, frames_b, draw_b) in zip(seen, expected, strict=True):
        assert torch.equal(frames_a, frames_b) and torch.equal(draw_a, draw_b)


def test_ranks_see_disjoint_items_covering_the_epoch_with_equal_counts(shard_root):
    per_rank = []
    for rank in range(2):
        module = _module(shard_root)
        module.setup("fit")
        module.datasets["train"].distributed_env = _DistributedEnv(world_size=2, global_rank=rank, num_nodes=1)
        per_rank.append([path for paths, _, _ in _batches(module.train_dataloader()) for path in paths])
    assert len(per_rank[0]) == len(per_rank[1]) == 6
    assert not set(per_rank[0]) & set(per_rank[1])
    assert len(set(per_rank[0]) | set(per_rank[1])) == 12


def test_evaluation_reads_every_item_exactly_once_across_ranks(shard_root):
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    module = _module(shard_root)
    module.setup("test")
    dataset = module.datasets["test"]
    paths = []
    for rank in range(2):
        for index in UnrepeatedDistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=False):
            paths.append(dataset[index]["path"])
    assert len(paths) == len(set(paths)) == 12


def test_streaming_replaces_the_annotation_sources(shard_root, synthetic_root):
    with pytest.raises(ManifestError, match="replaces data.train"):
        _module(shard_root, train=str(synthetic_root / "train.csv"))
    with pytest.raises(ManifestError, match="classes"):
        _module(shard_root, class_names=["a", "b"])


def test_a_corrupt_item_follows_on_error_naming_its_source_path(video_dir, tmp_path):
    """A video that the probe passes but the decoder cannot (a text file is refused by the probe, so the item's
    bytes are damaged after writing) is skipped or raised like a file, named by its source path."""
    from video_cnn_rnn.data.dataset import VideoDataset
    from video_cnn_rnn.data.decode import VideoDecodeError
    from video_cnn_rnn.data.shards.reader import _decode_item

    item = {"video": b"\x00" * 64, "label": 0, "meta": '{"path": "bucket/v_x.mp4", "group": "g"}'}
    with pytest.raises(VideoDecodeError, match="bucket/v_x.mp4"):
        _decode_item(VideoDataset([], num_frames=4, img_size=32), item, epoch=0)
    with pytest.warns(UserWarning, match="bucket/v_x.mp4"):
        skipped = _decode_item(VideoDataset([], num_frames=4, img_size=32, on_error="skip"), item, epoch=0)
    assert skipped["path"] == "bucket/v_x.mp4" and "error" in skipped
