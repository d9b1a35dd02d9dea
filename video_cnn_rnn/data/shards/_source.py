"""The data module's side of LitData shards (``data.streaming=<root>``): the manifest, read and checked before
anything trains; each stage's splits and datasets; the streaming training loader and its checkpointed position;
the run's own cache of a bucket's chunks.

LitData is imported only when shards are used (``reader.py``, the ``streaming`` extra), so the data module
imports without it.
"""

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from video_cnn_rnn.data.annotations import ManifestError, check_same_classes
from video_cnn_rnn.data.dataset import VideoDataset
from video_cnn_rnn.data.shards._manifest import is_url, join, read_manifest

# The splits each stage reads.
STAGE_SPLITS = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["predict"]}


class ShardSource:
    """The shards at ``root`` (a folder or a bucket URL), instead of ``sources`` (train / val / test / predict,
    which must all be unset). ``cache_root``: where a bucket's chunks are cached (default: the system's temporary
    folder), in a folder of this run's own."""

    def __init__(self, root: str, sources: list[Any], cache_root: str | None = None) -> None:
        if any(sources):
            raise ManifestError("data.streaming replaces data.train / val / test / predict: set one or the other")
        self.root, self.cache_root = root, cache_root
        self.manifest: dict[str, Any] = read_manifest(root)
        self._chunk_cache: str | None = None  # this run's own cache of a bucket's chunks
        self._train_loader: Any = None
        self._loader_state: dict[str, Any] | None = None  # a checkpoint's streaming loader state, to restore

    def class_names(self, given: list[str] | None) -> list[str]:
        """The shards' class names; ``given`` ones must be the same classes (and keep their order)."""
        names = self.manifest["class_names"]
        if given is not None:
            check_same_classes(given, names, f"data.streaming ({self.root})")
            return list(given)
        return names

    def splits(self, stage: str) -> list[str]:
        """The splits of ``stage`` that the shards hold; an error where they hold none."""
        wanted = STAGE_SPLITS[stage]
        found = [split for split in wanted if split in self.manifest["splits"]]
        if not found:
            raise ManifestError(f"{stage}: the shards at {self.root} hold no {' or '.join(wanted)} split")
        return found

    def datasets(
        self, stage: str, clips: Callable[[str], VideoDataset], seed: int, cache: bool = False
    ) -> dict[str, Dataset]:
        """The splits of ``stage``, their items decoded as ``clips(split)`` (an empty ``VideoDataset`` with the
        split's settings) does; ``cache``: as a feature cache is extracted from them."""
        from video_cnn_rnn.data.shards.reader import ShardedVideoDataset, ShardItems

        if is_url(self.root) and self._chunk_cache is None:
            Path(self.cache_root or tempfile.gettempdir()).mkdir(parents=True, exist_ok=True)
            self._chunk_cache = tempfile.mkdtemp(prefix="video_cnn_rnn_chunks_", dir=self.cache_root)
        datasets = {}
        for split in self.splits(stage):
            folder = join(self.root, split)
            if split == "train" and not cache:
                datasets[split] = ShardedVideoDataset(folder, clips(split), True, seed, cache_dir=self._chunk_cache)
            else:  # every item once, in shard order: evaluation, predict, and what a feature cache holds
                shard_id = f"{self.manifest.get('id')}/{split}"
                items = self.manifest["splits"][split]["items"]
                datasets[split] = ShardItems(
                    folder, clips(split), items, cache_dir=self._chunk_cache, shard_id=shard_id
                )
        return datasets

    def train_loader(self, dataset: Dataset, **settings: Any) -> Any:
        """LitData's loader over the training ``dataset`` (``settings``: DataLoader arguments), at the position of
        the checkpoint ``load_state_dict`` was given, if any."""
        from video_cnn_rnn.data.shards.reader import ResumableStreamingLoader

        loader = ResumableStreamingLoader(dataset, **settings)
        if self._loader_state is not None:
            loader.resume_from(self._loader_state)
            self._loader_state = None
        self._train_loader = loader
        return loader

    def state_dict(self) -> dict[str, Any]:
        """The training loader's position and RNG states, for an exact mid-epoch resume (litData#775)."""
        if self._train_loader is None:
            return {}
        return {"streaming_loader": self._train_loader.resume_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loader_state = state_dict.get("streaming_loader")

    def teardown(self) -> None:
        if self._chunk_cache is not None:  # a bucket's chunks cached for this run only
            shutil.rmtree(self._chunk_cache, ignore_errors=True)
            self._chunk_cache = None
