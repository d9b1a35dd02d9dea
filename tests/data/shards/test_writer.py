"""video-cnn-rnn shard: annotation sources -> LitData shards and their manifest; bad videos and bad shard folders."""

import io
import json
import shutil

import pytest

pytest.importorskip("litdata")

from video_cnn_rnn.cli import main  # noqa: E402
from video_cnn_rnn.data.annotations import ManifestError, read_csv  # noqa: E402
from video_cnn_rnn.data.dataset import VideoDataset  # noqa: E402
from video_cnn_rnn.data.shards import MANIFEST_NAME, read_manifest  # noqa: E402
from video_cnn_rnn.data.shards.reader import ShardItems, unpack  # noqa: E402
from video_cnn_rnn.data.shards.writer import reencode, video_info, write_shards  # noqa: E402


def _raw_items(root, split):
    items = ShardItems(str(root / split), VideoDataset([]), read_manifest(str(root))["splits"][split]["items"])
    return [unpack(items.raw(i)) for i in range(len(items))]


def test_items_hold_the_bytes_unchanged_label_group_and_what_samplers_need(shard_root, synthetic_root):
    manifest = read_manifest(str(shard_root))
    assert manifest["class_names"] == sorted({label for _, label in read_csv(synthetic_root / "train.csv")})
    assert {split: info["items"] for split, info in manifest["splits"].items()} == {
        "train": 12,
        "val": 6,
        "test": 12,
        "predict": 11,
    }
    test_items = read_csv(synthetic_root / "test.csv")
    raw = _raw_items(shard_root, "test")
    assert sorted(item["path"] for item in raw) == sorted(path for path, _ in test_items)
    # Shuffled before writing: not in annotation order, so a chunk does not hold one class.
    assert [item["path"] for item in raw] != [path for path, _ in test_items]
    labels = dict(test_items)
    for item in raw:
        with open(item["path"], "rb") as file:
            assert item["video"] == file.read()
        assert manifest["class_names"][item["label"]] == labels[item["path"]]
        info = video_info(item["path"])
        assert (item["num_frames"], item["fps"], item["keyframes"]) == (
            info["num_frames"],
            info["fps"],
            info["keyframes"],
        )
        assert info["keyframes"][0] == 0 and item["group"] == item["path"]  # no UCF101 group: the file itself


@pytest.mark.parametrize("augment", [False, True])
def test_a_clip_from_a_shard_is_bit_identical_to_the_clip_from_the_file(shard_root, augment):
    clips = VideoDataset([], num_frames=4, img_size=32, sampling="segment", augment=augment, backend="pyav")
    shards = ShardItems(str(shard_root / "train"), clips, 12)
    for index in range(len(shards)):
        from_shard = shards[index]
        import random

        random.seed(f"{clips.seed}:0:{from_shard['path']}")  # the shard items' seeding, for the file's draws
        from_file = clips.load_item(from_shard["path"], from_shard["path"], from_shard["label"], from_shard["path"])
        assert from_shard["frames"].equal(from_file["frames"]) and from_shard["label"] == from_file["label"]


def test_bad_videos_are_reported_and_left_out_or_stop_the_run(video_dir, tmp_path, capsys):
    good, bad = str(video_dir["mp4"]), str(video_dir["text"])
    splits = {"train": [(good, 0), (bad, 0), (str(video_dir["missing"]), 0)]}
    with pytest.raises(ManifestError, match="text.mp4"):
        write_shards(splits, str(tmp_path / "raise"), ["a"])
    manifest = write_shards(splits, str(tmp_path / "skip"), ["a"], on_error="skip")
    assert manifest["splits"]["train"]["items"] == 1
    assert [entry["path"] for entry in manifest["skipped"]] == [bad, str(video_dir["missing"])]
    assert "leaving out" in capsys.readouterr().out
    assert json.loads((tmp_path / "skip" / MANIFEST_NAME).read_text())["skipped"] == manifest["skipped"]


def test_a_shard_folder_with_missing_chunks_or_another_version_is_refused(shard_root, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(shard_root, broken)
    (broken / "train" / "chunk-0-1.bin").unlink()
    with pytest.raises(ManifestError, match=r"train: 1 shard file\(s\) missing: chunk-0-1.bin"):
        read_manifest(str(broken))
    manifest = json.loads((broken / MANIFEST_NAME).read_text())
    (broken / MANIFEST_NAME).write_text(json.dumps({**manifest, "format_version": 99, "package_version": "9.9"}))
    with pytest.raises(ManifestError, match="version 99, written by video_cnn_rnn '9.9'"):
        read_manifest(str(broken))
    with pytest.raises(ManifestError, match="is not a shard folder"):
        read_manifest(str(tmp_path))


def test_a_bucket_without_credentials_names_the_variables(monkeypatch, synthetic_root, capsys):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    with pytest.raises(SystemExit):
        main(["shard", "--train", str(synthetic_root / "train.csv"), "--output", "s3://bucket/shards"])
    assert "set AWS_ACCESS_KEY_ID+AWS_SECRET_ACCESS_KEY or AWS_PROFILE" in capsys.readouterr().err


def test_reencode_keeps_frames_and_rate_at_the_short_side(video_dir):
    data = reencode(video_dir["mp4"].read_bytes(), short_side=24)
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (32, 24)  # 64x48 -> 32x24
    assert video_info(io.BytesIO(data))["num_frames"] == video_info(str(video_dir["mp4"]))["num_frames"]
    assert video_info(io.BytesIO(data))["fps"] == video_info(str(video_dir["mp4"]))["fps"]


def test_fit_on_a_broken_shard_folder_stops_before_training_naming_what_is_missing(shard_root, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(shard_root, broken)
    (broken / "val" / "index.json").unlink()
    with pytest.raises(SystemExit) as stopped:
        main(
            [
                "fit",
                "--data.streaming",
                str(broken),
                "--model.backbone",
                "test_efficientnet",
                "--model.pretrained",
                "false",
            ]
        )
    assert stopped.value.code == 2
    assert f"{broken / 'val'}: 1 shard file(s) missing: index.json" in capsys.readouterr().err


def test_extract_from_shards_equals_extract_from_the_files(shard_root, synthetic_root, tmp_path):
    """A feature cache extracted from shards holds the features of the files' cache (backend pyav) for every
    video, is reused while the shards stay the same, and serves fit from the cache."""
    import lightning as L
    import numpy as np
    import torch

    from video_cnn_rnn.data.datamodule import VideoDataModule
    from video_cnn_rnn.data.feature_cache import FeatureCacheDataset
    from video_cnn_rnn.extraction import prepare_feature_cache
    from video_cnn_rnn.models.classifier import VideoClassifier

    torch.manual_seed(0)
    network = VideoClassifier(
        backbone="test_efficientnet", num_classes=6, rnn_hidden_sizes=[16], num_frames=4, img_size=32
    ).network
    settings = dict(num_frames=4, img_size=32, batch_size=6, num_workers=0, backend="pyav")

    def trainer():
        return L.Trainer(
            accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False
        )

    shards = VideoDataModule(streaming=str(shard_root), feature_cache=str(tmp_path / "a"), **settings)
    view = prepare_feature_cache(shards, network, trainer())
    again = VideoDataModule(streaming=str(shard_root), feature_cache=str(tmp_path / "a"), **settings)
    assert prepare_feature_cache(again, network, trainer()) == view
    files = VideoDataModule(
        train=str(synthetic_root / "train.csv"),
        test=str(synthetic_root / "test.csv"),
        feature_cache=str(tmp_path / "b"),
        **settings,
    )
    reference = prepare_feature_cache(files, network, trainer())
    for split in ("train", "val", "test"):
        from_shards, from_files = FeatureCacheDataset(view, split), FeatureCacheDataset(reference, split)
        rows = {path: row for row, path in enumerate(from_files.paths)}
        assert sorted(from_shards.paths) == sorted(rows)
        for row, path in enumerate(from_shards.paths):
            assert np.array_equal(from_shards.clips(row), from_files.clips(rows[path])), path
    shards.setup("fit")
    assert isinstance(shards.datasets["train"], FeatureCacheDataset) and len(shards.datasets["val"]) == 6


# ---------------------------------------------------------------- shards that do not fit together (issue 26)


def _flip(path, start: int, stop: int) -> None:
    data = bytearray(path.read_bytes())
    data[start:stop] = bytes(byte ^ 0xFF for byte in data[start:stop])
    path.write_bytes(bytes(data))


def test_a_chunk_with_a_damaged_header_stops_before_training_naming_split_and_chunk(shard_root, tmp_path, capsys):
    """Issue 26, row 2: bytes 4-16 of a chunk's header flipped gave a bare struct.error mid-run."""
    broken = tmp_path / "broken"
    shutil.copytree(shard_root, broken)
    _flip(broken / "train" / "chunk-0-1.bin", 4, 16)
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--data.streaming", str(broken), "--model.backbone", "test_efficientnet"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "Traceback" not in err
    assert f"{broken / 'train'}: chunk-0-1.bin's header is damaged" in err and "write the shards again" in err


@pytest.mark.parametrize("split", ["train", "val"])
def test_an_index_from_another_write_is_refused_before_training(split, shard_root, synthetic_root, tmp_path):
    """Issue 26, row 3: LitData's item-count error after training started (train), a misleading time-out (val)."""
    other = tmp_path / "other"
    items = [(path, 0) for path, _ in read_csv(synthetic_root / "train.csv")]
    write_shards({"train": items[:8], "val": items[8:12]}, str(other), ["a"], chunk_bytes="20KB")
    broken = tmp_path / "broken"
    shutil.copytree(shard_root, broken)
    shutil.copy(other / split / "index.json", broken / split / "index.json")
    with pytest.raises(ManifestError, match=rf"{broken / split}: index.json .*; write the shards again"):
        read_manifest(str(broken))


def test_a_chunk_cut_short_is_named_with_both_sizes(shard_root, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(shard_root, broken)
    chunk = broken / "test" / "chunk-0-2.bin"
    chunk.write_bytes(chunk.read_bytes()[:-10])
    with pytest.raises(ManifestError, match=r"test: chunk chunk-0-2.bin is \d+ bytes, index.json says \d+"):
        read_manifest(str(broken))


def test_an_item_that_does_not_parse_follows_on_error_naming_its_chunk(shard_root, tmp_path):
    from video_cnn_rnn.data.decode import VideoDecodeError

    broken = tmp_path / "broken"
    shutil.copytree(shard_root, broken)
    chunk = broken / "test" / "chunk-0-0.bin"
    first_item = int.from_bytes(chunk.read_bytes()[4:8], "little")
    _flip(chunk, first_item, first_item + 12)  # the item's own field sizes: the header still adds up
    with pytest.raises(ManifestError, match=r"test: chunk chunk-0-0.bin is damaged \(its CRC-32 differs"):
        read_manifest(str(broken))  # found before training; an item damaged after the check (or in a bucket):
    count = read_manifest(str(shard_root))["splits"]["test"]["items"]
    strict = ShardItems(str(broken / "test"), VideoDataset([], num_frames=4, img_size=32), count)
    with pytest.raises(VideoDecodeError, match=r"test/chunk-0-0.bin: shard item 0 cannot be read .*on_error skip"):
        strict[0]
    lenient = ShardItems(str(broken / "test"), VideoDataset([], num_frames=4, img_size=32, on_error="skip"), count)
    assert "chunk-0-0.bin" in lenient[0]["error"] and lenient[1]["frames"].shape[0] > 0
