"""The summary blocks the command line prints at the end of a run, built from the trainer and data module's state."""

from pathlib import Path
from types import SimpleNamespace

from video_cnn_rnn.summary import cv_summary_lines, fit_summary_lines, predict_summary_lines, split_counts


def _data(val: str | None = None, val_fraction: float = 0.2, with_val: bool = True) -> SimpleNamespace:
    train = SimpleNamespace(items=[("a.mp4", 0), ("b.mp4", 0), ("c.mp4", 1)])
    datasets = {"train": train}
    if with_val:
        datasets["val"] = SimpleNamespace(rows=[("d.mp4", 1, "entry.npz")])  # a feature store's split
    hparams = {"val": val, "val_fraction": val_fraction, "seed": 42, "test": None}
    return SimpleNamespace(
        class_names=["cooking", "juggling"], datasets=datasets, hparams=SimpleNamespace(**hparams, get=hparams.get)
    )


def _trainer(tmp_path: Path, monitor: str | None = "val_loss", score: float | None = 0.25) -> SimpleNamespace:
    (tmp_path / "metrics.csv").write_text("epoch\n")
    callback = SimpleNamespace(
        monitor=monitor,
        best_model_score=score,
        best_model_path=str(tmp_path / "checkpoints/best.ckpt"),
        last_model_path=str(tmp_path / "checkpoints/last.ckpt"),
    )
    return SimpleNamespace(
        current_epoch=3,
        max_epochs=10,
        global_step=12,
        checkpoint_callback=callback,
        loggers=[SimpleNamespace(log_dir=str(tmp_path))],
    )


def test_split_counts_reads_videos_and_feature_store_rows() -> None:
    counts = split_counts(_data())
    assert counts == {"train": {"cooking": 2, "juggling": 1}, "val": {"juggling": 1}}


def test_fit_summary_says_classes_split_checkpoint_folder_and_next(tmp_path: Path) -> None:
    lines = fit_summary_lines(_trainer(tmp_path), _data(), ["fit", "--config", "my config.yaml"])
    assert lines[0] == "fit done. epochs: 3 of max_epochs 10 (stopped early), 12 steps"
    assert lines[1] == "classes (2): cooking, juggling"
    assert lines[2:6] == [
        "clips per class   train     val",
        "  cooking             2       0",
        "  juggling            1       1",
        "  total               3       1",
    ]
    assert (
        lines[6] == "validation: 20% of data.train held out, stratified by class (data.val_fraction 0.2, data.seed 42)"
    )
    assert lines[7] == f"best checkpoint: {tmp_path}/checkpoints/best.ckpt (val_loss 0.2500)"
    assert lines[8].startswith(f"last checkpoint: {tmp_path}/checkpoints/last.ckpt")
    assert lines[9] == f"run folder: {tmp_path} (metrics.csv)"
    assert lines[10] == (
        f"next: video-cnn-rnn test --config 'my config.yaml' --ckpt_path {tmp_path}/checkpoints/best.ckpt "
        "--data.test path/to/test_videos"
    )


def test_fit_summary_names_the_rule_and_the_checkpoint_kept_without_validation(tmp_path: Path) -> None:
    lines = fit_summary_lines(_trainer(tmp_path, None, None), _data(val_fraction=0.0, with_val=False), ["fit"])
    assert "validation: none (data.val_fraction 0, or no class had a second video to hold out)" in lines
    assert f"checkpoint: {tmp_path}/checkpoints/best.ckpt (the last epoch: checkpoint.monitor is null)" in lines
    lines = fit_summary_lines(_trainer(tmp_path), _data(val="val.csv"), ["fit"])
    assert "validation: data.val (val.csv)" in lines


def test_predict_and_cv_summaries_name_their_files(tmp_path: Path) -> None:
    (tmp_path / "predictions.csv").write_text("path,label_1,prob_1\na.mp4,x,0.9\nb.mp4,y,0.8\n")
    assert predict_summary_lines(tmp_path) == ["predict done: 2 videos", f"predictions: {tmp_path} (predictions.csv)"]
    assert cv_summary_lines(Path("runs/cv"))[0].startswith("cv done: the table above is in runs/cv/results.md")


def test_fit_summary_counts_the_motion_crops_that_fell_back(tmp_path: Path) -> None:
    data = _data()
    data.crop = "motion"  # VideoDataModule.crop: its clip spec's
    (tmp_path / "crop_fallback_videos.txt").write_text("a.mp4\tno motion in the clip\nb.mp4\tno motion in the clip\n")
    lines = fit_summary_lines(_trainer(tmp_path), data, ["fit"])
    assert (
        "motion crop: 2 video(s) not zoomed in (see motion.py: no motion, a moving background, ...) "
        f"(list: {tmp_path / 'crop_fallback_videos.txt'})"
    ) in lines
    assert not any(line.startswith("motion crop") for line in fit_summary_lines(_trainer(tmp_path), _data(), ["fit"]))
