"""The portable model folder (models/pretrained.py): its layout, identical predictions after a round trip, loading
without unpickling or downloading, and readable errors for folders that do not fit."""

from __future__ import annotations

import json
import pickle
import socket
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from video_cnn_rnn.cli import main
from video_cnn_rnn.models.classifier import VideoClassifier
from video_cnn_rnn.models.network import VideoNetwork
from video_cnn_rnn.models.pretrained import METADATA_KEYS, constructor_arguments

IMG = 32
STEPS = 4
CLASSES = ["disc_grow", "fade_in", "red_to_blue"]
HEADS: dict[str, dict[str, Any]] = {
    "gru": {"head": "gru"},
    "lstm": {"head": "lstm", "rnn_hidden_sizes": [12, 6], "bidirectional": True},
    "transformer": {"head": "transformer", "pooling": "mean", "d_model": 16, "num_heads": 2},
}


def make_model(perturb: bool = True, **kwargs: Any) -> VideoClassifier:
    """A tiny model (2 evaluation clips, mirrored), with every weight and BatchNorm statistic moved off its
    initial value so that a folder loading only some of them cannot pass."""
    torch.manual_seed(0)
    settings: dict[str, Any] = {
        "backbone": "test_efficientnet",
        "class_names": CLASSES,
        "num_frames": STEPS,
        "img_size": IMG,
        "eval_clips": 2,
        "eval_flip": True,
        **kwargs,
    }
    model = VideoClassifier(**settings)
    if perturb:
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if not tensor.is_floating_point():
                    continue
                noise = torch.rand(tensor.shape, generator=generator)
                # Variances stay positive; everything else moves by up to +-0.1.
                tensor.mul_(0.5 + noise) if name.endswith("running_var") else tensor.add_(0.2 * noise - 0.1)
    return model.eval()


def make_batch(lengths: list[int], seed: int = 0) -> dict[str, Any]:
    """Frames padded with zeros after each clip's real frames, as the collate function pads them."""
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (len(lengths), STEPS, 3, IMG, IMG), dtype=torch.uint8, generator=generator)
    mask = torch.arange(STEPS).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    frames[~mask] = 0
    return {"frames": frames, "mask": mask, "labels": torch.arange(len(lengths)) % len(CLASSES)}


@torch.no_grad()
def logits_of(model: VideoClassifier) -> torch.Tensor:
    batch = make_batch([STEPS, 2, 1])
    return model(batch["frames"], batch["mask"])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint after two fine-tuning steps (the backbone's BatchNorm statistics moved too)."""
    model = make_model(perturb=False, freeze="finetune").train()  # Lightning keeps the mode it is given
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path_factory.mktemp("fit"),
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no `val_dataloader`")
        trainer.fit(model, DataLoader([make_batch([STEPS, 2], seed=i) for i in range(2)], batch_size=None))
    path = tmp_path_factory.mktemp("checkpoint") / "trained.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_folder_layout_and_config(tmp_path: Path) -> None:
    model = make_model(head="gru", backbone_batch_size=8)
    folder = model.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]

    config = json.loads((folder / "config.json").read_text())
    assert config["library_name"] == "video_cnn_rnn" and config["model_class"] == "VideoClassifier"
    assert config["format_version"] == 1 and isinstance(config["package_version"], str)
    assert config["backbone_mean"] == pytest.approx([0.485, 0.456, 0.406])  # test_efficientnet's pretrained_cfg
    assert config["backbone_std"] == pytest.approx([0.229, 0.224, 0.225])
    assert config["class_names"] == CLASSES and config["num_classes"] == 3
    frames = {name: config[name] for name in ("num_frames", "img_size", "sampling", "eval_clips", "eval_flip")}
    # sampling was not given and the model never ran with a data module: recorded as None, "the data module's"
    assert frames == {"num_frames": STEPS, "img_size": IMG, "sampling": None, "eval_clips": 2, "eval_flip": True}
    assert config["pretrained"] is False and config["backbone_batch_size"] == 8
    # Every recorded hyperparameter, and nothing that is neither a constructor argument nor the format's metadata.
    assert set(config) - set(METADATA_KEYS) == set(model.hparams)
    assert set(config) - set(METADATA_KEYS) <= set(constructor_arguments(VideoClassifier))

    with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
        assert weights.metadata() == {"format": "pt"}
        assert set(weights.keys()) == set(model.state_dict())  # the keys of a Lightning checkpoint's state_dict

    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: video_cnn_rnn\n")
    assert all(f"`{name}`" in card for name in CLASSES) and f"{STEPS} frames, {IMG} px" in card


@pytest.mark.parametrize("name", list(HEADS))
def test_round_trip_gives_identical_predictions(name: str, tmp_path: Path, video_dir: dict[str, Path]) -> None:
    model = make_model(**HEADS[name])
    model.save_pretrained(tmp_path)
    loaded = VideoClassifier.from_pretrained(str(tmp_path))  # a str works as well as a Path

    assert not loaded.training and loaded.device == torch.device("cpu")
    assert dict(loaded.hparams) == dict(model.hparams) and loaded.class_names == CLASSES
    assert torch.equal(logits_of(loaded), logits_of(model))
    # A real video, decoded with the stored frame settings: 2 clips, each also mirrored.
    assert loaded.predict_video(video_dir["mp4"], top_k=3) == model.predict_video(video_dir["mp4"], top_k=3)


def test_loading_unpickles_and_downloads_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "backbone.pth"
    torch.save(timm.create_model("test_efficientnet").state_dict(), weights)
    model = make_model(pretrained=str(weights))  # built from a local (pickled) weights file
    folder = model.save_pretrained(tmp_path / "model")
    assert json.loads((folder / "config.json").read_text())["pretrained"] is False

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("from_pretrained must not unpickle or reach the network")

    for target, attribute in (
        (pickle, "load"),
        (pickle, "loads"),
        (pickle, "Unpickler"),
        (torch, "load"),
        (torch.serialization, "load"),
        (socket.socket, "connect"),
        (socket, "create_connection"),
    ):
        monkeypatch.setattr(target, attribute, forbidden)
    weights.unlink()  # the file the model was first built from is gone, as on another machine
    loaded = VideoClassifier.from_pretrained(folder)
    monkeypatch.undo()
    assert loaded.hparams.pretrained is False
    assert torch.equal(logits_of(loaded), logits_of(model))


def test_a_checkpoint_saved_as_a_folder_predicts_as_the_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    from_checkpoint = VideoClassifier.load_from_checkpoint(checkpoint).eval()
    from_checkpoint.save_pretrained(tmp_path)
    loaded = VideoClassifier.from_pretrained(tmp_path)
    assert torch.equal(logits_of(loaded), logits_of(from_checkpoint))
    running_mean = loaded.network.backbone.bn1.running_mean
    assert torch.equal(running_mean, from_checkpoint.network.backbone.bn1.running_mean)
    assert running_mean.abs().sum() > 0  # trained: not the initial zeros


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_a_checkpoint_of_an_earlier_version_saved_as_a_folder(name: str, tmp_path: Path) -> None:
    """The fixtures of test_checkpoint_compat (old hyperparameter names, weights outside ``network.``) give a folder
    in today's names, with the logits recorded when they were made."""
    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    if not (fixtures / f"legacy_{name}.ckpt").is_file():
        pytest.skip(f"tests/fixtures/legacy_{name}.ckpt is absent")
    expected = json.loads((fixtures / f"legacy_{name}.json").read_text())
    VideoClassifier.load_from_checkpoint(fixtures / f"legacy_{name}.ckpt").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["head"] == name and "rnn_cell" not in config and "test_clips" not in config
    loaded = VideoClassifier.from_pretrained(tmp_path)
    frames = torch.randint(0, 256, (2, 3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = loaded(frames, torch.tensor([[True, True, True], [True, True, False]]))
    torch.testing.assert_close(logits, torch.tensor(expected["logits"]), atol=1e-5, rtol=1e-5)
    assert loaded.class_names == expected["class_names"]


def test_save_pretrained_subcommand(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["save_pretrained", "--ckpt_path", str(checkpoint), "--output", str(tmp_path / "model")])
    assert "model folder ready" in capsys.readouterr().out
    loaded = VideoClassifier.from_pretrained(tmp_path / "model")
    assert torch.equal(logits_of(loaded), logits_of(VideoClassifier.load_from_checkpoint(checkpoint).eval()))


def test_tied_weights_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Some backbones share a tensor between modules; safetensors stores it once and loading ties it again."""
    build = VideoNetwork.__init__

    def with_a_tied_module(self: VideoNetwork, *args: Any, **kwargs: Any) -> None:
        build(self, *args, **kwargs)
        self.tied = self.classifier  # the same parameters under a second name

    monkeypatch.setattr(VideoNetwork, "__init__", with_a_tied_module)
    model = make_model()
    assert "network.tied.1.weight" in model.state_dict()
    model.save_pretrained(tmp_path)  # safetensors' save_file would refuse the shared tensors
    assert "network.tied.1.weight" not in load_file(tmp_path / "model.safetensors")
    loaded = VideoClassifier.from_pretrained(tmp_path)
    assert loaded.network.tied[1].weight is loaded.network.classifier[1].weight
    assert torch.equal(logits_of(loaded), logits_of(model))


def test_hyperparameters_of_earlier_versions_are_upgraded_and_overrides_apply(tmp_path: Path) -> None:
    model = make_model(head="lstm")
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(head="gru", rnn_cell="lstm", test_clips=config.pop("eval_clips"))  # the old names
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = VideoClassifier.from_pretrained(tmp_path, eval_clips=3)
    assert loaded.hparams.head == "lstm" and isinstance(loaded.network.head.layers[0], torch.nn.LSTM)
    assert loaded.hparams.eval_clips == 3
    assert torch.equal(logits_of(loaded), logits_of(model))
    with pytest.raises(TypeError, match="no_such_setting"):
        VideoClassifier.from_pretrained(tmp_path, no_such_setting=1)


def test_the_crop_is_recorded_in_the_folder(tmp_path: Path) -> None:
    folder = make_model(perturb=False, crop="pad").save_pretrained(tmp_path / "pad")
    config = json.loads((folder / "config.json").read_text())
    assert config["crop"] == "pad" and "letterboxed whole frames" in (folder / "README.md").read_text()
    assert VideoClassifier.from_pretrained(folder).hparams.crop == "pad"
    # A folder written before the setting existed was trained on centre crops.
    (folder / "config.json").write_text(json.dumps({name: v for name, v in config.items() if name != "crop"}))
    assert VideoClassifier.from_pretrained(folder).hparams.crop == "centre"


def test_a_card_edited_by_hand_is_kept(tmp_path: Path) -> None:
    make_model().save_pretrained(tmp_path)
    (tmp_path / "README.md").write_text("my card\n")
    make_model(head="transformer").save_pretrained(tmp_path)
    assert (tmp_path / "README.md").read_text() == "my card\n"
    assert json.loads((tmp_path / "config.json").read_text())["head"] == "transformer"


def edit_config(folder: Path, **changes: Any) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


def test_folders_that_do_not_fit_fail_readably(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        VideoClassifier.from_pretrained(tmp_path / "nothing")
    folder = make_model().save_pretrained(tmp_path / "model")

    (folder / "model.safetensors").rename(tmp_path / "weights")
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        VideoClassifier.from_pretrained(folder)
    (tmp_path / "weights").rename(folder / "model.safetensors")
    (folder / "config.json").rename(tmp_path / "config")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        VideoClassifier.from_pretrained(folder)
    (tmp_path / "config").rename(folder / "config.json")

    good = (folder / "config.json").read_text()
    edit_config(folder, no_such_setting=1, another=2)
    with pytest.raises(ValueError, match="does not take: another, no_such_setting"):
        VideoClassifier.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 768}))
    with pytest.raises(ValueError, match="not a video_cnn_rnn model config"):
        VideoClassifier.from_pretrained(folder)
    (folder / "config.json").write_text(good)
    edit_config(folder, format_version=2)
    with pytest.raises(ValueError, match="format_version 2"):
        VideoClassifier.from_pretrained(folder)
    (folder / "config.json").write_text(good)
    edit_config(folder, class_names=[*CLASSES, "extra"], num_classes=4)
    with pytest.raises(ValueError, match=r"(?s)does not fit .*size mismatch for network\.classifier\.3\.weight"):
        VideoClassifier.from_pretrained(folder)
    (folder / "config.json").write_text(good)


def test_a_changed_normalisation_is_warned_about(tmp_path: Path) -> None:
    model = make_model()
    model.save_pretrained(tmp_path)
    edit_config(tmp_path, backbone_mean=[0.5, 0.5, 0.5])  # as if timm's pretrained_cfg had changed since
    with pytest.warns(UserWarning, match=r"mean was \[0\.5, 0\.5, 0\.5\] when the model was saved"):
        loaded = VideoClassifier.from_pretrained(tmp_path)
    assert torch.equal(logits_of(loaded), logits_of(model))


def test_missing_weights_fail_unless_not_strict(tmp_path: Path) -> None:
    model = make_model()
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["network.classifier.3.bias"]
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing: network\.classifier\.3\.bias.*strict=False"):
        VideoClassifier.from_pretrained(tmp_path)
    loaded = VideoClassifier.from_pretrained(tmp_path, strict=False)
    assert torch.equal(loaded.network.classifier[1].weight, model.network.classifier[1].weight)
