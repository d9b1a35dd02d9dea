"""Reading shards (the ``streaming`` extra: ``pip install 'video_cnn_rnn[streaming]'``): datasets that decode shard
items as clips. Imports LitData, so only what uses shards imports it.

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
import struct
from collections.abc import Iterator
from typing import Any

from torch.utils.data import Dataset

from video_cnn_rnn.data.dataset import VideoDataset
from video_cnn_rnn.data.decode import VideoDecodeError
from video_cnn_rnn.data.resumable import restore_rng_states, rng_states, seeded_random
from video_cnn_rnn.data.shards._checks import FIX
from video_cnn_rnn.data.shards._manifest import STREAMING_EXTRA

try:  # imported only where shards are used (data.streaming, video-cnn-rnn shard)
    from litdata import StreamingDataLoader, StreamingDataset
except ImportError as error:
    raise ImportError(STREAMING_EXTRA) from error

# What LitData's reader or the item's fields raise on bytes that do not parse (a damaged chunk).
ITEM_ERRORS: tuple[type[Exception], ...] = (struct.error, ValueError, KeyError, EOFError, OSError)


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
    with seeded_random(f"{clips.seed}:{epoch}:{item['path']}"):  # the same frames in every process and run
        return clips.load_item(source, item["path"], item["label"] if item["label"] >= 0 else None, item["path"])


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
                restore_rng_states(self._pending_rng)
                self._pending_rng = None
            yield batch

    def resume_state(self) -> dict[str, Any]:
        return {"loader": super().state_dict(), "rng": rng_states()}

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
