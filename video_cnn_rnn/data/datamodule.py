"""VideoDataModule: annotation sources -> validated splits -> DataLoaders of padded uint8 batches."""

import warnings
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset, Sampler

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
from video_cnn_rnn.data.balance import Balance, check_balance, count_classes, index_labels
from video_cnn_rnn.data.crops import Crop
from video_cnn_rnn.data.dataset import OnError, VideoDataset
from video_cnn_rnn.data.decode import Backend, check_videos
from video_cnn_rnn.data.feature_cache import FeatureCacheDataset
from video_cnn_rnn.data.frame_settings import FrameSettingsMixin
from video_cnn_rnn.data.loaders import evaluation_sampler, loader_settings, training_sampler, video_loader
from video_cnn_rnn.data.sampling import SamplingMode
from video_cnn_rnn.data.shards import ShardSource


class VideoDataModule(FrameSettingsMixin, L.LightningDataModule):
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
        balance: class imbalance: ``none``, ``sampler`` (training clips drawn with probability inversely proportional
            to their class's frequency) or ``loss`` (the model's cross-entropy weighted so); see ``balance.py``.
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
            resumable mid-epoch), evaluation and predict read every item exactly once. See ``video_cnn_rnn.data.shards``.
        streaming_cache: folder in which each run makes its own cache of a bucket's chunks (default: the
            system's temporary folder); a run never shares or reuses another's (litData#398).
        proxy_cache: folder of small, upright, short-GOP proxies that every split decodes instead (``proxies.py``).
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
        balance: Balance = "none",
        augment: bool = False,
        crop_scale: tuple[float, float] = (0.7, 1.0),
        color_jitter: float = 0.0,
        eval_flip: bool = False,
        class_names: list[str] | None = None,
        streaming: str | None = None,
        streaming_cache: str | None = None,
        proxy_cache: str | None = None,
    ) -> None:
        super().__init__()
        self.balance = check_balance(balance, streaming)  # the model reads it at setup (balance.loss_weights)
        self._shards = ShardSource(streaming, [train, val, test, predict], streaming_cache) if streaming else None
        if self._shards is not None:
            class_names = self._shards.class_names(class_names)
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
        self.clip_spec  # noqa: B018 -- the frame settings checked once, here, as one ClipSpec
        self.class_names: list[str] | None = list(class_names) if class_names else None
        self.datasets: dict[str, Dataset] = {}
        self.cache_view: Path | None = None

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

    def _decode_kwargs(self) -> dict[str, Any]:
        """``VideoDataset``'s arguments besides the clip spec's: how files are decoded, errors, seeds, proxies."""
        names = ("backend", "on_error", "stride", "target_fps", "decode_timeout", "seed", "proxy_cache")
        return {name: self.hparams[name] for name in names}

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if self._shards is not None and (self.cache_view is None or stage == "predict"):
            self.datasets.update(self._shard_datasets(stage))
            return
        if stage == "predict":
            if not hp.predict:
                raise ManifestError("predict needs videos: set data.predict to a file, a folder, a list or a CSV")
            items = check_manifest({"predict": read_unlabelled(hp.predict)}, [], self._on_missing())["predict"]
            predict = [(path, None) for path, _ in items]
            evaluated = self.clip_spec.dataset_arguments()  # eval_clips clips per video, and their mirror images
            self.datasets["predict"] = VideoDataset(predict, **evaluated, **self._decode_kwargs())
            return
        if self.cache_view is not None:
            for split in self._shards.splits(stage) if self._shards else self._split_items(stage):
                train = split == "train"
                repeats = hp.train_clips_per_video if train else 1
                self.datasets[split] = FeatureCacheDataset(
                    self.cache_view, split, augment=train, repeats=repeats, on_error=hp.on_error
                )
            return
        self.datasets.update(self._video_datasets(stage))

    def _video_datasets(self, stage: str) -> dict[str, VideoDataset]:
        checked = check_manifest(self._split_items(stage), self.class_names or [], self._on_missing())
        check_videos(checked, self.hparams.on_error, self.hparams.backend, self.hparams.decode_timeout)
        return {
            split: VideoDataset(self._labelled(items), **self._clip_settings(split), **self._decode_kwargs())
            for split, items in checked.items()
        }

    def _clip_settings(self, split: str) -> dict[str, Any]:
        """How a split's videos become clips: the clip spec's clip, augmentation, clips per video and flips."""
        hp, spec = self.hparams, self.clip_spec
        augment = split == "train"
        if hp.feature_cache:
            # A cached clip is fixed: evaluation clips use evaluation-time indices, and training clips are
            # K seeded segment samples (K = cache_clips), or the evaluation clip when K = 1.
            clips, augment = (hp.cache_clips, hp.cache_clips > 1) if augment else (spec.eval_clips, False)
        else:
            clips = 1 if augment else spec.eval_clips
        if split == "train":
            # With data.augment the flip is drawn on the device (on_after_batch_transfer), not here. A cache holds
            # each video once: train_clips_per_video repeats its rows when it is read (setup).
            flips = {"random_flip": hp.train_flip and not hp.augment}
            repeats = 1 if hp.feature_cache else hp.train_clips_per_video
        else:
            flips, repeats = {"mirrored_views": spec.eval_flip}, 1
        return {**spec.clip_arguments(), "augment": augment, "clips_per_video": clips, "repeats": repeats, **flips}

    def _shard_datasets(self, stage: str, cache: bool = False) -> dict[str, Dataset]:
        """The splits of ``stage`` from the shards; ``cache``: as a feature cache is extracted from them."""
        decoding = self._decode_kwargs()
        return self._shards.datasets(
            stage, lambda split: VideoDataset([], **self._clip_settings(split), **decoding), self.hparams.seed, cache
        )

    def teardown(self, stage: str) -> None:
        if self._shards is not None:
            self._shards.teardown()

    def state_dict(self) -> dict[str, Any]:
        """The streaming training loader's position and RNG states, for an exact mid-epoch resume (litData#775)."""
        return self._shards.state_dict() if self._shards is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._shards is not None:
            self._shards.load_state_dict(state_dict)

    def cache_datasets(self) -> dict[str, VideoDataset]:
        """The video datasets a feature cache holds: every configured labelled split (train, val, test), so fit,
        test and ``extract`` share one cache. A checkpoint's evaluation needs no training videos."""
        if self._shards is not None:  # shard items stand in for VideoDatasets (data.shards.reader.ShardItems)
            splits = self._shards.manifest["splits"]
            stages = [stage for stage, split in (("fit", "train"), ("test", "test")) if split in splits]
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

    def _loader(self, split: str, sampler: Sampler | None = None) -> DataLoader:
        dataset = self.datasets[split]
        if sampler is None and split != "train":
            sampler = evaluation_sampler(dataset, self.trainer)
        return video_loader(dataset, sampler, self._loader_settings())

    def _loader_settings(self) -> dict[str, Any]:
        hp = self.hparams
        return loader_settings(hp.batch_size, hp.num_workers, hp.pin_memory, hp.persistent_workers, hp.seed)

    def train_dataloader(self) -> DataLoader:
        """Shuffled by ``seed + epoch``, sharded across DDP ranks, and resumable mid-epoch: Lightning saves its
        position (epoch, batches consumed, RNG states) in every checkpoint and ``fit --ckpt_path`` continues
        from exactly there. Lightning keeps this sampler under DDP (it is a ``DistributedSampler``).

        With ``streaming``: LitData's ``StreamingDataLoader``, whose state the data module checkpoints itself."""
        if self._shards is not None:
            return self._shards.train_loader(self.datasets["train"], **self._loader_settings())
        train = self.datasets["train"]
        labels = index_labels(train) if self.balance == "sampler" else None
        return self._loader("train", sampler=training_sampler(train, self.trainer, self.hparams.seed, labels))

    def class_counts(self, split: str = "train") -> dict[str, int]:
        """Videos per class of a split ``setup`` built (``data.setup("fit")`` for train), in label order."""
        return count_classes(self.datasets.get(split), self.class_names or [], split)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val") if "val" in self.datasets else []  # [] = no validation (val_fraction 0)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")
