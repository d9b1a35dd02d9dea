"""Small subjects in wide frames through ``crop: motion``: a recipe learns what a centre crop cannot see, and one
checkpoint gives the same predictions on every path a user takes (``test`` on raw videos and through the feature
store, ``predict``, ``predict_video``, a reloaded model folder, an exported file fed the motion-cropped clips the
sidecar describes).

The clips stand in for fixed-camera footage: a 160x64 still textured scene, and a 10 px square moving either left
and right or up and down somewhere near a side edge, where a centre square crop loses it; every other clip stored
sideways with a display rotation, as phones record (the motion crop is taken from the upright frame).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch

from video_cnn_rnn.cli import main, run_cli
from video_cnn_rnn.data.decode import load_clip
from video_cnn_rnn.data.synthetic import write_video
from video_cnn_rnn.models.classifier import VideoClassifier

if TYPE_CHECKING:
    from conftest import AddDisplayRotation

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
HEIGHT, WIDTH, FRAMES, FPS = 64, 160, 12, 10  # upright landscape frames


def wide_clip(motion: str, seed: int) -> np.ndarray:
    """[T, 64, 160, 3] uint8: a still blocky scene and a small white square moving sideways or up and down, in
    the left or right fifth of the frame (outside the centre square)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(60, 160, (HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8)
    scene = blocks.repeat(8, 0).repeat(8, 1)
    row = int(rng.integers(18, 36))
    column = int(rng.integers(6, 20)) if rng.random() < 0.5 else int(rng.integers(WIDTH - 32, WIDTH - 20))
    frames = np.repeat(scene[None], FRAMES, 0)
    for t in range(FRAMES):
        step = int(round(8 * np.sin(t)))
        top, left = (row, column + step) if motion == "sideways" else (row + step, column)
        frames[t, top : top + 10, left : left + 10] = 255
    return frames


@pytest.fixture(scope="module")
def wide_clips(add_display_rotation: AddDisplayRotation, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train.csv`` (10 per class) and ``test.csv`` (6 per class); every other clip stored turned a quarter with
    the display rotation that shows it upright."""
    root = tmp_path_factory.mktemp("wide")
    for split, count, first_seed in (("train", 10, 0), ("test", 6, 100)):
        rows = ["video_name,tag"]
        for motion in ("sideways", "updown"):
            for index in range(count):
                frames = wide_clip(motion, first_seed + index + (50 if motion == "updown" else 0))
                name = f"{split}_{motion}_{index}"
                if index % 2 == 0:
                    write_video(root / f"{name}.mp4", frames, fps=FPS, x264_options={"g": "60"})
                else:
                    sideways = np.ascontiguousarray(np.rot90(frames, k=-1, axes=(1, 2)))
                    write_video(root / f"{name}_stored.mp4", sideways, fps=FPS, x264_options={"g": "60"})
                    add_display_rotation(root / f"{name}_stored.mp4", root / f"{name}.mp4", 90)
                rows.append(f"{root / name}.mp4,{motion}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def _args(recipe: str, clips: Path, runs: Path) -> list[str]:
    """``recipe`` with the small-subjects overlay after it, as docs/models.md recommends for such footage; its
    proxies off (a proxy is a re-encoded copy, within 0.02 of the original's probabilities, not 1e-4: that parity is
    tests/data/test_proxies.py's)."""
    return [
        "--config", str(CONFIGS / recipe),
        "--config", str(CONFIGS / "small_subjects.yaml"),
        "--data.proxy_cache", "null",
        "--seed_everything", "0",
        "--trainer.accelerator", "cpu",
        "--trainer.precision", "32-true",  # predict_video and the export run in fp32: compare like with like
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(runs),
        "--checkpoint.dirpath", str(runs / "checkpoints"),
        "--model.backbone", "test_efficientnet",
        "--model.pretrained", "false",
        "--model.d_model", "16",
        "--model.dense_dim", "32",
        "--model.optimizer.init_args.lr", "0.01",
        "--data.train", str(clips / "train.csv"),
        "--data.test", str(clips / "test.csv"),
        "--data.num_frames", "6",
        "--data.img_size", "32",
        "--data.num_workers", "0",
    ]  # fmt: skip


@pytest.mark.slow
def test_motion_crop_gives_one_answer_on_every_path(wide_clips: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    args = [*_args("finetune_real.yaml", wide_clips, runs), "--trainer.max_epochs", "8", "--model.backbone_lr", "0.001"]
    run_cli(["fit", *args])
    checkpoint = runs / "checkpoints" / "last.ckpt"
    run_cli(["test", *args, "--ckpt_path", str(checkpoint), "--reports.output_dir", str(tmp_path / "test")])
    tested = _rows(tmp_path / "test" / "test_predictions.csv")
    right = sum(row["predicted"] == row["label"] for row in tested)
    assert len(tested) == 12 and right >= 9, f"the motion crop did not learn the small subject: {right} of 12"

    videos = [row["path"] for row in tested]
    run_cli(["predict", *args, "--ckpt_path", str(checkpoint), "--reports.output_dir", str(tmp_path / "predict"),
             "--data.predict", json.dumps(videos)])  # fmt: skip
    predicted = {row["path"]: row for row in _rows(tmp_path / "predict" / "predictions.csv")}
    model = VideoClassifier.load_from_checkpoint(checkpoint)
    model.save_pretrained(tmp_path / "folder")
    reloaded = VideoClassifier.from_pretrained(tmp_path / "folder")
    main(
        ["export", "--ckpt_path", str(checkpoint), "--format", "exported_program", "--output", str(tmp_path / "m.pt2")]
    )
    exported = torch.export.load(str(tmp_path / "m.pt2")).module()
    sidecar = json.loads((tmp_path / "m.pt2.json").read_text())
    assert sidecar["crop"] == "motion"

    for row in tested:
        path, label = row["path"], row["predicted"]
        probability = float(row[f"prob_{label}"])
        answers = {
            "predict": (predicted[path]["label_1"], float(predicted[path]["prob_1"])),
            "predict_video": model.predict_video(path, top_k=1)[0],
            "model folder": reloaded.predict_video(path, top_k=1)[0],
        }
        for route, (name, prob) in answers.items():
            assert name == label and prob == pytest.approx(probability, abs=1e-4), f"{route} differs on {path}"
    # The exported file takes clips already cropped: the caller runs the motion crop (load_clip with the
    # sidecar's settings), one clip here, so compare with predict_video over that same clip.
    single = VideoClassifier.load_from_checkpoint(checkpoint, eval_clips=1, eval_flip=False)
    for path in videos[:4]:
        frames, length = load_clip(path, sidecar["num_frames"], sidecar["img_size"], "segment", crop=sidecar["crop"])
        with torch.no_grad():
            from_export = exported(frames[None], torch.ones(1, length, dtype=torch.bool)).softmax(-1)[0]
        name, prob = single.predict_video(path, top_k=1)[0]
        assert name == single.class_names[int(from_export.argmax())]
        assert prob == pytest.approx(float(from_export.max()), abs=1e-4), f"export differs on {path}"


@pytest.mark.slow
def test_motion_crop_through_the_feature_store_matches_raw_videos(wide_clips: Path, tmp_path: Path) -> None:
    runs, store = tmp_path / "runs", tmp_path / "store"
    args = [*_args("small_real.yaml", wide_clips, runs), "--trainer.max_epochs", "6"]
    run_cli(["fit", *args, "--data.feature_cache", str(store)])
    checkpoint = runs / "checkpoints" / "last.ckpt"
    outputs = {}
    for route, extra in (("store", ["--data.feature_cache", str(store)]), ("raw", ["--data.feature_cache", "null"])):
        output = tmp_path / route
        run_cli(["test", *args, *extra, "--ckpt_path", str(checkpoint), "--reports.output_dir", str(output)])
        outputs[route] = {row["path"]: row for row in _rows(output / "test_predictions.csv")}
    assert outputs["store"].keys() == outputs["raw"].keys() and len(outputs["raw"]) == 12
    for path, row in outputs["raw"].items():
        stored = outputs["store"][path]
        assert stored["predicted"] == row["predicted"], path
        for name in ("sideways", "updown"):
            assert float(stored[f"prob_{name}"]) == pytest.approx(float(row[f"prob_{name}"]), abs=2e-3), path
