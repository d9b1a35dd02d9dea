"""Streaming benchmark: clips/s from local LitData shards against from files, shard sizes, memory.

Run: ``.venv/bin/python benchmarks/bench_streaming.py`` (a few minutes on 2 cores; the videos are those of
``bench_data.py``, generated once under ``$BENCH_CACHE``, default ``/tmp/video_cnn_rnn_bench``).

1. Clips/s of the training loader (``uniform``, 20 frames, 224 px), 1 and 2 workers: ``VideoDataset`` over the 24
   UCF101-like files (backend ``auto`` and ``pyav``) against ``data.streaming``'s ``ShardedVideoDataset`` +
   ``StreamingDataLoader`` over the same videos sharded unchanged (decoded by PyAV from memory). The loaders take
   turns epoch by epoch; the best epoch after the first (worker start-up) counts. Target: shards >= 0.9x files.
2. Shard size against source size: unchanged, and re-encoded (``--short_side`` 224 and 128, H.264 CRF 23), with
   the time re-encoding took.
3. Peak RSS (VmHWM) of a process reading every item of a shard set of 24 and of 96 videos (num_workers 0):
   flat in the number of videos (LitData reads a chunk at a time; nothing is held per video).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_data import ucf_like_files  # noqa: E402

from video_cnn_rnn.hardware import cpu_name  # noqa: E402

NUM_FRAMES, IMG_SIZE = 20, 224


def write(paths: list[Path], output: Path, short_side: int | None = None) -> float:
    """Shard ``paths`` into ``output``; the seconds it took."""
    from video_cnn_rnn.data.shards.writer import write_shards

    start = time.perf_counter()
    write_shards({"train": [(str(p), 0) for p in paths]}, str(output), ["x"], short_side=short_side, overwrite=True)
    return time.perf_counter() - start


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*.bin"))


def loaders(paths: list[Path], shards: Path, workers: int) -> dict:
    from torch.utils.data import DataLoader

    from video_cnn_rnn.data import VideoDataset, collate_clips
    from video_cnn_rnn.data.shards.reader import ResumableStreamingLoader, ShardedVideoDataset

    settings = dict(num_frames=NUM_FRAMES, img_size=IMG_SIZE, sampling="uniform")
    found = {}
    for backend in ("auto", "pyav"):
        dataset = VideoDataset([(str(p), 0) for p in paths], backend=backend, **settings)
        found[f"files ({backend})"] = DataLoader(
            dataset, batch_size=2, num_workers=workers, collate_fn=collate_clips, persistent_workers=True
        )
    clips = VideoDataset([], **settings)
    dataset = ShardedVideoDataset(str(shards / "train"), clips, shuffle=True, seed=0)
    found["shards"] = ResumableStreamingLoader(
        dataset, batch_size=2, num_workers=workers, collate_fn=collate_clips, persistent_workers=True
    )
    return found


def throughput(paths: list[Path], shards: Path, workers: int, epochs: int) -> dict[str, float]:
    runs = loaders(paths, shards, workers)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(epochs):
        for name, loader in runs.items():
            start = time.perf_counter()
            clips = sum(len(batch["paths"]) for batch in loader)
            rates[name].append(clips / (time.perf_counter() - start))
    return {name: max(history[1:]) for name, history in rates.items()}


_MEMORY_PROBE = """
import sys
sys.path.insert(0, {repo!r})
from video_cnn_rnn.data import VideoDataset
from video_cnn_rnn.data.shards.reader import ShardedVideoDataset
dataset = ShardedVideoDataset({shards!r}, VideoDataset([], num_frames=20, img_size=224), shuffle=True, seed=0)
count = sum(1 for _ in dataset)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(count, peak / 1024)
"""


def peak_memory(shards: Path) -> tuple[int, float]:
    code = _MEMORY_PROBE.format(repo=str(REPO), shards=str(shards / "train"))
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    count, peak = output.split()[-2:]
    return int(count), float(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=3)
    options = parser.parse_args()
    cache = Path(os.environ.get("BENCH_CACHE", "/tmp/video_cnn_rnn_bench"))
    paths = ucf_like_files(cache, options.files)
    print(f"CPU: {cpu_name()}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (shared machine)")
    source = sum(p.stat().st_size for p in paths)
    print(f"{len(paths)} UCF101-like files (bench_data.py): {source / 1e6:.2f} MB")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        print("\nshard size against source size:")
        for short_side in (None, 224, 128):
            seconds = write(paths, root / f"s{short_side}", short_side)
            size = folder_bytes(root / f"s{short_side}")
            label = "unchanged" if short_side is None else f"re-encoded, short side {short_side}"
            print(f"  {label:32s} {size / 1e6:7.2f} MB  {size / source:5.2f}x source  written in {seconds:6.1f} s")
        print(f"\nclips/s ({NUM_FRAMES} frames, {IMG_SIZE} px, uniform), best epoch after the first:")
        for workers in (1, 2):
            rates = throughput(paths, root / "sNone", workers, options.epochs)
            ratio = rates["shards"] / rates["files (auto)"]
            shown = "  ".join(f"{name} {rate:6.2f}" for name, rate in rates.items())
            print(f"  {workers} worker(s): {shown}  shards/files(auto) {ratio:.2f}x")
        print("\npeak RSS reading every item (num_workers 0):")
        write(paths * 4, root / "x4")
        for name in ("sNone", "x4"):
            count, peak = peak_memory(root / name)
            print(f"  {count:3d} videos: {peak:7.1f} MB")
    print(json.dumps({"cpu": cpu_name()}))


if __name__ == "__main__":
    main()
