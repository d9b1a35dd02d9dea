"""The embedded default dataset: small synthetic action videos, real encoded files, in the Keras example's CSV format.

Six classes in three pairs. The two classes of a pair use the same frames in opposite temporal order
(a disc growing vs shrinking, a square fading in vs out, a colour morphing red->blue vs blue->red), so a
model that ignores frame order cannot separate them. Every video is encoded for real (H.264 in .mp4, MPEG-4
Part 2 in .avi), with random colours, positions, sizes, noise and lengths (some shorter than the usual
``num_frames``) so decoding, sampling and padding are all exercised. Deterministic from ``seed``.
"""

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

CLASSES: tuple[str, ...] = ("disc_grow", "disc_shrink", "fade_in", "fade_out", "red_to_blue", "blue_to_red")
# Each class is drawn by a "forward" animation, played as-is or reversed.
_ANIMATION = {
    "disc_grow": ("disc", False),
    "disc_shrink": ("disc", True),
    "fade_in": ("fade", False),
    "fade_out": ("fade", True),
    "red_to_blue": ("morph", False),
    "blue_to_red": ("morph", True),
}


def _draw_forward(kind: str, num_frames: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """One animation, played forwards, as uint8 [T, H, W, 3]."""
    background = rng.integers(0, 90, size=3)
    ys, xs = np.mgrid[0:height, 0:width]
    cy, cx = rng.uniform(0.35, 0.65) * height, rng.uniform(0.35, 0.65) * width
    progress = np.linspace(0.0, 1.0, num_frames)
    frames = np.empty((num_frames, height, width, 3), dtype=np.float32)
    for t, p in enumerate(progress):
        frame = np.broadcast_to(background, (height, width, 3)).astype(np.float32).copy()
        if kind == "disc":
            radius = (0.08 + 0.32 * p) * min(height, width)
            inside = (ys - cy) ** 2 + (xs - cx) ** 2 <= radius**2
            frame[inside] = (230, 230, 60)
        elif kind == "fade":
            half = 0.25 * min(height, width)
            inside = (abs(ys - cy) <= half) & (abs(xs - cx) <= half)
            frame[inside] = (1 - p) * frame[inside] + p * np.array([255.0, 255.0, 255.0])
        else:  # morph: a square whose colour moves from red to blue
            half = 0.3 * min(height, width)
            inside = (abs(ys - cy) <= half) & (abs(xs - cx) <= half)
            frame[inside] = (1 - p) * np.array([230.0, 30.0, 30.0]) + p * np.array([30.0, 30.0, 230.0])
        frames[t] = frame
    frames += rng.normal(0.0, 6.0, size=frames.shape)
    return np.clip(frames, 0, 255).astype(np.uint8)


def make_clip(label: str, num_frames: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A clip of class ``label`` as uint8 [T, H, W, 3]."""
    kind, reverse = _ANIMATION[label]
    frames = _draw_forward(kind, num_frames, width, height, rng)
    return frames[::-1].copy() if reverse else frames


def write_video(
    path: str | Path, frames: np.ndarray, fps: int = 25, x264_options: dict[str, str] | None = None
) -> None:
    """Encode uint8 [T, H, W, 3] RGB frames with PyAV: H.264 for .mp4/.mkv, MPEG-4 Part 2 for .avi.

    ``x264_options`` override the H.264 encoder's (e.g. ``{"preset": "veryfast", "g": "10"}`` for B-frames and a
    keyframe every 10 frames)."""
    import av

    path = Path(path)
    codec = "mpeg4" if path.suffix.lower() == ".avi" else "libx264"
    height, width = frames.shape[1:3]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "18", **(x264_options or {})}
        else:
            stream.bit_rate = 2_000_000
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def generate_synthetic_dataset(
    root: str | Path,
    train_per_class: int = 24,
    test_per_class: int = 8,
    min_frames: int = 5,
    max_frames: int = 32,
    width: int = 96,
    height: int = 72,
    seed: int = 0,
) -> Path:
    """Write ``root/{train,test}/*.mp4|avi`` and ``root/{train,test}.csv`` (``video_name,tag``).

    Reuses an existing dataset made with the same arguments; writes into a temporary folder and renames it,
    so an interrupted run never leaves a half-written dataset behind.
    """
    root = Path(root)
    settings = dict(
        train_per_class=train_per_class,
        test_per_class=test_per_class,
        min_frames=min_frames,
        max_frames=max_frames,
        width=width,
        height=height,
        seed=seed,
        classes=list(CLASSES),
    )
    marker = root / "synthetic.json"
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    rng = np.random.default_rng(seed)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        (staging / split).mkdir()
        rows = []
        for label in CLASSES:
            for i in range(per_class):
                extension = ".avi" if i % 2 else ".mp4"
                name = f"{split}/{label}_{i:03d}{extension}"
                num_frames = int(rng.integers(min_frames, max_frames + 1))
                write_video(staging / name, make_clip(label, num_frames, width, height, rng))
                rows.append((name, label))
        with (staging / f"{split}.csv").open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(("video_name", "tag"))
            writer.writerows(rows)
    (staging / "synthetic.json").write_text(json.dumps(settings))
    if root.exists():
        shutil.rmtree(root)
    os.replace(staging, root)
    return root
