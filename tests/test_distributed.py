"""Distributed and fault-tolerant training, end to end through the ``video-cnn-rnn`` command.

Every run is a real subprocess (``python -m video_cnn_rnn ...``): under DDP Lightning's launcher re-runs that
command line for rank 1, exactly as it does for the console script. CPU only (gloo), a tiny timm model and the
synthetic dataset keep each run to seconds.
"""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from video_cnn_rnn.data.synthetic import generate_synthetic_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 180
BATCH_SIZE = 2


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic data (18 train / 18 test videos, 6 classes) plus ``test_odd.csv``: 17 test videos, an odd
    count, so padding one rank's share under 2-process DDP would show up as a duplicated video."""
    root = tmp_path_factory.mktemp("ddp") / "data"
    generate_synthetic_dataset(root, train_per_class=3, test_per_class=3, width=48, height=40, max_frames=10)
    rows = (root / "test.csv").read_text().splitlines()
    odd = root / "test_odd.csv"
    odd.write_text("\n".join(rows[:-1]) + "\n")  # header + 17 videos
    assert (len(rows) - 2) % 2 == 1
    return {"train": root / "train.csv", "test": odd, "root": root}


def _common_args(dataset: dict[str, Path], logs: Path, name: str, version: str) -> list[str]:
    return [
        "--seed_everything=42",
        "--model.backbone=test_efficientnet",
        "--model.rnn_hidden_sizes=[16]",
        f"--data.train={dataset['train']}",
        f"--data.test={dataset['test']}",
        "--data.num_frames=4",
        "--data.img_size=32",
        f"--data.batch_size={BATCH_SIZE}",
        "--data.num_workers=0",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.log_every_n_steps=1",
        f"--trainer.logger.init_args.save_dir={logs}",
        f"--trainer.logger.init_args.name={name}",
        f"--trainer.logger.init_args.version={version}",
        "--reports.print_predictions=false",
    ]


def _ddp(devices: int = 2) -> list[str]:
    return ["--trainer.strategy=ddp", f"--trainer.devices={devices}"]


def _command(subcommand: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "video_cnn_rnn", subcommand, *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # One thread per process: two DDP ranks on two cores, and identical float reductions between runs.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _run(subcommand: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        _command(subcommand, args), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    if result.returncode != 0:
        pytest.fail(f"video-cnn-rnn {subcommand} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _metrics_rows(log_dir: Path) -> list[dict[str, str]]:
    with (log_dir / "metrics.csv").open() as file:
        return list(csv.DictReader(file))


def _last_value(rows: list[dict[str, str]], key: str) -> float:
    values = [float(row[key]) for row in rows if row.get(key) not in (None, "")]
    assert values, f"no {key} logged"
    return values[-1]


# ----------------------------------------------------------------------------------------------- DDP


@pytest.mark.slow
def test_ddp_fit_test_predict(dataset: dict[str, Path], tmp_path: Path) -> None:
    """2-process DDP fit, test and predict; DDP test metrics equal single-process ones on an odd-sized test
    set (nothing padded or counted twice) and predict writes one CSV with every video exactly once."""
    logs, checkpoints = tmp_path / "runs", tmp_path / "checkpoints"
    fit_args = _common_args(dataset, logs, "ddp", "fit") + _ddp()
    fit_args += ["--trainer.max_epochs=1", f"--checkpoint.dirpath={checkpoints}"]
    _run("fit", fit_args, tmp_path)
    checkpoint = checkpoints / "last.ckpt"
    assert checkpoint.is_file()
    assert _load(checkpoint)["global_step"] > 0

    # The same checkpoint and test videos, under DDP and in a single process.
    _run("test", _common_args(dataset, logs, "ddp", "test") + _ddp() + [f"--ckpt_path={checkpoint}"], tmp_path)
    single = _common_args(dataset, logs, "single", "test") + ["--trainer.devices=1", f"--ckpt_path={checkpoint}"]
    _run("test", single, tmp_path)
    ddp_metrics = json.loads((logs / "ddp" / "test" / "test_metrics.json").read_text())
    single_metrics = json.loads((logs / "single" / "test" / "test_metrics.json").read_text())
    assert ddp_metrics.keys() == single_metrics.keys()
    assert "test_loss" in ddp_metrics and "test_acc" in ddp_metrics
    for key, value in single_metrics.items():
        assert ddp_metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    with (logs / "ddp" / "test" / "test_per_class.csv").open() as file:
        support = sum(int(row["support"]) for row in csv.DictReader(file))
    assert support == 17  # 18 would mean a padded duplicate

    # Validate under DDP gives the single-process validation metrics too.
    val_metrics = {}
    for name, extra in (("ddp", _ddp()), ("single", ["--trainer.devices=1"])):
        _run(
            "validate", _common_args(dataset, logs, name, "validate") + extra + [f"--ckpt_path={checkpoint}"], tmp_path
        )
        with (logs / name / "validate" / "metrics.csv").open() as file:
            rows = [row for row in csv.DictReader(file) if row.get("val_acc")]
        val_metrics[name] = {key: float(rows[-1][key]) for key in ("val_loss", "val_acc")}
    assert val_metrics["ddp"] == pytest.approx(val_metrics["single"], rel=1e-5, abs=1e-6)

    # Predict under DDP: rank 0 merges every rank's rows into one file, with no padded duplicates.
    predict_args = _common_args(dataset, logs, "ddp", "predict") + _ddp()
    predict_args += [f"--ckpt_path={checkpoint}", f"--data.predict={dataset['test']}"]
    _run("predict", predict_args, tmp_path)
    files = sorted(logs.rglob("predictions.csv"))
    assert files == [logs / "ddp" / "predict" / "predictions.csv"]
    with files[0].open() as file:
        rows = list(csv.DictReader(file))
    predicted = sorted(Path(row["path"]).name for row in rows)
    with dataset["test"].open() as file:
        expected = sorted(Path(row["video_name"]).name for row in csv.DictReader(file))
    assert predicted == expected  # each video exactly once
    assert all(row["label_1"] for row in rows)


@pytest.mark.slow
def test_ddp_config_overlay_parses() -> None:
    """``--config configs/demo.yaml --config configs/ddp.yaml`` composes: the overlay wins for the trainer."""
    result = subprocess.run(
        _command("fit", ["--config=configs/demo.yaml", "--config=configs/ddp.yaml", "--print_config"]),
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    trainer = config["trainer"]
    assert trainer["strategy"] == "ddp"
    assert trainer["devices"] == "auto"
    assert trainer["precision"] is None  # not fixed: chosen by the hardware when the run starts
    assert trainer["sync_batchnorm"] is False
    assert config["model"]["backbone"] == "efficientnet_lite0"  # the base config is kept


# ----------------------------------------------------------------------------------------------- bf16


@pytest.mark.slow
@pytest.mark.parametrize("head", ["gru", "transformer"])
def test_bf16_mixed_fit_on_cpu(dataset: dict[str, Path], tmp_path: Path, head: str) -> None:
    logs = tmp_path / "runs"
    args = _common_args(dataset, logs, "bf16", head)
    args += [
        "--trainer.devices=1",
        "--trainer.precision=bf16-mixed",
        "--trainer.max_epochs=1",
        f"--model.head={head}",
        f"--checkpoint.dirpath={tmp_path / 'checkpoints'}",
    ]
    if head == "transformer":  # its own settings instead of the GRU's
        args += ["--model.rnn_hidden_sizes=null", "--model.d_model=16", "--model.num_heads=2", "--model.dense_dim=16"]
    _run("fit", args, tmp_path)
    rows = _metrics_rows(logs / "bf16" / head)
    losses = [float(row[key]) for row in rows for key in ("train_loss_step", "val_loss") if row.get(key)]
    assert losses, "no losses logged"
    assert all(math.isfinite(loss) for loss in losses), losses


# ----------------------------------------------------------------------------------------------- exact resume

STEPS_PER_EPOCH = 6  # 12 training videos (18 minus the 20 % validation split) / batch size 2
MAX_EPOCHS = 2


def _resume_args(dataset: dict[str, Path], logs: Path, version: str, checkpoints: Path) -> list[str]:
    return _common_args(dataset, logs, "resume", version) + [
        "--trainer.devices=1",
        f"--trainer.max_epochs={MAX_EPOCHS}",
        "--trainer.deterministic=true",
        "--data.sampling=segment",  # random frames per clip: the data RNG must be restored too
        "--model.dropout=0.3",  # and the model RNG
        "--data.num_workers=1",  # frames drawn in a worker process
        # A checkpoint after every step. With the default monitor (val_loss) Lightning defers step checkpoints
        # until val_loss exists, i.e. none in the first epoch; without a monitor it saves every step.
        "--checkpoint.every_n_train_steps=1",
        "--checkpoint.monitor=null",
        f"--checkpoint.dirpath={checkpoints}",
    ]


def _read_step(path: Path) -> int | None:
    try:
        return int(_load(path)["global_step"])
    except Exception:  # not written yet
        return None


def _start_and_kill(args: list[str], cwd: Path, checkpoint: Path) -> int:
    """Start a fit, SIGKILL it once a mid-epoch ``last.ckpt`` of the first epoch exists; the step it holds."""
    process = subprocess.Popen(
        _command("fit", args), cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline, seen, stamp = time.monotonic() + RUN_TIMEOUT_S, None, None
    try:
        while time.monotonic() < deadline and process.poll() is None:
            # Checkpoints are written atomically (temp file + rename): read each new one once.
            current = checkpoint.stat().st_mtime_ns if checkpoint.is_file() else None
            if current is not None and current != stamp:
                stamp, seen = current, _read_step(checkpoint)
                if seen is not None and seen >= 2:
                    process.send_signal(signal.SIGKILL)  # no clean exit, no final checkpoint
                    break
            time.sleep(0.01)
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate(timeout=60)
    if process.returncode != -signal.SIGKILL:
        pytest.fail(f"the run ended ({process.returncode}) before it could be killed (last step {seen}):\n{stderr}")
    step = _read_step(checkpoint)
    assert step is not None, "last.ckpt is unreadable after the kill"
    return step


@pytest.mark.slow
def test_exact_resume_after_sigkill(dataset: dict[str, Path], tmp_path: Path) -> None:
    """A fit killed mid-epoch and resumed from last.ckpt ends with the same weights and metrics as an
    uninterrupted one: data order, frame sampling, dropout, optimizer and loop state are all restored."""
    logs = tmp_path / "runs"
    uninterrupted = tmp_path / "ckpt_a"
    _run("fit", _resume_args(dataset, logs, "a", uninterrupted), tmp_path)
    final_a = _load(uninterrupted / "last.ckpt")
    assert final_a["global_step"] == STEPS_PER_EPOCH * MAX_EPOCHS

    # The kill must land mid-epoch; on a machine so loaded that it does not, start over (twice at most).
    for attempt in range(3):
        interrupted = tmp_path / f"ckpt_b{attempt}"
        args = _resume_args(dataset, logs, f"b{attempt}", interrupted)
        killed_at = _start_and_kill(args, tmp_path, interrupted / "last.ckpt")
        if killed_at % STEPS_PER_EPOCH:
            break
    else:
        pytest.fail(f"could not kill the run mid-epoch in 3 attempts (last at step {killed_at})")
    state = _load(interrupted / "last.ckpt")
    loader_state = state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert loader_state["batches_consumed"] == killed_at % STEPS_PER_EPOCH
    assert loader_state["epoch"] == killed_at // STEPS_PER_EPOCH

    _run("fit", args + [f"--ckpt_path={interrupted / 'last.ckpt'}"], tmp_path)
    final_b = _load(interrupted / "last.ckpt")
    assert final_b["global_step"] == final_a["global_step"]
    assert final_b["epoch"] == final_a["epoch"]
    weights_a, weights_b = final_a["state_dict"], final_b["state_dict"]
    assert weights_a.keys() == weights_b.keys()
    differing = [key for key in weights_a if not torch.equal(weights_a[key], weights_b[key])]
    assert not differing, f"weights differ after resuming from step {killed_at}: {differing}"
    optimizer_a = final_a["optimizer_states"][0]["state"]
    optimizer_b = final_b["optimizer_states"][0]["state"]
    for index, slots in optimizer_a.items():
        for slot, value in slots.items():
            assert torch.equal(value, optimizer_b[index][slot]), (index, slot)

    # The final validation metrics (logged after the last epoch, from the final weights).
    rows_a, rows_b = _metrics_rows(logs / "resume" / "a"), _metrics_rows(logs / "resume" / f"b{attempt}")
    for key in ("val_loss", "val_acc", "val_f1"):
        assert _last_value(rows_b, key) == _last_value(rows_a, key), key
