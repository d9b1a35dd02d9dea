"""The CUDA code paths, on a real GPU: mixed precision, pinned uint8 transfer, device-side normalisation, predict
and checkpoints across devices, the compiled backbone, feature-cache extraction and exact resume.

Every test is skipped where ``torch.cuda.is_available()`` is False (CI, the CPU machines). Run them on a GPU
machine with ``python -m pytest -q -rs tests/test_cuda.py``. They use the tiny synthetic dataset of conftest.py
and timm's ``test_efficientnet``, so each fit takes seconds.
"""

from __future__ import annotations

import csv
import functools
import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import timm
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from timm.data import resolve_model_data_config

from video_cnn_rnn.cli import run_cli
from video_cnn_rnn.data.datamodule import VideoDataModule
from video_cnn_rnn.data.feature_cache import FeatureCacheDataset
from video_cnn_rnn.extraction import prepare_feature_cache
from video_cnn_rnn.models.classifier import VideoClassifier

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

NUM_FRAMES = 4
IMG = 32
BATCH_SIZE = 4
MIXED = ["16-mixed", "bf16-mixed"]
AUTOCAST_DTYPE = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


# ----------------------------------------------------------------------------------------------- helpers


def make_data(root: Path, **overrides: Any) -> VideoDataModule:
    """The conftest dataset (18 train videos, 6 classes), 4 frames at 32 px; pin_memory is left at its default."""
    settings: dict[str, Any] = dict(
        train=str(root / "train.csv"),
        test=str(root / "test.csv"),
        num_frames=NUM_FRAMES,
        img_size=IMG,
        batch_size=BATCH_SIZE,
        num_workers=0,
    )
    return VideoDataModule(**{**settings, **overrides})


def make_model(class_names: list[str], seed: int = 0, **overrides: Any) -> VideoClassifier:
    torch.manual_seed(seed)
    settings: dict[str, Any] = dict(
        backbone="test_efficientnet",
        class_names=class_names,
        rnn_hidden_sizes=[16],
        fc_hidden=None,
        dropout=0.0,
        d_model=16,
        num_heads=2,
        dense_dim=16,
        num_frames=NUM_FRAMES,
        img_size=IMG,
    )
    return VideoClassifier(**{**settings, **overrides})


def make_trainer(tmp_path: Path, accelerator: str = "gpu", **overrides: Any) -> L.Trainer:
    settings: dict[str, Any] = dict(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    return L.Trainer(**{**settings, **overrides})


class StepRecorder(L.Callback):
    """Every training step's loss, and where the module's parameters and buffers live while it runs (Lightning
    moves the module back to the CPU when a fit or predict ends)."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.devices: set[str] = set()
        self.param_dtypes: set[torch.dtype] = set()

    def _record(self, pl_module: L.LightningModule) -> None:
        self.devices |= {tensor.device.type for tensor in (*pl_module.parameters(), *pl_module.buffers())}
        self.param_dtypes |= {param.dtype for param in pl_module.parameters()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        self._record(pl_module)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._record(pl_module)


def record_output_dtypes(module: torch.nn.Module) -> list[torch.dtype]:
    dtypes: list[torch.dtype] = []
    module.register_forward_hook(lambda _module, _args, output: dtypes.append(output.dtype))
    return dtypes


def predict_probs(
    tmp_path: Path, model: VideoClassifier, root: Path, accelerator: str, precision: str = "32-true"
) -> tuple[list[str], torch.Tensor]:
    """Probabilities for every test video (a folder), sorted by path, from Trainer.predict on ``accelerator``."""
    data = VideoDataModule(predict=str(root / "test"), num_frames=NUM_FRAMES, img_size=IMG, num_workers=0)
    recorder = StepRecorder()
    trainer = make_trainer(tmp_path, accelerator=accelerator, precision=precision, callbacks=[recorder])
    outputs = trainer.predict(model, datamodule=data)
    assert recorder.devices == {"cuda" if accelerator == "gpu" else "cpu"}
    paths = [path for output in outputs for path in output["paths"]]
    probs = torch.cat([output["probs"] for output in outputs])
    assert probs.device.type == "cpu" and probs.dtype == torch.float32  # predict_step hands back CPU float32
    order = sorted(range(len(paths)), key=paths.__getitem__)
    return [paths[i] for i in order], probs[order]


def assert_same_classes(probs: torch.Tensor, reference: torch.Tensor, atol: float) -> None:
    """Probabilities within ``atol``, and the same top-1 class wherever the reference's top-2 margin is wider than
    the tolerance allows to flip (at least half the videos, so the class check is not vacuous)."""
    torch.testing.assert_close(probs, reference, atol=atol, rtol=0)
    top2 = reference.topk(2, dim=-1).values
    decided = (top2[:, 0] - top2[:, 1]) > 2 * atol
    assert decided.float().mean() >= 0.5, (
        f"the model is too unsure to compare classes: margins {top2[:, 0] - top2[:, 1]}"
    )
    assert torch.equal(probs.argmax(-1)[decided], reference.argmax(-1)[decided])


# ----------------------------------------------------------------------------------------------- mixed precision


@pytest.mark.parametrize("head", ["gru", "transformer"])
@pytest.mark.parametrize("precision", MIXED)
def test_mixed_precision_fit_on_gpu(synthetic_root: Path, tmp_path: Path, precision: str, head: str) -> None:
    """A fine-tuning fit under CUDA autocast: the backbone really runs in half precision, every loss is finite, the
    optimizer steps are taken (with 16-mixed's GradScaler), and the fp32 master weights move and end on the GPU."""
    data = make_data(synthetic_root)
    model = make_model(data.class_names, head=head, freeze="finetune")
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    backbone_dtypes = record_output_dtypes(model.network.backbone)
    losses = StepRecorder()
    trainer = make_trainer(tmp_path, precision=precision, max_epochs=2, callbacks=[losses])
    trainer.fit(model, datamodule=data)
    assert losses.devices == {"cuda"}  # every parameter and buffer (pixel_mean / pixel_std too) on the GPU
    assert losses.param_dtypes == {torch.float32}  # mixed precision keeps fp32 master weights

    assert trainer.state.finished
    steps_per_epoch = math.ceil(len(data.datasets["train"]) / BATCH_SIZE)
    assert trainer.global_step == 2 * steps_per_epoch
    assert len(losses.losses) == trainer.global_step
    assert all(math.isfinite(loss) for loss in losses.losses), losses.losses
    for key in ("train_loss", "val_loss", "val_acc"):
        assert torch.isfinite(trainer.callback_metrics[key]), key
    assert backbone_dtypes and set(backbone_dtypes) == {AUTOCAST_DTYPE[precision]}  # autocast on the GPU

    if precision == "16-mixed":
        scaler = trainer.precision_plugin.scaler
        assert isinstance(scaler, torch.amp.GradScaler)
        assert math.isfinite(scaler.get_scale()) and scaler.get_scale() > 0

    after = dict(model.named_parameters())
    assert all(torch.isfinite(param).all() for param in after.values())
    unchanged = [name for name in before if torch.equal(before[name], after[name].detach().cpu())]
    head_unchanged = [name for name in unchanged if not name.startswith("network.backbone.")]
    assert not head_unchanged, f"head / classifier parameters never updated: {head_unchanged}"
    backbone_names = [name for name in before if name.startswith("network.backbone.")]
    assert len([name for name in backbone_names if name not in unchanged]) > len(backbone_names) // 2, unchanged


# ----------------------------------------------------------------------------------------------- host -> device


class TransferRecorder(VideoClassifier):
    """Records each training batch before Lightning moves it to the device and as the training step gets it."""

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        self.__dict__.setdefault("before", []).append(
            {key: batch[key] for key in ("frames", "mask")} | {"pinned": batch["frames"].is_pinned()}
        )
        return batch

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        # The batch as it arrives on the device (the data module owns on_after_batch_transfer: its augmentation).
        self.__dict__.setdefault("after", []).append({key: batch[key] for key in ("frames", "mask")})
        return super().training_step(batch, batch_idx)


def test_uint8_frames_are_pinned_cross_as_uint8_and_are_normalised_on_the_gpu(
    synthetic_root: Path, tmp_path: Path
) -> None:
    data = make_data(synthetic_root, num_workers=2)
    torch.manual_seed(0)
    model = TransferRecorder(
        backbone="test_efficientnet", class_names=data.class_names, num_frames=NUM_FRAMES, img_size=IMG
    )
    backbone_inputs: list[torch.Tensor] = []
    model.network.backbone.register_forward_pre_hook(lambda _module, args: backbone_inputs.append(args[0].detach()))
    trainer = make_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(model, datamodule=data)

    assert trainer.train_dataloader.pin_memory  # the data module pins whenever CUDA is there
    before, after = model.before[0], model.after[0]
    assert before["frames"].dtype == torch.uint8 and before["frames"].device.type == "cpu"
    assert before["pinned"], "training frames are not in page-locked memory"
    assert after["frames"].dtype == torch.uint8 and after["frames"].device.type == "cuda"  # only bytes crossed
    assert after["mask"].dtype == torch.bool and after["mask"].device.type == "cuda"
    torch.testing.assert_close(after["frames"].cpu(), before["frames"], atol=0, rtol=0)

    # The backbone's input: float32 on the GPU, channels_last, normalised with timm's own mean/std.
    assert len(backbone_inputs) == 1  # one step, all real frames in one call
    images = backbone_inputs[0]
    assert images.device.type == "cuda" and images.dtype == torch.float32
    assert model.use_channels_last and images.is_contiguous(memory_format=torch.channels_last)
    config = resolve_model_data_config(timm.create_model("test_efficientnet", num_classes=0))
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    real = before["frames"][before["mask"]].float() / 255.0  # [N, C, H, W]
    torch.testing.assert_close(images.cpu(), (real - mean) / std, atol=1e-5, rtol=1e-5)


def test_cpu_frames_are_normalised_on_the_models_gpu(synthetic_root: Path) -> None:
    """``extract_features`` takes uint8 frames and mask on the CPU into a CUDA model: the backbone runs on the
    model's GPU and the features equal those of frames already there; the CUDA logits match the CPU model's."""
    data = make_data(synthetic_root)
    data.setup("test")
    batch = next(iter(data.test_dataloader()))
    model = make_model(data.class_names).eval()
    with torch.no_grad():
        on_cpu = model(batch["frames"], batch["mask"])
        model.cuda()
        frames, mask = batch["frames"].cuda(), batch["mask"].cuda()
        on_gpu = model(frames, mask)
        features_from_cpu_frames = model.network.extract_features(batch["frames"], batch["mask"])
        features_from_gpu_frames = model.network.extract_features(frames, mask)
    assert on_gpu.device.type == "cuda" and features_from_cpu_frames.device.type == "cuda"
    torch.testing.assert_close(features_from_cpu_frames, features_from_gpu_frames, atol=0, rtol=0)
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-3, rtol=1e-3)  # TF32 convolutions on the GPU


# ----------------------------------------------------------------------------------------------- predict / checkpoints


@pytest.mark.slow
def test_gpu_checkpoint_predicts_the_same_classes_on_cpu_and_gpu(synthetic_root: Path, tmp_path: Path) -> None:
    """Train on the GPU (16-mixed), save, reload: Trainer.predict on the CPU, on the GPU in fp32 and in 16-mixed, and
    predict_video on the GPU give the same probabilities within tolerance and the same classes."""
    data = make_data(synthetic_root)
    adam = functools.partial(torch.optim.Adam, lr=1e-2)  # confident predictions, so classes can be compared
    model = make_model(data.class_names, freeze="finetune", optimizer=adam)
    trainer = make_trainer(tmp_path, precision="16-mixed", max_epochs=6)
    trainer.fit(model, datamodule=data)
    path = tmp_path / "gpu.ckpt"
    trainer.save_checkpoint(path)

    cpu_model = VideoClassifier.load_from_checkpoint(path, map_location="cpu")
    assert {param.device.type for param in cpu_model.parameters()} == {"cpu"}
    paths, cpu_probs = predict_probs(tmp_path, cpu_model, synthetic_root, "cpu")
    assert len(paths) == len(list((synthetic_root / "test").iterdir()))

    for precision, atol in (("32-true", 2e-3), ("16-mixed", 2e-2)):
        gpu_model = VideoClassifier.load_from_checkpoint(path)
        gpu_paths, gpu_probs = predict_probs(tmp_path, gpu_model, synthetic_root, "gpu", precision)
        assert gpu_paths == paths
        assert_same_classes(gpu_probs, cpu_probs, atol)

    # predict_video decodes on the CPU and runs on the model's device.
    gpu_model = VideoClassifier.load_from_checkpoint(path, map_location="cuda")
    for index in (0, len(paths) - 1):
        ranked_gpu = gpu_model.predict_video(paths[index], top_k=len(data.class_names))
        ranked_cpu = cpu_model.predict_video(paths[index], top_k=len(data.class_names))
        gpu = dict(ranked_gpu)
        assert list(gpu) == sorted(gpu, key=gpu.__getitem__, reverse=True)
        probs_gpu = torch.tensor([gpu[name] for name in data.class_names])
        probs_cpu = torch.tensor([dict(ranked_cpu)[name] for name in data.class_names])
        torch.testing.assert_close(probs_gpu, probs_cpu, atol=2e-3, rtol=0)
        torch.testing.assert_close(probs_cpu, cpu_probs[index], atol=1e-5, rtol=0)


@pytest.mark.slow
def test_cli_fit_test_predict_on_gpu_16_mixed(synthetic_root: Path, tmp_path: Path) -> None:
    """The command line on the GPU: fit with 16-mixed, then test and predict from the best checkpoint."""
    runs = tmp_path / "runs"
    args = [
        "--seed_everything", "0",
        "--trainer.accelerator", "gpu",
        "--trainer.devices", "1",
        "--trainer.precision", "16-mixed",
        "--trainer.max_epochs", "2",
        "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(runs),
        "--trainer.logger.init_args.name", "gpu",
        "--checkpoint.dirpath", str(runs / "gpu" / "checkpoints"),
        "--model.backbone", "test_efficientnet",
        "--model.head", "transformer",
        "--model.d_model", "16",
        "--model.num_heads", "2",
        "--model.dense_dim", "16",
        "--data.train", str(synthetic_root / "train.csv"),
        "--data.test", str(synthetic_root / "test.csv"),
        "--data.num_frames", str(NUM_FRAMES),
        "--data.img_size", str(IMG),
        "--data.batch_size", str(BATCH_SIZE),
        "--data.num_workers", "2",
        "--reports.print_predictions", "false",
    ]  # fmt: skip
    cli = run_cli(["fit", *args])
    assert cli.trainer.state.finished and cli.trainer.precision == "16-mixed"
    assert cli.trainer.strategy.root_device.type == "cuda"
    best = runs / "gpu" / "checkpoints" / "best.ckpt"
    assert best.is_file()
    with (Path(cli.trainer.log_dir) / "metrics.csv").open() as file:
        losses = [
            float(row[key]) for row in csv.DictReader(file) for key in ("train_loss_step", "val_loss") if row[key]
        ]
    assert losses and all(math.isfinite(loss) for loss in losses), losses

    cli = run_cli(["test", *args, "--ckpt_path", str(best)])
    metrics = json.loads((Path(cli.trainer.log_dir) / "test_metrics.json").read_text())
    assert all(math.isfinite(value) for value in metrics.values()), metrics
    assert 0.0 <= metrics["test_acc"] <= 1.0

    cli = run_cli(["predict", *args, "--ckpt_path", str(best), "--data.predict", str(synthetic_root / "test")])
    with (Path(cli.trainer.log_dir) / "predictions.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(list((synthetic_root / "test").iterdir()))
    assert all(0.0 <= float(row["prob_1"]) <= 1.0 and row["label_1"] in cli.model.class_names for row in rows)


# ----------------------------------------------------------------------------------------------- torch.compile


@pytest.mark.slow
def test_compiled_backbone_on_gpu(synthetic_root: Path, tmp_path: Path) -> None:
    """``compile_backbone=True`` on CUDA: the same logits as eager for different real-frame counts, and a bf16-mixed
    fine-tuning fit through the compiled graph with finite losses and unchanged state-dict keys."""
    torch._dynamo.reset()
    data = make_data(synthetic_root)
    eager = make_model(data.class_names).cuda().eval()
    compiled = make_model(data.class_names, compile_backbone=True).cuda().eval()
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    compiled.load_state_dict(eager.state_dict())
    generator = torch.Generator().manual_seed(0)
    for lengths in ([4, 4], [4, 2, 1]):  # 8 and then 7 real frames: a second shape
        frames = torch.randint(0, 256, (len(lengths), NUM_FRAMES, 3, IMG, IMG), dtype=torch.uint8, generator=generator)
        mask = torch.arange(NUM_FRAMES)[None] < torch.tensor(lengths)[:, None]
        with torch.no_grad():
            expected = eager(frames.cuda(), mask.cuda())
            actual = compiled(frames.cuda(), mask.cuda())
        torch.testing.assert_close(actual, expected, atol=1e-3, rtol=1e-3)

    model = make_model(data.class_names, compile_backbone=True, freeze="finetune")
    before = {name: param.detach().clone() for name, param in model.network.backbone.named_parameters()}
    losses = StepRecorder()
    trainer = make_trainer(tmp_path, precision="bf16-mixed", max_epochs=1, limit_val_batches=1, callbacks=[losses])
    trainer.fit(model, datamodule=data)
    assert losses.losses and all(math.isfinite(loss) for loss in losses.losses), losses.losses
    assert not any("_orig_mod" in key for key in model.state_dict())
    moved = [
        name for name, param in model.network.backbone.named_parameters() if not torch.equal(param.cpu(), before[name])
    ]
    assert moved, "no backbone parameter changed through the compiled backbone"


# ----------------------------------------------------------------------------------------------- feature cache


def test_feature_cache_extracted_on_gpu_matches_cpu_and_trains_on_gpu(synthetic_root: Path, tmp_path: Path) -> None:
    """Extraction with a 16-mixed GPU trainer autocasts on CUDA, gives the CPU cache's rows within fp16 rounding, and
    the head then trains on the GPU from the cache alone."""
    data_gpu = make_data(synthetic_root, feature_cache=str(tmp_path / "gpu"))
    model = make_model(data_gpu.class_names)
    backbone_dtypes = record_output_dtypes(model.network.backbone)
    folder_gpu = prepare_feature_cache(data_gpu, model.network, make_trainer(tmp_path, precision="16-mixed"))
    # The store first runs one black frame eagerly (fp32) to learn the per-frame feature shape; then extraction.
    assert backbone_dtypes[0] == torch.float32 and set(backbone_dtypes[1:]) == {torch.float16}

    folder_cpu = prepare_feature_cache(
        make_data(synthetic_root, feature_cache=str(tmp_path / "cpu")),
        model.network,
        make_trainer(tmp_path, accelerator="cpu"),
    )
    for split in ("train", "val", "test"):
        store_gpu, store_cpu = FeatureCacheDataset(folder_gpu, split), FeatureCacheDataset(folder_cpu, split)
        assert [(path, label) for path, label, _ in store_gpu.rows] == [(p, label) for p, label, _ in store_cpu.rows]
        keys = []
        for dataset in (store_gpu, store_cpu):
            with np.load(dataset.store / dataset.rows[0][2]) as entry:
                keys.append(json.loads(str(entry["meta"]))["key"]["recipe"])
        assert keys[0]["weights"] == keys[1]["weights"]  # the weights did not change on the way
        assert (keys[0]["precision"], keys[1]["precision"]) == ("16-mixed", "32-true")  # precision is in the key
        gpu = torch.cat([torch.from_numpy(store_gpu.clips(i)).float().flatten() for i in range(len(store_gpu))])
        cpu = torch.cat([torch.from_numpy(store_cpu.clips(i)).float().flatten() for i in range(len(store_cpu))])
        assert torch.isfinite(gpu).all() and gpu.abs().max() > 0
        # test_efficientnet's features are small (|x| < 0.05); fp16 autocast moves them by ~1e-5 on the CPU.
        torch.testing.assert_close(gpu, cpu, atol=2e-4, rtol=2e-2)

    losses = StepRecorder()
    calls = len(backbone_dtypes)
    trainer = make_trainer(tmp_path, precision="16-mixed", max_epochs=2, callbacks=[losses])
    trainer.fit(model, datamodule=data_gpu)
    assert losses.devices == {"cuda"}
    assert len(backbone_dtypes) == calls  # the head trained from cached features, the backbone never ran
    assert losses.losses and all(math.isfinite(loss) for loss in losses.losses), losses.losses
    assert torch.isfinite(trainer.callback_metrics["val_loss"])


# ----------------------------------------------------------------------------------------------- exact resume


@pytest.mark.slow
def test_exact_resume_on_gpu_restores_the_cuda_rng(synthetic_root: Path, tmp_path: Path) -> None:
    """A fit resumed mid-epoch from a step checkpoint ends with the uninterrupted fit's weights: dropout draws from
    the CUDA RNG, which the resumable loader checkpoints and restores."""

    def fit(checkpoints: Path, ckpt_path: Path | None = None) -> VideoClassifier:
        L.seed_everything(0, workers=True)
        data = make_data(synthetic_root, sampling="segment")
        model = make_model(data.class_names, dropout=0.5, fc_hidden=8)
        every_step = ModelCheckpoint(
            dirpath=checkpoints, filename="{step}", every_n_train_steps=1, save_top_k=-1, monitor=None
        )
        trainer = make_trainer(
            tmp_path, max_epochs=2, deterministic=True, enable_checkpointing=True, callbacks=[every_step]
        )
        trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
        assert trainer.global_step == 6  # 12 training videos / 4 per batch, 2 epochs
        return model

    uninterrupted = fit(tmp_path / "a")
    mid_epoch = tmp_path / "a" / "step=4.ckpt"  # one batch into the second epoch
    state = torch.load(mid_epoch, map_location="cpu", weights_only=False)
    loader_state = state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert (loader_state["epoch"], loader_state["batches_consumed"]) == (1, 1)
    assert len(loader_state["rng"]["cuda"]) == torch.cuda.device_count()

    resumed = fit(tmp_path / "b", ckpt_path=mid_epoch)
    expected, actual = uninterrupted.state_dict(), resumed.state_dict()
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=1e-6, rtol=1e-5, msg=key)
