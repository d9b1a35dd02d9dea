"""Training clips from long HD phone-like videos: PyAV seeking to each frame's keyframe vs one sequential pass.

Run: ``.venv/bin/python benchmarks/bench_long_videos.py`` (about 3 minutes on 2 cores, the first time 2 more to
write the videos, cached under ``$BENCH_CACHE``, default ``/tmp/video_cnn_rnn_bench``).

What ``configs/finetune_real.yaml`` decodes every epoch: 16 frames by ``segment`` sampling with random draws,
letterboxed to 160 px, from 1080p H.264 at 30 fps with a keyframe a second (as phones write it), 10 s and 60 s
long, plus the 60 s file stream-copied with a 90 degree display rotation (a portrait phone video stored sideways,
which decord cannot read, so every backend uses PyAV; needs ``imageio-ffmpeg``, in the dev extra). One core,
single-threaded decoders; the methods take turns on every file and draw the same frames, best of ``--repeats``.

- ``auto``: the default; ``pyav``: PyAV only, seeking where it halves the frames decoded (``readers._decode_seeking``);
- ``pyav, one pass``: the same with seeking switched off (what ``pyav`` and rotated files did before it);
- ``decord``: decord's random access (falls back to PyAV for the rotated file).
"""

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_data import encode_video  # noqa: E402

from video_cnn_rnn.data.decode import _readers as readers  # noqa: E402
from video_cnn_rnn.data.decode import load_clip  # noqa: E402
from video_cnn_rnn.hardware import describe_machine  # noqa: E402

NUM_FRAMES, IMG_SIZE = 16, 160


def phone_like_files(cache: Path) -> dict[str, Path]:
    folder = cache / "phone_like"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for seconds in (10, 60):
        path = folder / f"1080p_{seconds}s.mp4"
        if not path.is_file():
            encode_video(path, seconds * 30, 1920, 1080, fps=30, seed=300 + seconds, gop=30, bframes=False)
        paths[f"{seconds} s"] = path
    try:
        import imageio_ffmpeg
    except ImportError:
        return paths
    rotated = folder / "1080p_60s_rotated90.mp4"
    if not rotated.is_file():
        command = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-display_rotation", "90"]
        subprocess.run([*command, "-i", str(paths["60 s"]), "-c", "copy", str(rotated)], check=True)
    paths["60 s, rotated 90"] = rotated
    return paths


def clip_fn(backend: str, seek: bool):
    def run(path: str, seed: int) -> None:
        readers._PYAV_SEEK_GAIN = 2.0 if seek else float("inf")  # inf: the seeking pass never pays
        load_clip(path, NUM_FRAMES, IMG_SIZE, "segment", random_sampling=True, backend=backend, crop="pad",
                  decode_timeout=0, rng=random.Random(seed))  # fmt: skip

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="passes per method (best is kept)")
    parser.add_argument("--draws", type=int, default=3, help="random clips per file and pass")
    parser.add_argument("--cache", default=os.environ.get("BENCH_CACHE", "/tmp/video_cnn_rnn_bench"))
    args = parser.parse_args()
    started = time.perf_counter()
    files = phone_like_files(Path(args.cache))
    print(f"ran on: {describe_machine()}; files ready in {time.perf_counter() - started:.0f} s")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (other processes share them)")
    methods = {
        "auto (default)": clip_fn("auto", True),
        "pyav": clip_fn("pyav", True),
        "pyav, one pass": clip_fn("pyav", False),
        "decord": clip_fn("decord", True),
    }
    all_cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(all_cpus)})
    try:
        seconds = {}
        for name, path in files.items():
            best = dict.fromkeys(methods, float("inf"))
            for _ in range(args.repeats):
                elapsed = dict.fromkeys(methods, 0.0)
                for draw in range(args.draws):
                    for method, fn in methods.items():
                        start = time.perf_counter()
                        fn(str(path), draw)
                        elapsed[method] += time.perf_counter() - start
                best = {method: min(best[method], elapsed[method] / args.draws) for method in methods}
            seconds[name] = best
    finally:
        os.sched_setaffinity(0, all_cpus)
        readers._PYAV_SEEK_GAIN = 2.0
    print(f"\nseconds per {NUM_FRAMES}-frame training clip ({IMG_SIZE} px, pad), one core; x = vs pyav, one pass")
    print(f"{'file (1080p, 30 fps, GOP 30)':30s}" + "".join(f"{method:>22s}" for method in methods))
    for name, best in seconds.items():
        base = best["pyav, one pass"]
        cells = "".join(f"{best[m]:>12.2f} s ({base / best[m]:4.1f}x)" for m in methods)
        print(f"{name:30s}{cells}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
