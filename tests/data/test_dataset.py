"""VideoDataset and VideoDataModule on real encoded files (collate_clips alone: test_collate.py)."""

import shutil
import warnings
from pathlib import Path

import pytest
import torch

from video_cnn_rnn.data import DamagedVideoError, VideoDataModule, VideoDataset, VideoDecodeError, collate_clips
from video_cnn_rnn.data.annotations import ManifestError, read_csv

BAD_FILES = ["zero", "text", "truncated_mp4", "missing"]


# ---------------------------------------------------------------- dataset


@pytest.fixture(scope="module")
def train_items(synthetic_root):
    items = read_csv(synthetic_root / "train.csv")
    names = sorted({label for _, label in items})
    return [(path, names.index(label)) for path, label in items]


@pytest.mark.parametrize("sampling", ["first", "uniform", "segment", "stride"])
def test_dataset_items(train_items, sampling):
    dataset = VideoDataset(train_items[:6], num_frames=8, img_size=32, sampling=sampling, augment=True)
    assert len(dataset) == 6
    for index in range(len(dataset)):
        item = dataset[index]
        assert set(item) == {"frames", "length", "label", "path"}
        assert item["frames"].dtype == torch.uint8
        assert item["frames"].shape == (item["length"], 3, 32, 32)
        assert 5 <= item["length"] <= 8  # the synthetic videos have 5-12 frames
        assert (item["path"], item["label"]) == train_items[index]


def test_mixed_length_batch_from_real_files(train_items):
    dataset = VideoDataset(train_items, num_frames=16, img_size=32)  # longer than every video (<= 12 frames)
    items = [dataset[i] for i in range(len(dataset))]
    lengths = [item["length"] for item in items]
    assert len(set(lengths)) > 1 and max(lengths) <= 12
    batch = collate_clips(items)
    assert batch["frames"].shape == (len(items), max(lengths), 3, 32, 32)  # not padded to num_frames
    assert batch["lengths"].tolist() == lengths
    assert batch["mask"].sum(1).tolist() == lengths
    for row, length in enumerate(lengths):
        assert (batch["frames"][row, length:] == 0).all()
        assert torch.equal(batch["frames"][row, :length], items[row]["frames"])


def test_unlabelled_items(train_items):
    dataset = VideoDataset([(path, None) for path, _ in train_items[:3]], num_frames=4, img_size=32)
    assert collate_clips([dataset[i] for i in range(3)])["labels"].tolist() == [-1, -1, -1]


@pytest.mark.parametrize("training", [False, True])
def test_multi_clip_items(video_dir, training):
    items = [(str(video_dir["mp4"]), 0), (str(video_dir["short_avi"]), 1)]
    dataset = VideoDataset(items, num_frames=4, img_size=32, clips_per_video=2, augment=training, seed=3)
    first, second = dataset[0], dataset[1]
    assert first["frames"].shape == (2, 4, 3, 32, 32) and first["length"] == 4
    assert second["frames"].shape == (2, 4, 3, 32, 32)  # a 4-frame video: both clips are all of it
    assert not torch.equal(first["frames"][0], first["frames"][1])  # two different samples of the video
    assert torch.equal(dataset[0]["frames"], first["frames"])  # reproducible (seeded or fixed offsets)
    batch = collate_clips([first, second])
    assert batch["frames"].shape == (2, 2, 4, 3, 32, 32) and batch["mask"].shape == (2, 2, 4)


def test_random_flip_mirrors_every_second_cached_clip_whole(video_dir):
    items = [(str(video_dir["mp4"]), 0)]
    settings = dict(num_frames=4, img_size=32, clips_per_video=2, augment=True, seed=3)
    plain = VideoDataset(items, **settings)[0]["frames"]
    flipped = VideoDataset(items, random_flip=True, **settings)[0]["frames"]
    assert torch.equal(flipped[0], plain[0]) and torch.equal(flipped[1], plain[1].flip(-1))
    assert not torch.equal(flipped[1], plain[1])


def test_random_flip_of_single_clips_is_drawn_per_item(video_dir):
    dataset = VideoDataset([(str(video_dir["mp4"]), 0)], num_frames=4, img_size=32, sampling="uniform",
                           augment=True, random_flip=True)  # fmt: skip
    plain = VideoDataset([(str(video_dir["mp4"]), 0)], num_frames=4, img_size=32, sampling="uniform")[0]["frames"]
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed), __import__("random").seed(seed)
        frames = dataset[0]["frames"]
        assert torch.equal(frames, plain) or torch.equal(frames, plain.flip(-1))  # all frames alike
        seen.add(torch.equal(frames, plain))
    assert seen == {True, False}


@pytest.mark.parametrize("clips", [1, 2])
def test_mirrored_views_follow_the_clips(video_dir, clips):
    items = [(str(video_dir["mp4"]), 0)]
    plain = VideoDataset(items, num_frames=4, img_size=32, clips_per_video=clips)[0]["frames"]
    views = VideoDataset(items, num_frames=4, img_size=32, clips_per_video=clips, mirrored_views=True)[0]["frames"]
    plain = plain if clips > 1 else plain[None]
    assert views.shape == (2 * clips, *plain.shape[1:])
    assert torch.equal(views[:clips], plain) and torch.equal(views[clips:], plain.flip(-1))


def test_invalid_dataset_arguments(train_items):
    with pytest.raises(ValueError, match="on_error"):
        VideoDataset(train_items, on_error="ignore")
    with pytest.raises(ValueError, match="clips_per_video"):
        VideoDataset(train_items, clips_per_video=0)


@pytest.mark.parametrize("bad", BAD_FILES)
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_on_error_raise(video_dir, train_items, bad, backend):
    dataset = VideoDataset([train_items[0], (str(video_dir[bad]), 1)], num_frames=4, img_size=32, backend=backend)
    assert dataset[0]["length"] == 4
    with pytest.raises(VideoDecodeError, match=str(video_dir[bad]).replace(".", r"\.")):
        dataset[1]


@pytest.mark.parametrize("bad", BAD_FILES)
def test_on_error_skip(video_dir, train_items, bad):
    path = str(video_dir[bad])
    dataset = VideoDataset([train_items[0], (path, 1), train_items[1]], num_frames=4, img_size=32, on_error="skip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # count the dataset's own once-per-file policy, not Python's filter
        items = [dataset[i] for i in range(3)] + [dataset[1]]
    assert [str(w.message) for w in caught if path in str(w.message)] == [str(caught[0].message)]
    assert len(caught) == 1 and caught[0].message.args[0].startswith("skipping video:")
    assert items[1] == items[3] and items[1]["path"] == path and path in items[1]["error"]
    batch = collate_clips(items[:3])
    assert [video for video, _ in batch["skipped"]] == [path] and not batch["skipped"][0][1].startswith(path)
    assert batch["paths"] == [train_items[0][0], train_items[1][0]]
    assert batch["frames"].shape[0] == 2 and batch["labels"].tolist() == [train_items[0][1], train_items[1][1]]


def test_skip_does_not_swallow_configuration_errors(train_items):
    """on_error="skip" is for bad files; an invalid sampler setting fails at construction, before any video."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="stride"):
            VideoDataset(train_items[:2], num_frames=4, img_size=32, sampling="stride", stride=0, on_error="skip")


def test_truncated_avi_is_skipped_or_kept_with_its_clean_frames(video_dir):
    """The cut falls inside a frame, which the decoder conceals: damage, so ``skip`` drops the file and ``warn``
    keeps the frames before the cut."""
    path = str(video_dir["truncated_avi"])
    with pytest.warns(UserWarning, match="skipping video: .*truncated.avi: damaged stream: frame 1"):
        assert "frame 1" in VideoDataset([(path, 0)], num_frames=8, img_size=32, on_error="skip")[0]["error"]
    with pytest.warns(UserWarning, match="damaged video, kept: .*truncated.avi: damaged stream"):
        item = VideoDataset([(path, 0)], num_frames=8, img_size=32, on_error="warn")[0]
    assert item["length"] in (7, 8) and "kept" in item["damaged"]


@pytest.mark.parametrize("on_error", ["raise", "skip", "warn"])
def test_damaged_stream_under_each_policy(codec_videos, train_items, on_error):
    """``raise`` names the file and where; ``skip`` drops it with the reason; ``warn`` keeps its clean frames,
    warns once, and the batch lists it with the reason."""
    damaged = str(codec_videos["h264"][1])
    items = [train_items[0], (damaged, 1), train_items[1]]
    dataset = VideoDataset(items, num_frames=12, img_size=32, on_error=on_error)
    if on_error == "raise":
        with pytest.raises(DamagedVideoError, match=r"damaged_h264\.mp4: damaged stream: frame 16 \(0\.64 s\)"):
            dataset[1]
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = collate_clips([dataset[i] for i in range(3)] + [dataset[1]])
    assert len([w for w in caught if damaged in str(w.message)]) == 1  # once per file
    if on_error == "skip":
        assert batch["paths"] == [train_items[0][0], train_items[1][0]] and batch["damaged"] == []
        assert batch["skipped"] == [(damaged, batch["skipped"][0][1])] * 2
        assert batch["skipped"][0][1].startswith("damaged stream: frame 16 (0.64 s): ")
        return
    assert batch["paths"] == [train_items[0][0], damaged, train_items[1][0], damaged] and batch["skipped"] == []
    (path, reason), _ = batch["damaged"]
    assert path == damaged and reason.startswith("damaged stream: frame 16 (0.64 s): ") and "kept" in reason
    # Uniform picks over 40 frames: those in 16-31 predict from the damaged keyframe and are dropped.
    assert 0 < batch["lengths"][1] < 12


def test_warn_skips_what_has_no_clean_frame_and_cuts_k_clips_alike(codec_videos, video_dir):
    damaged = str(codec_videos["h264"][1])
    items = [(damaged, 0), (str(video_dir["zero"]), 1)]
    dataset = VideoDataset(items, num_frames=4, img_size=32, sampling="first", on_error="warn")
    with pytest.warns(UserWarning, match="skipping video: .*zero.mp4"):
        items = [dataset[0], dataset[1]]
    assert "damaged" not in items[0] and items[0]["length"] == 4  # the first 4 frames: before the damage
    assert "error" in items[1]
    # K clips: each keeps its clean frames, all cut to the shortest clip's count.
    multi = VideoDataset([(damaged, 0)], num_frames=6, img_size=32, on_error="warn", clips_per_video=3)
    with pytest.warns(UserWarning, match="damaged video"):
        item = multi[0]
    assert item["frames"].shape[:2] == (3, item["length"]) and 0 < item["length"] < 6


def test_damaged_video_error_reaches_the_main_process_from_a_worker(codec_videos):
    dataset = VideoDataset([(str(codec_videos["mpeg4"][1]), 0)], num_frames=12, img_size=32)
    loader = torch.utils.data.DataLoader(dataset, num_workers=1, collate_fn=collate_clips)
    with pytest.raises(DamagedVideoError, match=r"damaged_mpeg4\.avi: damaged stream: frame"):
        next(iter(loader))


# ---------------------------------------------------------------- data module


def _small(**kwargs) -> dict:
    return dict(num_frames=6, img_size=32, batch_size=4, num_workers=0, **kwargs)


def _batches(loader) -> list[dict]:
    return list(loader)


def test_datamodule_seed_csv(synthetic_root):
    dm = VideoDataModule(train=str(synthetic_root / "train.csv"), test=str(synthetic_root / "test.csv"), **_small())
    assert dm.class_names == sorted(dm.class_names) and len(dm.class_names) == 6
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert len(train) + len(val) == 18 and len(val) == 6  # one of three videos per class held out
    assert {label for _, label in val.items} == set(range(6))
    assert train.augment and not val.augment
    assert not {p for p, _ in train.items} & {p for p, _ in val.items}
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].shape[0] == 4 and batch["frames"].shape[2:] == (3, 32, 32)
    assert batch["frames"].shape[1] == int(batch["lengths"].max()) <= 6
    dm.setup("test")
    assert len(dm.datasets["test"]) == 12
    batches = _batches(dm.test_dataloader())
    assert sum(len(b["paths"]) for b in batches) == 12 and all(b["skipped"] == [] for b in batches)


def test_datamodule_val_split_is_seeded(synthetic_root):
    splits = []
    for seed in (1, 1, 2):
        dm = VideoDataModule(train=str(synthetic_root / "train.csv"), seed=seed, **_small())
        dm.setup("validate")
        assert set(dm.datasets) == {"val"}
        splits.append([path for path, _ in dm.datasets["val"].items])
    assert splits[0] == splits[1]


@pytest.fixture(scope="module")
def class_folder_tree(synthetic_root, tmp_path_factory):
    """The synthetic training videos in a root/ClassName/ layout, and the test videos in another."""
    roots = {}
    for split in ("train", "test"):
        root = tmp_path_factory.mktemp(f"folders_{split}")
        for path, label in read_csv(synthetic_root / f"{split}.csv"):
            (root / label).mkdir(exist_ok=True)
            shutil.copy(path, root / label / Path(path).name)
        roots[split] = root
    return roots


def test_datamodule_class_folders(class_folder_tree, synthetic_root):
    dm = VideoDataModule(train=str(class_folder_tree["train"]), test=str(class_folder_tree["test"]), **_small())
    csv_dm = VideoDataModule(train=str(synthetic_root / "train.csv"), **_small())
    assert dm.class_names == csv_dm.class_names
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 18 and len(dm.datasets["test"]) == 12
    for _, label in dm.datasets["test"].items:
        assert 0 <= label < 6
    batch = next(iter(dm.val_dataloader()))
    assert batch["frames"].shape[0] == 4


@pytest.fixture(scope="module")
def fake_ucf101(synthetic_root, tmp_path_factory):
    """A UCF101 layout (videos/Class/v_Class_gNN_cNN.avi) with CRLF split files and classInd.txt."""
    root = tmp_path_factory.mktemp("ucf")
    items = [item for split in ("train", "test") for item in read_csv(synthetic_root / f"{split}.csv")]
    names = sorted({label for _, label in items})
    train_lines, test_lines, counters = [], [], {}
    for path, label in items:
        cls = label.title().replace("_", "")
        group = counters[cls] = counters.get(cls, 0) + 1
        relative = f"{cls}/v_{cls}_g{group:02d}_c01{Path(path).suffix}"
        (root / "videos" / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / "videos" / relative)
        if group <= 3:
            train_lines.append(f"{relative} {names.index(label) + 1}")
        else:
            test_lines.append(relative)
    (root / "trainlist01.txt").write_bytes(("\r\n".join(train_lines) + "\r\n").encode())
    (root / "testlist01.txt").write_bytes(("\r\n".join(test_lines) + "\r\n").encode())
    return root


def test_datamodule_ucf101_split(fake_ucf101):
    dm = VideoDataModule(
        train=str(fake_ucf101 / "trainlist01.txt"),
        test=str(fake_ucf101 / "testlist01.txt"),
        video_root=str(fake_ucf101 / "videos"),
        **_small(),
    )
    assert len(dm.class_names) == 6 and dm.class_names[0] == "BlueToRed"
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 18 and len(dm.datasets["test"]) == 12
    for split in ("train", "val", "test"):
        for path, label in dm.datasets[split].items:
            assert dm.class_names[label] == Path(path).parent.name
    batch = next(iter(dm.test_dataloader()))
    assert batch["frames"].shape[2:] == (3, 32, 32)


def test_datamodule_real_ucf101_testlist(ucf101_root):
    """The official lists against the 10 files present: test skips the 3775 missing with a warning."""
    splits = ucf101_root / "splits"
    kwargs = dict(train=str(splits / "trainlist01.txt"), test=str(splits / "testlist01.txt"))
    kwargs["video_root"] = str(ucf101_root / "videos")
    with pytest.raises(ManifestError, match="file not found"):
        VideoDataModule(**kwargs, **_small()).setup("test")
    dm = VideoDataModule(**kwargs, on_error="skip", **_small())
    assert len(dm.class_names) == 101
    with pytest.warns(UserWarning, match="skipping 3775 of 3783"):
        dm.setup("test")
    batches = _batches(dm.test_dataloader())
    assert sum(len(b["paths"]) for b in batches) == 8
    for batch in batches:
        for path, label in zip(batch["paths"], batch["labels"].tolist(), strict=True):
            assert dm.class_names[label] == Path(path).parent.name


@pytest.mark.parametrize("split", ["train", "test"])
def test_datamodule_rows_without_label(synthetic_root, tmp_path, split):
    """A labelled split with an empty tag is reported as a ManifestError naming the video, not a KeyError."""
    items = read_csv(synthetic_root / f"{split}.csv")
    rows = ["video_name,tag", f"{items[0][0]},"] + [f"{path},{label}" for path, label in items[1:]]
    (tmp_path / f"{split}.csv").write_text("\n".join(rows) + "\n")
    train = tmp_path / "train.csv" if split == "train" else synthetic_root / "train.csv"
    dm = VideoDataModule(train=str(train), test=str(tmp_path / "test.csv") if split == "test" else None, **_small())
    with pytest.raises(ManifestError, match=Path(items[0][0]).name):
        dm.setup("fit" if split == "train" else "test")


def test_datamodule_predict_sources(synthetic_root, tmp_path):
    test_items = read_csv(synthetic_root / "test.csv")
    paths = [path for path, _ in test_items]
    folder = tmp_path / "to_predict"
    (folder / "deeper").mkdir(parents=True)
    shutil.copy(paths[0], folder / Path(paths[0]).name)
    shutil.copy(paths[1], folder / "deeper" / Path(paths[1]).name)
    for source, expected in (
        (paths[0], 1),
        (paths[:3], 3),
        (str(folder), 2),
        (str(synthetic_root / "test.csv"), 12),
    ):
        dm = VideoDataModule(predict=source, eval_clips=2, **_small())
        dm.setup("predict")
        assert len(dm.datasets["predict"]) == expected
        batches = _batches(dm.predict_dataloader())
        assert sum(len(b["paths"]) for b in batches) == expected
        batch = batches[0]
        assert batch["labels"].eq(-1).all()
        assert batch["frames"].dim() == 6 and batch["frames"].shape[1] == 2  # [B, K, T, C, H, W]
        assert batch["mask"].shape == batch["frames"].shape[:3]


def test_datamodule_predict_missing_file(tmp_path, synthetic_root):
    missing = str(tmp_path / "nope.mp4")
    with pytest.raises(ManifestError, match="nope.mp4"):
        VideoDataModule(predict=missing, **_small()).setup("predict")
    real = read_csv(synthetic_root / "test.csv")[0][0]
    dm = VideoDataModule(predict=[real, missing], on_error="skip", **_small())
    with pytest.warns(UserWarning, match="nope.mp4"):
        dm.setup("predict")
    assert [path for path, _ in dm.datasets["predict"].items] == [real]


def test_datamodule_skip_bad_videos_in_loader(synthetic_root, video_dir, tmp_path):
    rows = ["video_name,tag"] + [f"{path},fade_in" for path in (video_dir["zero"], video_dir["text"])]
    rows += [f"{path},{label}" for path, label in read_csv(synthetic_root / "test.csv")[:4]]
    (tmp_path / "test.csv").write_text("\n".join(rows) + "\n")
    kwargs = dict(train=str(synthetic_root / "train.csv"), test=str(tmp_path / "test.csv"))
    dm = VideoDataModule(**kwargs, on_error="skip", **_small())
    dm.setup("test")
    with pytest.warns(UserWarning, match="skipping video"):
        batches = _batches(dm.test_dataloader())
    assert [[path for path, _ in b["skipped"]] for b in batches] == [
        [str(video_dir["zero"]), str(video_dir["text"])],
        [],
    ]
    assert all(b["damaged"] == [] for b in batches)
    assert sum(len(b["paths"]) for b in batches) == 4
    strict = VideoDataModule(**kwargs, **_small())
    with pytest.raises(VideoDecodeError, match="2 of 6 videos cannot be decoded: .*zero.mp4"):
        strict.setup("test")  # every video probed before the first batch (data/decode/_probe.py)


def test_datamodule_warn_drops_missing_and_undecodable_files_and_keeps_damaged_ones(
    synthetic_root, video_dir, codec_videos, tmp_path
):
    damaged = str(codec_videos["mpeg4"][1])
    rows = ["video_name,tag", f"{video_dir['missing']},fade_in", f"{video_dir['text']},fade_in", f"{damaged},fade_out"]
    rows += [f"{path},{label}" for path, label in read_csv(synthetic_root / "test.csv")[:2]]
    (tmp_path / "test.csv").write_text("\n".join(rows) + "\n")
    kwargs = dict(train=str(synthetic_root / "train.csv"), test=str(tmp_path / "test.csv"))
    dm = VideoDataModule(**kwargs, on_error="warn", **_small())
    with pytest.warns(UserWarning, match="skipping 1 of 5"):
        dm.setup("test")
    with pytest.warns(UserWarning):
        batches = _batches(dm.test_dataloader())
    assert [path for b in batches for path, _ in b["skipped"]] == [str(video_dir["text"])]
    assert [path for b in batches for path, _ in b["damaged"]] == [damaged]
    assert sum(len(b["paths"]) for b in batches) == 3


@pytest.mark.parametrize(
    ("kwargs", "stage", "match"),
    [
        ({}, "fit", "needs training annotations"),
        ({}, "test", "needs test annotations"),
        ({}, "predict", "needs videos"),
    ],
)
def test_datamodule_stage_errors(kwargs, stage, match):
    with pytest.raises(ManifestError, match=match):
        VideoDataModule(**kwargs, **_small()).setup(stage)


def test_datamodule_test_needs_train(synthetic_root):
    with pytest.raises(ManifestError, match="needs data.train"):
        VideoDataModule(test=str(synthetic_root / "test.csv"), **_small()).setup("test")


def _assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x["paths"] == y["paths"] and x["skipped"] == y["skipped"]
        for key in ("frames", "mask", "lengths", "labels"):
            assert torch.equal(x[key], y[key]), key


@pytest.mark.slow
def test_workers_give_the_same_batches(synthetic_root):
    """num_workers=2 (spawn, persistent, two epochs) yields exactly the batches of num_workers=0."""
    kwargs = dict(train=str(synthetic_root / "train.csv"), test=str(synthetic_root / "test.csv"), eval_clips=1)
    kwargs.update(num_frames=6, img_size=32, batch_size=3)
    reference = VideoDataModule(**kwargs, num_workers=0)
    reference.setup("test")
    expected = _batches(reference.test_dataloader())
    parallel = VideoDataModule(**kwargs, num_workers=2, persistent_workers=True)
    parallel.setup("test")
    loader = parallel.test_dataloader()
    assert loader.persistent_workers
    _assert_same_batches(_batches(loader), expected)
    _assert_same_batches(_batches(loader), expected)  # second epoch on the same persistent workers


@pytest.mark.slow
def test_datamodule_real_actions(real_actions_root):
    dm = VideoDataModule(
        train=str(real_actions_root / "train.csv"),
        val=str(real_actions_root / "val.csv"),
        test=str(real_actions_root / "test.csv"),
        num_frames=4,
        img_size=32,
        batch_size=5,
        num_workers=0,
    )
    assert dm.class_names == ["doing_exercises", "typing"]
    dm.setup("fit")
    dm.setup("test")
    assert {split: len(ds) for split, ds in dm.datasets.items()} == {"val": 15, "train": 49, "test": 5}
    batch = next(iter(dm.test_dataloader()))
    assert batch["frames"].shape == (5, 4, 3, 32, 32) and batch["mask"].all()
    assert sorted(batch["labels"].tolist()) == [0, 0, 1, 1, 1]
