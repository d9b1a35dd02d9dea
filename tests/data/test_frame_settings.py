"""The frame settings' one owner: what a model or data module records, a conflict named, the data module's
attributes, the defaults a model reading videos without a data module takes, and ``ClipSpec``, the one value every
path that reads videos builds (no module rebuilds the settings by hand)."""

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

from video_cnn_rnn.data.datamodule import VideoDataModule
from video_cnn_rnn.data.frame_settings import (
    DEFAULTS,
    FRAME_SETTINGS,
    ClipSpec,
    frame_settings,
    merge_frame_settings,
)

PACKAGE = Path(__file__).resolve().parents[2] / "video_cnn_rnn"

GIVEN = {"num_frames": 8, "img_size": 112, "crop": "pad", "sampling": "segment", "eval_clips": 2, "eval_flip": True}


def test_frame_settings_reads_what_is_recorded_and_nothing_else() -> None:
    assert frame_settings({**GIVEN, "backbone": "x"}) == GIVEN
    assert frame_settings({"num_frames": 8}) == {name: 8 if name == "num_frames" else None for name in FRAME_SETTINGS}


def test_reading_a_video_needs_the_clip_shape_and_defaults_the_rest() -> None:
    assert ClipSpec.of(GIVEN, needed_by="predict_video").as_dict() == GIVEN
    assert ClipSpec.of({"num_frames": 8, "img_size": 112}, needed_by="predict_video") == ClipSpec(8, 112, **DEFAULTS)
    with pytest.raises(
        ValueError, match=r"^export needs .* img_size is None.*VideoClassifier\(\.\.\., img_size=\.\.\.\)"
    ):
        ClipSpec.of({"num_frames": 8}, needed_by="export")


def test_a_clip_spec_is_frozen_checked_and_holds_exactly_the_frame_settings() -> None:
    spec = ClipSpec(**GIVEN)
    assert tuple(field.name for field in dataclasses.fields(ClipSpec)) == FRAME_SETTINGS
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.num_frames = 4  # type: ignore[misc]
    for bad, message in [
        ({"num_frames": 0}, "num_frames must be >= 1"),
        ({"img_size": 0}, "img_size must be >= 1"),
        ({"crop": "zoom"}, "unknown crop"),
        ({"sampling": "random"}, "unknown sampling mode"),
        ({"eval_clips": 0}, "eval_clips must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            ClipSpec(**{**GIVEN, **bad})
    with pytest.raises(ValueError, match="unknown crop"):
        VideoDataModule(**{**GIVEN, "crop": "zoom"})  # the data module checks its spec when it is built


def test_no_module_rebuilds_the_frame_settings_by_hand() -> None:
    """Outside data/frame_settings.py, no package module reads a frame setting out of hyperparameters by name
    (``hparams.num_frames``, ``hp["eval_flip"]``, ``hparams.get("crop")``): it builds a ``ClipSpec``. (The model's and
    the data module's constructors take them as arguments, and models/hparams.py merges and upgrades them by the
    names in ``FRAME_SETTINGS``, never one by one.)"""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("frame_settings.py", "motion.py", "crops.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            named = None
            if isinstance(node, ast.Attribute) and node.attr in FRAME_SETTINGS:
                named, owner = node.attr, node.value
            elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                named, owner = node.slice.value, node.value
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                named, owner = node.args[0].value, node.func.value
            source = ast.unparse(owner) if named in FRAME_SETTINGS else ""
            if "hparams" in source or source == "hp":
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "frame settings read by hand (build a ClipSpec):\n" + "\n".join(found)


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
    spec = ClipSpec(**GIVEN)
    assert spec.clip_arguments() == {"num_frames": 8, "img_size": 112, "crop": "pad", "sampling": "segment"}
    assert spec.dataset_arguments() == {**spec.clip_arguments(), "clips_per_video": 2, "mirrored_views": True}


def test_the_data_module_exposes_its_frame_settings() -> None:
    data = VideoDataModule(**GIVEN)
    assert {name: getattr(data, name) for name in FRAME_SETTINGS} == GIVEN == data.frame_settings
    assert data.clip_spec == ClipSpec(**GIVEN)
    with pytest.raises(AttributeError):
        data.num_frames = 4  # read-only: set them when building the data module
