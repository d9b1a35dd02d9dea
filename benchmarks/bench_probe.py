"""What probing every video before training costs (issue 26): a 1,000-video folder, against one epoch of
``configs/small_real.yaml`` extraction of the same folder.

    python benchmarks/bench_probe.py                     # ../shared/data/real_actions, linked up to 1,000 files
    python benchmarks/bench_probe.py --videos 1000 --extract 16 --source path/to/clips

The folder holds hard links to the source's real clips (each a file of its own to the probe: its resolved path
differs), in ``--classes`` class folders. Timed: ``check_videos`` with an empty probe cache (every video opened
and its first frame decoded, 16 threads), then again with the cache it wrote (the second run); and the
extraction an epoch of ``small_real.yaml`` costs, measured on ``--extract`` of the videos
(``build_feature_cache``: decode 16 frames at 224 px + frozen efficientnet_lite0 with attention pooling's
7x7 maps, on this machine's device) and scaled to the whole folder. The page cache is warm for both.
"""

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_real import hardware  # noqa: E402

from video_cnn_rnn.data.dataset import VideoDataset  # noqa: E402
from video_cnn_rnn.data.decode import _probe as probe  # noqa: E402
from video_cnn_rnn.extraction import build_feature_cache  # noqa: E402
from video_cnn_rnn.models.classifier import VideoClassifier  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def linked_folder(source: Path, folder: Path, count: int, classes: int) -> list[str]:
    """``count`` hard links (copies where links fail) to the videos under ``source``, in class folders."""
    videos = sorted(path for path in source.rglob("*") if path.suffix.lower() in (".mp4", ".avi", ".mkv"))
    if not videos:
        raise SystemExit(f"no videos under {source}")
    paths = []
    for number in range(count):
        target = folder / f"class_{number % classes}" / f"{number:05d}{videos[number % len(videos)].suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(videos[number % len(videos)], target)
        except OSError:
            target.write_bytes(videos[number % len(videos)].read_bytes())
        paths.append(str(target))
    return paths


def extraction_seconds_per_video(paths: list[str], store: Path) -> float:
    """One small_real.yaml extraction pass over ``paths`` (a fresh store), per video."""
    model = VideoClassifier(
        backbone="efficientnet_lite0",
        pretrained=str(REPO / "weights" / "efficientnet_lite0.pth") if (REPO / "weights").is_dir() else False,
        freeze="frozen",
        spatial_pool="attention",
        num_classes=2,
        num_frames=16,
        img_size=224,
    )
    dataset = VideoDataset([(path, 0) for path in paths], num_frames=16, img_size=224, sampling="uniform")
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    precision = "bf16-mixed" if torch.cuda.is_available() else "32-true"
    trainer = L.Trainer(
        accelerator=accelerator, devices=1, logger=False, enable_progress_bar=False, precision=precision
    )
    start = time.perf_counter()
    build_feature_cache(model.network, {"train": dataset}, store, trainer, batch_size=8, num_workers=2)
    return (time.perf_counter() - start) / len(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "real_actions")
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--extract", type=int, default=16, help="videos whose extraction is timed and scaled")
    options = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(f"hardware: {hardware()}")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        paths = linked_folder(options.source, scratch / "videos", options.videos, options.classes)
        os.environ[probe.CACHE_VARIABLE] = str(scratch / "probed.json")
        splits = {"train": [(path, None) for path in paths]}
        timings = []
        for _ in range(2):
            start = time.perf_counter()
            probe.check_videos(splits, "raise")
            timings.append(time.perf_counter() - start)
        per_video = extraction_seconds_per_video(paths[: options.extract], scratch / "store")
    epoch = per_video * len(paths)
    print(f"{len(paths)} videos from {options.source}")
    print(f"probe, first run:  {timings[0]:.2f} s ({1000 * timings[0] / len(paths):.1f} ms a video)")
    print(f"probe, second run: {timings[1]:.3f} s (cached)")
    print(f"small_real.yaml extraction: {per_video:.3f} s a video -> {epoch:.0f} s for the folder")
    print(
        f"first probe = {100 * timings[0] / epoch:.1f}% of one extraction epoch; second = {100 * timings[1] / epoch:.2f}%"
    )


if __name__ == "__main__":
    main()
