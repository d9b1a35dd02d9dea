"""The frame settings' one reader: what a model or data module records, a conflict named, the data module's
attributes, and the defaults a model reading videos without a data module takes."""

import inspect

import pytest

from video_cnn_rnn.data.datamodule import VideoDataModule
from video_cnn_rnn.data.frame_settings import (
    DEFAULTS,
    FRAME_SETTINGS,
    clip_arguments,
    dataset_arguments,
    frame_settings,
    merge_frame_settings,
)

GIVEN = {"num_frames": 8, "img_size": 112, "crop": "pad", "sampling": "segment", "eval_clips": 2, "eval_flip": True}


def test_frame_settings_reads_what_is_recorded_and_nothing_else() -> None:
    assert frame_settings({**GIVEN, "backbone": "x"}) == GIVEN
    assert frame_settings({"num_frames": 8}) == {name: 8 if name == "num_frames" else None for name in FRAME_SETTINGS}


def test_reading_a_video_needs_the_clip_shape_and_defaults_the_rest() -> None:
    assert frame_settings(GIVEN, needed_by="predict_video") == GIVEN
    assert frame_settings({"num_frames": 8, "img_size": 112}, needed_by="predict_video") == {
        "num_frames": 8,
        "img_size": 112,
        **DEFAULTS,
    }
    with pytest.raises(
        ValueError, match=r"^export needs .* img_size is None.*VideoClassifier\(\.\.\., img_size=\.\.\.\)"
    ):
        frame_settings({"num_frames": 8}, needed_by="export")


def test_the_defaults_are_the_data_modules() -> None:
    parameters = inspect.signature(VideoDataModule).parameters
    assert DEFAULTS == {name: parameters[name].default for name in DEFAULTS}


def test_merge_takes_what_the_model_leaves_unset_and_names_a_conflict() -> None:
    assert merge_frame_settings({}, GIVEN) == GIVEN
    assert merge_frame_settings({"num_frames": 8, "crop": None}, GIVEN) == GIVEN
    assert merge_frame_settings({"num_frames": 4}, {}) == {**dict.fromkeys(FRAME_SETTINGS), "num_frames": 4}
    with pytest.raises(ValueError, match="model.num_frames=16 but the data module's num_frames=8; model.crop='centre'"):
        merge_frame_settings({"num_frames": 16, "crop": "centre"}, GIVEN)


def test_arguments_for_a_clip_and_for_a_dataset() -> None:
    assert clip_arguments(GIVEN) == {"num_frames": 8, "img_size": 112, "crop": "pad", "sampling": "segment"}
    assert dataset_arguments(GIVEN) == {**clip_arguments(GIVEN), "clips_per_video": 2, "mirrored_views": True}


def test_the_data_module_exposes_its_frame_settings() -> None:
    data = VideoDataModule(**GIVEN)
    assert {name: getattr(data, name) for name in FRAME_SETTINGS} == GIVEN == data.frame_settings
    with pytest.raises(AttributeError):
        data.num_frames = 4  # read-only: set them when building the data module
