"""What ``crop: motion`` costs against ``centre`` and ``pad``: one training clip per video from wide HD files.

    python benchmarks/bench_motion_crop.py                         # generated 1280x720 H.264 files, GOP 60
    python benchmarks/bench_motion_crop.py runs/scale/sets/landscape_1-3/*/*.mp4 --videos 12
    python benchmarks/bench_motion_crop.py --coverage runs/scale/sets_office/landscape_1-3   # where the box lands

Each round loads one clip of every video with each crop in turn (interleaved, so a busy machine slows all alike),
16 frames at 224 px with ``segment`` sampling, and times the motion box alone on the decoded frames. Prints the
median ms per video per crop, the ratios to ``centre``, and what it ran on.

``--coverage SET`` (a variant folder ``bench_scale.py build`` wrote) says instead where the motion box of each clip
lands, against the pasted subject's box in ``manifest.json``: the share of the subject inside the motion box and
inside the centre square, the fallbacks, and the box's side, over every clip (16 ``uniform`` frames, 224 px).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from video_cnn_rnn.data.decode import decode_frames, load_clip
from video_cnn_rnn.data.motion import motion_box
from video_cnn_rnn.data.sampling import sample_indices
from video_cnn_rnn.data.synthetic import write_video


def hardware() -> str:
    spec = importlib.util.spec_from_file_location("sweep_real", Path(__file__).with_name("sweep_real.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.hardware()


def generated(folder: Path, count: int) -> list[Path]:
    """``count`` 4 s 1280x720 30 fps clips, GOP 60: a still textured scene and a small square moving in it."""
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        scene = rng.integers(40, 200, (90, 160, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        frames = np.repeat(scene[None], 120, 0)
        row, col = int(rng.integers(100, 600)), int(rng.integers(100, 1100))
        for t in range(120):
            left = col + int(60 * np.sin(t / 8))
            frames[t, row : row + 80, left : left + 80] = 255
        paths.append(folder / f"wide_{index}.mp4")
        write_video(paths[-1], frames, fps=30, x264_options={"g": "60", "bf": "0", "preset": "veryfast"})
    return paths


def inside(box: tuple[float, float, float, float], square: tuple[float, float, float]) -> float:
    """Share of ``box`` (x, y, width, height) inside ``square`` (top, left, side)."""
    x, y, width, height = box
    top, left, side = square
    across = max(0.0, min(x + width, left + side) - max(x, left))
    down = max(0.0, min(y + height, top + side) - max(y, top))
    return across * down / (width * height)


def coverage(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    frame_w, frame_h = manifest["settings"]["frame"]
    rows, sides, fallbacks = [], [], 0
    for name, at in sorted(manifest["clips"].items()):
        path = folder / Path(name).with_suffix(".mp4")
        frames = decode_frames(path, lambda count, fps: sample_indices(count, 16, "uniform"), short_side=3 * 224)
        zoom = frames.shape[2] / frame_w  # decoded pixels per frame pixel
        subject = (at["x"] * zoom, at["y"] * zoom, at["width"] * zoom, at["height"] * zoom)
        box = motion_box(frames)
        short = min(frames.shape[1:3])
        centre = ((frames.shape[1] - short) / 2, (frames.shape[2] - short) / 2, short)
        rows.append((inside(subject, (box.top, box.left, box.side)), inside(subject, centre)))
        sides.append(box.side / short)
        fallbacks += bool(box.fallback)
    motion, centre = np.array(rows).T
    print(f"ran on: {hardware()}; {folder} ({frame_w}x{frame_h}, {manifest['settings']['background']['file']})")
    print(f"{len(rows)} clips, {fallbacks} fell back to the centre square; median box side {np.median(sides):.2f}")
    print("| crop | subject share inside (mean) | clips with half the subject or more inside |\n| --- | --- | --- |")
    for label, values in (("motion box", motion), ("centre square", centre)):
        print(f"| {label} | {values.mean():.2f} | {(values >= 0.5).mean():.0%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="*", type=Path, help="default: 8 generated 1280x720 files")
    parser.add_argument("--videos", dest="count", type=int, default=8, help="how many of the given files")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--coverage", type=Path, help="a bench_scale.py variant folder: where the boxes land")
    options = parser.parse_args()
    if options.coverage:
        return coverage(options.coverage)
    with tempfile.TemporaryDirectory() as folder:
        videos = options.videos[: options.count] or generated(Path(folder), options.count)
        times: dict[str, list[float]] = {"centre": [], "pad": [], "motion": [], "motion box alone": []}
        for _ in range(options.rounds):
            for path in videos:
                for crop in ("centre", "pad", "motion"):
                    start = time.perf_counter()
                    load_clip(path, 16, 224, "segment", crop=crop)
                    times[crop].append(time.perf_counter() - start)
                frames = decode_frames(path, lambda count, fps: sample_indices(count, 16, "segment"), short_side=672)
                start = time.perf_counter()
                motion_box(frames)
                times["motion box alone"].append(time.perf_counter() - start)
    print(f"ran on: {hardware()}; {len(videos)} videos, {options.rounds} rounds, 16 frames at 224 px")
    centre = statistics.median(times["centre"])
    print("| what | ms per video (median) | vs centre |\n| --- | --- | --- |")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {1000 * median:.0f} | {median / centre:.2f}x |")


if __name__ == "__main__":
    sys.exit(main())
