"""A model's frame settings: given none, it takes the data module's when a run starts (and records them); a setting
that disagrees is an error naming both values; checkpoints that predate a setting get the default of their day."""

from pathlib import Path

import lightning as L
import pytest
import torch

from video_cnn_rnn.data.datamodule import VideoDataModule
from video_cnn_rnn.data.frame_settings import FRAME_SETTINGS
from video_cnn_rnn.models.classifier import VideoClassifier
from video_cnn_rnn.models.hparams import upgrade_hparams


def tiny_data(root: Path) -> VideoDataModule:
    return VideoDataModule(
        train=str(root / "train.csv"), num_frames=4, img_size=32, crop="pad", sampling="segment", eval_clips=2,
        batch_size=6, num_workers=0, backend="pyav",
    )  # fmt: skip


def trainer(root: Path) -> L.Trainer:
    # Lightning's default logger stays on: it is what compares the model's and the data module's hyperparameters.
    return L.Trainer(
        accelerator="cpu", devices=1, max_steps=1, limit_val_batches=1, default_root_dir=root,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip


def test_fit_from_python_takes_and_records_the_data_modules_frame_settings(synthetic_root: Path, tmp_path: Path):
    data = tiny_data(synthetic_root)
    torch.manual_seed(0)
    model = VideoClassifier(backbone="test_efficientnet", class_names=data.class_names, head="transformer")
    assert all(model.hparams[name] is None for name in FRAME_SETTINGS)
    run = trainer(tmp_path)
    run.fit(model, data)

    expected = data.frame_settings
    assert expected["crop"] == "pad" and expected["eval_clips"] == 2
    assert {name: model.hparams[name] for name in FRAME_SETTINGS} == expected
    assert {name: model.hparams_initial[name] for name in FRAME_SETTINGS} == expected  # what the logger got
    assert model.network.head.pos_embedding.shape[1] == 4  # sized for the data module's clips
    checkpoint = run.checkpoint_callback.best_model_path
    saved = torch.load(checkpoint, weights_only=True)["hyper_parameters"]
    assert {name: saved[name] for name in FRAME_SETTINGS} == expected
    loaded = VideoClassifier.load_from_checkpoint(checkpoint)
    assert loaded.network.head.pos_embedding.shape[1] == 4
    video = next((synthetic_root / "train").iterdir())
    assert loaded.predict_video(str(video), top_k=1)[0][0] in data.class_names


def test_a_setting_that_disagrees_with_the_data_module_names_both(synthetic_root: Path, tmp_path: Path) -> None:
    data = tiny_data(synthetic_root)
    model = VideoClassifier(backbone="test_efficientnet", class_names=data.class_names, num_frames=8, img_size=32)
    with pytest.raises(ValueError, match="model.num_frames=8 but the data module's num_frames=4"):
        trainer(tmp_path).fit(model, data)


def test_settings_given_equal_to_the_data_modules_run(synthetic_root: Path, tmp_path: Path) -> None:
    data = tiny_data(synthetic_root)
    model = VideoClassifier(backbone="test_efficientnet", class_names=data.class_names, num_frames=4, crop="pad")
    trainer(tmp_path).validate(model, data)
    assert model.hparams.sampling == "segment" and model.hparams.img_size == 32


def test_a_model_without_the_clip_shape_cannot_read_a_video(synthetic_root: Path) -> None:
    model = VideoClassifier(backbone="test_efficientnet", num_classes=6)
    video = str(next((synthetic_root / "train").iterdir()))
    with pytest.raises(
        ValueError, match=r"predict_video needs .*: VideoClassifier\(\.\.\., num_frames=\.\.\., img_size"
    ):
        model.predict_video(video)
    model = VideoClassifier(backbone="test_efficientnet", num_classes=6, num_frames=4, img_size=32)
    assert len(model.predict_video(video, top_k=2)) == 2  # crop, sampling and the evaluation views: the defaults
    frames = torch.zeros(3, 3, 32, 32, dtype=torch.uint8)
    assert len(VideoClassifier(backbone="test_efficientnet", num_classes=6).predict_video(frames, top_k=2)) == 2


def test_old_hparams_get_the_frame_settings_of_their_day() -> None:
    old = upgrade_hparams({"head": "gru", "num_frames": 3, "test_clips": 2})
    assert {name: old[name] for name in FRAME_SETTINGS} == {
        "num_frames": 3, "img_size": 224, "crop": "centre", "sampling": "uniform", "eval_clips": 2, "eval_flip": False,
    }  # fmt: skip
    assert upgrade_hparams({}) == {}
    # Today's None ("the data module's") is kept: it is recorded, not missing.
    assert upgrade_hparams({"head": "gru", "num_frames": None})["num_frames"] is None
