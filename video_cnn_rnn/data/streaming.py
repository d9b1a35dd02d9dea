"""Videos from LitData shards (the ``streaming`` extra: ``pip install 'video_cnn_rnn[streaming]'``): the shard layout and its manifest, and datasets that decode shard items as clips.

``video-cnn-rnn shard`` (``video_cnn_rnn.sharding``) writes one LitData dataset per split under a root (a local
folder or a bucket URL): ``<root>/<split>/index.json`` and its chunks, and ``<root>/video_cnn_rnn_shards.json``,
the manifest (class names, settings, the items per split and the chunk files, the format and package versions,
the videos left out and why). An item is ``{"video", "label", "meta"}``: the video's encoded bytes, unchanged (or
re-encoded), its label id (-1 when unlabelled), and a JSON string ``META_FIELDS``: its source path and group, and
what a sampler needs without decoding (frame count, frame rate, the keyframes' frame indices in display order).

Items decode through ``load_clip`` from the bytes in memory (``io.BytesIO``), with the same samplers, masks,
crop and ``on_error`` policy as files (``VideoDataset.load_item``); errors name the item's source path.

- ``ShardedVideoDataset``: LitData's ``StreamingDataset`` for training (chunk-wise shuffle across ranks, nodes
  and workers; resumable through ``StreamingDataLoader.state_dict``). Random choices are seeded by (seed, epoch,
  source path), so an item gets the same frames whichever worker or rank decodes it, before or after a restart.
- ``ShardItems``: the same items by index (map-style), for validation / test / predict, where every item must
  be seen exactly once (LitData's streaming under DDP drops items to even out the ranks).
"""

import copy
import io
import json
import os
import random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from video_cnn_rnn.data.annotations import ManifestError
from video_cnn_rnn.data.dataset import VideoDataset
from video_cnn_rnn.data.decode import VideoDecodeError, probe_pyav
from video_cnn_rnn.data.frames import Source
from video_cnn_rnn.data.resumable import _collect_rng_states, _set_rng_states
from video_cnn_rnn.data.shard_checks import FIX, check_split

try:  # this module is imported only where shards are used (data.streaming, video-cnn-rnn shard)
    from litdata import StreamingDataLoader, StreamingDataset
except ImportError as error:
    raise ImportError("LitData shards need the streaming extra: pip install 'video_cnn_rnn[streaming]'") from error

MANIFEST_NAME = "video_cnn_rnn_shards.json"
FORMAT = "video_cnn_rnn.shards"
FORMAT_VERSION = 1
META_FIELDS: tuple[str, ...] = ("path", "group", "num_frames", "fps", "keyframes")
# What LitData's reader or the item's fields raise on bytes that do not parse (a damaged chunk).
ITEM_ERRORS: tuple[type[Exception], ...] = (struct.error, ValueError, KeyError, EOFError, OSError)
# The environment variables a bucket's client reads its credentials from (any one group is enough).
CREDENTIALS: dict[str, list[tuple[str, ...]]] = {
    "s3": [
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
        ("AWS_PROFILE",),
        ("AWS_WEB_IDENTITY_TOKEN_FILE",),
        ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",),
    ],
    "gs": [("GOOGLE_APPLICATION_CREDENTIALS",)],
    "azure": [("AZURE_STORAGE_CONNECTION_STRING",), ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY")],
}


def is_url(location: str) -> bool:
    return "://" in str(location) and not str(location).startswith("local:")


def check_credentials(location: str) -> None:
    """A bucket URL needs credentials in the environment (never in a config file): raise naming what to set."""
    if not is_url(location):
        return
    scheme = str(location).split("://", 1)[0]
    groups = CREDENTIALS.get(scheme)
    if groups is None:
        raise ManifestError(f"{location}: unsupported storage scheme {scheme!r}; use a folder or {sorted(CREDENTIALS)}")
    if not any(all(os.environ.get(name) for name in group) for group in groups):
        wanted = " or ".join("+".join(group) for group in groups)
        raise ManifestError(f"{location}: no credentials for {scheme}:// in the environment; set {wanted}")


def join(root: str, *parts: str) -> str:
    """``root/part/...`` for a folder or a URL."""
    return "/".join([str(root).rstrip("/"), *parts])


def read_manifest(root: str) -> dict[str, Any]:
    """The root's manifest, checked: our format and version, and (for a local root) every split's index and chunk
    files present. Raises ``ManifestError`` naming what is missing or which version wrote it."""
    check_credentials(root)
    if is_url(root):
        import tempfile

        from litdata.streaming.fs_provider import _get_fs_provider

        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / MANIFEST_NAME
            try:
                _get_fs_provider(join(root, MANIFEST_NAME)).download_file(join(root, MANIFEST_NAME), str(local))
            except Exception as error:
                raise ManifestError(f"{join(root, MANIFEST_NAME)}: cannot read the shard manifest ({error})") from error
            manifest = json.loads(local.read_text())
    else:
        path = Path(root) / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(f"{path}: missing; {root} is not a shard folder (write one with video-cnn-rnn shard)")
        manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ManifestError(
            f"{root}: shard format {manifest.get('format')!r} version {manifest.get('format_version')!r}, written by"
            f" video_cnn_rnn {manifest.get('package_version')!r}; this version reads {FORMAT!r} version"
            f" {FORMAT_VERSION}: write the shards again with this version's video-cnn-rnn shard"
        )
    if not is_url(root):
        for split, info in manifest["splits"].items():
            folder = Path(root) / split
            missing = [name for name in ["index.json", *info["chunks"]] if not (folder / name).is_file()]
            if missing:
                shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
                raise ManifestError(f"{folder}: {len(missing)} shard file(s) missing: {shown}")
            check_split(Path(root), split, info)  # index.json, chunk sizes and headers agree with the manifest
    return manifest


def video_info(source: Source) -> dict[str, Any]:
    """Frame count, frame rate and keyframes (frame indices, display order) of a video, by demuxing alone.
    Raises on a video the demuxer cannot read or reports damaged (``probe.damage``)."""
    rate: list[float | None] = []

    def past_the_end(num_video_frames: int, fps: float | None) -> list[int]:
        rate.append(fps)
        return [num_video_frames + 1]  # never a prefix, so the probe reads the whole packet index

    probe = probe_pyav(source, past_the_end)
    if probe.damage:
        from video_cnn_rnn.data.decode import describe_damage

        raise ValueError(describe_damage(probe.damage))
    index = probe.index
    if not index:
        raise ValueError("no video packets")
    # Display order: by pts where they give it (the readers' rule), else decode order.
    order = sorted(range(len(index)), key=lambda i: index[i][0]) if probe.pts_ordered else range(len(index))
    keyframes = [frame for frame, position in enumerate(order) if index[position][1]]
    return {"num_frames": len(index), "fps": float(rate[-1] or 0.0), "keyframes": keyframes}


def unpack(item: dict[str, Any]) -> dict[str, Any]:
    """A stored item as ``{"video": bytes, "label": int, **META_FIELDS}``."""
    return {"video": item["video"], "label": int(item["label"]), **json.loads(item["meta"])}


def _read_item(shards: StreamingDataset, index: Any, clips: VideoDataset) -> dict[str, Any]:
    """The stored item at ``index`` with its fields parsed, or, where a damaged chunk's bytes do not parse, the
    ``on_error`` policy: a ``VideoDecodeError`` naming the chunk (``raise``), else a ``{"path", "error"}`` item that
    collate drops and reports. (A video whose bytes parse but do not decode is ``load_item``'s, naming its path.)"""
    try:
        item = StreamingDataset.__getitem__(shards, index)
        unpack(item)
        return item
    except ITEM_ERRORS as error:
        position = getattr(index, "index", index)
        try:  # LitData's own bookkeeping: the chunk holding the item
            chunk_index = getattr(index, "chunk_index", None)
            if chunk_index is None:
                chunk_index = shards.cache._get_chunk_index_from_index(position)[1]
            chunk = shards.cache._reader.config._chunks[chunk_index]["filename"]
        except Exception:  # noqa: BLE001 -- only a name for the message
            chunk = "its chunk"
        where = f"{shards.input_dir.url or shards.input_dir.path}/{chunk}"
        message = f"{where}: shard item {position} cannot be read ({type(error).__name__}: {error}); {FIX}"
        if clips.on_error == "raise":
            raise VideoDecodeError(f"{message}, or pass --data.on_error skip") from error
        return {"path": f"{where}#{position}", "error": message}


def _decode_item(clips: VideoDataset, item: dict[str, Any], epoch: int) -> dict[str, Any]:
    if "error" in item:  # unreadable: _read_item's verdict
        return item
    item = unpack(item)
    source = io.BytesIO(item["video"])
    source.name = item["path"]  # errors name the video's source path
    saved = random.getstate()
    # str seeds hash with SHA-512: the same item draws the same frames in every process, worker and run.
    random.seed(f"{clips.seed}:{epoch}:{item['path']}")
    try:
        return clips.load_item(source, item["path"], item["label"] if item["label"] >= 0 else None, item["path"])
    finally:
        random.setstate(saved)


class ShardItems(Dataset):
    """A split's shard items by index, decoded as ``VideoDataset`` items (each item exactly once per pass).

    Stands in for a ``VideoDataset`` where a feature cache is extracted from shards: ``items`` (source path and
    label, in shard order: read from the shards, once), the clip settings of ``clips``, and ``shard_id`` (the
    manifest's ``id`` and the split), which keys the cache instead of the files' sizes and times.
    """

    def __init__(
        self,
        input_dir: str,
        clips: VideoDataset,
        num_items: int,
        cache_dir: str | None = None,
        shard_id: str | None = None,
    ) -> None:
        self.input_dir, self.clips, self.num_items, self.cache_dir = input_dir, clips, num_items, cache_dir
        self.shard_id = shard_id
        self._shards = None  # opened in each worker: nothing native crosses a fork
        self._items: list[tuple[str, int | None]] | None = None
        self._positions: list[int] | None = None  # a subset of the split's items, by shard index

    def __len__(self) -> int:
        return self.num_items if self._positions is None else len(self._positions)

    def __getattr__(self, name: str) -> Any:
        # Clip settings (num_frames, crop, seed, ...) are the VideoDataset's, whatever settings it gains later.
        if name.startswith("_") or "clips" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["clips"], name)

    @property
    def items(self) -> list[tuple[str, int | None]]:
        if self._items is None:
            metas = [unpack(self.raw(index)) for index in range(len(self))]
            self._items = [(meta["path"], meta["label"] if meta["label"] >= 0 else None) for meta in metas]
        return self._items

    @items.setter
    def items(self, wanted: list[tuple[str, int | None]]) -> None:
        """Keep only ``wanted`` (items of this split, as a ``VideoDataset`` is cut down to the videos a feature
        store is missing)."""
        position = {item[0]: index for index, item in enumerate(self.items)}
        self._positions = [position[path] for path, _ in wanted]
        self._items = list(wanted)

    def _opened(self) -> StreamingDataset:
        if self._shards is None:
            self._shards = StreamingDataset(self.input_dir, cache_dir=self.cache_dir)
        return self._shards

    def raw(self, index: int) -> dict[str, Any]:
        """The stored item, undecoded (``unpack`` reads its fields)."""
        return self._opened()[index if self._positions is None else self._positions[index]]

    def __getitem__(self, index: int) -> dict[str, Any]:
        position = index if self._positions is None else self._positions[index]
        return _decode_item(self.clips, _read_item(self._opened(), position, self.clips), epoch=0)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_shards": None}


class ShardedVideoDataset(StreamingDataset):
    """LitData's ``StreamingDataset`` over a split's shards, its items decoded through ``clips`` (a ``VideoDataset``
    holding the clip settings; its own items are unused). ``drop_last``: every rank gets the same number of
    items (litData#233: unequal counts would hang DDP at the epoch's end)."""

    def __init__(
        self, input_dir: str, clips: VideoDataset, shuffle: bool, seed: int, cache_dir: str | None = None
    ) -> None:
        super().__init__(input_dir, cache_dir=cache_dir, shuffle=shuffle, drop_last=True, seed=seed)
        self.clips = clips

    def __getitem__(self, index: Any) -> dict[str, Any]:
        return _decode_item(self.clips, _read_item(self, index, self.clips), self.current_epoch)


class ResumableStreamingLoader(StreamingDataLoader):
    """``StreamingDataLoader`` whose state also holds the main process's RNG states (dropout), restored just
    before the first batch after a resume, as ``resumable.ResumableDataLoader`` does for files.

    Lightning's ``fit(ckpt_path=...)`` does not restore a StreamingDataLoader by itself (litData#775): the data
    module saves ``resume_state()`` in the checkpoint and hands it back through ``resume_from()``.
    """

    def __init__(self, dataset: ShardedVideoDataset, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self._pending_rng: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        for batch in super().__iter__():
            if self._pending_rng is not None:
                _set_rng_states(self._pending_rng)
                self._pending_rng = None
            yield batch

    def resume_state(self) -> dict[str, Any]:
        return {"loader": super().state_dict(), "rng": _collect_rng_states()}

    def resume_from(self, state: dict[str, Any]) -> None:
        loader = copy.deepcopy(state["loader"])
        dataset = loader["dataset"]
        if dataset.get("input_dir_url") == self.dataset.input_dir.url:
            # A bucket's chunks are cached in a folder of this run's own (litData#398): point the state at it.
            dataset["input_dir_path"], dataset["cache_dir_path"] = (
                self.dataset.input_dir.path,
                self.dataset.cache_dir.path,
            )
        super().load_state_dict(loader)
        self._pending_rng = state.get("rng")
