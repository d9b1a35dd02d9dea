"""The feature store's format: generic keys, atomic entries that are read only when complete and exactly keyed,
and feature maps as well as vectors."""

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from video_cnn_rnn.data.collate import collate_clips
from video_cnn_rnn.data.dataset import VideoDataset
from video_cnn_rnn.data.feature_cache import (
    NOT_IN_KEY,
    STORE_FORMAT,
    FeatureCacheDataset,
    digest,
    entry_path,
    frame_settings,
    read_entry_meta,
    write_entry,
    write_view,
)


def test_every_frame_setting_is_in_the_key() -> None:
    """Each VideoDataset argument either reaches the key under its own name or is declared not to change the
    features: a new setting stored under another name fails here instead of serving stale features."""
    arguments = set(inspect.signature(VideoDataset.__init__).parameters) - {"self"}
    settings = frame_settings(VideoDataset([], augment=True))
    assert arguments - NOT_IN_KEY <= set(settings)
    dataset = VideoDataset([])
    before = digest(frame_settings(dataset))
    dataset.crop = "pad"  # a setting added to VideoDataset later is picked up without being listed
    assert digest(frame_settings(dataset)) != before


def test_evaluation_clips_do_not_depend_on_the_seed() -> None:
    """Seeded draws act only on training clips: evaluation entries are shared by every seed of a sweep."""
    assert frame_settings(VideoDataset([], seed=1)) == frame_settings(VideoDataset([], seed=2))
    assert frame_settings(VideoDataset([], seed=1, augment=True)) != frame_settings(
        VideoDataset([], seed=2, augment=True)
    )


def key(video: str = "a.mp4") -> dict:
    return {"recipe": {"format": STORE_FORMAT, "frames": {"img_size": 32}}, "video": {"path": video, "size": 1}}


def store_with(tmp_path: Path, features: dict[str, np.ndarray]) -> Path:
    """A store holding ``features`` per path, and its view (split "train", labels 0, 1, ...)."""
    rows = []
    for label, (video, values) in enumerate(features.items()):
        file = entry_path(tmp_path, key(video))
        write_entry(file, key(video), values)
        rows.append([video, label, str(file.relative_to(tmp_path))])
    return write_view(tmp_path, {"splits": {"train": rows}, "skipped": {}, "damaged": {}, "reasons": {}})


@pytest.mark.parametrize("frame", [(6,), (4, 2, 2)], ids=["vectors", "maps"])
@pytest.mark.parametrize("clips", [1, 2])
def test_any_per_frame_shape_round_trips_as_float16(frame: tuple, clips: int, tmp_path: Path) -> None:
    stored = {"a.mp4": np.random.rand(clips, 3, *frame), "b.mp4": np.random.rand(clips, 2, *frame)}
    view = store_with(tmp_path, stored)
    dataset = FeatureCacheDataset(view, "train")
    item = dataset[0]
    expected = stored["a.mp4"] if clips > 1 else stored["a.mp4"][0]
    assert item["features"].dtype == torch.float16 and item["length"] == 3
    np.testing.assert_allclose(item["features"].numpy(), expected, atol=1e-3)
    batch = collate_clips([dataset[0], dataset[1]])
    head = (2, clips) if clips > 1 else (2,)
    assert batch["features"].shape == (*head, 3, *frame) and batch["mask"].shape == (*head, 3)
    assert batch["mask"].sum(-1).flatten().tolist() == [3] * (clips) + [2] * (clips)  # padding masked out
    training = FeatureCacheDataset(view, "train", augment=True)[1]
    assert training["features"].shape == (2, *frame)  # one of the K clips


def test_only_a_complete_entry_of_exactly_this_key_is_read(tmp_path: Path) -> None:
    file = entry_path(tmp_path, key())
    write_entry(file, key(), np.ones((1, 2, 3)))
    assert read_entry_meta(file, key())["status"] == "ok"
    assert read_entry_meta(file, key("b.mp4")) is None  # another video's or recipe's entry under this name
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])  # a truncated entry
    assert read_entry_meta(file, key()) is None
    file.write_bytes(b"")
    assert read_entry_meta(file, key()) is None
    # An entry of another format version, even under this name and key.
    meta = {"format": STORE_FORMAT - 1, "key": key(), "status": "ok", "reason": None}
    with open(file, "wb") as handle:
        np.savez(handle, **{"meta": np.array(json.dumps(meta)), "0": np.ones((2, 3), np.float16)})
    assert read_entry_meta(file, key()) is None
    assert not list(tmp_path.rglob("*.tmp"))  # writes leave no temporary behind


def test_a_setting_that_is_a_tuple_still_matches(tmp_path: Path) -> None:
    tupled = {"recipe": {"frames": {"crop": ("pad", 0.5)}}, "video": {"path": "a.mp4"}}
    write_entry(tmp_path / "a.npz", tupled, np.ones((1, 2, 3)))
    assert read_entry_meta(tmp_path / "a.npz", tupled) is not None


def test_a_skipped_video_is_remembered_with_its_reason(tmp_path: Path) -> None:
    file = entry_path(tmp_path, key())
    write_entry(file, key(), None, "cannot decode")
    assert read_entry_meta(file, key()) == {
        "format": STORE_FORMAT,
        "key": key(),
        "status": "skipped",
        "reason": "cannot decode",
    }
