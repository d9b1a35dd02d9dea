"""The frozen-backbone feature cache: keyed, reused, invalidated, atomic, and equivalent to end-to-end."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

import video_cnn_rnn.extraction as extraction
from video_cnn_rnn.data import motion
from video_cnn_rnn.data.annotations import read_csv
from video_cnn_rnn.data.collate import collate_clips
from video_cnn_rnn.data.datamodule import VideoDataModule
from video_cnn_rnn.data.dataset import VideoDataset
from video_cnn_rnn.data.feature_cache import FeatureCacheDataset, is_complete
from video_cnn_rnn.data.synthetic import write_video
from video_cnn_rnn.extraction import prepare_feature_cache
from video_cnn_rnn.models.classifier import VideoClassifier


def make_data(root: Path, cache: Path, **overrides) -> VideoDataModule:
    settings = dict(
        train=str(root / "train.csv"),
        test=str(root / "test.csv"),
        num_frames=4,
        img_size=32,
        batch_size=6,
        num_workers=0,
        feature_cache=str(cache),
    )
    return VideoDataModule(**{**settings, **overrides})


def make_model(seed: int = 0, backbone: str = "test_efficientnet", **overrides) -> VideoClassifier:
    torch.manual_seed(seed)
    settings = dict(backbone=backbone, num_classes=6, rnn_hidden_sizes=[16], fc_hidden=None, dropout=0.0)
    return VideoClassifier(**{**settings, **overrides}, num_frames=4, img_size=32)


def trainer(precision: str = "32-true") -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Entries written per video (resolved path): one write is one extraction."""
    counts: Counter = Counter()
    original = extraction.write_entry

    def counting(file, key, features, reason=None, crop_fallback=None):
        counts[key["video"]["path"]] += 1
        original(file, key, features, reason, crop_fallback)

    monkeypatch.setattr(extraction, "write_entry", counting)
    return counts


def view_of(folder: Path) -> dict:
    return json.loads(folder.read_text())


def test_cache_is_created_then_reused(synthetic_root: Path, tmp_path: Path, writes: Counter) -> None:
    model = make_model()
    folder = prepare_feature_cache(make_data(synthetic_root, tmp_path), model.network, trainer())
    assert is_complete(folder)
    assert set(view_of(folder)["splits"]) == {"train", "val", "test"}
    assert sum(writes.values()) == 30 and set(writes.values()) == {1}
    stamp = folder.stat().st_mtime_ns
    again = prepare_feature_cache(make_data(synthetic_root, tmp_path), model.network, trainer())
    assert again == folder and folder.stat().st_mtime_ns == stamp
    assert sum(writes.values()) == 30  # nothing extracted again
    item = FeatureCacheDataset(folder, "test")[0]
    assert item["features"].dtype == torch.float16 and item["features"].shape == (item["length"], 256)


@pytest.mark.parametrize(
    "change",
    ["num_frames", "img_size", "crop", "sampling", "weights", "backbone", "touched_video", "train_flip", "eval_flip"],
)
def test_every_key_change_invalidates(change: str, synthetic_root: Path, tmp_path: Path, writes: Counter) -> None:
    base = prepare_feature_cache(make_data(synthetic_root, tmp_path), make_model().network, trainer())
    data_overrides, model = {}, make_model()
    if change == "num_frames":
        data_overrides = {"num_frames": 3}
    elif change == "img_size":
        data_overrides = {"img_size": 40}
    elif change == "sampling":
        data_overrides = {"sampling": "first"}
    elif change == "crop":
        data_overrides = {"crop": "pad"}
    elif change in ("train_flip", "eval_flip"):
        data_overrides = {change: True, "cache_clips": 2}
        base = prepare_feature_cache(
            make_data(synthetic_root, tmp_path, cache_clips=2), make_model().network, trainer()
        )
    elif change == "weights":
        model = make_model(seed=1)
    elif change == "backbone":
        model = make_model(backbone="test_resnet")
    else:
        video = tmp_path / "copy"
        shutil.copytree(synthetic_root, video)
        base = prepare_feature_cache(make_data(video, tmp_path), make_model().network, trainer())
        first_video = video / (video / "train.csv").read_text().splitlines()[1].split(",")[0]
        os.utime(first_video, ns=(time.time_ns(), time.time_ns() + 10**9))
        writes.clear()
        changed = prepare_feature_cache(make_data(video, tmp_path), make_model().network, trainer())
        assert changed != base and is_complete(changed)
        assert dict(writes) == {os.path.realpath(first_video): 1}  # only the touched video is extracted again
        return
    writes.clear()
    changed = prepare_feature_cache(make_data(synthetic_root, tmp_path, **data_overrides), model.network, trainer())
    assert changed != base and is_complete(changed)
    # A flip setting re-extracts the split it acts on (training or evaluation clips), the others every video.
    assert 0 < sum(writes.values()) < 30 if change.endswith("_flip") else sum(writes.values()) == 30


def test_cache_needs_a_frozen_backbone(synthetic_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="frozen"):
        prepare_feature_cache(make_data(synthetic_root, tmp_path), make_model(freeze="finetune").network, trainer())


def test_cache_records_skipped_and_damaged_videos_with_their_reasons(
    synthetic_root: Path, video_dir: dict, codec_videos: dict, tmp_path: Path
) -> None:
    """``on_error: warn``: a damaged video is cached from its clean frames and listed as damaged in
    complete.json, one that does not decode is left out and listed as skipped; ``warn`` makes another cache."""
    damaged, broken = str(codec_videos["h264"][1]), str(video_dir["text"])
    rows = ["video_name,tag"] + [f"{path},{label}" for path, label in read_csv(synthetic_root / "test.csv")]
    rows += [f"{damaged},disc_grow", f"{broken},fade_in"]
    (tmp_path / "test.csv").write_text("\n".join(rows) + "\n")
    data = make_data(synthetic_root, tmp_path / "cache", test=str(tmp_path / "test.csv"), on_error="warn")
    with pytest.warns(UserWarning):
        folder = prepare_feature_cache(data, make_model().network, trainer())
    summary = view_of(folder)
    assert summary["damaged"] == {"train": [], "val": [], "test": [damaged]}
    assert summary["skipped"] == {"train": [], "val": [], "test": [broken]}
    assert summary["reasons"][damaged].startswith("damaged stream: frame 16 (0.64 s): ")
    assert "cannot decode" in summary["reasons"][broken]
    assert (
        damaged in FeatureCacheDataset(folder, "test").paths and broken not in FeatureCacheDataset(folder, "test").paths
    )
    skip = make_data(synthetic_root, tmp_path / "cache", test=str(tmp_path / "test.csv"), on_error="skip")
    with pytest.warns(UserWarning):
        assert prepare_feature_cache(skip, make_model().network, trainer()) != folder


def test_motion_crop_fallbacks_are_reported_from_the_store_as_from_raw_videos(tmp_path: Path) -> None:
    scene = np.random.default_rng(0).integers(40, 200, (48, 96, 3), dtype=np.uint8)
    still, moving = np.repeat(scene[None], 12, 0), np.repeat(scene[None], 12, 0)
    for t in range(12):  # a small square jumping about near the right edge
        moving[t, 20:30, 76 + 4 * (t % 3) : 86 + 4 * (t % 3)] = 255 * (t % 2)
    paths = {name: tmp_path / f"{name}.mp4" for name in ("still", "moving")}
    write_video(paths["still"], still, fps=10)
    write_video(paths["moving"], moving, fps=10)
    for split in ("train", "test"):
        (tmp_path / f"{split}.csv").write_text(f"video_name,tag\n{paths['still']},a\n{paths['moving']},b\n")
    data = make_data(tmp_path, tmp_path / "cache", crop="motion", val_fraction=0.0, batch_size=2)
    folder = prepare_feature_cache(data, make_model(num_classes=2).network, trainer())
    items = {item["path"]: item for item in FeatureCacheDataset(folder, "test")}
    still_path, moving_path = (str(paths[name]) for name in ("still", "moving"))
    assert set(items) == {still_path, moving_path}
    assert motion.NO_MOTION in items[still_path]["crop_fallback"] and "crop_fallback" not in items[moving_path]
    raw = VideoDataset([(still_path, 0)], num_frames=4, img_size=32, crop="motion")
    expected = collate_clips([raw[0]])["crop_fallback"]
    assert collate_clips(list(items.values()))["crop_fallback"] == expected  # the same report line


def test_head_training_from_cache_matches_end_to_end_frozen(synthetic_root: Path, tmp_path: Path) -> None:
    cached_data = make_data(synthetic_root, tmp_path)
    folder = prepare_feature_cache(cached_data, make_model().network, trainer())
    video_data = make_data(synthetic_root, tmp_path, feature_cache=None)
    video_data.setup("fit")
    videos = torch.utils.data.DataLoader(video_data.datasets["val"], batch_size=4, collate_fn=collate_clips)
    features = torch.utils.data.DataLoader(FeatureCacheDataset(folder, "val"), batch_size=4, collate_fn=collate_clips)

    from_cache, end_to_end = make_model(), make_model()
    from_cache.train(), end_to_end.train()
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (from_cache, end_to_end)]
    for feature_batch, video_batch in zip(features, videos, strict=True):
        assert feature_batch["paths"] == video_batch["paths"]
        for model, optimizer, batch in zip(
            (from_cache, end_to_end), optimizers, (feature_batch, video_batch), strict=True
        ):
            optimizer.zero_grad()
            model.training_step(batch, 0).backward()
            optimizer.step()
    assert all(p.grad is None for p in end_to_end.network.backbone.parameters())
    from_cache.eval(), end_to_end.eval()
    with torch.no_grad():
        cached = from_cache.network.batch_logits(next(iter(features)))
        direct = end_to_end.network.batch_logits(next(iter(videos)))
    # The cache stores float16 features; everything else is identical.
    torch.testing.assert_close(cached, direct, atol=2e-2, rtol=2e-2)


def test_interrupted_extraction_keeps_finished_entries_and_never_reads_a_half_written_one(
    synthetic_root: Path, tmp_path: Path, writes: Counter
) -> None:
    """Killed while the third entry is only under its temporary name: the two finished entries are reused, the
    half-written one is extracted again, and no view (what a run reads) exists before every entry does."""
    script = f"""
import os, sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_extraction import make_data, make_model, trainer
import video_cnn_rnn.data.atomic as atomic
import video_cnn_rnn.extraction as extraction

class SlowRename:
    calls = 0
    def __getattr__(self, name):
        return getattr(os, name)
    def replace(self, source, target):
        SlowRename.calls += str(target).endswith(".npz")  # entries only (not views, nor the probe's memory)
        if SlowRename.calls == 3 and str(target).endswith(".npz"):
            with open(source, "r+b") as handle:
                handle.truncate(os.path.getsize(source) // 2)  # as if killed mid-write
            print("HALF", source, flush=True)
            time.sleep(60)
        os.replace(source, target)

atomic.os = SlowRename()  # the store writes entries through data/atomic.py
data = make_data(__import__("pathlib").Path({str(synthetic_root)!r}), __import__("pathlib").Path({str(tmp_path)!r}))
extraction.prepare_feature_cache(data, make_model().network, trainer())
"""
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("HALF"), line
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    half = Path(line.split(maxsplit=1)[1].strip())
    assert half.is_file() and half.suffix == ".tmp"
    assert len(list(tmp_path.rglob("*.npz"))) == 2 and not list(tmp_path.rglob("views/*.json"))
    folder = prepare_feature_cache(make_data(synthetic_root, tmp_path), make_model().network, trainer())
    assert is_complete(folder) and sum(writes.values()) == 28 and set(writes.values()) == {1}


def fold_manifests(synthetic_root: Path, folder: Path, k: int = 5) -> list:
    """``k`` cross-validation folds over the synthetic videos, made by the ``cv`` command's own fold code."""
    from video_cnn_rnn.crossval import stratified_group_folds, write_folds

    items = read_csv(synthetic_root / "train.csv") + read_csv(synthetic_root / "test.csv")
    return write_folds(stratified_group_folds(items, k, group=lambda path: path), folder)


@pytest.mark.parametrize("cache_clips", [1, 2])
def test_cross_validation_extracts_each_video_once(
    cache_clips: int, synthetic_root: Path, tmp_path: Path, writes: Counter
) -> None:
    """5 folds, each a different manifest (train, held-out val, test) over the same 30 videos: every video is
    extracted once per kind of clip it is asked for (the evaluation clip; with ``cache_clips`` > 1 also the K
    seeded training draws, the same in every fold), and a second pass over the folds extracts nothing."""
    folds = fold_manifests(synthetic_root, tmp_path / "folds")
    model = make_model()
    for _ in range(2):
        for fold in folds:
            data = make_data(
                synthetic_root, tmp_path / "store", train=fold.train, test=fold.test, cache_clips=cache_clips
            )
            view = prepare_feature_cache(data, model.network, trainer())
            data.setup("fit")
            assert len(data.datasets["train"]) + len(data.datasets["val"]) == 24
    assert len(writes) == 30
    if cache_clips == 1:
        assert set(writes.values()) == {1}  # one recipe: each video exactly once over the 5 folds
    else:
        recipes = {Path(row[2]).parent.name for split in view_of(view)["splits"].values() for row in split}
        assert len(recipes) == 2 and max(writes.values()) == 2  # training draws + evaluation clip, once each
    views = list((tmp_path / "store").rglob("views/*.json"))
    assert len(views) == 5  # one small view per fold manifest


def test_adding_videos_extracts_only_them(synthetic_root: Path, tmp_path: Path, writes: Counter) -> None:
    rows = (synthetic_root / "test.csv").read_text().splitlines()
    absolute = [rows[0]] + [f"{synthetic_root / row.split(',')[0]},{row.split(',')[1]}" for row in rows[1:]]
    (tmp_path / "fewer.csv").write_text("\n".join(absolute[:-2]) + "\n")
    (tmp_path / "more.csv").write_text("\n".join(absolute) + "\n")
    model = make_model()
    prepare_feature_cache(
        make_data(synthetic_root, tmp_path / "store", test=str(tmp_path / "fewer.csv")), model.network, trainer()
    )
    writes.clear()
    prepare_feature_cache(
        make_data(synthetic_root, tmp_path / "store", test=str(tmp_path / "more.csv")), model.network, trainer()
    )
    added = [os.path.realpath(row.split(",")[0]) for row in absolute[-2:]]
    assert dict(writes) == {path: 1 for path in added}


@pytest.mark.parametrize("change", ["precision", "img_size", "crop", "weights"])
def test_a_changed_recipe_extracts_again(change: str, synthetic_root: Path, tmp_path: Path, writes: Counter) -> None:
    """The precision the features were computed in, the frame size, any frame setting (``crop`` stands for one
    added to VideoDataset later) and the backbone weights are each in the key."""
    base = prepare_feature_cache(make_data(synthetic_root, tmp_path), make_model().network, trainer())
    writes.clear()
    data, model, precision = make_data(synthetic_root, tmp_path), make_model(), "32-true"
    if change == "precision":
        precision = "bf16-mixed"
    elif change == "img_size":
        data = make_data(synthetic_root, tmp_path, img_size=40)
    elif change == "weights":
        model = make_model(seed=1)
    if change == "crop":
        datasets = data.cache_datasets()
        for dataset in datasets.values():
            dataset.crop = "pad"
        changed = extraction.build_feature_cache(model.network, datasets, tmp_path, trainer(), batch_size=6)
    else:
        changed = prepare_feature_cache(data, model.network, trainer(precision))
    assert changed != base and sum(writes.values()) == 30 and set(writes.values()) == {1}


@pytest.mark.parametrize("damage", ["truncated", "old_format", "other_video"])
def test_a_damaged_or_foreign_entry_is_extracted_again_never_read(
    damage: str, synthetic_root: Path, tmp_path: Path, writes: Counter
) -> None:
    import numpy as np

    model = make_model()
    view = prepare_feature_cache(make_data(synthetic_root, tmp_path), model.network, trainer())
    path, _, entry = view_of(view)["splits"]["test"][0]
    file = view.parent.parent / entry
    good = FeatureCacheDataset(view, "test")[0]["features"]
    if damage == "truncated":
        file.write_bytes(file.read_bytes()[:100])
    elif damage == "old_format":
        with np.load(file) as stored:
            arrays = {name: stored[name] for name in stored.files}
        meta = json.loads(str(arrays["meta"]))
        meta["format"] -= 1
        arrays["meta"], arrays["0"] = np.array(json.dumps(meta)), arrays["0"] * 0  # features that must not be read
        with open(file, "wb") as handle:
            np.savez(handle, **arrays)
    else:
        other = view.parent.parent / view_of(view)["splits"]["test"][1][2]
        file.write_bytes(other.read_bytes())
    writes.clear()
    again = prepare_feature_cache(make_data(synthetic_root, tmp_path), model.network, trainer())
    assert again == view and dict(writes) == {os.path.realpath(path): 1}
    torch.testing.assert_close(FeatureCacheDataset(again, "test")[0]["features"], good)


def test_training_draws_depend_on_the_video_not_its_place_in_a_manifest(synthetic_root: Path) -> None:
    from video_cnn_rnn.data.dataset import VideoDataset

    items = read_csv(synthetic_root / "train.csv")[:3]
    forward = VideoDataset(items, num_frames=4, img_size=32, augment=True, clips_per_video=2)
    backward = VideoDataset(items[::-1], num_frames=4, img_size=32, augment=True, clips_per_video=2)
    assert torch.equal(forward[0]["frames"], backward[2]["frames"])
    reseeded = VideoDataset(items, num_frames=4, img_size=32, augment=True, clips_per_video=2, seed=7)
    assert any(not torch.equal(forward[i]["frames"], reseeded[i]["frames"]) for i in range(3))


@pytest.mark.slow
def test_checkpoint_trained_from_cache_predicts_raw_videos(synthetic_root: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_cli import tiny_args

    runs = tmp_path / "runs"
    args = [*tiny_args(synthetic_root, runs), "--data.feature_cache", str(tmp_path / "cache")]
    extract = subprocess.run([sys.executable, "-m", "video_cnn_rnn", "extract", *args], capture_output=True, text=True)
    assert extract.returncode == 0, extract.stderr[-3000:]
    assert "feature cache ready" in extract.stdout
    fit = subprocess.run([sys.executable, "-m", "video_cnn_rnn", "fit", *args], capture_output=True, text=True)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "using feature cache" in fit.stdout
    checkpoint = runs / "tiny" / "checkpoints" / "best.ckpt"
    model = VideoClassifier.load_from_checkpoint(checkpoint)
    video = synthetic_root / (synthetic_root / "test.csv").read_text().splitlines()[1].split(",")[0]
    ranked = model.predict_video(str(video), top_k=3)
    assert len(ranked) == 3 and ranked[0][1] >= ranked[1][1]


@pytest.mark.slow
def test_ddp_extraction_equals_single_process(synthetic_root: Path, tmp_path: Path) -> None:
    import numpy as np

    sys.path.insert(0, str(Path(__file__).parent))
    from test_cli import tiny_args

    folders = {}
    for name, extra in (("single", []), ("ddp", ["--trainer.strategy", "ddp", "--trainer.devices", "2"])):
        args = [*tiny_args(synthetic_root, tmp_path / "runs"), *extra, "--data.feature_cache", str(tmp_path / name)]
        result = subprocess.run(
            [sys.executable, "-m", "video_cnn_rnn", "extract", *args], capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr[-3000:]
        (folder,) = (tmp_path / name).rglob("views/*.json")
        folders[name] = folder
        # Every video extracted once, by one of the ranks: no rank repeated another's share.
        assert len(list((tmp_path / name).rglob("*.npz"))) == 30
    assert folders["single"].name == folders["ddp"].name  # same view: same entries (keys), rows and labels
    for split in ("train", "val", "test"):
        single, ddp = (FeatureCacheDataset(folders[k], split) for k in ("single", "ddp"))
        assert single.rows == ddp.rows
        for index in range(len(single)):
            np.testing.assert_array_equal(single.clips(index), ddp.clips(index))


def _read_csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_checkpoint_evaluated_through_the_cache_equals_raw_videos(synthetic_root: Path, tmp_path: Path) -> None:
    """A checkpoint tested through the cache gets its own backbone's features: the predictions equal testing
    it on the raw videos and predicting them, and fit + test + extract share one cache folder."""
    import timm

    sys.path.insert(0, str(Path(__file__).parent))
    from test_cli import tiny_args

    # Weights no freshly built model has: a checkpoint evaluated with a re-initialised backbone would differ.
    torch.manual_seed(123)
    weights = tmp_path / "backbone.pth"
    torch.save(timm.create_model("test_efficientnet").state_dict(), weights)
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    # fp32 on every path: predict_video runs without autocast, and the hardware default may be bf16-mixed.
    args = [*tiny_args(synthetic_root, runs), "--trainer.precision", "32-true", "--model.pretrained", str(weights), "--data.eval_clips", "2",
            "--data.eval_flip", "true", "--data.train_flip", "true", "--data.cache_clips", "2"]  # fmt: skip
    cached = [*args, "--data.feature_cache", str(cache)]

    def cli(*command: str) -> str:
        result = subprocess.run([sys.executable, "-m", "video_cnn_rnn", *command], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    cli("fit", *cached)
    (folder,) = cache.rglob("views/*.json")
    assert "using feature cache" in cli("fit", *cached, "--ckpt_path", "last", "--trainer.max_epochs", "3")
    checkpoint = str(runs / "tiny" / "checkpoints" / "best.ckpt")
    reports = {}
    # "no_train": a checkpoint evaluated without training annotations brings its own classes.
    for name, extra in (("cached", cached), ("raw", args), ("no_train", [*args, "--data.train", "null"])):
        out = cli("test", *extra, "--ckpt_path", checkpoint, "--reports.output_dir", str(tmp_path / name))
        assert ("using feature cache" in out) == (name == "cached")
        reports[name] = _read_csv_rows(tmp_path / name / "test_predictions.csv")
    assert reports["no_train"] == reports["raw"]
    test_videos = [row["path"] for row in reports["raw"]]
    cli("predict", *args, "--ckpt_path", checkpoint, "--reports.output_dir", str(tmp_path / "predict"),
        "--data.predict", json.dumps(test_videos))  # fmt: skip
    predicted = {
        row["path"]: (row["label_1"], float(row["prob_1"]))
        for row in _read_csv_rows(tmp_path / "predict" / "predictions.csv")
    }
    cli("extract", *cached, "--ckpt_path", checkpoint)

    model = VideoClassifier.load_from_checkpoint(checkpoint)
    in_python = {path: model.predict_video(path, top_k=1)[0] for path in test_videos}

    assert list(cache.rglob("views/*.json")) == [folder]  # fit, test and extract: one view of one store
    assert [r["path"] for r in reports["cached"]] == test_videos
    for cached_row, raw_row in zip(reports["cached"], reports["raw"], strict=True):
        path = raw_row["path"]
        label = raw_row["predicted"]
        assert cached_row["predicted"] == label == predicted[path][0] == in_python[path][0]
        # Raw videos, predict and predict_video all run the same fp32 pipeline (clips, mirrored views).
        assert abs(float(raw_row[f"prob_{label}"]) - predicted[path][1]) < 1e-5
        assert abs(float(raw_row[f"prob_{label}"]) - in_python[path][1]) < 1e-5
        probs = [(float(cached_row[k]), float(raw_row[k])) for k in raw_row if k.startswith("prob_")]
        assert all(abs(a - b) < 2e-2 for a, b in probs)  # the cache stores float16 features


def test_cached_multi_clip_evaluation_averages_every_clip(synthetic_root: Path, tmp_path: Path) -> None:
    folder = prepare_feature_cache(make_data(synthetic_root, tmp_path, eval_clips=3), make_model().network, trainer())
    split = FeatureCacheDataset(folder, "test")
    item = split[0]
    assert split.clips(0).shape[0] == 3 and item["features"].shape == (3, item["length"], 256)
    batch = collate_clips([split[0], split[1]])
    assert batch["features"].dim() == 4 and batch["mask"].shape[:2] == (2, 3)
    model = make_model().eval()
    with torch.no_grad():
        averaged = model.network.batch_logits(batch).softmax(-1)
        single = [
            model.network.forward_features(batch["features"][:, k], batch["mask"][:, k]).softmax(-1) for k in range(3)
        ]
    torch.testing.assert_close(averaged, torch.stack(single).mean(0))


def flip_member_bytes(file: Path, member: str, count: int = 8) -> None:
    """Flip ``count`` bytes inside ``member``'s stored data near its end (the array, not its header), leaving the
    zip directory intact: only the member's CRC tells."""
    import struct
    import zipfile

    with zipfile.ZipFile(file) as archive:
        info = archive.getinfo(member)
    data = bytearray(file.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    end = info.header_offset + 30 + name_length + extra_length + info.compress_size
    data[end - 2 * count : end - count] = bytes(byte ^ 0xFF for byte in data[end - 2 * count : end - count])
    file.write_bytes(bytes(data))


def test_an_entry_with_flipped_array_bytes_is_extracted_again_with_a_warning(
    synthetic_root: Path, tmp_path: Path, writes: Counter
) -> None:
    """Issue 26, row 1: the meta member intact, 8 bytes of an array flipped; once counted valid, then a crash."""
    model = make_model()
    view = prepare_feature_cache(make_data(synthetic_root, tmp_path), model.network, trainer())
    path, _, entry = view_of(view)["splits"]["train"][0]
    file = view.parent.parent / entry
    good = FeatureCacheDataset(view, "train")[0]["features"]
    flip_member_bytes(file, "0.npy")
    writes.clear()
    with pytest.warns(UserWarning, match=rf"{file.name}.* of {path} is damaged.*CRC.*extracting it again"):
        again = prepare_feature_cache(make_data(synthetic_root, tmp_path), model.network, trainer())
    assert dict(writes) == {os.path.realpath(path): 1}
    torch.testing.assert_close(FeatureCacheDataset(again, "train")[0]["features"], good)


def test_an_entry_damaged_mid_epoch_names_its_video_or_is_skipped(synthetic_root: Path, tmp_path: Path) -> None:
    from video_cnn_rnn.data.feature_cache import FeatureStoreError

    view = prepare_feature_cache(make_data(synthetic_root, tmp_path), make_model().network, trainer())
    path, _, entry = view_of(view)["splits"]["test"][0]
    flip_member_bytes(view.parent.parent / entry, "0.npy")  # after the run checked the store
    with pytest.raises(FeatureStoreError, match=rf"{entry}: damaged feature store entry of {path} .*on_error skip"):
        FeatureCacheDataset(view, "test")[0]
    item = FeatureCacheDataset(view, "test", on_error="skip")[0]
    assert item["path"] == path and "CRC" in item["error"]
    assert collate_clips([item, FeatureCacheDataset(view, "test")[1]])["skipped"][0][0] == path
