"""collate_clips: pad each batch to its own longest clip; mask True = real frame; failed items reported."""

import torch

from video_cnn_rnn.data.collate import collate_clips


def _item(length: int, label: int | None, value: int, clips: int = 0, size: int = 4) -> dict:
    shape = (clips, length, 3, size, size) if clips else (length, 3, size, size)
    return {
        "frames": torch.full(shape, value, dtype=torch.uint8),
        "length": length,
        "label": label,
        "path": f"v{value}",
    }


def _feature_item(length: int, label: int | None, value: float, dim: int = 5, clips: int = 0) -> dict:
    shape = (clips, length, dim) if clips else (length, dim)
    return {
        "features": torch.full(shape, value, dtype=torch.float16),
        "length": length,
        "label": label,
        "path": f"f{value}",
    }


def _failed(path: str) -> dict:
    return {"path": path, "error": f"{path}: cannot decode"}


def test_collate_pads_to_the_batch_longest_clip():
    batch = collate_clips([_item(3, 0, 10), _item(5, 2, 20), _item(1, None, 30)])
    assert batch["frames"].shape == (3, 5, 3, 4, 4) and batch["frames"].dtype == torch.uint8
    assert batch["mask"].dtype == torch.bool and batch["mask"].tolist() == [
        [True, True, True, False, False],
        [True] * 5,
        [True, False, False, False, False],
    ]
    assert batch["lengths"].tolist() == [3, 5, 1] and batch["lengths"].dtype == torch.long
    assert batch["labels"].tolist() == [0, 2, -1] and batch["labels"].dtype == torch.long
    assert batch["paths"] == ["v10", "v20", "v30"] and batch["skipped"] == [] and batch["damaged"] == []
    frames = batch["frames"]
    assert (frames[0, :3] == 10).all() and (frames[0, 3:] == 0).all()
    assert (frames[1] == 20).all()
    assert (frames[2, :1] == 30).all() and (frames[2, 1:] == 0).all()
    # Real frames are exactly where the mask is True.
    assert torch.equal(frames.flatten(2).amax(-1) > 0, batch["mask"])


def test_collate_pads_only_to_this_batch_not_to_an_earlier_or_global_maximum():
    long_batch = collate_clips([_item(9, 0, 1), _item(2, 0, 2)])
    short_batch = collate_clips([_item(2, 0, 3), _item(3, 1, 4)])
    assert long_batch["frames"].shape[1] == 9
    assert short_batch["frames"].shape == (2, 3, 3, 4, 4) and short_batch["mask"].shape == (2, 3)
    equal = collate_clips([_item(4, 0, 5), _item(4, 1, 6)])
    assert equal["frames"].shape[1] == 4 and equal["mask"].all()  # same lengths: no padding at all


def test_collate_keeps_the_frame_size_and_the_item_order():
    batch = collate_clips([_item(2, 1, 8, size=6), _item(1, 0, 9, size=6)])
    assert batch["frames"].shape == (2, 2, 3, 6, 6)
    assert batch["paths"] == ["v8", "v9"] and batch["labels"].tolist() == [1, 0]
    assert torch.equal(batch["frames"][0], torch.full((2, 3, 6, 6), 8, dtype=torch.uint8))


def test_collate_multi_clip():
    batch = collate_clips([_item(2, 1, 7, clips=3), _item(4, 0, 9, clips=3)])
    assert batch["frames"].shape == (2, 3, 4, 3, 4, 4)
    assert batch["mask"].shape == (2, 3, 4)
    assert batch["mask"][0].tolist() == [[True, True, False, False]] * 3
    assert batch["mask"][1].all()
    assert (batch["frames"][0, :, :2] == 7).all() and (batch["frames"][0, :, 2:] == 0).all()


def test_collate_multi_clip_keeps_each_clip_and_gives_per_video_lengths_and_labels():
    first = _item(2, 4, 0, clips=2)
    first["frames"][0], first["frames"][1] = 11, 22  # two different clips of one video
    second = _item(3, None, 33, clips=2)
    batch = collate_clips([first, second])
    frames, mask = batch["frames"], batch["mask"]  # [B, K, T, C, H, W], [B, K, T]
    assert frames.shape == (2, 2, 3, 3, 4, 4) and mask.shape == (2, 2, 3) and mask.dtype == torch.bool
    assert (frames[0, 0, :2] == 11).all() and (frames[0, 1, :2] == 22).all() and (frames[0, :, 2] == 0).all()
    assert (frames[1] == 33).all()
    assert mask.is_contiguous()  # expanded from [B, T], then materialised
    assert torch.equal(frames.flatten(3).amax(-1) > 0, mask)
    assert batch["lengths"].tolist() == [2, 3] and batch["labels"].tolist() == [4, -1]  # one per video, not per clip


def test_collate_features_are_padded_like_frames_and_keep_their_dtype():
    batch = collate_clips([_feature_item(2, 1, 0.5), _feature_item(4, 3, 1.5)])
    assert "frames" not in batch
    features = batch["features"]
    assert features.shape == (2, 4, 5) and features.dtype == torch.float16
    assert (features[0, :2] == 0.5).all() and (features[0, 2:] == 0).all() and (features[1] == 1.5).all()
    assert batch["mask"].tolist() == [[True, True, False, False], [True] * 4]
    assert batch["lengths"].tolist() == [2, 4] and batch["labels"].tolist() == [1, 3]
    assert batch["paths"] == ["f0.5", "f1.5"] and batch["skipped"] == [] and batch["damaged"] == []


def test_collate_multi_clip_features():
    batch = collate_clips([_feature_item(3, 0, 2.0, dim=4, clips=2), _feature_item(1, 1, 3.0, dim=4, clips=2)])
    assert batch["features"].shape == (2, 2, 3, 4)  # [B, K, T, D]
    assert batch["mask"].shape == (2, 2, 3)
    assert batch["mask"][1].tolist() == [[True, False, False]] * 2
    assert (batch["features"][1, :, 1:] == 0).all() and (batch["features"][1, :, :1] == 3.0).all()


def test_collate_unlabelled_items_get_label_minus_one():
    batch = collate_clips([_item(2, None, 1), _item(2, None, 2)])
    assert batch["labels"].tolist() == [-1, -1] and batch["labels"].dtype == torch.long
    mixed = collate_clips([_item(1, 0, 3), _item(1, None, 4), _item(1, 5, 5)])
    assert mixed["labels"].tolist() == [0, -1, 5]  # label 0 stays 0: only None becomes -1


def test_collate_drops_failed_items():
    failed = _failed("bad.mp4")
    batch = collate_clips([_item(2, 1, 5), failed])
    assert batch["frames"].shape[0] == 1 and batch["paths"] == ["v5"]
    assert batch["skipped"] == [("bad.mp4", "cannot decode")] and batch["damaged"] == []
    empty = collate_clips([failed, {"path": "b2.avi", "error": "b2.avi: no such file"}])
    assert empty["frames"].shape[0] == 0 and empty["labels"].shape == (0,) and empty["mask"].shape[0] == 0
    assert empty["skipped"] == [("bad.mp4", "cannot decode"), ("b2.avi", "no such file")]  # the path said once


def test_collate_keeps_damaged_items_and_passes_their_reasons_on():
    damaged = {**_item(2, 1, 5), "damaged": "v5: damaged stream: frame 3 (0.12 s): concealed\n errors"}
    batch = collate_clips([_item(3, 0, 4), damaged, _failed("bad.mp4")])
    assert batch["paths"] == ["v4", "v5"] and batch["lengths"].tolist() == [3, 2]
    assert batch["damaged"] == [("v5", "damaged stream: frame 3 (0.12 s): concealed errors")]  # one line
    assert batch["skipped"] == [("bad.mp4", "cannot decode")]


def test_collate_pads_to_the_longest_decoded_item_not_to_a_failed_one():
    batch = collate_clips([_failed("a.mp4"), _item(2, 0, 1), _failed("b.mp4"), _item(3, 1, 2)])
    assert batch["frames"].shape == (2, 3, 3, 4, 4)
    assert batch["paths"] == ["v1", "v2"] and batch["labels"].tolist() == [0, 1]
    assert [path for path, _ in batch["skipped"]] == ["a.mp4", "b.mp4"]  # in the batch's order


def test_collate_all_skipped_batch_is_empty_with_the_usual_keys_and_dtypes():
    batch = collate_clips([_failed("x.mp4"), _failed("y.avi")])
    assert set(batch) == {"frames", "mask", "lengths", "labels", "paths", "skipped", "damaged", "crop_fallback"}
    assert batch["frames"].dtype == torch.uint8 and batch["frames"].shape[0] == 0 and batch["frames"].dim() == 5
    assert batch["mask"].dtype == torch.bool and batch["mask"].shape == (0, 0)
    assert batch["lengths"].dtype == torch.long and batch["lengths"].shape == (0,)
    assert batch["labels"].dtype == torch.long and batch["labels"].shape == (0,)
    assert batch["paths"] == [] and [path for path, _ in batch["skipped"]] == ["x.mp4", "y.avi"]
