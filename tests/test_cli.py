"""The command line: every config parses and instantiates; fit -> test -> predict through the console script."""

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import lightning
import pytest
import torch

from video_cnn_rnn.cli import checkpoint_run_folder, main, option_value, run_cli
from video_cnn_rnn.models.classifier import VideoClassifier

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
# Configs that only adjust another config (e.g. --config demo.yaml --config ddp.yaml), by the config they go after.
OVERLAYS = {"ddp": "demo", "multinode": "demo", "small_subjects": "finetune_real"}


def tiny_args(root: Path, runs: Path, name: str = "tiny") -> list[str]:
    """Shrunken settings: a timm test model, 32 px, 4 frames, one process, no workers."""
    return [
        "--seed_everything", "0",
        "--trainer.accelerator", "cpu",
        "--trainer.devices", "1",
        "--trainer.max_epochs", "2",
        "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir", str(runs),
        "--trainer.logger.name", name,
        "--checkpoint.dirpath", str(runs / name / "checkpoints"),
        "--model.backbone", "test_efficientnet",
        "--model.head", "gru",
        "--model.rnn_hidden_sizes", "[16]",
        "--model.fc_hidden", "null",
        "--model.dropout", "0.0",
        "--data.train", str(root / "train.csv"),
        "--data.test", str(root / "test.csv"),
        "--data.num_frames", "4",
        "--data.img_size", "32",
        "--data.batch_size", "6",
        "--data.num_workers", "0",
    ]  # fmt: skip


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_config_parses_and_instantiates(config: Path, synthetic_root: Path, tmp_path: Path) -> None:
    # Each config's own data paths point at datasets that are not here; everything else is taken as written.
    overrides = [
        "--data.train", str(synthetic_root / "train.csv"),
        "--data.test", str(synthetic_root / "test.csv"),
        "--data.video_root", "null",
        "--model.pretrained", "false",
        "--trainer.logger.init_args.save_dir", str(tmp_path),
    ]  # fmt: skip
    configs = ["--config", str(config)]
    if config.stem in OVERLAYS:
        configs = [
            "--config",
            str(CONFIG_DIR / f"{OVERLAYS[config.stem]}.yaml"),
            *configs,
            "--trainer.accelerator",
            "cpu",
        ]
    cli = run_cli([*configs, *overrides], run=False)
    assert isinstance(cli.model, VideoClassifier)
    assert cli.model.class_names == cli.datamodule.class_names
    for key in ("num_frames", "img_size", "sampling"):
        assert cli.model.hparams[key] == cli.datamodule.hparams[key]


def test_print_config_is_complete_and_reusable(synthetic_root: Path, tmp_path: Path, capsys) -> None:
    args = tiny_args(synthetic_root, tmp_path)
    with pytest.raises(SystemExit):
        run_cli(["fit", *args, "--print_config"])
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    assert "model:" in printed.read_text() and "checkpoint:" in printed.read_text()
    cli = run_cli(["fit", "--config", str(printed), "--trainer.fast_dev_run", "true"])
    assert cli.model.hparams.backbone == "test_efficientnet"
    assert cli.trainer.state.finished


def test_wrong_key_fails_readably_before_training(synthetic_root: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *tiny_args(synthetic_root, tmp_path), "--model.no_such_option", "1"])
    assert exit_info.value.code != 0
    assert "no_such_option" in capsys.readouterr().err
    assert not (tmp_path / "tiny").exists()  # nothing trained, nothing logged


def test_missing_data_path_fails_readably_before_training(synthetic_root: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nowhere" / "train.csv"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *tiny_args(synthetic_root, tmp_path), "--data.train", str(missing)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "not found" in err
    assert not (tmp_path / "tiny").exists()


def test_missing_video_in_csv_is_listed_before_training(synthetic_root: Path, tmp_path: Path, capsys) -> None:
    train = tmp_path / "train.csv"
    rows = (synthetic_root / "train.csv").read_text().splitlines()
    train.write_text("\n".join([rows[0], "train/ghost.mp4,disc_grow", *[str(synthetic_root / r) for r in rows[1:]]]))
    # Absolute paths for the real rows; the ghost row resolves next to the new CSV and does not exist.
    train.write_text(
        "video_name,tag\n"
        + "train/ghost.mp4,disc_grow\n"
        + "\n".join(f"{synthetic_root / line.split(',')[0]},{line.split(',')[1]}" for line in rows[1:])
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *tiny_args(synthetic_root, tmp_path), "--data.train", str(train)])
    assert exit_info.value.code == 2
    assert "ghost.mp4" in capsys.readouterr().err


def test_checkpoint_evaluated_on_other_classes_fails_listing_the_difference(
    synthetic_root: Path, tmp_path: Path, capsys
) -> None:
    names = ["blue_to_red", "disc_grow", "disc_shrink", "fade_in", "fade_out", "triangle"]
    model = VideoClassifier(backbone="test_efficientnet", class_names=names, num_frames=4, img_size=32)
    checkpoint = tmp_path / "other.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, checkpoint)
    with pytest.raises(SystemExit) as exit_info:
        main(["test", *tiny_args(synthetic_root, tmp_path), "--ckpt_path", str(checkpoint)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "only in the checkpoint / data.class_names: ['triangle']" in err and "only in data.train" in err
    assert "red_to_blue" in err


def test_crop_is_linked_to_the_model_and_a_checkpoint_evaluates_with_its_own(
    synthetic_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cli = run_cli([*tiny_args(synthetic_root, tmp_path), "--data.crop", "pad"], run=False)
    assert cli.model.hparams.crop == cli.datamodule.hparams.crop == "pad"

    names = sorted({row.split(",")[1] for row in (synthetic_root / "train.csv").read_text().splitlines()[1:]})
    # eval_flip recorded as a fitted model records it (a model built alone leaves it None: the data module's own).
    model = VideoClassifier(
        backbone="test_efficientnet", class_names=names, num_frames=4, img_size=32, crop="pad", eval_flip=False
    )
    checkpoint = tmp_path / "pad.ckpt"
    state = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    torch.save({**state, "pytorch-lightning_version": lightning.__version__}, checkpoint)
    args = [*tiny_args(synthetic_root, tmp_path), "--reports.output_dir", str(tmp_path), "--ckpt_path", str(checkpoint)]
    cli = run_cli(["test", *args])  # the config says nothing of crop: the checkpoint's pad is used
    assert cli.datamodule.hparams.crop == "pad" and cli.datamodule.datasets["test"].crop == "pad"

    # A setting given on the command line that the checkpoint replaces is named, not dropped in silence.
    caplog.clear()
    with caplog.at_level(logging.INFO):
        cli = run_cli(["test", *args, "--data.crop", "centre", "--data.eval_flip", "true"])
    assert cli.datamodule.hparams.crop == "pad" and cli.datamodule.hparams.eval_flip is False
    message = next(record.getMessage() for record in caplog.records if "brings its own" in record.getMessage())
    assert "data.crop 'centre' -> 'pad'" in message and "data.eval_flip True -> False" in message
    assert "img_size" not in message  # the config's 32 is the checkpoint's too


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "video_cnn_rnn", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _last_version(folder: Path) -> Path:
    return max(folder.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


@pytest.mark.slow
def test_fit_test_predict_end_to_end(synthetic_root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    args = tiny_args(synthetic_root, runs)
    fit = _run(["fit", *args], tmp_path)
    checkpoints = runs / "tiny" / "checkpoints"
    assert (checkpoints / "best.ckpt").is_file() and (checkpoints / "last.ckpt").is_file()
    assert f"\nbest checkpoint: {checkpoints / 'best.ckpt'} (val_loss " in fit.stdout  # the summary
    assert f"\nnext: video-cnn-rnn test --ckpt_path {checkpoints / 'best.ckpt'} --data.test " in fit.stdout

    # test, resumed from the checkpoint by path: the reports agree with the logged metrics.
    _run(["test", *args, "--ckpt_path", str(checkpoints / "best.ckpt")], tmp_path)
    log_dir = _last_version(runs / "tiny")
    metrics = json.loads((log_dir / "test_metrics.json").read_text())
    with (log_dir / "metrics.csv").open() as file:
        logged = {k: float(v) for row in csv.DictReader(file) for k, v in row.items() if v and k.startswith("test_")}
    assert metrics["test_acc"] == pytest.approx(logged["test_acc"], abs=1e-6)
    with (log_dir / "test_per_class.csv").open() as file:
        per_class = list(csv.DictReader(file))
    num_test = len((synthetic_root / "test.csv").read_text().splitlines()) - 1
    assert sum(int(row["support"]) for row in per_class) == num_test
    assert (log_dir / "confusion_matrix.png").stat().st_size > 0

    # predict by path, on a folder, with top-k printed like the seed and one CSV row per video.
    result = _run(
        ["predict", *args, "--ckpt_path", str(checkpoints / "best.ckpt"), "--data.predict", str(synthetic_root / "test"),
         "--reports.top_k", "3", "--reports.gif", "true"],
        tmp_path,
    )  # fmt: skip
    log_dir = _last_version(runs / "tiny")
    with (log_dir / "predictions.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == num_test and len({row["path"] for row in rows}) == num_test
    assert "%" in result.stdout
    assert len(list((log_dir / "gifs").glob("*.gif"))) == num_test

    # The checkpoint alone rebuilds the model, its classes and frame settings.
    model = VideoClassifier.load_from_checkpoint(checkpoints / "best.ckpt")
    assert model.class_names == sorted(
        {row.split(",")[1] for row in (synthetic_root / "train.csv").read_text().splitlines()[1:]}
    )
    assert (model.hparams.num_frames, model.hparams.img_size) == (4, 32)
    ranked = model.predict_video(rows[0]["path"], top_k=2)
    assert ranked[0][0] == rows[0]["label_1"]
    assert ranked[0][1] == pytest.approx(float(rows[0]["prob_1"]), abs=1e-4)
    assert torch.isfinite(torch.tensor([p for _, p in ranked])).all()


def test_bad_video_is_skipped_and_reported_without_stopping_training(synthetic_root: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_text("this is not a video")
    rows = (synthetic_root / "train.csv").read_text().splitlines()[1:]
    train = tmp_path / "train.csv"
    # batch_size 1 with the corrupt video first: one batch is empty after skipping, and training goes on.
    train.write_text(
        "video_name,tag\n"
        + f"{corrupt},disc_grow\n"
        + "\n".join(f"{synthetic_root / line.split(',')[0]},{line.split(',')[1]}" for line in rows)
    )
    runs = tmp_path / "runs"
    args = [*tiny_args(synthetic_root, runs), "--data.train", str(train), "--data.on_error", "skip"]
    args += ["--data.batch_size", "1", "--trainer.max_epochs", "1", "--data.val_fraction", "0.3"]
    with pytest.warns(UserWarning, match="corrupt.mp4"):
        cli = run_cli(["fit", *args])
    assert cli.trainer.state.finished
    reports = list(runs.glob("tiny/version_*/skipped_videos.txt"))
    assert reports and str(corrupt) in reports[0].read_text()


def test_help_lists_every_subcommand(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in ("fit", "validate", "test", "predict", "extract", "cv", "synthetic"))


def test_fine_tuning_recipe_trains_through_the_cli(synthetic_root: Path, tmp_path: Path) -> None:
    """finetune_real.yaml as written (device augmentation, K clips, per-step warm-up + cosine), with the temporal
    shift on, on a tiny backbone: two epochs run, both parameter groups end at the end of the cosine."""
    shrink = ["--model.backbone", "test_efficientnet", "--model.pretrained", "false", "--model.d_model", "16"]
    shrink += ["--model.temporal_shift", "0.125", "--data.test", "null", "--data.video_root", "null"]
    shrink += [
        "--data.img_size",
        "32",
        "--data.num_frames",
        "4",
        "--data.num_workers",
        "0",
        "--trainer.max_epochs",
        "2",
    ]
    shrink += ["--data.train", str(synthetic_root / "train.csv"), "--trainer.logger.init_args.save_dir", str(tmp_path)]
    shrink += ["--checkpoint.dirpath", str(tmp_path / "ckpt"), "--trainer.enable_progress_bar", "false"]
    cli = run_cli(["fit", "--config", str(CONFIG_DIR / "finetune_real.yaml"), *shrink])
    assert cli.trainer.state.finished and cli.trainer.global_step == 2 * 5  # 18 videos x 2 clips, batches of 8
    scheduler = cli.trainer.lr_scheduler_configs[0].scheduler
    assert (scheduler.steps_per_epoch, scheduler.total_steps, scheduler.last_epoch) == (5, 10, 10)
    head, backbone = cli.trainer.optimizers[0].param_groups
    assert head["lr"] == pytest.approx(1e-3 * 0.01) and backbone["lr"] == pytest.approx(1e-4 * 0.01)


def test_an_evaluation_logs_into_the_run_folder_its_checkpoint_came_from(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "mine" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    checkpoint = run / "checkpoints" / "best.ckpt"
    checkpoint.write_bytes(b"")
    assert checkpoint_run_folder(str(checkpoint)) is None  # no logger's files beside checkpoints/: not a run
    (run / "hparams.yaml").write_text("")
    assert checkpoint_run_folder(str(checkpoint)) == run
    # The configs' layout, runs/<name>/checkpoints beside version_N folders: evaluations open a version_N.
    shared = tmp_path / "runs" / "demo" / "checkpoints" / "best.ckpt"
    shared.parent.mkdir(parents=True)
    shared.write_bytes(b"")
    (shared.parent.parent / "version_0").mkdir()
    assert checkpoint_run_folder(str(shared)) is None
    assert checkpoint_run_folder("last") is None and checkpoint_run_folder(None) is None


def test_the_cv_summary_finds_the_output_folder_in_the_arguments() -> None:
    assert option_value(["--k", "2", "--output", "out/cv", "--data.train", "a"], "--output", "runs/cv") == "out/cv"
    assert option_value(["--output=out/cv"], "--output", "runs/cv") == "out/cv"
    assert option_value(["--data.train", "a", "--outputs", "b"], "--output", "runs/cv") == "runs/cv"  # no prefixes
