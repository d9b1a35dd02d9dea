"""The feature store's on-disk format: one writer, one reader.

One entry per video and feature recipe, shared by every manifest, fold and recipe that asks for the same features:

    <root>/v2/<recipe digest>/<video digest>.npz     an entry: "meta" (JSON), clips "0".."K-1" float16 [L, *frame]
    <root>/v2/views/<digest>.json                    a view: one manifest's splits -> (path, label, entry)

An entry's key is the video's identity (resolved path, size, mtime) plus its recipe: everything that changes the
features (backbone and weights digest, precision, per-frame feature shape, every frame setting of the
``VideoDataset``, the format version). The key is written inside the entry and compared in full when it is read,
so an entry of another version or other settings is never read as valid, whatever its name. Entries are written
to a temporary name and renamed: a killed writer leaves a ``.*.tmp`` file that is never read, and a truncated
entry has no zip directory and fails to open, so it is extracted again. ``K`` clips of ``L`` real frames (no
padding), one member each so that training reads only the clip it draws; a frame's features are a vector ``[D]``
or a feature map ``[C, h, w]``, whatever the network gives.

A view is what a run reads: written once every entry it names is valid. Who extracts is ``video_cnn_rnn.extraction``.
"""

import hashlib
import json
import os
import random
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from video_cnn_rnn.data.atomic import atomic_path, write_text_atomically
from video_cnn_rnn.data.dataset import VideoDataset

STORE_FORMAT = 2
# VideoDataset attributes that decide how frames are decoded, not which: every other public attribute is a key.
NOT_IN_KEY = frozenset({"items", "backend", "decode_timeout", "proxy_cache"})  # proxies: keyed as "proxy"
# Settings that only act on random (training) draws: evaluation-time clips are shared across seeds.
ONLY_WHEN_AUGMENTED = ("seed", "random_flip")
# What reading a damaged entry raises (a bad CRC, a cut file, a header naming an unknown compression or size).
ENTRY_ERRORS = (OSError, ValueError, KeyError, EOFError, NotImplementedError, zipfile.BadZipFile, zlib.error)


class FeatureStoreError(RuntimeError):
    """A feature store entry cannot be read back; the message names the entry, its video and what to do."""


def digest(value: Any) -> str:
    """A short hash of a JSON-serialisable value (a TypeError for anything else: a key must be exact)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:32]


def frame_settings(dataset: VideoDataset) -> dict[str, Any]:
    """Every setting of ``dataset`` that changes the frames it yields for a video: all its public attributes
    except ``NOT_IN_KEY``, so a setting added to ``VideoDataset`` later is in the key without being listed."""
    settings = {name: value for name, value in vars(dataset).items() if not name.startswith("_")}
    for name in NOT_IN_KEY.union(() if dataset.augment else ONLY_WHEN_AUGMENTED):
        settings.pop(name, None)
    return settings


def video_identity(path: str) -> dict[str, Any]:
    """The file as the store knows it: resolved path, size and modification time (a changed file is a new video)."""
    stat = os.stat(path)
    return {"path": os.path.realpath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def entry_path(store: Path, key: dict[str, Any]) -> Path:
    """Where the entry of ``key`` (``{"recipe": ..., "video": ...}``) lives: one folder per recipe."""
    return store / digest(key["recipe"]) / f"{digest(key['video'])}.npz"


def write_entry(
    file: Path,
    key: dict[str, Any],
    features: np.ndarray | None,
    reason: str | None = None,
    crop_fallback: str | None = None,
) -> None:
    """Write one entry atomically: ``features`` [K, L, *frame] stored float16, or None for a video that could not
    be decoded (``reason`` says why; with features, ``reason`` marks a damaged video kept from its clean frames).
    ``crop_fallback``: why the motion crop did not zoom in on the video, which runs from the store report too."""
    status = "skipped" if features is None else "damaged" if reason else "ok"
    meta = {"format": STORE_FORMAT, "key": key, "status": status, "reason": reason}
    if crop_fallback is not None:
        meta["crop_fallback"] = crop_fallback
    arrays = {"meta": np.array(json.dumps(meta, sort_keys=True))}
    for k, clip in enumerate([] if features is None else features):
        arrays[str(k)] = np.ascontiguousarray(clip, dtype=np.float16)  # [L, *frame]
    with atomic_path(file) as temporary, open(temporary, "wb") as handle:  # readers see the whole entry or none
        np.savez(handle, **arrays)


def read_entry_meta(file: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The entry's metadata when ``file`` is a complete entry of exactly ``key`` in this format, else None. Only
    the ``meta`` member is read: ``check_entry`` verifies the arrays too."""
    try:
        # A zip's directory is written last: a truncated entry fails to open here.
        with np.load(file) as entry:
            meta = json.loads(str(entry["meta"]))
            # Compared as JSON, which the stored key went through (a tuple setting reads back as a list).
            if meta.get("format") != STORE_FORMAT or meta.get("key") != json.loads(json.dumps(key)):
                return None
            if meta["status"] != "skipped" and "0" not in entry.files:
                return None
            return meta
    except ENTRY_ERRORS:
        return None


_read_header_2_0 = np.lib.format.read_array_header_2_0


def _clip_count(frames: dict[str, Any]) -> int:
    """How many clips an entry of these frame settings holds: K, twice K with mirrored views."""
    return int(frames.get("clips_per_video", 1)) * (2 if frames.get("mirrored_views") else 1)


def entry_problem(file: Path, key: dict[str, Any]) -> str | None:
    """Why the entry of ``key`` at ``file``, whose meta is valid, cannot be used, or None when it can: every clip
    member reads back with its CRC (``testzip`` reads the stored bytes once, no decoding or extraction) and its
    npy header gives float16 ``[L, *frame]`` with the recipe's per-frame shape and the recipe's number of clips."""
    frame = list(key["recipe"].get("frame_features", []))
    try:
        with zipfile.ZipFile(file) as archive:
            bad = archive.testzip()
            if bad is not None:
                return f"member {bad!r} fails its CRC check"
            names = sorted(name.removesuffix(".npy") for name in archive.namelist() if name != "meta.npy")
            expected = sorted(str(k) for k in range(_clip_count(key["recipe"].get("frames", {}))))
            if names and names != expected:
                return f"holds clips {names}, expected {expected}"
            lengths = set()
            for name in names:
                with archive.open(f"{name}.npy") as member:
                    version = np.lib.format.read_magic(member)
                    header = np.lib.format.read_array_header_1_0 if version == (1, 0) else _read_header_2_0
                    shape, _, dtype = header(member)
                if dtype != np.float16 or len(shape) != 1 + len(frame) or list(shape[1:]) != frame or shape[0] < 1:
                    return f"clip {name} is {dtype} {list(shape)}, expected float16 [L, {', '.join(map(str, frame))}]"
                lengths.add(shape[0])
            if len(lengths) > 1:
                return f"its clips differ in length ({sorted(lengths)})"
    except ENTRY_ERRORS as error:
        return f"unreadable ({error})"
    return None


def write_view(store: Path, view: dict[str, Any]) -> Path:
    """Write ``view`` (splits, skipped, damaged, reasons, crop_fallback) under a name that is its own digest; returns it."""
    file = store / "views" / f"{digest(view)}.json"
    if not file.is_file():
        write_text_atomically(file, json.dumps({"format": STORE_FORMAT, **view}, indent=1))
    return file


def is_complete(view: Path) -> bool:
    """A view exists only once every entry it names was valid."""
    return Path(view).is_file()


class FeatureCacheDataset(Dataset):
    """One split of a view: ``{"features": float16 [L, *frame], "length", "label", "path", "frame_dims"}`` per video.

    Features come back as stored (float16); the model casts them. With K stored clips per video, ``augment``
    (training) draws one of them at random each time (the augmentation a single cached clip cannot give);
    evaluation returns all K (``[K, L, *frame]``), whose predictions the model averages as it does for K clips
    decoded from the video. ``repeats`` = R lists every video R times (R draws a pass), as ``VideoDataset`` does.

    An entry damaged after the run checked the store (``entry_problem``) raises a ``FeatureStoreError`` naming it and
    its video under ``on_error="raise"``; otherwise its item is ``{"path", "error"}``, which collate drops and reports.
    """

    def __init__(
        self, view: str | Path, split: str, augment: bool = False, repeats: int = 1, on_error: str = "raise"
    ) -> None:
        view = Path(view)
        content = json.loads(view.read_text())
        if content.get("format") != STORE_FORMAT:
            raise ValueError(f"{view}: feature store view of format {content.get('format')}, expected {STORE_FORMAT}")
        self.store = view.parent.parent  # <root>/v2
        self.rows: list[tuple[str, int, str]] = [tuple(row) for row in content["splits"][split]]
        self.paths = [path for path, _, _ in self.rows]
        self.crop_fallback: dict[str, str] = content.get("crop_fallback", {})
        self.augment, self.repeats, self.on_error = augment, repeats, on_error

    def __len__(self) -> int:
        return len(self.rows) * self.repeats

    def clips(self, index: int) -> np.ndarray:
        """All stored clips of video ``index``: float16 [K, L, *frame]."""
        with np.load(self.store / self.rows[index][2]) as entry:
            return np.stack([entry[str(k)] for k in range(len(entry.files) - 1)])  # every member but "meta"

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):  # past the repeats: ends `for item in dataset` as a list would
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index %= len(self.rows)
        try:
            return self._read(index)
        except ENTRY_ERRORS as error:
            message = (
                f"{self.store / self.rows[index][2]}: damaged feature store entry of {self.paths[index]} ({error}); "
                "run again to extract it anew, or pass --data.on_error skip"
            )
            if self.on_error == "raise":
                raise FeatureStoreError(message) from error
            return {"path": self.paths[index], "error": message}

    def _read(self, index: int) -> dict[str, Any]:
        with np.load(self.store / self.rows[index][2]) as entry:
            clips = len(entry.files) - 1  # every member but "meta"
            if self.augment or clips == 1:
                # The global generator: the resumable training sampler seeds it per (seed, epoch, video), so the
                # drawn clip does not depend on the worker that loads the item and is reproduced after a resume.
                features = entry[str(random.randrange(clips) if self.augment else 0)]  # [L, *frame]
                frame_dims = features.ndim - 1
            else:
                features = np.stack([entry[str(k)] for k in range(clips)])  # [K, L, *frame]
                frame_dims = features.ndim - 2
        path, label, _ = self.rows[index]
        item = {
            "features": torch.from_numpy(features),
            "length": features.shape[-1 - frame_dims],
            "label": None if label < 0 else label,
            "path": path,
            "frame_dims": frame_dims,  # tells collate_clips [K, L, D] from a map [L, C, h, w]
        }
        if path in self.crop_fallback:  # as VideoDataset marks it, for the run's reports
            item["crop_fallback"] = self.crop_fallback[path]
        return item
