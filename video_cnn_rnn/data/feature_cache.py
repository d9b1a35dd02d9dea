"""The feature cache's on-disk format: one writer, one reader.

Layout: ``<root>/<fingerprint>/<split>/{features.npy [N, K, T, D] float16, lengths.npy [N], labels.npy [N],
paths.json}`` and ``complete.json``. A folder without ``complete.json`` is never read. Features are read
memory-mapped. What goes into the fingerprint, and who extracts the features, is ``video_cnn_rnn.extraction``.
"""

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from video_cnn_rnn.data.dataset import VideoDataset

CACHE_FORMAT = 1


def is_complete(folder: Path) -> bool:
    return (folder / "complete.json").is_file()


class FeatureCacheDataset(Dataset):
    """One split of a cache: ``{"features": float16 [L, D], "length", "label", "path"}`` per video.

    With K cached clips per video, ``augment`` (training) draws one of them at random each time (the augmentation a
    single cached clip cannot give); evaluation returns all K (``[K, L, D]``), whose predictions the model
    averages as it does for K clips decoded from the video. ``repeats`` = R lists every video R times (R draws a
    pass), as ``VideoDataset`` does.
    """

    def __init__(self, folder: str | Path, augment: bool = False, repeats: int = 1) -> None:
        folder = Path(folder)
        self.features = np.load(folder / "features.npy", mmap_mode="r")  # [N, K, T, D]
        self.lengths = np.load(folder / "lengths.npy")
        self.labels = np.load(folder / "labels.npy")
        self.paths: list[str] = json.loads((folder / "paths.json").read_text())
        self.augment, self.repeats = augment, repeats

    def __len__(self) -> int:
        return len(self.paths) * self.repeats

    def __getitem__(self, index: int) -> dict[str, Any]:
        index %= len(self.paths)
        # The global generator: the resumable training sampler seeds it per (seed, epoch, video), so the drawn
        # clip does not depend on the worker that loads the item and is reproduced after a resume.
        clips = self.features.shape[1]
        length = int(self.lengths[index])
        if self.augment or clips == 1:
            clip = random.randrange(clips) if self.augment else 0
            features = torch.from_numpy(np.array(self.features[index, clip, :length]))  # copy out of the memmap
        else:
            features = torch.from_numpy(np.array(self.features[index, :, :length]))  # [K, L, D]
        label = int(self.labels[index])
        return {
            "features": features,
            "length": length,
            "label": None if label < 0 else label,
            "path": self.paths[index],
        }


def write_split(folder: Path, dataset: VideoDataset, rows: dict[str, tuple[np.ndarray, int]]) -> list[str]:
    """Assemble one split in dataset order; returns the paths that were skipped (failed to decode)."""
    kept = [(path, label) for path, label in dataset.items if path in rows]
    skipped = [path for path, _ in dataset.items if path not in rows]
    if not kept:
        raise RuntimeError(f"feature cache: no video of {folder.name} could be decoded")
    first = rows[kept[0][0]][0]  # [K, T, D]
    clips, dim = first.shape[0], first.shape[-1]
    folder.mkdir(parents=True)
    features = np.lib.format.open_memmap(
        folder / "features.npy", mode="w+", dtype=np.float16, shape=(len(kept), clips, dataset.num_frames, dim)
    )
    lengths = np.zeros(len(kept), dtype=np.int64)
    for row, (path, _) in enumerate(kept):
        values, length = rows[path]
        features[row, :, : values.shape[1]] = values
        lengths[row] = length
    features.flush()
    del features
    np.save(folder / "lengths.npy", lengths)
    np.save(folder / "labels.npy", np.array([-1 if label is None else label for _, label in kept], dtype=np.int64))
    (folder / "paths.json").write_text(json.dumps([path for path, _ in kept]))
    return skipped
