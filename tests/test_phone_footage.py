"""Phone footage through the fine-tuning recipe: ``configs/finetune_real.yaml`` as written (the whole upright frame
letterboxed, attention over each frame's feature map, clip-consistent augmentation on the device, 2 clips a video
an epoch, 2 evaluation clips and their mirror images), shrunk to a tiny backbone.

The clips stand in for the held-out phone set: portrait, half of them stored sideways with a display rotation as
phones record, and two classes that differ only in *where* something happens, in the top or bottom quarter of the
upright frame, rows a centre square crop throws away. The recipe learns them, and one checkpoint gives the same
predictions on every path a user takes: ``test --ckpt_path`` on the raw videos, ``predict``, ``predict_video``,
a reloaded model folder and an exported file.
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
from video_cnn_rnn.data.decode import load_clips
from video_cnn_rnn.data.synthetic import write_video
from video_cnn_rnn.models.classifier import VideoClassifier

if TYPE_CHECKING:
    from conftest import AddDisplayRotation

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "finetune_real.yaml"
HEIGHT, WIDTH, FRAMES, FPS = 64, 32, 8, 10  # upright portrait frames


def upright_clip(where: str, seed: int) -> np.ndarray:
    """[T, 64, 32, 3] uint8: grey noise, and a white square sliding across the top or the bottom quarter."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(80, 150, (FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    row = int(rng.integers(2, 6)) + (0 if where == "top" else HEIGHT * 3 // 4)
    start = int(rng.integers(0, WIDTH - 8))
    for t in range(FRAMES):
        column = (start + 3 * t) % (WIDTH - 8)
        frames[t, row : row + 10, column : column + 8] = 255
    return frames


@pytest.fixture(scope="module")
def phone_clips(add_display_rotation: AddDisplayRotation, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train.csv`` (10 per class) and ``test.csv`` (8 per class); every other clip stored sideways (landscape,
    turned a quarter clockwise or anticlockwise) with the display rotation (90 or 270) that shows it upright."""
    root = tmp_path_factory.mktemp("phone")
    for split, count, first_seed in (("train", 10, 0), ("test", 8, 100)):
        rows = ["video_name,tag"]
        for where in ("top", "bottom"):
            for index in range(count):
                seed = first_seed + index + (50 if where == "bottom" else 0)
                frames, name = upright_clip(where, seed), f"{split}_{where}_{index}"
                if index % 2 == 0:
                    write_video(root / f"{name}.mp4", frames, fps=FPS)
                else:
                    degrees = 90 if index % 4 == 1 else 270  # 90: stored turned clockwise; 270: anticlockwise
                    sideways = np.ascontiguousarray(np.rot90(frames, k=-1 if degrees == 90 else 1, axes=(1, 2)))
                    write_video(root / f"{name}_stored.mp4", sideways, fps=FPS)
                    add_display_rotation(root / f"{name}_stored.mp4", root / f"{name}.mp4", degrees)
                rows.append(f"{root / name}.mp4,{where}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_fine_tuning_recipe_learns_where_on_rotated_portrait_clips(phone_clips: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    args = [
        "--config", str(CONFIG),
        "--seed_everything", "0",
        "--trainer.accelerator", "cpu",
        "--trainer.precision", "32-true",  # predict_video and the export run in fp32: compare like with like
        "--trainer.max_epochs", "12",
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(runs),
        "--checkpoint.dirpath", str(runs / "checkpoints"),
        "--model.backbone", "test_efficientnet",
        "--model.pretrained", "false",
        "--model.d_model", "16",
        "--model.dense_dim", "32",
        "--model.optimizer.init_args.lr", "0.01",
        "--model.backbone_lr", "0.001",
        "--data.train", str(phone_clips / "train.csv"),
        "--data.test", str(phone_clips / "test.csv"),
        "--data.num_frames", "4",
        "--data.img_size", "64",  # a 2 x 2 feature map: top and bottom are different cells
        "--data.num_workers", "0",
    ]  # fmt: skip
    fit = run_cli(["fit", *args])
    assert fit.datamodule.hparams.crop == "pad" and fit.model.hparams.spatial_pool == "attention"
    checkpoint = runs / "checkpoints" / "last.ckpt"

    run_cli(["test", *args, "--ckpt_path", str(checkpoint), "--reports.output_dir", str(tmp_path / "test")])
    tested = _rows(tmp_path / "test" / "test_predictions.csv")
    assert len(tested) == 16
    right = [row["predicted"] == row["label"] for row in tested]
    stored_sideways = {path.name.removesuffix("_stored.mp4") for path in phone_clips.glob("*_stored.mp4")}
    sideways = [hit for row, hit in zip(tested, right, strict=True) if Path(row["path"]).stem in stored_sideways]
    # Chance is 8 of 16; without the top and bottom quarters (a centre crop) a run scores at chance.
    assert sum(right) >= 14, f"the recipe did not learn where: {sum(right)} of 16 test clips right"
    assert len(sideways) == 8 and sum(sideways) >= 7, f"{sum(sideways)} of the 8 sideways-stored clips right"

    videos = [row["path"] for row in tested]
    run_cli(["predict", *args, "--ckpt_path", str(checkpoint), "--reports.output_dir", str(tmp_path / "predict"),
             "--data.predict", json.dumps(videos)])  # fmt: skip
    predicted = {row["path"]: row for row in _rows(tmp_path / "predict" / "predictions.csv")}

    model = VideoClassifier.load_from_checkpoint(checkpoint)
    model.save_pretrained(tmp_path / "folder")
    reloaded = VideoClassifier.from_pretrained(tmp_path / "folder")
    export = ["export", "--ckpt_path", str(checkpoint), "--format", "exported_program"]
    main([*export, "--output", str(tmp_path / "m.pt2")])
    exported = torch.export.load(str(tmp_path / "m.pt2")).module()
    sidecar = json.loads((tmp_path / "m.pt2.json").read_text())
    assert (sidecar["crop"], sidecar["spatial_pool"], sidecar["eval_clips"], sidecar["eval_flip"]) == (
        "pad", "attention", 2, True
    )  # fmt: skip

    names = model.class_names
    for row in tested:
        path, label = row["path"], row["predicted"]
        probability = float(row[f"prob_{label}"])
        # As the sidecar says: the eval clips decoded upright and letterboxed, and their mirror images, logits
        # averaged as softmax.
        frames, length = load_clips(path, sidecar["eval_clips"], sidecar["num_frames"], sidecar["img_size"],
                                    crop=sidecar["crop"])  # fmt: skip
        frames = torch.cat([frames, frames.flip(-1)])
        mask = (torch.arange(frames.shape[1]) < length).expand(frames.shape[:2])  # [2K, L]
        with torch.no_grad():
            from_export = exported(frames, mask).softmax(-1).mean(0)
        answers = {
            "predict": (predicted[path]["label_1"], float(predicted[path]["prob_1"])),
            "predict_video": model.predict_video(path, top_k=1)[0],
            "model folder": reloaded.predict_video(path, top_k=1)[0],
            "export": (names[int(from_export.argmax())], float(from_export.max())),
        }
        for route, (name, prob) in answers.items():
            assert name == label and prob == pytest.approx(probability, abs=1e-4), f"{route} differs on {path}"
