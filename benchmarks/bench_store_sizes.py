"""Bytes per clip in the feature store, and what a dataset needs on disk (and in the page cache to train from RAM).

Writes one real entry per feature shape with ``write_entry`` (float16, as extraction stores them), measures its file,
times ``FeatureCacheDataset`` reading it back, and scales to UT-Interaction (120 clips) and UCF101 (13,320 clips).

python benchmarks/bench_store_sizes.py [--frames 16] [--clips 1]
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from video_cnn_rnn.data.feature_cache import FeatureCacheDataset, entry_path, write_entry, write_view

SHAPES = {
    "pooled vectors, efficientnet_lite0 (1280)": (1280,),
    "maps, efficientnet_lite0 at 160 px (1280 x 5 x 5)": (1280, 5, 5),
    "maps, efficientnet_lite0 at 224 px (1280 x 7 x 7)": (1280, 7, 7),
}
SCALES = {"UT-Interaction (120 clips)": 120, "UCF101 (13,320 clips)": 13_320}


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{size:.0f} B"
        size /= 1024
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--clips", type=int, default=1, help="clips stored per video (data.cache_clips / eval_clips)")
    args = parser.parse_args()
    header = ["per-frame features", f"bytes per video ({args.clips} clip(s))", "eval read ms", "train read ms", *SCALES]
    print("| " + " | ".join(header) + " |\n|" + " --- |" * len(header))
    with tempfile.TemporaryDirectory() as root:
        store = Path(root)
        for name, shape in SHAPES.items():
            key = {"recipe": {"shape": list(shape)}, "video": {"path": name}}
            file = entry_path(store, key)
            write_entry(file, key, np.random.rand(args.clips, args.frames, *shape).astype(np.float32))
            view = write_view(store, {"splits": {"train": [[name, 0, str(file.relative_to(store))]]}})
            reads = []
            for augment in (False, True):  # evaluation reads all K clips, training the one it draws
                dataset = FeatureCacheDataset(view, "train", augment=augment)
                start = time.perf_counter()
                for _ in range(20):
                    dataset[0]
                reads.append(f"{(time.perf_counter() - start) / 20 * 1000:.2f}")
            size = file.stat().st_size
            cells = [name, f"{size:,} ({human(size)})", *reads, *(human(size * n) for n in SCALES.values())]
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
