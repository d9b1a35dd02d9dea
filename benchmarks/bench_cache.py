"""Feature-cache benchmarks: extraction throughput, the Keras examples' 818-clip workload, head-only vs end-to-end epochs.

    python benchmarks/bench_cache.py                       # defaults: ~6 min on 2 shared CPU cores
    python benchmarks/bench_cache.py --backbones efficientnet_lite0 resnet18 inception_v3
    python benchmarks/bench_cache.py --clips 818 --cache-repeats 1   # the full seed workload, no extrapolation

Random-init timm backbones (speed does not depend on weights); nothing is downloaded. Every comparison runs its
cases alternately in one process and reports medians, so load from other jobs on the machine hits all alike.

1. Extraction throughput (frames/s) of one backbone: (a) one frame per forward call in fp32 (the Keras examples call
   ``feature_extractor.predict`` per frame), (b) batches of 32 frames fp32, (c) batch 32 channels_last fp32,
   (d) batch 32 channels_last under bf16 autocast, (d2) batch 32 NCHW bf16, and (e) the cache's own path:
   ``VideoClassifier(channels_last=True).extract_features`` on uint8 clips, as ``video-cnn-rnn extract`` runs
   it: (e) all 8 clips x 20 frames in one backbone call, (f) in chunks of 32 frames (``backbone_batch_size``),
   each with and without bf16 autocast.
2. The Keras examples' workload: 818 UCF101-like clips (320x240, 25 fps, 4-10 s; half MPEG-4 .avi, half H.264 .mp4)
   x 20 frames (``sampling="first"``), decode + extract with ``build_feature_cache`` and a CPU Trainer in
   ``--precision`` (default 32-true). A subset (``--clips``) is timed and extrapolated to 818 clips, with 0 and
   ``--workers`` decoding workers.
3. One head-only training epoch from the cache vs one end-to-end frozen-backbone epoch on the same clips
   (FeatureCacheDataset vs VideoDataset, both through ``collate_clips``), as Lightning ``fit`` calls.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from timing import time_interleaved
from torch import nn
from torch.utils.data import DataLoader, Subset

from video_cnn_rnn.data.collate import collate_clips
from video_cnn_rnn.data.dataset import VideoDataset
from video_cnn_rnn.data.feature_cache import FeatureCacheDataset
from video_cnn_rnn.data.synthetic import write_video
from video_cnn_rnn.extraction import build_feature_cache
from video_cnn_rnn.models import VideoClassifier
from video_cnn_rnn.models.backbone import create_backbone

SEED_CLIPS = 818  # the Keras examples' UCF101 subset
SEED_MINUTES_GPU = 20.0  # what the Keras example reports for its extraction on a GPU machine
VIDEO_DIR = Path("/tmp/bench_cache_videos")
DEFAULT_SIZES = {"inception_v3": 299}

# ---------------------------------------------------------------------------------------------------- helpers


def quiet_lightning() -> None:
    """Keep Lightning's banners and the expected 'few workers' hint out of the printed table."""
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*num_workers.*")
    warnings.filterwarnings("ignore", ".*Disabling autocast.*")  # reported by bench_seed_workload instead
    warnings.filterwarnings("ignore", ".*LeafSpec.*")


def bf16() -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16)


PRECISION = "32-true"  # set from --precision in main()


def cpu_trainer(**kwargs: Any) -> L.Trainer:
    """A quiet single-process CPU Trainer in ``PRECISION``."""
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        precision=PRECISION,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------------- 1. extraction


def extraction_cases(backbone: str, img_size: int, batch: int, singles: int) -> dict[str, Callable[[], Any]]:
    """The layouts and precisions to compare, each a no-argument call that extracts ``batch`` frames."""
    model = VideoClassifier(backbone=backbone, num_classes=2, channels_last=True).eval()
    chunked = VideoClassifier(backbone=backbone, num_classes=2, channels_last=True, backbone_batch_size=batch).eval()
    chunked.load_state_dict(model.state_dict())
    plain = create_backbone(backbone).eval()
    plain.load_state_dict(model.network.backbone.state_dict())  # same weights, default (NCHW) memory format
    nhwc = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, img_size, img_size, generator=generator)
    images_nhwc = images.contiguous(memory_format=torch.channels_last)
    clip_shape = (3, img_size, img_size)
    cache_frames = torch.randint(0, 256, (8, 20, *clip_shape), dtype=torch.uint8, generator=generator)
    cache_mask = torch.ones(8, 20, dtype=torch.bool)
    small_frames = torch.randint(0, 256, (2, batch // 2, *clip_shape), dtype=torch.uint8, generator=generator)
    small_mask = torch.ones(2, batch // 2, dtype=torch.bool)

    def per_frame() -> None:
        for i in range(singles):
            plain(images[i : i + 1])

    def batched(net: nn.Module, x: torch.Tensor, low_precision: bool) -> Callable[[], Any]:
        def run() -> None:
            with bf16() if low_precision else contextlib.nullcontext():
                net(x)

        return run

    def cache_path(
        frames: torch.Tensor, mask: torch.Tensor, low_precision: bool = True, net: VideoClassifier = model
    ) -> Callable[[], Any]:
        def run() -> None:
            with bf16() if low_precision else contextlib.nullcontext():
                net.network.extract_features(frames, mask)

        return run

    return {
        "(a) 1 frame/call fp32 NCHW (seeds)": per_frame,
        f"(b) batch {batch} fp32 NCHW": batched(plain, images, False),
        f"(c) batch {batch} fp32 channels_last": batched(nhwc, images_nhwc, False),
        f"(d) batch {batch} channels_last bf16": batched(nhwc, images_nhwc, True),
        f"(d2) batch {batch} NCHW bf16": batched(plain, images, True),
        "(e) cache path: extract_features 8x20 uint8": cache_path(cache_frames, cache_mask),
        f"(e32) cache path: extract_features 2x{batch // 2}": cache_path(small_frames, small_mask),
        "(e-fp32) extract_features 8x20, no autocast": cache_path(cache_frames, cache_mask, False),
        f"(f) extract_features 8x20, chunks of {batch}, bf16": cache_path(cache_frames, cache_mask, True, chunked),
        f"(f-fp32) extract_features 8x20, chunks of {batch}": cache_path(cache_frames, cache_mask, False, chunked),
    }


def frames_per_call(name: str, args: argparse.Namespace) -> int:
    if name.startswith("(a)"):
        return args.single_frames
    return 160 if "8x20" in name else args.extract_batch


def bench_extraction(backbone: str, img_size: int, args: argparse.Namespace) -> dict[str, float]:
    """Print frames/s of every case, and ratios vs the per-frame seed pattern; returns {case: frames/s}."""
    cases = extraction_cases(backbone, img_size, args.extract_batch, args.single_frames)
    with torch.inference_mode():
        seconds = time_interleaved(list(cases.values()), args.extract_repeats)
    rates = {name: frames_per_call(name, args) / s for name, s in zip(cases, seconds, strict=True)}
    base = next(iter(rates.values()))
    print(
        f"\n[1] extraction throughput: {backbone} @ {img_size}px, {torch.get_num_threads()} threads, "
        f"median of {args.extract_repeats} interleaved runs"
    )
    print(f"    {'case':<46} {'frames/s':>9} {'vs (a)':>7}")
    for name, rate in rates.items():
        print(f"    {name:<46} {rate:9.1f} {rate / base:6.2f}x")
    variants = {name: rate for name, rate in rates.items() if not name.startswith("(e")}
    best_name = max(variants, key=variants.get)
    print(f"    best layout/precision: {best_name} ({variants[best_name]:.1f} frames/s)")
    cache_rates = {name: rate for name, rate in rates.items() if name.startswith(("(e", "(f"))}
    cache_name = max(cache_rates, key=cache_rates.get)
    rate = cache_rates[cache_name]
    print(f"    best cache path: {cache_name} ({rate:.1f} frames/s)")
    print(
        f"    target >= 2.5x per-frame fp32: {rate / base:.2f}x {'PASS' if rate >= 2.5 * base else 'MISS'}; "
        f"target within 10% of the best variant: {rate / variants[best_name]:.2f}x "
        f"{'PASS' if rate >= 0.9 * variants[best_name] else 'MISS'}"
    )
    return rates


# ---------------------------------------------------------------------------------------------------- videos


def ucf_like_frames(num_frames: int, rng: np.random.Generator, width: int = 320, height: int = 240) -> np.ndarray:
    """uint8 [T, H, W, 3]: a textured background panning sideways, a moving disc and light sensor noise."""
    cells = rng.integers(0, 256, size=(height // 8, (width + num_frames * 2) // 8 + 1, 3), dtype=np.uint8)
    texture = np.kron(cells, np.ones((8, 8, 1), dtype=np.uint8))  # blocky texture, wide enough to pan over
    ys, xs = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        frame = texture[:height, 2 * t : 2 * t + width].astype(np.int16)
        cy, cx = height / 2 + 60 * np.sin(t / 15), width / 2 + 100 * np.cos(t / 20)
        frame[(ys - cy) ** 2 + (xs - cx) ** 2 <= 35**2] = (230, 200, 40)
        frame += rng.integers(-4, 5, size=frame.shape, dtype=np.int16)
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames


def video_pool(count: int, seed: int = 0) -> list[Path]:
    """``count`` distinct UCF101-like files under VIDEO_DIR (made once, reused): 4-10 s at 25 fps, .avi/.mp4."""
    VIDEO_DIR.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        num_frames = int(rng.integers(100, 251))
        path = VIDEO_DIR / f"pool_{i:03d}_{num_frames}f{'.avi' if i % 2 else '.mp4'}"
        if not path.is_file():
            partial = path.with_name(f".partial{path.suffix}")
            write_video(partial, ucf_like_frames(num_frames, np.random.default_rng([seed, i])), fps=25)
            os.replace(partial, path)
        paths.append(path)
    return paths


def clip_items(pool: list[Path], count: int, num_classes: int) -> list[tuple[str, int]]:
    """``count`` distinct paths (symlinks into the pool, reused cyclically) with labels; distinct paths keep
    the cache's per-path rows one per clip."""
    links = VIDEO_DIR / "links"
    links.mkdir(exist_ok=True)
    items = []
    for i in range(count):
        target = pool[i % len(pool)]
        link = links / f"clip_{i:04d}_{target.stem}{target.suffix}"
        if not link.is_symlink():
            link.symlink_to(target)
        items.append((str(link), i % num_classes))
    return items


# ---------------------------------------------------------------------------------------------------- 2. seed workload


def time_cache_build(model: VideoClassifier, dataset: VideoDataset, workers: int, keep: Path | None) -> float:
    """Seconds for one fresh build_feature_cache (keys, predict, entries, view); the store moves to ``keep``."""
    root = Path(tempfile.mkdtemp(prefix="bench_cache_"))
    try:
        start = time.perf_counter()
        folder = build_feature_cache(
            model.network, {"train": dataset}, root, cpu_trainer(), batch_size=8, num_workers=workers
        )
        seconds = time.perf_counter() - start
        if keep is not None and not keep.exists():
            shutil.move(str(folder.parent.parent), keep)  # <root>/v2, holding the entries and the view
        return seconds
    finally:
        shutil.rmtree(root, ignore_errors=True)


def time_decode_only(dataset: VideoDataset, count: int) -> float:
    """Seconds per clip to decode (and crop/resize) in the main process, no model."""
    start = time.perf_counter()
    for index in range(count):
        dataset[index]
    return (time.perf_counter() - start) / count


def bench_seed_workload(model: VideoClassifier, items: list[tuple[str, int]], args: argparse.Namespace, keep: Path):
    """Time build_feature_cache on ``len(items)`` clips with 0 and ``args.workers`` loader workers."""
    dataset = VideoDataset(items, num_frames=20, img_size=224, sampling="first", backend=args.backend)
    decode_s = time_decode_only(dataset, min(len(items), 40))
    with torch.inference_mode(), bf16() if PRECISION.startswith("bf16") else contextlib.nullcontext():
        # warm oneDNN's kernels for the 8x20 batch shape
        model.network.extract_features(
            torch.zeros(8, 20, 3, 224, 224, dtype=torch.uint8), torch.ones(8, 20, dtype=torch.bool)
        )
    worker_counts = [0, args.workers]
    times: dict[int, list[float]] = {w: [] for w in worker_counts}
    for _ in range(args.cache_repeats):
        for workers in worker_counts:
            times[workers].append(time_cache_build(model, dataset, workers, keep))
    n = len(items)
    print(
        f"\n[2] seeds' workload: build_feature_cache, {n} clips x 20 frames 'first', 224px, efficientnet_lite0, "
        f"{PRECISION} CPU, batch 8 clips, backbone chunks of {args.extract_batch} frames, "
        f"median of {args.cache_repeats} interleaved"
    )
    print(
        f"    decode only ({args.backend}, main process): {decode_s * 1000:.0f} ms/clip "
        f"= {decode_s * SEED_CLIPS / 60:.1f} min of the {SEED_CLIPS}-clip run if not overlapped"
    )
    print(f"    {'DataLoader':<34} {'measured':>9} {'clips/s':>8} {'frames/s':>9} {f'{SEED_CLIPS} clips':>10}")
    for workers in worker_counts:
        seconds = statistics.median(times[workers])
        label = f"num_workers={workers}"
        minutes = seconds / n * SEED_CLIPS / 60
        verdict = "PASS" if minutes <= 6 else "FAIL"
        print(
            f"    {label:<34} {seconds:8.1f}s {n / seconds:8.2f} {n * 20 / seconds:9.1f} "
            f"{minutes:7.2f} min  (target <= 6: {verdict}; seed GPU ~{SEED_MINUTES_GPU:.0f})"
        )
    speedup = statistics.median(times[0]) / statistics.median(times[args.workers])
    print(f"    num_workers={args.workers} vs 0: {speedup:.2f}x")


# ---------------------------------------------------------------------------------------------------- 3. epochs


def time_fit_epoch(model: VideoClassifier, loader: DataLoader) -> float:
    """Seconds for one Lightning fit epoch (Trainer setup included, no validation)."""
    trainer = cpu_trainer(max_epochs=1, num_sanity_val_steps=0, limit_val_batches=0)
    start = time.perf_counter()
    trainer.fit(model, train_dataloaders=loader)
    return time.perf_counter() - start


def epoch_loader(dataset: Any, workers: int) -> DataLoader:
    """The datamodule's training loader: shuffled, padded batches of 8, ``workers`` persistent workers."""
    return DataLoader(
        dataset,
        batch_size=8,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate_clips,
        persistent_workers=workers > 0,
    )


def bench_epochs(items: list[tuple[str, int]], cache_view: Path, args: argparse.Namespace) -> None:
    """Head-only epoch from the cache vs end-to-end frozen epoch decoding the same videos."""
    n = min(args.epoch_clips, len(items))
    model = VideoClassifier(backbone="efficientnet_lite0", num_classes=args.num_classes, num_frames=20)
    cached = Subset(FeatureCacheDataset(cache_view, "train", augment=True), range(n))
    videos = VideoDataset(items[:n], num_frames=20, img_size=224, sampling="first", augment=True, backend=args.backend)
    cases = {
        f"from cache (FeatureCacheDataset, {args.workers} workers)": lambda: time_fit_epoch(
            model, epoch_loader(cached, args.workers)
        ),
        "from cache (FeatureCacheDataset, 0 workers)": lambda: time_fit_epoch(model, epoch_loader(cached, 0)),
        f"end to end (VideoDataset decode, {args.workers} workers)": lambda: time_fit_epoch(
            model, epoch_loader(videos, args.workers)
        ),
    }
    seconds = time_interleaved(list(cases.values()), args.epoch_repeats, warmup=0)
    print(
        f"\n[3] one training epoch, {n} clips x 20 frames, batch 8, efficientnet_lite0 frozen + GRU head, "
        f"{PRECISION}, median of {args.epoch_repeats} interleaved"
    )
    for name, s in zip(cases, seconds, strict=True):
        print(f"    {name:<52} {s:7.2f}s")
    end_to_end = seconds[-1]
    best_cache = min(seconds[:-1])
    verdict = "PASS" if end_to_end / best_cache >= 20 else "FAIL"
    print(
        f"    end to end / cache: {end_to_end / seconds[0]:.1f}x ({args.workers} workers), "
        f"{end_to_end / seconds[1]:.1f}x (0 workers); target >= 20x: {verdict}"
    )


# ---------------------------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_lite0"], help="timm names for part 1")
    parser.add_argument("--img-size", type=int, default=None, help="part 1 size (default 224; inception_v3 299)")
    parser.add_argument("--extract-batch", type=int, default=32)
    parser.add_argument("--single-frames", type=int, default=8, help="frames per timed call of the per-frame case")
    parser.add_argument("--extract-repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--clips", type=int, default=120, help="clips timed in part 2 (extrapolated to 818)")
    parser.add_argument("--pool", type=int, default=16, help="distinct video files reused cyclically")
    parser.add_argument("--cache-repeats", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers compared with 0")
    parser.add_argument("--epoch-clips", type=int, default=64)
    parser.add_argument("--epoch-repeats", type=int, default=2)
    parser.add_argument("--num-classes", type=int, default=101)
    parser.add_argument("--backend", default="auto", choices=["auto", "decord", "pyav"])
    parser.add_argument(
        "--precision",
        default="32-true",
        help="Trainer precision for parts 2-3 (bf16-mixed pays off only with native bf16)",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["extract", "workload", "epochs"])
    return parser.parse_args()


def main() -> None:
    global PRECISION
    args = parse_args()
    PRECISION = args.precision
    quiet_lightning()
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, load average {os.getloadavg()[0]:.1f}"
    )
    if "extract" not in args.skip:
        for backbone in args.backbones:
            bench_extraction(backbone, args.img_size or DEFAULT_SIZES.get(backbone, 224), args)
    if "workload" in args.skip and "epochs" in args.skip:
        return
    items = clip_items(video_pool(args.pool), args.clips, args.num_classes)
    keep = Path(tempfile.mkdtemp(prefix="bench_cache_kept_")) / "cache"
    try:
        model = VideoClassifier(
            backbone="efficientnet_lite0",
            num_classes=args.num_classes,
            num_frames=20,
            backbone_batch_size=args.extract_batch,
        )
        if "workload" in args.skip:  # part 3 still needs a cache of the clips
            dataset = VideoDataset(items, num_frames=20, img_size=224, sampling="first", backend=args.backend)
            time_cache_build(model, dataset, args.workers, keep)
        else:
            bench_seed_workload(model, items, args, keep)
        if "epochs" not in args.skip:
            bench_epochs(items, next(keep.glob("views/*.json")), args)
    finally:
        shutil.rmtree(keep.parent, ignore_errors=True)
    print(f"\ntotal {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
