"""Training speed of ``configs/finetune_real.yaml`` end to end (decoding, device augmentation, forward, backward,
optimizer step): clips/s over the steps after the first, at each image size asked for.

    python benchmarks/bench_finetune_real.py --train ../shared/data/ut_interaction/all.csv --clips 24 --sizes 112 160

``--clips`` takes the first clips of each class in turn from ``--train`` (a ``video_name,tag`` CSV); any further
``--key value`` pairs go to the CLI (e.g. ``--model.temporal_shift 0.125``).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L

from video_cnn_rnn.cli import run_cli

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "finetune_real.yaml"


class StepTimer(L.Callback):
    """Wall time of every training step after the first (which pays for warm-up)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.starts.append(time.perf_counter())


def subset_csv(source: Path, clips: int, folder: Path) -> Path:
    """The first ``clips`` rows taken class by class in turn, with absolute paths."""
    with source.open() as file:
        rows = list(csv.DictReader(file))
    by_class: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_class.setdefault(row["tag"], []).append(row)
    chosen: list[dict[str, str]] = []
    while len(chosen) < min(clips, len(rows)):
        for group in by_class.values():
            if group and len(chosen) < clips:
                chosen.append(group.pop(0))
    path = folder / "train.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["video_name", "tag"])
        writer.writerows([(str((source.parent / row["video_name"]).resolve()), row["tag"]) for row in chosen])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 160])
    parser.add_argument("--epochs", type=int, default=1)
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train = subset_csv(args.train, args.clips, folder)
        for size in args.sizes:
            timer = StepTimer()
            cli = run_cli(
                [
                    "--config", str(CONFIG),
                    "--data.train", str(train), "--data.test", "null", "--data.video_root", "null",
                    "--data.img_size", str(size),
                    "--trainer.max_epochs", str(args.epochs),
                    "--trainer.enable_progress_bar", "false",
                    "--trainer.logger.init_args.save_dir", str(folder),
                    "--checkpoint.dirpath", str(folder / "ckpt"),
                    *extra,
                ],
                run=False,
            )  # fmt: skip
            cli.trainer.callbacks.append(timer)
            cli.trainer.fit(cli.model, cli.datamodule)
            steps = len(timer.starts) - 2  # the first step is warm-up; the last entry is the end
            seconds = timer.starts[-1] - timer.starts[1]
            clips_per_step = cli.datamodule.hparams.batch_size
            print(
                f"{size} px: {steps} timed steps of {clips_per_step} clips x {cli.datamodule.hparams.num_frames} frames, "
                f"{steps * clips_per_step / seconds:.2f} clips/s ({seconds / steps:.2f} s/step)",
                flush=True,
            )


if __name__ == "__main__":
    main()
