"""Annotation readers, the train/validation split and manifest checks."""

import random
import warnings
from pathlib import Path

import pytest

from video_cnn_rnn.data.annotations import (
    ManifestError,
    check_manifest,
    class_names_from,
    group_of,
    read_class_folders,
    read_class_index,
    read_csv,
    read_source,
    read_ucf101_split,
    read_unlabelled,
    split_train_val,
)


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# ---------------------------------------------------------------- CSV


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("video_name,tag\nclips/a.mp4,run\nb.avi,walk\n", [("clips/a.mp4", "run"), ("b.avi", "walk")]),
        ("path,label\na.mp4,run\n", [("a.mp4", "run")]),
        ("video_name\na.mp4\n", [("a.mp4", None)]),  # no label column: unlabelled
        ("video_name,tag\n a.mp4 , run \nb.mp4,\n", [("a.mp4", "run"), ("b.mp4", None)]),  # stripped; empty tag
        ("tag,video_name,extra\nrun,a.mp4,x\n", [("a.mp4", "run")]),  # column order does not matter
        ("video_name,tag\r\na.mp4,run\r\n", [("a.mp4", "run")]),  # CRLF
    ],
)
def test_read_csv_formats(tmp_path, text, expected):
    csv_path = tmp_path / "sub" / "train.csv"
    csv_path.parent.mkdir()
    csv_path.write_text(text, newline="")
    items = read_csv(csv_path)
    # Relative paths resolve against the CSV's own folder.
    assert items == [(str(csv_path.parent / name), label) for name, label in expected]
    assert read_csv(csv_path, root=tmp_path / "videos") == [
        (str(tmp_path / "videos" / name), label) for name, label in expected
    ]


def test_read_csv_absolute_paths_kept(tmp_path):
    video = _touch(tmp_path / "elsewhere" / "a.mp4")
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(f"video_name,tag\n{video},run\n")
    assert read_csv(csv_path) == [(str(video), "run")]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("file,tag\na.mp4,run\n", "no 'video_name'"),
        ("", "no 'video_name'"),
        ("video_name,tag\na.mp4,run\n,walk\n", r"train.csv:3: empty 'video_name'"),
    ],
)
def test_read_csv_errors(tmp_path, text, match):
    csv_path = tmp_path / "train.csv"
    csv_path.write_text(text)
    with pytest.raises(ManifestError, match=match):
        read_csv(csv_path)


def test_read_seed_csv_synthetic(synthetic_root):
    items = read_csv(synthetic_root / "train.csv")
    assert len(items) == 18
    assert all(Path(path).is_file() and Path(path).parent == synthetic_root / "train" for path, _ in items)
    assert class_names_from(items) == sorted({label for _, label in items}) and len(class_names_from(items)) == 6


def test_real_actions_csvs(real_actions_root):
    sizes = {}
    for split in ("train", "val", "test"):
        items = read_source(real_actions_root / f"{split}.csv")
        assert all(Path(path).is_file() for path, _ in items)
        sizes[split] = len(items)
        assert class_names_from(items) == ["doing_exercises", "typing"]
    assert sizes == {"train": 49, "val": 15, "test": 5}


# ---------------------------------------------------------------- class folders


def test_read_class_folders(tmp_path):
    for name in ("walk/b.mp4", "walk/a.AVI", "run/x.mkv", "run/notes.txt", "run/.hidden", "empty/readme.md"):
        _touch(tmp_path / name)
    _touch(tmp_path / "loose.mp4")  # not in a class folder: ignored
    items = read_class_folders(tmp_path)
    assert items == [
        (str(tmp_path / "run" / "x.mkv"), "run"),
        (str(tmp_path / "walk" / "a.AVI"), "walk"),
        (str(tmp_path / "walk" / "b.mp4"), "walk"),
    ]
    assert read_source(tmp_path) == items
    assert class_names_from(items) == ["run", "walk"]


@pytest.mark.parametrize("make", ["empty", "no_videos", "file"])
def test_read_class_folders_errors(tmp_path, make):
    target = tmp_path / "root"
    if make == "no_videos":
        _touch(target / "cls" / "a.txt")
    elif make == "file":
        _touch(target)
    else:
        target.mkdir()
    with pytest.raises(ManifestError, match="root"):
        read_class_folders(target)


def test_read_ucf101_class_folders(ucf101_root):
    items = read_source(ucf101_root / "videos")
    assert len(items) == 10
    assert all(Path(path).parent.name == label for path, label in items)
    assert len(class_names_from(items)) == 9
    assert class_names_from(items)[:2] == ["ApplyEyeMakeup", "BaseballPitch"]


# ---------------------------------------------------------------- UCF101 split files


def test_read_ucf101_split_crlf(tmp_path):
    split = tmp_path / "trainlist01.txt"
    split.write_bytes(b"Run/v_Run_g01_c01.avi 2\r\nWalk/v_Walk_g02_c03.avi 1\r\n\r\n")
    test_split = tmp_path / "testlist01.txt"
    test_split.write_bytes(b"Walk/v_Walk_g09_c01.avi\r\nRun/v_Run_g08_c02.avi\r\n")
    root = tmp_path / "UCF-101"
    assert read_ucf101_split(split, root) == [
        (str(root / "Run" / "v_Run_g01_c01.avi"), "Run"),
        (str(root / "Walk" / "v_Walk_g02_c03.avi"), "Walk"),
    ]
    assert read_source(test_split, root) == [
        (str(root / "Walk" / "v_Walk_g09_c01.avi"), "Walk"),
        (str(root / "Run" / "v_Run_g08_c02.avi"), "Run"),
    ]


def test_read_ucf101_split_errors(tmp_path):
    split = tmp_path / "trainlist01.txt"
    split.write_text("v_Run_g01_c01.avi 1\n")
    with pytest.raises(ManifestError, match="no 'Class/' folder"):
        read_ucf101_split(split, tmp_path)
    with pytest.raises(ManifestError, match="needs video_root"):
        read_source(split)
    with pytest.raises(ManifestError, match="split file not found"):
        read_source(tmp_path / "nope.txt", tmp_path)
    with pytest.raises(ManifestError, match="annotation CSV not found"):
        read_source(tmp_path / "nope.csv")
    with pytest.raises(ManifestError, match="not found"):
        read_source(tmp_path / "nope")


def test_read_class_index_order(tmp_path):
    index = tmp_path / "classInd.txt"
    index.write_bytes(b"3 Zebra\r\n1 apple\r\n10 Mango\r\n2 Banana\r\n")
    assert read_class_index(index) == ["apple", "Banana", "Zebra", "Mango"]


def test_official_ucf101_splits(ucf101_root):
    splits, videos = ucf101_root / "splits", ucf101_root / "videos"
    train = read_source(splits / "trainlist01.txt", videos)
    test = read_source(splits / "testlist01.txt", videos)
    assert (len(train), len(test)) == (9537, 3783)
    assert all("\r" not in path and label in path for path, label in train + test)
    assert train[0] == (str(videos / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi"), "ApplyEyeMakeup")
    assert not {path for path, _ in train} & {path for path, _ in test}
    class_index = read_class_index(splits / "classInd.txt")
    assert len(class_index) == 101 and class_index[0] == "ApplyEyeMakeup" and class_index[-1] == "YoYo"
    names = class_names_from(train)
    assert set(names) == set(class_index) == set(class_names_from(test))
    # The vocabulary is Python's (case-sensitive) sort; classInd.txt is sorted case-insensitively, so ids
    # differ from the official ones where case decides (HammerThrow/Hammering, JumpRope/JumpingJack).
    assert names == sorted(class_index)
    assert class_index == sorted(class_index, key=str.lower)
    assert [i for i, (a, b) in enumerate(zip(names, class_index, strict=True)) if a != b] == [34, 35, 46, 47]
    present = [path for path, _ in train + test if Path(path).is_file()]
    assert len(present) == 10


def test_class_names_sorted_unique():
    items = [("a", "walk"), ("b", "Run"), ("c", "walk"), ("d", None), ("e", "jump")]
    assert class_names_from(items) == ["Run", "jump", "walk"]
    assert class_names_from([]) == []


# ---------------------------------------------------------------- unlabelled (predict) sources


def test_read_unlabelled(tmp_path):
    a = _touch(tmp_path / "in" / "a.mp4")
    b = _touch(tmp_path / "in" / "deep" / "b.avi")
    _touch(tmp_path / "in" / "notes.txt")
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("video_name,tag\nin/a.mp4,run\n")
    assert read_unlabelled(a) == [(str(a), None)]
    assert read_unlabelled(tmp_path / "in") == [(str(a), None), (str(b), None)]
    assert read_unlabelled([str(b), a]) == [(str(b), None), (str(a), None)]
    assert read_unlabelled(csv_path) == [(str(a), None)]  # labels dropped
    _touch(tmp_path / "no_videos" / "x.txt")
    with pytest.raises(ManifestError, match="no video files"):
        read_unlabelled(tmp_path / "no_videos")


# ---------------------------------------------------------------- train/validation split


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("UCF-101/Run/v_Run_g01_c01.avi", "Run_g01"),
        ("x/v_ApplyEyeMakeup_g25_c07.avi", "ApplyEyeMakeup_g25"),
        ("x/v_Yo_Yo_g03_c1.mp4", "Yo_Yo_g03"),
        ("x/clip_g01_c01.avi", "x/clip_g01_c01.avi"),
        ("x/v_Run_g01.avi", "x/v_Run_g01.avi"),
        ("x/typing12.mp4", "x/typing12.mp4"),
    ],
)
def test_group_of(name, group):
    assert group_of(name) == group


def _ucf_items(seed: int = 0) -> list[tuple[str, str]]:
    """Four UCF-style classes with 7 groups of 2-5 clips each, plus a plain class of 10 files."""
    rng = random.Random(seed)
    items = [
        (f"UCF-101/{cls}/v_{cls}_g{g:02d}_c{c:02d}.avi", cls)
        for cls in ("Archery", "Biking", "Diving", "Fencing")
        for g in range(1, 8)
        for c in range(1, rng.randint(2, 5) + 1)
    ]
    items += [(f"clips/typing{i}.mp4", "typing") for i in range(10)]
    rng.shuffle(items)
    return items


@pytest.mark.parametrize("val_fraction", [0.1, 0.2, 0.3, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_split_train_val(val_fraction, seed):
    items = _ucf_items(seed)
    train, val = split_train_val(items, val_fraction, seed)
    assert sorted(train + val) == sorted(items) and not set(train) & set(val)
    assert (train, val) == split_train_val(list(reversed(items)), val_fraction, seed)  # seeded, order-free
    # Every class on both sides; no UCF101 group on both sides.
    assert class_names_from(train) == class_names_from(val) == class_names_from(items)
    assert not {group_of(p) for p, _ in train} & {group_of(p) for p, _ in val}
    # Stratified: each class holds out about val_fraction of its clips (to within one group of 5 clips).
    for name in class_names_from(items):
        total = sum(label == name for _, label in items)
        held = sum(label == name for _, label in val)
        assert val_fraction * total - 1e-9 <= held < val_fraction * total + 5


def test_split_train_val_seed_changes_split():
    items = _ucf_items()
    splits = {tuple(split_train_val(items, 0.2, seed)[1]) for seed in range(6)}
    assert len(splits) > 1


def test_split_keeps_singletons_in_train():
    items = [("a/one.mp4", "lonely"), ("a/x1.mp4", "pair"), ("a/x2.mp4", "pair"), ("a/only_group_c.mp4", "solo")]
    items += [(f"U/Solo/v_Solo_g01_c0{c}.avi", "Solo") for c in range(1, 5)]  # one group: cannot be split
    train, val = split_train_val(items, 0.5, 0)
    assert ("a/one.mp4", "lonely") in train
    assert sum(label == "pair" for _, label in val) == 1
    assert all(label != "Solo" for _, label in val)


@pytest.mark.parametrize("val_fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_invalid_fraction(val_fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        split_train_val(_ucf_items(), val_fraction, 0)


# ---------------------------------------------------------------- manifest checks


def test_check_manifest_lists_every_problem_at_once(tmp_path):
    present = {name: _touch(tmp_path / f"{name}.mp4") for name in ("r1", "r2", "w1", "v1", "v2")}
    splits = {
        "train": [(str(present["r1"]), "run"), (str(present["r2"]), "run"), (str(tmp_path / "gone.mp4"), "walk")],
        "val": [(str(present["v1"]), "swim"), (str(present["v2"]), "run"), (str(tmp_path / "lost.avi"), "run")],
        "test": [(str(present["w1"]), "fly")],
    }
    with pytest.raises(ManifestError) as info:
        check_manifest(splits, ["run", "walk"])
    message = str(info.value)
    assert message.startswith("5 problem(s)")
    for expected in (
        f"train: file not found: {tmp_path / 'gone.mp4'}",
        f"val: file not found: {tmp_path / 'lost.avi'}",
        "val: label 'swim' does not occur in the training data",
        "test: label 'fly' does not occur in the training data",
        "train: class 'walk' has no training video",
    ):
        assert expected in message


def test_check_manifest_skip_missing(tmp_path):
    a, b = _touch(tmp_path / "a.mp4"), _touch(tmp_path / "b.mp4")
    splits = {"train": [(str(a), "run"), (str(tmp_path / "x.mp4"), "run")], "test": [(str(b), "run")]}
    with pytest.warns(UserWarning, match=r"train: skipping 1 of 2 listed videos") as record:
        checked = check_manifest(splits, ["run"], on_missing="skip")
    assert str(tmp_path / "x.mp4") in str(record[0].message)
    assert checked == {"train": [(str(a), "run")], "test": [(str(b), "run")]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing missing: no warning
        assert check_manifest({"train": [(str(a), "run")]}, ["run"]) == {"train": [(str(a), "run")]}


def test_check_manifest_skip_still_reports_classes_left_without_videos(tmp_path):
    a = _touch(tmp_path / "a.mp4")
    splits = {"train": [(str(a), "run"), (str(tmp_path / "gone.mp4"), "walk")]}
    with pytest.warns(UserWarning), pytest.raises(ManifestError, match="class 'walk' has no training video"):
        check_manifest(splits, ["run", "walk"], on_missing="skip")


def test_check_manifest_unlabelled_predict(tmp_path):
    a = _touch(tmp_path / "a.mp4")
    assert check_manifest({"predict": [(str(a), None)]}, []) == {"predict": [(str(a), None)]}


def test_check_manifest_real_ucf101_testlist(ucf101_root):
    splits = {
        "train": read_source(ucf101_root / "splits" / "trainlist01.txt", ucf101_root / "videos"),
        "test": read_source(ucf101_root / "splits" / "testlist01.txt", ucf101_root / "videos"),
    }
    names = class_names_from(splits["train"])
    with pytest.raises(ManifestError, match="file not found") as info:
        check_manifest({"test": splits["test"]}, names)
    assert str(info.value).startswith("3775 problem(s)")
    with pytest.warns(UserWarning, match=r"test: skipping 3775 of 3783 listed videos"):
        checked = check_manifest({"test": splits["test"]}, names, on_missing="skip")
    assert len(checked["test"]) == 8
    assert {label for _, label in checked["test"]} <= set(names)
    # The full training list on this subset: missing files skipped, then 100 classes have no video left.
    with pytest.warns(UserWarning), pytest.raises(ManifestError, match=r"^100 problem\(s\)"):
        check_manifest(splits, names, on_missing="skip")


# ---------------------------------------------------------------- annotations as a spreadsheet writes them (issue 26)


def test_a_spreadsheets_csv_utf8_with_a_byte_order_mark_reads(tmp_path):
    csv_path = tmp_path / "train.csv"
    csv_path.write_bytes("video_name , tag\r\na.mp4,run\r\n".encode("utf-8-sig"))  # Excel's "CSV UTF-8"
    assert read_source(csv_path) == [(str(tmp_path / "a.mp4"), "run")]


def test_a_csv_without_the_label_column_names_it_and_the_columns_found(tmp_path):
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("video_name,class\na.mp4,run\n")
    with pytest.raises(
        ManifestError, match=r"train.csv: no 'tag' \(or 'label'\) column; found \['video_name', 'class'\]"
    ):
        read_source(csv_path)
    assert read_unlabelled(csv_path) == [(str(tmp_path / "a.mp4"), None)]  # videos to predict need no label


def test_class_names_without_a_checkpoint_do_not_blame_a_checkpoint(synthetic_root):
    from video_cnn_rnn.data.datamodule import VideoDataModule

    with pytest.raises(ManifestError) as info:
        VideoDataModule(train=str(synthetic_root / "train.csv"), class_names=["a", "b"])
    assert "the checkpoint's classes" not in str(info.value) and "data.class_names" in str(info.value)


def test_duplicate_rows_are_dropped_with_one_warning_counting_them(tmp_path):
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("video_name,tag\na.mp4,run\nb.mp4,walk\na.mp4,run\n./a.mp4,run\nb.mp4,walk\n")
    with pytest.warns(UserWarning, match=r"train.csv: dropped 3 duplicate row\(s\)") as caught:
        items = read_source(csv_path)
    assert len(caught) == 1
    assert items == [(str(tmp_path / "a.mp4"), "run"), (str(tmp_path / "b.mp4"), "walk")]


def test_one_video_under_two_labels_is_an_error_naming_both(tmp_path):
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("video_name,tag\na.mp4,run\nb.mp4,walk\na.mp4,jump\n")
    with pytest.raises(ManifestError, match=r"1 video\(s\) under two labels.*a.mp4 is labelled both 'run' and 'jump'"):
        read_source(csv_path)


def test_hidden_files_beside_class_folders_videos_are_ignored(tmp_path):
    for name in (
        "walk/a.mp4",
        "walk/._a.mp4",
        "walk/.DS_Store",
        "walk/Thumbs.db",
        ".git/x.mp4",
        "__MACOSX/walk/._a.mp4",
    ):
        _touch(tmp_path / name)
    assert read_source(tmp_path) == [(str(tmp_path / "walk" / "a.mp4"), "walk")]
    assert read_unlabelled(tmp_path) == [(str(tmp_path / "walk" / "a.mp4"), None)]


def test_a_csv_that_is_not_utf8_is_one_error_naming_it(tmp_path):
    csv_path = tmp_path / "train.csv"
    csv_path.write_bytes(b"video_name,tag\na\xff.mp4,run\n")
    with pytest.raises(ManifestError, match=r"train.csv: not UTF-8 text .*save it as CSV UTF-8"):
        read_source(csv_path)
