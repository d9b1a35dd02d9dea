"""Long-video timeline throughput: video seconds per wall second of ``predict_timeline``'s path next to a decode-only
pass of the same file with the same streaming reader, in one run, taking turns (``time_interleaved``).

    python benchmarks/bench_timeline.py                 # 720p30 H.264, 40 s; efficientnet_lite0, 112 px, 8 frames
    python benchmarks/bench_timeline.py --seconds 60 --repeats 5

Targets (the issue): the timeline at >= 0.8x the decode-only rate, and >= 10x real time, with efficientnet_lite0 at
112 px, 8 frames per 2 s window, 1 s hop. The precision is the hardware default (``default_precision``: bf16
autocast only where the CPU computes bf16 natively). The weights do not change the speed: local ImageNet weights
(``weights/efficientnet_lite0.pth``) when present, else a random initialisation.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import time_interleaved  # noqa: E402

from video_cnn_rnn.data.decode import iter_windows  # noqa: E402
from video_cnn_rnn.data.frame_settings import ClipSpec  # noqa: E402
from video_cnn_rnn.hardware import default_precision, describe_machine  # noqa: E402
from video_cnn_rnn.models.classifier import VideoClassifier  # noqa: E402
from video_cnn_rnn.models.windowed import iter_timeline  # noqa: E402

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "efficientnet_lite0.pth"


def make_video(path: Path, seconds: int, width: int = 1280, height: int = 720, fps: int = 30) -> Path:
    """A 720p30 H.264 clip (x264 veryfast, B-frames, a keyframe every 250 frames): moving textured blocks and a
    sweeping bar, so every frame differs. Written once and reused."""
    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    base = texture.repeat(16, 0).repeat(16, 1)[:height, :width]
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for i in range(seconds * fps):
            image = np.roll(base, 3 * i, axis=1)
            left = (11 * i) % width
            image[:, left : left + 60] = (40, (5 * i) % 256, 200)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    partial.rename(path)
    return path


def raw_decode(path: Path) -> int:
    """Every frame decoded on one thread, none converted: the floor under any reader."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        return sum(1 for _ in container.decode(stream))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=40, help="length of the generated 720p30 clip")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--img_size", type=int, default=112)
    parser.add_argument("--num_frames", type=int, default=8)
    parser.add_argument("--window_s", type=float, default=2.0)
    parser.add_argument("--hop_s", type=float, default=1.0)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument(
        "--torch_threads",
        type=int,
        default=1,
        help="torch threads for the model; 1 leaves the decoding thread a core of its own on 2 cores (on this "
        "shared machine 2 torch threads beside other jobs ran the backbone 3x slower than 1: OpenMP oversubscription)",
    )
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "video_cnn_rnn_bench"))
    args = parser.parse_args()

    torch.set_num_threads(args.torch_threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    video = make_video(cache / f"timeline_720p30_{args.seconds}s.mp4", args.seconds)
    precision, reason = default_precision("cpu")
    print(f"machine: {describe_machine()}")
    print(f"precision: {precision} ({reason})")
    pretrained = str(WEIGHTS) if WEIGHTS.is_file() else False
    model = VideoClassifier(
        backbone=args.backbone, pretrained=pretrained, num_classes=6, num_frames=args.num_frames,
        img_size=args.img_size, backbone_batch_size=32,
    ).eval()  # fmt: skip
    autocast = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
        if precision.startswith("bf16")
        else contextlib.nullcontext
    )
    window = dict(window_s=args.window_s, hop_s=args.hop_s)
    spec = ClipSpec(num_frames=args.num_frames, img_size=args.img_size)

    def decode_only() -> None:
        for _ in iter_windows(video, **window, **spec.clip_arguments()):
            pass

    def timeline(prefetch: bool) -> None:
        with autocast():
            for _ in iter_timeline(
                model.network, video, **window, spec=spec, batch_size=args.batch_size, prefetch=prefetch
            ):
                pass

    cases = {
        "raw decode (every frame, none converted; reference)": lambda: raw_decode(video),
        "decode-only: the streaming window reader, no model": decode_only,
        "timeline: reader + model, decoding on a thread (default)": lambda: timeline(True),
        "timeline: reader + model, one thread (prefetch=False)": lambda: timeline(False),
    }
    print(
        f"{video.name}: {args.seconds} s of 1280x720 at 30 fps; {args.backbone} at {args.img_size} px, "
        f"{args.num_frames} frames per {args.window_s:g} s window, {args.hop_s:g} s hop, batches of {args.batch_size} "
        f"windows; torch threads {torch.get_num_threads()}; median of {args.repeats}, cases taking turns"
    )
    seconds = time_interleaved(list(cases.values()), repeats=args.repeats)
    rates = {name: args.seconds / wall for name, wall in zip(cases, seconds, strict=True)}
    reader = rates["decode-only: the streaming window reader, no model"]
    print(f"{'case':60} {'video s / wall s':>16} {'vs decode-only':>15}")
    for name, rate in rates.items():
        print(f"{name:60} {rate:16.1f} {rate / reader:14.2f}x")
    full = rates["timeline: reader + model, decoding on a thread (default)"]
    print(
        f"timeline: {full:.1f}x real time (target >= 10x), {full / reader:.2f}x the decode-only rate (target >= 0.8x)"
    )


if __name__ == "__main__":
    main()
