"""The long-video timeline: merged segments, the files written, predict_timeline, and ``predict --timeline.*``."""

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from video_cnn_rnn.cli import run_cli
from video_cnn_rnn.data.decode import VideoDecodeError, iter_windows
from video_cnn_rnn.data.synthetic import make_clip, write_video
from video_cnn_rnn.models.classifier import VideoClassifier
from video_cnn_rnn.timeline import merge_segments, plot_timeline, run_timeline, write_timeline

NAMES = ["a", "b", "c"]


def _row(start: float, label: int, path: str = "v.mp4", window: float = 2.0, p: float = 0.8) -> dict:
    probs = [(1 - p) / 2] * 3
    probs[label] = p
    return {"path": path, "start_s": start, "end_s": start + window, "probs": probs, "note": ""}


def test_merge_segments_joins_runs_and_meets_halfway_between_window_centres() -> None:
    rows = [_row(0, 0), _row(1, 0, p=0.6), _row(2, 1), _row(3, 1), _row(4, 1), _row(5, 2)]
    segments = merge_segments(rows, NAMES)
    # Centres 1, 2 | 3, 4, 5 | 6: boundaries at 2.5 and 5.5; the ends are the first start and the last end.
    assert [(s["start_s"], s["end_s"], s["label"], s["windows"]) for s in segments] == [
        (0, 2.5, "a", 2),
        (2.5, 5.5, "b", 3),
        (5.5, 7, "c", 1),
    ]
    assert segments[0]["mean_prob"] == pytest.approx(0.7)


def test_merge_segments_keeps_videos_apart_and_handles_gaps() -> None:
    rows = [_row(0, 0, "x.mp4"), _row(1, 0, "x.mp4"), _row(0, 0, "y.mp4")]
    assert [(s["path"], s["start_s"], s["end_s"]) for s in merge_segments(rows, NAMES)] == [
        ("x.mp4", 0, 3),
        ("y.mp4", 0, 2),
    ]
    # hop > window: the windows do not touch, and a segment never reaches past its own windows.
    sparse = [_row(0, 0, window=1), _row(3, 1, window=1)]
    assert [(s["start_s"], s["end_s"]) for s in merge_segments(sparse, NAMES)] == [(0, 1), (3, 4)]
    assert merge_segments([], NAMES) == []


def test_write_timeline_files(tmp_path: Path) -> None:
    rows = [_row(0, 0), _row(1, 1), {**_row(0, 2, "short.mp4"), "note": "window longer than the video"}]
    paths = write_timeline(rows, NAMES, tmp_path, top_k=2)
    with paths["timeline"].open() as file:
        table = list(csv.DictReader(file))
    assert list(table[0]) == ["path", "start_s", "end_s", "label_1", "prob_1", "label_2", "prob_2", "note"]
    assert [(r["path"], r["start_s"], r["label_1"]) for r in table] == [
        ("v.mp4", "0.000", "a"),
        ("v.mp4", "1.000", "b"),
        ("short.mp4", "0.000", "c"),
    ]
    assert table[2]["note"] == "window longer than the video" and float(table[0]["prob_1"]) == pytest.approx(0.8)
    with paths["segments"].open() as file:
        assert [r["label"] for r in csv.DictReader(file)] == ["a", "b", "c"]
    assert paths["plot"].stat().st_size > 0


def test_write_timeline_without_matplotlib_warns_and_skips_the_png(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.warns(UserWarning, match=r"pip install 'video_cnn_rnn\[plots\]'"):
        paths = write_timeline([_row(0, 0)], NAMES, tmp_path)
    assert "plot" not in paths and not (tmp_path / "timeline.png").exists()
    assert paths["timeline"].is_file() and paths["segments"].is_file()


# ---- predict_timeline and the CLI ----------------------------------------------------------------------------

CLASSES = ["blue_to_red", "disc_grow", "disc_shrink", "fade_in", "fade_out", "red_to_blue"]


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6.5 s at 10 fps, 48x40: three 2 s animations, then a still tail."""
    rng = np.random.default_rng(0)
    parts = [make_clip(label, 20, 48, 40, rng) for label in ("disc_grow", "fade_out", "red_to_blue")]
    frames = np.concatenate([*parts, parts[-1][-1:].repeat(5, axis=0)])
    path = tmp_path_factory.mktemp("timeline") / "long.mp4"
    write_video(path, frames, fps=10)
    return path


@pytest.fixture(scope="module")
def model() -> VideoClassifier:
    torch.manual_seed(0)
    return VideoClassifier(
        backbone="test_efficientnet", class_names=CLASSES, num_frames=4, img_size=32, head="gru",
        rnn_hidden_sizes=[16], fc_hidden=None, dropout=0.0,
    )  # fmt: skip


def test_predict_timeline_rows_match_one_clip_per_window(model: VideoClassifier, long_clip: Path) -> None:
    rows = model.predict_timeline(long_clip, window_s=2.0, hop_s=1.0, batch_size=3, top_k=2)
    assert [(r["start_s"], r["end_s"]) for r in rows] == [(s, s + 2.0) for s in range(5)]
    assert model.training  # the mode is given back
    model.eval()
    for row, window in zip(rows, iter_windows(long_clip, 2.0, 1.0, num_frames=4, img_size=32), strict=True):
        with torch.inference_mode():
            expected = model(window.frames[None], torch.ones(1, window.length, dtype=torch.bool)).softmax(-1)[0]
        assert row["probs"] == pytest.approx(expected.tolist(), abs=1e-5)  # batching changes nothing
        assert sum(row["probs"]) == pytest.approx(1.0, abs=1e-5)
        assert row["top_k"][0] == (CLASSES[int(expected.argmax())], pytest.approx(float(expected.max()), abs=1e-5))
        assert len(row["top_k"]) == 2 and row["note"] == ""
    model.train()


def test_predict_timeline_bad_input(model: VideoClassifier, long_clip: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hop_s"):
        model.predict_timeline(tmp_path / "missing.mp4", hop_s=0)
    (row,) = model.predict_timeline(long_clip, window_s=30.0)
    assert "longer than the video" in row["note"] and row["end_s"] == pytest.approx(6.5)
    # A file cut mid-way: raise by default; otherwise a warning and the windows read before the cut.
    full = tmp_path / "full.avi"
    write_video(full, make_clip("disc_grow", 80, 48, 40, np.random.default_rng(1)), fps=10)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    for training in (True, False):
        model.train(training)
        with pytest.raises(VideoDecodeError, match="cut.avi"):
            model.predict_timeline(cut, window_s=1.0, hop_s=1.0)
        assert model.training is training  # the mode is given back when decoding fails mid-way too
    model.train()
    with pytest.warns(UserWarning, match="cut short"):
        rows = model.predict_timeline(cut, window_s=1.0, hop_s=1.0, on_error="skip")
    assert 2 <= len(rows) < 8


@pytest.mark.parametrize("training", [True, False])
def test_run_timeline_gives_the_model_back_in_its_mode(
    model: VideoClassifier, long_clip: Path, tmp_path: Path, training: bool
) -> None:
    model.train(training)
    paths = run_timeline(model, [str(long_clip)], tmp_path, window_s=2.0, hop_s=1.0, top_k=2)
    assert model.training is training
    with paths["timeline"].open() as file:
        table = list(csv.DictReader(file))
    # The CLI's files and predict_timeline come from the same loop: the same rows.
    expected = model.predict_timeline(long_clip, window_s=2.0, hop_s=1.0)
    assert model.training is training
    assert [r["label_1"] for r in table] == [r["top_k"][0][0] for r in expected]
    model.train()


def test_timeline_needs_the_clip_shape(long_clip: Path, tmp_path: Path) -> None:
    bare = VideoClassifier(backbone="test_efficientnet", class_names=CLASSES)  # never ran with a data module
    with pytest.raises(ValueError, match=r"predict_timeline needs .* num_frames, img_size are None"):
        bare.predict_timeline(long_clip)
    with pytest.raises(ValueError, match="predict_timeline needs"):
        run_timeline(bare, [str(long_clip)], tmp_path, window_s=2.0, hop_s=1.0)
    assert bare.training  # refused before the mode was touched


def test_cli_predict_timeline_writes_csvs_and_png(
    model: VideoClassifier, long_clip: Path, tmp_path: Path, capsys
) -> None:
    checkpoint = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, checkpoint)
    out = tmp_path / "out"
    args = [
        "predict", "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.logger", "false",
        "--trainer.precision", "32-true", "--data.num_workers", "0",
        "--ckpt_path", str(checkpoint), "--data.predict", str(long_clip), "--reports.output_dir", str(out),
        "--timeline.window_s", "2", "--timeline.hop_s", "1", "--timeline.batch_size", "2", "--reports.top_k", "2",
    ]  # fmt: skip
    run_cli(args)
    with (out / "timeline.csv").open() as file:
        table = list(csv.DictReader(file))
    expected = model.predict_timeline(long_clip, window_s=2.0, hop_s=1.0)
    assert [r["label_1"] for r in table] == [r["top_k"][0][0] for r in expected]
    assert [float(r["prob_1"]) for r in table] == pytest.approx([r["top_k"][0][1] for r in expected], abs=1e-5)
    assert (out / "segments.csv").is_file() and (out / "timeline.png").stat().st_size > 0
    assert not (out / "predictions.csv").exists()  # the timeline replaces the per-video predictions

    with pytest.raises(SystemExit) as exit_info:
        run_cli([*args, "--timeline.hop_s", "-1"])
    assert exit_info.value.code == 2 and "hop_s must be > 0" in capsys.readouterr().err


def test_timeline_legend_sits_above_the_panels_at_a_readable_size(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    saved: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, *args, **kwargs: saved.append(figure))
    plot_timeline([_row(0, 0), _row(1, 1)], NAMES, tmp_path / "timeline.png")
    (legend,) = saved[0].legends  # the figure's, not a panel's
    assert [text.get_text() for text in legend.get_texts()] == list(NAMES)
    assert min(text.get_fontsize() for text in legend.get_texts()) >= 9
    assert not any(axes.get_legend() for axes in saved[0].axes)
