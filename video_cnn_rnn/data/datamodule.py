"""VideoDataModule: annotation sources -> validated splits -> DataLoaders of padded uint8 batches."""

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from video_cnn_rnn.data.annotations import (
    Item,
    ManifestError,
    check_manifest,
    check_same_classes,
    class_names_from,
    read_source,
    read_unlabelled,
    split_train_val,
)
from video_cnn_rnn.data.augment import ClipAugment
from video_cnn_rnn.data.collate import collate_clips
from video_cnn_rnn.data.dataset import OnError, VideoDataset
from video_cnn_rnn.data.decoding import Backend, Crop
from video_cnn_rnn.data.feature_cache import FeatureCacheDataset
from video_cnn_rnn.data.resumable import ResumableDataLoader, ResumableSampler
from video_cnn_rnn.data.sampling import SamplingMode


class VideoDataModule(L.LightningDataModule):
    """Video datasets for fit / validate / test / predict.

    Args:
        train: training annotations: a Keras-example CSV (``video_name,tag``), a class folder
            (``root/ClassName/*.mp4``) or a UCF101 split file (``trainlist01.txt``, needs ``video_root``).
        val: validation annotations in the same formats. When absent, a stratified, seeded, group-aware
            ``val_fraction`` of ``train`` is held out.
        test: test annotations in the same formats.
        predict: videos to classify, without labels: a file, a list of files, a folder or a CSV.
        video_root: folder that relative paths in CSVs and split files resolve against (default: a CSV's
            own folder; required for UCF101 split files).
        val_fraction: share of the training videos held out when ``val`` is not given. ``0`` trains on every
            training video with no validation: for datasets so small that a held-out split only adds noise
            (then checkpoint a fixed budget: ``checkpoint.monitor: null``).
        num_frames: frames sampled per clip (the Keras examples' MAX_SEQ_LENGTH).
        img_size: side of the square frames after the crop and resize (the Keras examples' IMG_SIZE).
        crop: how a frame (turned upright by its file's display rotation first) becomes the ``img_size`` square:
            ``centre`` takes the centre square (a portrait 1080x1920 frame loses 44% of its height), ``pad``
            letterboxes the whole frame (its longer side scaled to ``img_size``, black bars filling the rest).
        sampling: frame sampler: ``first``, ``uniform``, ``segment`` or ``stride``.
        stride: step between frames for ``stride`` sampling.
        target_fps: for ``stride`` sampling, a frame rate to sample at instead of a fixed stride.
        eval_clips: clips per video at validation, test and predict time; > 1 averages K segment clips (also
            from a feature cache, which then stores K clips of every evaluation video).
        batch_size: videos per batch (per process under DDP).
        num_workers: DataLoader worker processes per process.
        pin_memory: page-locked host memory for faster, non-blocking host-to-GPU copies.
        persistent_workers: keep workers alive between epochs (only with ``num_workers > 0``).
        backend: video decoder: ``auto`` (PyAV's single pass, decord where seeking pays), ``decord``, or ``pyav``.
        on_error: a video that is missing, fails to decode, or whose stream is damaged (the decoder concealed
            errors or rejected packets): ``raise`` (stop, naming the file and, for damage, where), ``skip`` (drop
            it with a warning; listed with the reason in ``skipped_videos.txt``) or ``warn`` (a damaged video
            keeps the frames that decoded cleanly, with a warning, and is listed in ``damaged_videos.txt``; one
            that is missing or has no clean frame is skipped).
        decode_timeout: seconds before one video's decode is abandoned as bad; ``0`` disables.
        seed: seed for the validation split and for random frame sampling.
        feature_cache: root folder of the frozen-backbone feature store. When set, fit / validate / test serve
            stored features and the model trains only its head. Features are stored per video and reused by
            every manifest, fold and recipe while nothing that changes them changes (the file, backbone weights,
            precision, frame settings); only videos the store lacks are extracted. See
            ``video_cnn_rnn.extraction`` (which fills it) and ``feature_cache.py`` (its format).
        cache_clips: clips cached per training video (K different ``segment`` samples; training draws
            one at random each epoch). 1 caches the evaluation-time clip only.
        train_flip: mirror training clips left-right (every frame of a clip alike): half of them at random, or
            every second cached clip with ``cache_clips`` > 1. For footage whose classes do not depend on
            left and right. With ``augment`` the flip is drawn on the device with the other augmentations.
        train_clips_per_video: clips each training video contributes per epoch, each sampled independently (its
            own random frames with ``segment`` sampling, its own flip and augmentation; with a feature cache, its
            own draw among the ``cache_clips``): a long video is then seen K times an epoch, not once.
        augment: clip-consistent spatial augmentation of decoded training clips on the device (after the batch
            is moved there, on uint8 frames): one random resized crop (``crop_scale``), flip (``train_flip``) and
            colour jitter (``color_jitter``) per clip, alike for all its frames (``augment.py``). Not with
            ``feature_cache`` (cached features cannot be augmented); never at validation, test or predict.
        crop_scale: with ``augment``, the (min, max) share of the frame's area a random crop keeps before it is
            resized back to ``img_size``; ``[1, 1]`` turns cropping off.
        color_jitter: with ``augment``, brightness / contrast / saturation factors drawn from
            ``[1 - color_jitter, 1 + color_jitter]``; 0 turns it off.
        eval_flip: also evaluate every validation/test/predict clip mirrored and average the predictions.
        class_names: the vocabulary, in label order. Default: the sorted unique labels of ``train`` (the Keras
            example's StringLookup). A checkpoint evaluated through the CLI brings its own; ``train``'s labels
            must then be exactly these classes.
        streaming: root of LitData shards written by ``video-cnn-rnn shard`` (a folder, or an ``s3://`` /
            ``gs://`` / ``azure://`` URL with credentials in the environment), instead of ``train`` / ``val`` /
            ``test`` / ``predict``: its splits and class names are used. Training streams the shards through
            LitData (shuffled chunk-wise, sharded across ranks, nodes and workers with equal counts per rank;
            resumable mid-epoch), evaluation and predict read every item exactly once. See ``streaming.py``.
        streaming_cache: folder in which each run makes its own cache of a bucket's chunks (default: the
            system's temporary folder); a run never shares or reuses another's (litData#398).
    """

    def __init__(
        self,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
        predict: str | list[str] | None = None,
        video_root: str | None = None,
        val_fraction: float = 0.2,
        num_frames: int = 20,
        img_size: int = 224,
        crop: Crop = "centre",
        sampling: SamplingMode = "uniform",
        stride: int = 1,
        target_fps: float | None = None,
        eval_clips: int = 1,
        batch_size: int = 8,
        num_workers: int = 2,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        backend: Backend = "auto",
        on_error: OnError = "raise",
        decode_timeout: float = 60.0,
        seed: int = 42,
        feature_cache: str | None = None,
        cache_clips: int = 1,
        train_flip: bool = False,
        train_clips_per_video: int = 1,
        augment: bool = False,
        crop_scale: tuple[float, float] = (0.7, 1.0),
        color_jitter: float = 0.0,
        eval_flip: bool = False,
        class_names: list[str] | None = None,
        streaming: str | None = None,
        streaming_cache: str | None = None,
    ) -> None:
        super().__init__()
        self._manifest: dict[str, Any] | None = None
        if streaming:
            class_names = self._read_shards(streaming, class_names, [train, val, test, predict])
        if train_clips_per_video < 1:
            raise ValueError(f"data.train_clips_per_video must be >= 1, got {train_clips_per_video}")
        if augment and feature_cache:
            raise ValueError(
                "data.augment transforms decoded frames, but data.feature_cache serves precomputed features: "
                "set data.augment: false, or data.feature_cache: null to train on the videos"
            )
        if train_clips_per_video > 1 and sampling != "segment" and not augment and not train_flip:
            warnings.warn(
                f"data.train_clips_per_video={train_clips_per_video} with sampling '{sampling}': the K clips of a "
                "video get the same frames and nothing random tells them apart; use sampling: segment (random "
                "frames per clip) or data.augment",
                stacklevel=2,
            )
        # Built once here (no state besides the global torch generator), used by on_after_batch_transfer.
        self.train_augment = (
            ClipAugment(img_size, crop_scale, flip=train_flip, color_jitter=color_jitter) if augment else None
        )
        self._train_items: list[Item] | None = read_source(train, video_root) if train else None
        if self._train_items:
            train_classes = class_names_from(self._train_items)
            if class_names is None:
                class_names = train_classes
            else:
                check_same_classes(class_names, train_classes, f"data.train ({train})")
        # The vocabulary is recorded once, in the model's hparams (the CLI links it there from self.class_names).
        self.save_hyperparameters(ignore=["class_names"])
        self.class_names: list[str] | None = list(class_names) if class_names else None
        self.datasets: dict[str, Dataset] = {}
        self.cache_view: Path | None = None
        self._chunk_cache: str | None = None  # this run's own cache of a bucket's chunks
        self._train_loader: Any = None
        self._loader_state: dict[str, Any] | None = None  # a checkpoint's streaming loader state, to restore

    def _read_shards(self, root: str, class_names: list[str] | None, sources: list[Any]) -> list[str]:
        """The shard root's manifest, checked before anything trains; its class names."""
        from video_cnn_rnn.data.streaming import read_manifest  # LitData: the streaming extra

        if any(sources):
            raise ManifestError("data.streaming replaces data.train / val / test / predict: set one or the other")
        self._manifest = read_manifest(root)
        names = self._manifest["class_names"]
        if class_names is not None:
            check_same_classes(class_names, names, f"data.streaming ({root})")
            return list(class_names)
        return names

    def _labelled(self, items: list[Item]) -> list[tuple[str, int]]:
        index = {name: i for i, name in enumerate(self.class_names or [])}
        return [(path, index[label]) for path, label in items]

    def _split_items(self, stage: str) -> dict[str, list[Item]]:
        hp = self.hparams
        splits: dict[str, list[Item]] = {}
        if stage in ("fit", "validate"):
            if self._train_items is None:
                raise ManifestError(f"{stage} needs training annotations: set data.train")
            train_items = self._train_items
            if hp.val:
                splits["val"] = read_source(hp.val, hp.video_root)
            elif hp.val_fraction > 0:
                train_items, val_items = split_train_val(train_items, hp.val_fraction, hp.seed)
                if val_items:
                    splits["val"] = val_items
                else:
                    # Every class has a single group: holding one out would leave the class untrained.
                    warnings.warn(
                        "val_fraction: no validation video can be held out (every class has one group of clips); "
                        "training without validation",
                        stacklevel=2,
                    )
            elif stage == "validate":
                raise ManifestError("validate needs validation videos: set data.val, or data.val_fraction > 0")
            if stage == "fit":
                splits["train"] = train_items
        if stage == "test":
            if not hp.test:
                raise ManifestError("test needs test annotations: set data.test")
            if self.class_names is None:
                raise ManifestError("test needs data.train too: its labels define the class ids")
            splits["test"] = read_source(hp.test, hp.video_root)
        return splits

    def _on_missing(self) -> str:
        """A missing file has no frame to keep: ``warn`` drops it as ``skip`` does."""
        return "raise" if self.hparams.on_error == "raise" else "skip"

    def _dataset_kwargs(self) -> dict[str, Any]:
        hp = self.hparams
        return dict(
            num_frames=hp.num_frames,
            img_size=hp.img_size,
            crop=hp.crop,
            sampling=hp.sampling,
            backend=hp.backend,
            on_error=hp.on_error,
            stride=hp.stride,
            target_fps=hp.target_fps,
            decode_timeout=hp.decode_timeout,
            seed=hp.seed,
        )

    def setup(self, stage: str) -> None:
        hp = self.hparams
        common = self._dataset_kwargs()
        if hp.streaming and (self.cache_view is None or stage == "predict"):
            self.datasets.update(self._shard_datasets(stage))
            return
        if stage == "predict":
            if not hp.predict:
                raise ManifestError("predict needs videos: set data.predict to a file, a folder, a list or a CSV")
            items = check_manifest({"predict": read_unlabelled(hp.predict)}, [], self._on_missing())["predict"]
            self.datasets["predict"] = VideoDataset(
                [(path, None) for path, _ in items],
                clips_per_video=hp.eval_clips,
                mirrored_views=hp.eval_flip,
                **common,
            )
            return
        if self.cache_view is not None:
            for split in self._shard_splits(stage) if hp.streaming else self._split_items(stage):
                train = split == "train"
                self.datasets[split] = FeatureCacheDataset(
                    self.cache_view, split, augment=train, repeats=hp.train_clips_per_video if train else 1
                )
            return
        for split, dataset in self._video_datasets(stage).items():
            self.datasets[split] = dataset

    def _video_datasets(self, stage: str) -> dict[str, VideoDataset]:
        common = self._dataset_kwargs()
        datasets = {}
        checked = check_manifest(self._split_items(stage), self.class_names or [], self._on_missing())
        for split, items in checked.items():
            datasets[split] = VideoDataset(self._labelled(items), **self._clip_settings(split), **common)
        return datasets

    def _clip_settings(self, split: str) -> dict[str, Any]:
        """How a split's videos become clips: augmentation, clips per video and flips."""
        hp = self.hparams
        augment = split == "train"
        if hp.feature_cache:
            # A cached clip is fixed: evaluation clips use evaluation-time indices, and training clips are
            # K seeded segment samples (K = cache_clips), or the evaluation clip when K = 1.
            clips, augment = (hp.cache_clips, hp.cache_clips > 1) if augment else (hp.eval_clips, False)
        else:
            clips = 1 if augment else hp.eval_clips
        if split == "train":
            # With data.augment the flip is drawn on the device (on_after_batch_transfer), not here. A cache holds
            # each video once: train_clips_per_video repeats its rows when it is read (setup).
            flips = {"random_flip": hp.train_flip and not hp.augment}
            repeats = 1 if hp.feature_cache else hp.train_clips_per_video
        else:
            flips, repeats = {"mirrored_views": hp.eval_flip}, 1
        return {"augment": augment, "clips_per_video": clips, "repeats": repeats, **flips}

    def _shard_splits(self, stage: str) -> list[str]:
        wanted = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["predict"]}[stage]
        found = [split for split in wanted if split in self._manifest["splits"]]
        if not found:
            raise ManifestError(f"{stage}: the shards at {self.hparams.streaming} hold no {' or '.join(wanted)} split")
        return found

    def _shard_datasets(self, stage: str, cache: bool = False) -> dict[str, Dataset]:
        """The splits of ``stage`` from the shards; ``cache``: as a feature cache is extracted from them."""
        from video_cnn_rnn.data.streaming import ShardedVideoDataset, ShardItems, is_url, join

        hp, splits = self.hparams, self._manifest["splits"]
        if is_url(hp.streaming) and self._chunk_cache is None:
            Path(hp.streaming_cache or tempfile.gettempdir()).mkdir(parents=True, exist_ok=True)
            self._chunk_cache = tempfile.mkdtemp(prefix="video_cnn_rnn_chunks_", dir=hp.streaming_cache)
        common, datasets = self._dataset_kwargs(), {}
        for split in self._shard_splits(stage):
            clips = VideoDataset([], **self._clip_settings(split), **common)
            folder = join(hp.streaming, split)
            if split == "train" and not cache:
                datasets[split] = ShardedVideoDataset(folder, clips, True, hp.seed, cache_dir=self._chunk_cache)
            else:  # every item once, in shard order: evaluation, predict, and what a feature cache holds
                shard_id = f"{self._manifest.get('id')}/{split}"
                items = splits[split]["items"]
                datasets[split] = ShardItems(folder, clips, items, cache_dir=self._chunk_cache, shard_id=shard_id)
        return datasets

    def teardown(self, stage: str) -> None:
        if self._chunk_cache is not None:  # a bucket's chunks cached for this run only
            shutil.rmtree(self._chunk_cache, ignore_errors=True)
            self._chunk_cache = None

    def state_dict(self) -> dict[str, Any]:
        """The streaming training loader's position and RNG states, for an exact mid-epoch resume (litData#775)."""
        if self._train_loader is None:
            return {}
        return {"streaming_loader": self._train_loader.resume_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loader_state = state_dict.get("streaming_loader")

    def _streaming_train_loader(self) -> Any:
        from video_cnn_rnn.data.streaming import ResumableStreamingLoader

        hp = self.hparams
        loader = ResumableStreamingLoader(
            self.datasets["train"],
            batch_size=hp.batch_size,
            num_workers=hp.num_workers,
            collate_fn=collate_clips,
            pin_memory=hp.pin_memory and torch.cuda.is_available(),
            persistent_workers=hp.persistent_workers and hp.num_workers > 0,
            # Each new epoch's iterator draws a base seed: from a generator of its own, never the global torch RNG,
            # which a resume restores after the iterator exists (an epoch-boundary resume would be a draw off).
            generator=torch.Generator().manual_seed(hp.seed),
        )
        if self._loader_state is not None:
            loader.resume_from(self._loader_state)
            self._loader_state = None
        self._train_loader = loader
        return loader

    def cache_datasets(self) -> dict[str, VideoDataset]:
        """The video datasets a feature cache holds: every configured labelled split (train, val, test), so fit,
        test and ``extract`` share one cache. A checkpoint's evaluation needs no training videos."""
        if self.hparams.streaming:  # shard items stand in for VideoDatasets (data.streaming.ShardItems)
            stages = [
                stage for stage, split in (("fit", "train"), ("test", "test")) if split in self._manifest["splits"]
            ]
            return {name: data for stage in stages for name, data in self._shard_datasets(stage, cache=True).items()}
        stages = [stage for stage, source in (("fit", self.hparams.train), ("test", self.hparams.test)) if source]
        return {name: dataset for stage in stages for name, dataset in self._video_datasets(stage).items()}

    def use_feature_cache(self, view: Path) -> None:
        """Serve fit / validate / test from a feature store's complete ``view`` (made from ``cache_datasets()``)."""
        self.cache_view = Path(view)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """With ``augment``: training batches of decoded frames, now on the device, get one random crop / flip /
        colour jitter per clip. Validation, test, predict and cached features pass unchanged."""
        trainer = self.trainer
        training = trainer is not None and trainer.training
        if self.train_augment is not None and training and isinstance(batch, dict) and "frames" in batch:
            batch["frames"] = self.train_augment(batch["frames"], batch["mask"])
        return batch

    def _loader(self, split: str, sampler: Any = None) -> DataLoader:
        hp = self.hparams
        dataset = self.datasets[split]
        if sampler is None and split != "train":
            sampler = self._eval_sampler(dataset)
        # A ResumableSampler comes with its stateful loader (checkpointed position and RNG, see resumable.py).
        loader_class = ResumableDataLoader if isinstance(sampler, ResumableSampler) else DataLoader
        return loader_class(
            dataset,
            batch_size=hp.batch_size,
            sampler=sampler,
            num_workers=hp.num_workers,
            collate_fn=collate_clips,
            pin_memory=hp.pin_memory and torch.cuda.is_available(),
            persistent_workers=hp.persistent_workers and hp.num_workers > 0,
            # Each loader draws its workers' base seed from its own generator, never from the global torch RNG:
            # otherwise the moment an iterator is first created (it differs between a resumed run and an
            # uninterrupted one, e.g. the skipped sanity check) would shift the dropout RNG of all later steps.
            generator=torch.Generator().manual_seed(hp.seed),
        )

    def _eval_sampler(self, dataset: Dataset) -> Any:
        """Under DDP, every evaluation video exactly once: Lightning's default DistributedSampler pads the
        dataset by repeating videos, which would count them twice in test metrics and predictions."""
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return None
        from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

        return UnrepeatedDistributedSampler(
            dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled by ``seed + epoch``, sharded across DDP ranks, and resumable mid-epoch: Lightning saves its
        position (epoch, batches consumed, RNG states) in every checkpoint and ``fit --ckpt_path`` continues
        from exactly there. Lightning keeps this sampler under DDP (it is a ``DistributedSampler``).

        With ``streaming``: LitData's ``StreamingDataLoader``, whose state the data module checkpoints itself."""
        if self.hparams.streaming:
            return self._streaming_train_loader()
        trainer = self.trainer
        distributed = trainer is not None and trainer.world_size > 1
        sampler = ResumableSampler(
            self.datasets["train"],
            num_replicas=trainer.world_size if distributed else 1,
            rank=trainer.global_rank if distributed else 0,
            shuffle=True,
            seed=self.hparams.seed,
        )
        return self._loader("train", sampler=sampler)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val") if "val" in self.datasets else []  # [] = no validation (val_fraction 0)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")
