"""VideoDataset: annotation items -> uint8 clips, with a policy for videos that fail to decode."""

import os
import random
import warnings
from collections.abc import Sequence
from typing import Any, BinaryIO, Literal

import torch
from torch.utils.data import Dataset

from video_cnn_rnn.data.crops import Crop, check_crop
from video_cnn_rnn.data.decode import Backend, Damage, VideoDecodeError, describe_damage, load_clip, load_clips
from video_cnn_rnn.data.motion import SETTINGS as MOTION_SETTINGS
from video_cnn_rnn.data.motion import MotionBox
from video_cnn_rnn.data.proxies import ProxySettings, ProxyStore
from video_cnn_rnn.data.sampling import SamplingMode, check_sampling

OnError = Literal["raise", "skip", "warn"]
ON_ERROR: tuple[str, ...] = ("raise", "skip", "warn")


class VideoDataset(Dataset):
    """Videos as uint8 clips.

    An item is ``{"frames": uint8 [L, C, H, W], "length": L, "label": int, "path": str}`` with ``L <= num_frames``
    (``frames`` is ``[K, L, C, H, W]`` when ``clips_per_video = K > 1``: K segment clips of the video, for
    multi-clip testing or a multi-clip feature cache; ``[2K, ...]`` with ``mirrored_views``: the K clips, then
    the same K clips mirrored left-right). Frames are upright (turned by the file's display matrix), then
    centre-cropped, letterboxed (``crop="pad"``) or cropped around the clip's motion (``crop="motion"``) into the
    ``img_size`` square. A motion crop that did not zoom in (the whole short side: the centre square, or the one over
    motion that spans most of the frame) marks its item ``"crop_fallback": reason``, which the collate function
    passes on for the report.

    ``augment`` draws frame positions at random (``segment`` sampling) for training; with ``random_flip`` it also
    mirrors whole clips, every frame alike: at random with one clip per video, and every second clip with K clips
    (a feature cache then holds both orientations of every video).

    ``on_error``: a video that fails to decode, or whose stream is damaged (the decoder concealed errors or
    rejected packets, ``DamagedVideoError``):

    - ``raise``: a ``VideoDecodeError`` naming the file and the reason (for damage, where it is);
    - ``skip``: the item becomes ``{"path": ..., "error": ...}``, which the collate function drops and reports;
    - ``warn``: a damaged video keeps the sampled frames that decoded cleanly (fewer) and its item carries
      ``"damaged": reason``, which the collate function passes on for the report; a video left with no clean
      frame, or that fails to decode at all, is skipped.
    Each file is warned about once (per worker process).

    ``repeats`` = R lists every item R times (index ``i`` is item ``i % len(items)``): R independently drawn clips
    of each video per pass, each index seeded on its own by the resumable training loader.

    ``proxy_cache``: a folder of proxies (``proxies.py``): each video is decoded from its upright, low-resolution,
    short-GOP proxy there, built on first use; one that cannot be built or read leaves the original in use.

    Nothing is opened in ``__init__``: each DataLoader worker opens its own readers, so nothing native is
    pickled or shared across a fork (decord deadlocks when readers exist before workers fork, dmlc/decord#294).
    """

    def __init__(
        self,
        items: Sequence[tuple[str, int]],
        num_frames: int = 20,
        img_size: int = 224,
        sampling: SamplingMode = "uniform",
        augment: bool = False,
        backend: Backend = "auto",
        on_error: OnError = "raise",
        stride: int = 1,
        target_fps: float | None = None,
        decode_timeout: float | None = 60.0,
        clips_per_video: int = 1,
        seed: int = 42,
        random_flip: bool = False,
        mirrored_views: bool = False,
        crop: Crop = "centre",
        repeats: int = 1,
        proxy_cache: str | None = None,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        check_sampling(num_frames, sampling, stride, target_fps)
        check_crop(crop)
        if clips_per_video < 1:
            raise ValueError(f"clips_per_video must be >= 1, got {clips_per_video}")
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.items = list(items)
        self.num_frames, self.img_size, self.sampling = num_frames, img_size, sampling
        self.crop = crop
        if crop == "motion":  # the motion crop's constants decide the frames too: a feature store keys by them
            self.motion = dict(MOTION_SETTINGS)
        self.augment, self.backend, self.on_error = augment, backend, on_error
        self.stride, self.target_fps, self.decode_timeout = stride, target_fps, decode_timeout
        self.clips_per_video, self.seed = clips_per_video, seed
        self.random_flip, self.mirrored_views, self.repeats = random_flip, mirrored_views, repeats
        self._warned: set[str] = set()
        self._proxies = ProxyStore(proxy_cache, ProxySettings.for_recipe(img_size, crop)) if proxy_cache else None
        if self._proxies is not None:  # frames from proxies are not the originals': a feature store keys by them
            self.proxy = self._proxies.settings.key()

    def __len__(self) -> int:
        return len(self.items) * self.repeats

    def _load(
        self, path: str | BinaryIO, index: Any, damage: list[Damage] | None, boxes: list[MotionBox] | None = None
    ) -> tuple[torch.Tensor, int]:
        frames, length = self._decode(path, index, damage, boxes)
        if self.augment and self.random_flip:
            if self.clips_per_video == 1:
                # The global generator, like the frame sampler: seeded per (seed, epoch, video) when resuming.
                frames = frames.flip(-1) if random.random() < 0.5 else frames
            else:
                frames = frames.clone()
                frames[1::2] = frames[1::2].flip(-1)  # [K, L, C, H, W]: every second clip mirrored
        if self.mirrored_views:
            clips = frames if self.clips_per_video > 1 else frames[None]  # -> [K, L, C, H, W]
            frames = torch.cat([clips, clips.flip(-1)])  # -> [2K, L, C, H, W]
        return frames, length

    def _decode(
        self, path: str | BinaryIO, index: Any, damage: list[Damage] | None, boxes: list[MotionBox] | None
    ) -> tuple[torch.Tensor, int]:
        """From the proxy of ``path`` where ``proxy_cache`` has one: a proxy that fails to decode (damage included)
        is deleted, to be built again, and the original is read."""
        proxy = self._proxies.source_for(path) if self._proxies is not None and isinstance(path, str) else path
        if proxy != path:
            try:
                return self._decode_file(proxy, path, index, None, boxes)
            except VideoDecodeError:
                self._proxies.discard(path)
        return self._decode_file(path, path, index, damage, boxes)

    def _decode_file(
        self,
        source: str | BinaryIO,
        path: str | BinaryIO,
        index: Any,
        damage: list[Damage] | None,
        boxes: list[MotionBox] | None,
    ) -> tuple[torch.Tensor, int]:
        """Decode ``source`` (``path`` or its proxy); the K clips' draws are seeded by ``path``."""
        if self.clips_per_video == 1:
            return load_clip(
                source,
                self.num_frames,
                self.img_size,
                self.sampling,
                random_sampling=self.augment,
                backend=self.backend,
                stride=self.stride,
                target_fps=self.target_fps,
                decode_timeout=self.decode_timeout,
                damage=damage,
                crop=self.crop,
                boxes=boxes,
            )
        # K segment clips from one decode; augmentation draws K reproducible random samples per (seed, video, clip).
        # The video is its resolved path, never its index in a manifest: every fold and manifest draws the same
        # clips of a video, so a feature store extracts them once.
        rngs = [random.Random(f"{self.seed}:{os.path.realpath(path)}:{k}") for k in range(self.clips_per_video)]
        return load_clips(
            source,
            self.clips_per_video,
            self.num_frames,
            self.img_size,
            random_sampling=self.augment,
            backend=self.backend,
            decode_timeout=self.decode_timeout,
            rngs=rngs if self.augment else None,
            damage=damage,
            crop=self.crop,
            boxes=boxes,
        )

    def _warn_once(self, path: str, message: str) -> None:
        if path not in self._warned:
            self._warned.add(path)
            warnings.warn(message, stacklevel=3)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index %= len(self.items)  # a repeated item (repeats > 1) is the same video, drawn again
        path, label = self.items[index]
        return self.load_item(path, path, label, index)

    def load_item(self, source: str | BinaryIO, path: str, label: int | None, key: Any) -> dict[str, Any]:
        """The item of the video at ``source`` (a path, or its bytes in a file-like object: a shard's item), named
        ``path`` in the item and in messages; ``key`` seeds the K clips' random draws (the index, for files)."""
        damage: list[Damage] | None = [] if self.on_error == "warn" else None
        boxes: list[MotionBox] = []
        try:
            frames, length = self._load(source, key, damage, boxes)
        except VideoDecodeError as error:
            if self.on_error == "raise":
                raise
            self._warn_once(path, f"skipping video: {error}")
            return {"path": path, "error": str(error)}
        item = {"frames": frames, "length": length, "label": label, "path": path}
        if damage:
            item["damaged"] = f"{path}: {describe_damage(damage)}; kept {length} clean frames"
            self._warn_once(path, f"damaged video, kept: {item['damaged']}")
        fallbacks = sorted({box.fallback for box in boxes if box.fallback})
        if fallbacks:  # the motion crop did not zoom in: the run's reports count and list these videos
            item["crop_fallback"] = f"{path}: motion crop did not zoom in: {'; '.join(fallbacks)}"
        return item
