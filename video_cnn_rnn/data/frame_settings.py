"""The frame settings: how a video becomes a clip (``num_frames``, ``img_size``, ``crop``, ``sampling``) and how a
video is evaluated (``eval_clips`` clips, ``eval_flip`` mirrored too).

The data module owns them (its arguments of these names, read back as ``data.num_frames`` and so on). A
``VideoClassifier`` records the ones it was trained and is evaluated with, as hyperparameters of the same names:
left None, it takes the data module's when fit / validate / test / predict starts, and a checkpoint then brings them
along. A model that never ran with a data module needs at least the clip's shape (``num_frames``, ``img_size``) to
read a video; the others then take the data module's defaults (``DEFAULTS``).

``ClipSpec`` is them as one frozen, validated value: the data module's ``clip_spec``, and a model's
``ClipSpec.of(model.hparams, needed_by=...)``. Everything that turns a model's or a data module's settings into clips
(the data module's datasets, ``predict_video``, the timeline, ``serve``, ``export`` and its sidecar) builds one and
hands it on with ``clip_arguments()`` / ``dataset_arguments()``, so nothing rebuilds the settings by hand. YAML and
the command line stay flat (``--data.num_frames 8``): the data module's and the model's arguments are the spec's
fields, recorded as hyperparameters of the same names, so checkpoints of every version load as they are.

Adding a setting (tried in a branch with a ``grayscale`` flag: 13 files): here, its field, ``CLIP_SETTINGS`` or
``FRAME_SETTINGS`` and ``DEFAULTS`` (a default that reproduces the clips of before, which old checkpoints then
take); ``VideoDataModule`` and ``VideoClassifier`` each take it as a flat argument (docs/design.md says why they
stay flat); what applies it (``load_clip`` / ``load_clips`` / ``iter_windows`` and ``VideoDataset``, which hands
it on). The CLI's data -> model link, the feature-store key, export's sidecar, serve and the timeline follow from
here with no change.
"""

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from video_cnn_rnn.data.crops import Crop, check_crop
from video_cnn_rnn.data.sampling import SamplingMode, check_sampling

# What one clip of a video looks like: the arguments of load_clip and iter_windows of these names.
CLIP_SETTINGS: tuple[str, ...] = ("num_frames", "img_size", "crop", "sampling")
FRAME_SETTINGS: tuple[str, ...] = (*CLIP_SETTINGS, "eval_clips", "eval_flip")
# VideoDataModule's defaults (a test holds them equal), for the settings a model reading videos without a data module
# leaves None. num_frames and img_size have none here: the clip's shape is never guessed.
DEFAULTS: dict[str, Any] = {"crop": "centre", "sampling": "uniform", "eval_clips": 1, "eval_flip": False}


def frame_settings(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The frame settings ``hparams`` records, by name (None where it has none)."""
    return {name: hparams.get(name) for name in FRAME_SETTINGS}


@dataclass(frozen=True)
class ClipSpec:
    """How a video becomes the model's input, checked once when it is made: ``num_frames`` frames sampled by
    ``sampling``, each made the ``img_size`` square by ``crop``; evaluation averages ``eval_clips`` clips per video
    (and their mirror images with ``eval_flip``). The fields are ``FRAME_SETTINGS``, in that order."""

    num_frames: int
    img_size: int
    crop: Crop = "centre"
    sampling: SamplingMode = "uniform"
    eval_clips: int = 1
    eval_flip: bool = False

    def __post_init__(self) -> None:
        check_sampling(self.num_frames, self.sampling)
        check_crop(self.crop)
        if self.img_size < 1:
            raise ValueError(f"img_size must be >= 1, got {self.img_size}")
        if self.eval_clips < 1:
            raise ValueError(f"eval_clips must be >= 1, got {self.eval_clips}")

    @classmethod
    def of(cls, hparams: Mapping[str, Any], needed_by: str) -> "ClipSpec":
        """The spec ``hparams`` (a model's or a data module's) records, for ``needed_by`` (what reads a video with
        it, for the message): ``DEFAULTS`` for settings left None; ``num_frames`` or ``img_size`` None is a
        ``ValueError`` naming them and how to give them."""
        settings = frame_settings(hparams)
        missing = [name for name in ("num_frames", "img_size") if settings[name] is None]
        if missing:
            raise ValueError(
                f"{needed_by} needs the model's frame settings, but {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} None: the model was built without them and has not run with "
                "a data module. Run it with one first (trainer.fit(model, data) takes the data module's), or pass "
                f"them: VideoClassifier(..., {', '.join(f'{name}=...' for name in missing)})"
            )
        return cls(**{name: DEFAULTS[name] if value is None else value for name, value in settings.items()})

    def as_dict(self) -> dict[str, Any]:
        """The settings by name (``FRAME_SETTINGS``), as hyperparameters and sidecars record them."""
        return asdict(self)

    def clip_arguments(self) -> dict[str, Any]:
        """``load_clip`` / ``iter_windows`` keyword arguments: one clip as the spec makes it."""
        return {name: getattr(self, name) for name in CLIP_SETTINGS}

    def dataset_arguments(self) -> dict[str, Any]:
        """``VideoDataset`` keyword arguments: a video's evaluation clips (and their mirror images), as test and
        predict read it."""
        return {**self.clip_arguments(), "clips_per_video": self.eval_clips, "mirrored_views": self.eval_flip}


def merge_frame_settings(model: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """The model's frame settings with those it leaves None taken from the data module's.

    A setting both give with different values is a ``ValueError`` naming both: the model would otherwise be
    evaluated, or recorded in its checkpoint, with clips other than those it sees.
    """
    model, data = frame_settings(model), frame_settings(data)
    conflicts = [
        f"model.{name}={model[name]!r} but the data module's {name}={data[name]!r}"
        for name in FRAME_SETTINGS
        if model[name] is not None and data[name] is not None and model[name] != data[name]
    ]
    if conflicts:
        raise ValueError(
            f"{'; '.join(conflicts)}: leave the model's unset (None) to take the data module's, or give both the "
            "same value"
        )
    return {name: data[name] if model[name] is None else model[name] for name in FRAME_SETTINGS}


class FrameSettingsMixin:
    """The frame settings of a module whose ``hparams`` hold them, as read-only attributes (``data.num_frames``)."""

    hparams: Mapping[str, Any]

    @property
    def num_frames(self) -> int:
        """Frames per clip."""
        return self.hparams["num_frames"]

    @property
    def img_size(self) -> int:
        """Side of the square frames."""
        return self.hparams["img_size"]

    @property
    def crop(self) -> Crop:
        """How a frame becomes the ``img_size`` square."""
        return self.hparams["crop"]

    @property
    def sampling(self) -> SamplingMode:
        """The frame sampler."""
        return self.hparams["sampling"]

    @property
    def eval_clips(self) -> int:
        """Clips averaged per video at validation, test and predict."""
        return self.hparams["eval_clips"]

    @property
    def eval_flip(self) -> bool:
        """Whether evaluation also averages the mirrored clips."""
        return self.hparams["eval_flip"]

    @property
    def frame_settings(self) -> dict[str, Any]:
        """All of them, by name."""
        return frame_settings(self.hparams)

    @property
    def clip_spec(self) -> ClipSpec:
        """All of them as one checked ``ClipSpec``."""
        return ClipSpec.of(self.hparams, needed_by=type(self).__name__)
