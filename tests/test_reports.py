"""Report files (test metrics, per-class CSV, confusion matrix, prediction CSVs, GIFs) and the RunReports
callback, driven directly with small fake trainer and module objects: no training."""

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from video_cnn_rnn.reports import (
    RunReports,
    confusion_matrix_figure,
    plot_confusion_matrix,
    top_k,
    write_gif,
    write_test_predictions,
    write_test_report,
)

CLASS_NAMES = ["jump", "run", "sit"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _report() -> dict:
    return {
        "class_names": CLASS_NAMES,
        "per_class": [
            {"class": "jump", "precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2},
            {"class": "run", "precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1},
            {"class": "sit", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},
        ],
        "confusion_matrix": [[1, 1, 0], [0, 1, 0], [0, 0, 0]],
        "metrics": {"test_loss": 0.75, "test_acc": 2 / 3},
    }


def _read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as file:
        return list(csv.reader(file))


def _gif_frames(path: Path) -> list[Image.Image]:
    image = Image.open(path)
    frames = []
    for index in range(image.n_frames):
        image.seek(index)
        frames.append(image.convert("RGB"))
    return frames


def _distinct_frames(count: int, height: int = 16, width: int = 20) -> torch.Tensor:
    """uint8 [T, C, H, W], each frame one grey level. Distinct, because the GIF writer merges repeated frames."""
    return torch.stack([torch.full((3, height, width), 40 + 50 * t, dtype=torch.uint8) for t in range(count)])


# ---------------------------------------------------------------- report files


def test_write_test_report_writes_metrics_per_class_and_confusion_matrix(tmp_path):
    folder = tmp_path / "not" / "yet" / "there"
    paths = write_test_report(_report(), folder)
    assert paths == {
        "metrics": folder / "test_metrics.json",
        "per_class": folder / "test_per_class.csv",
        "confusion_matrix": folder / "confusion_matrix.png",
    }
    text = paths["metrics"].read_text()
    assert json.loads(text) == {"test_loss": 0.75, "test_acc": 2 / 3}
    assert text.index('"test_acc"') < text.index('"test_loss"')  # sorted keys
    rows = _read_csv(paths["per_class"])
    assert rows[0] == ["class", "precision", "recall", "f1", "support"]
    assert [row[0] for row in rows[1:]] == CLASS_NAMES
    assert rows[1][1:3] == ["1.0", "0.5"] and float(rows[1][3]) == pytest.approx(2 / 3) and rows[1][4] == "2"
    assert paths["confusion_matrix"].read_bytes()[:8] == PNG_MAGIC


def test_write_test_predictions_sorts_rows_and_names_the_true_and_predicted_classes(tmp_path):
    rows = [
        ("b.mp4", 2, [0.2, 0.7, 0.1]),
        ("a.avi", 0, [0.5, 0.25, 0.25]),
        ("c.mp4", 1, [0.4, 0.4, 0.2]),  # a tie: the first class wins
    ]
    path = write_test_predictions(rows, CLASS_NAMES, tmp_path / "sub" / "test_predictions.csv")
    assert path == tmp_path / "sub" / "test_predictions.csv"
    assert _read_csv(path) == [
        ["path", "label", "predicted", "prob_jump", "prob_run", "prob_sit"],
        ["a.avi", "jump", "jump", "0.500000", "0.250000", "0.250000"],
        ["b.mp4", "sit", "run", "0.200000", "0.700000", "0.100000"],
        ["c.mp4", "run", "jump", "0.400000", "0.400000", "0.200000"],
    ]


def test_write_test_predictions_without_rows_writes_the_header_only(tmp_path):
    path = write_test_predictions([], CLASS_NAMES, tmp_path / "test_predictions.csv")
    assert _read_csv(path) == [["path", "label", "predicted", "prob_jump", "prob_run", "prob_sit"]]


@pytest.mark.parametrize(("num_classes", "pixels"), [(2, 400), (10, 800)])
def test_plot_confusion_matrix_writes_a_png_that_grows_with_the_classes(tmp_path, num_classes, pixels):
    path = tmp_path / "confusion_matrix.png"
    matrix = [[(i + j) % 3 for j in range(num_classes)] for i in range(num_classes)]
    plot_confusion_matrix(matrix, [f"class_{i}" for i in range(num_classes)], path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (pixels, pixels)  # max(4, 0.6 n + 2) inches at 100 dpi


def test_confusion_matrix_cells_show_the_share_of_the_true_class_and_the_count_with_readable_contrast():
    figure = confusion_matrix_figure([[3, 1, 0], [0, 2, 0], [0, 0, 0]], CLASS_NAMES)
    axes = figure.axes[0]
    cells = {(text.get_position()[1], text.get_position()[0]): text for text in axes.texts}  # (row, column)
    assert cells[(0, 0)].get_text() == "75%\n3" and cells[(0, 1)].get_text() == "25%\n1"
    assert cells[(1, 1)].get_text() == "100%\n2" and cells[(0, 2)].get_text() == "0%\n0"
    assert cells[(2, 2)].get_text() == "–"  # no true "sit" video: no share to show
    assert cells[(1, 1)].get_color() == "white" and cells[(0, 1)].get_color() == "#1a1a1a"  # dark cell, pale cell
    assert cells[(0, 2)].get_color() == "#8c8c8c"  # an empty cell steps back
    assert "accuracy 83.3% (5/6)" in axes.get_title()
    assert [label.get_text() for label in axes.get_yticklabels()] == ["jump (4)", "run (2)", "sit (0)"]


def test_write_gif_has_one_frame_per_input_frame_below_a_caption_bar(tmp_path):
    path = tmp_path / "clip.gif"
    write_gif(_distinct_frames(3), "run 87.5%", path, fps=5)
    with Image.open(path) as image:
        assert image.format == "GIF" and image.n_frames == 3 and image.size == (20, 16)
        assert image.info["duration"] == 200 and image.info["loop"] == 0
    frames = _gif_frames(path)
    for t, frame in enumerate(frames):
        assert frame.getpixel((10, 14)) == (40 + 50 * t,) * 3  # below the caption bar: the video's pixels
        assert frame.getpixel((19, 11)) == (0, 0, 0)  # the bar's far corner, clear of the text


def test_top_k_ranks_classes_by_probability_and_caps_k_at_the_number_of_classes():
    probs = torch.tensor([0.1, 0.6, 0.3])
    ranked = top_k(probs, CLASS_NAMES, 2)
    assert [name for name, _ in ranked] == ["run", "sit"]
    assert [value for _, value in ranked] == pytest.approx([0.6, 0.3])
    assert all(isinstance(value, float) for _, value in ranked)
    assert [name for name, _ in top_k(probs, CLASS_NAMES, 5)] == ["run", "sit", "jump"]


# ---------------------------------------------------------------- RunReports


def _trainer(tmp_path: Path, is_global_zero: bool = True, log_dir: str | None = "logs") -> SimpleNamespace:
    return SimpleNamespace(
        log_dir=str(tmp_path / log_dir) if log_dir else None,
        default_root_dir=str(tmp_path / "root"),
        world_size=1,
        is_global_zero=is_global_zero,
        global_rank=0 if is_global_zero else 1,
        strategy=SimpleNamespace(barrier=lambda name=None: None),
    )


def _module(report: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(class_names=CLASS_NAMES, test_report=report if report is not None else {})


def _callback(trainer, module, stage: str = "fit", **kwargs) -> RunReports:
    callback = RunReports(**kwargs)
    callback.setup(trainer, module, stage)
    return callback


def test_reports_go_to_output_dir_else_the_log_dir_else_the_root_dir(tmp_path):
    module = _module()
    assert _callback(_trainer(tmp_path), module, output_dir=str(tmp_path / "out"))._folder == tmp_path / "out"
    assert _callback(_trainer(tmp_path), module)._folder == tmp_path / "logs"
    assert _callback(_trainer(tmp_path, log_dir=None), module)._folder == tmp_path / "root"


def test_skipped_videos_of_every_stage_are_listed_once_sorted_with_reasons_at_fit_end(tmp_path):
    trainer, module = _trainer(tmp_path), _module()
    callback = _callback(trainer, module)
    callback.on_train_batch_end(trainer, module, None, {"skipped": [("z.mp4", "no such file"), ("a.avi", "x")]}, 0)
    callback.on_train_batch_end(trainer, module, None, {"skipped": []}, 1)
    callback.on_train_batch_end(trainer, module, None, torch.zeros(2), 2)  # not a dict: nothing to collect
    callback.on_validation_batch_end(trainer, module, None, {"skipped": [("z.mp4", "no such file"), ("m.mp4", "y")]}, 0)
    callback.on_fit_end(trainer, module)
    text = (tmp_path / "logs" / "skipped_videos.txt").read_text()
    assert text == "a.avi\tx\nm.mp4\ty\nz.mp4\tno such file\n"
    assert not (tmp_path / "logs" / "damaged_videos.txt").exists()


def test_damaged_videos_are_listed_with_their_reasons_beside_the_skipped_ones(tmp_path):
    trainer, module = _trainer(tmp_path), _module()
    callback = _callback(trainer, module)
    damaged = [("b.mp4", "damaged stream: frame 20 (0.80 s): concealed"), ("a.avi", "damaged stream: frame 3")]
    callback.on_train_batch_end(
        trainer, module, None, {"skipped": [("c.mp4", "no clean frame")], "damaged": damaged}, 0
    )
    callback.on_validation_batch_end(trainer, module, None, {"skipped": [], "damaged": damaged[:1]}, 0)
    callback.on_fit_end(trainer, module)
    folder = tmp_path / "logs"
    assert (folder / "damaged_videos.txt").read_text() == (
        "a.avi\tdamaged stream: frame 3\nb.mp4\tdamaged stream: frame 20 (0.80 s): concealed\n"
    )
    assert (folder / "skipped_videos.txt").read_text() == "c.mp4\tno clean frame\n"


def test_no_skipped_videos_file_when_nothing_was_skipped(tmp_path):
    trainer, module = _trainer(tmp_path), _module()
    callback = _callback(trainer, module)
    callback.on_train_batch_end(trainer, module, None, {"skipped": []}, 0)
    callback.on_fit_end(trainer, module)
    assert not (tmp_path / "logs").exists()


def _test_outputs(paths: list[str], labels: list[int], probs: list[list[float]]) -> dict:
    return {"loss": torch.tensor(0.5), "paths": paths, "labels": torch.tensor(labels), "probs": torch.tensor(probs)}


def test_test_end_writes_the_report_and_the_predictions_of_every_batch(tmp_path):
    trainer, module = _trainer(tmp_path), _module(_report())
    callback = _callback(trainer, module, stage="test")
    callback.on_test_start(trainer, module)
    first = _test_outputs(["v2.mp4", "v0.mp4"], [1, 0], [[0.25, 0.5, 0.25], [0.5, 0.25, 0.25]])
    callback.on_test_batch_end(trainer, module, first, {"skipped": [("bad.mp4", "cannot decode")]}, 0)
    callback.on_test_batch_end(trainer, module, None, {"skipped": []}, 1)  # test_step returns None for an empty batch
    second = _test_outputs(["v1.mp4"], [2], [[0.125, 0.125, 0.75]])
    callback.on_test_batch_end(trainer, module, second, {"skipped": []}, 2)
    callback.on_test_end(trainer, module)
    folder = tmp_path / "logs"
    assert sorted(path.name for path in folder.iterdir()) == [
        "confusion_matrix.png",
        "skipped_videos.txt",
        "test_metrics.json",
        "test_per_class.csv",
        "test_predictions.csv",
    ]
    assert json.loads((folder / "test_metrics.json").read_text()) == _report()["metrics"]
    assert (folder / "skipped_videos.txt").read_text() == "bad.mp4\tcannot decode\n"
    assert _read_csv(folder / "test_predictions.csv")[1:] == [
        ["v0.mp4", "jump", "jump", "0.500000", "0.250000", "0.250000"],
        ["v1.mp4", "sit", "sit", "0.125000", "0.125000", "0.750000"],
        ["v2.mp4", "run", "run", "0.250000", "0.500000", "0.250000"],
    ]


def test_test_end_writes_no_report_without_one_or_off_rank_zero(tmp_path):
    outputs = _test_outputs(["v0.mp4"], [0], [[0.5, 0.25, 0.25]])
    for trainer, module in (
        (_trainer(tmp_path), _module()),
        (_trainer(tmp_path, is_global_zero=False), _module(_report())),
    ):
        callback = _callback(trainer, module, stage="test")
        callback.on_test_start(trainer, module)
        callback.on_test_batch_end(trainer, module, outputs, {"skipped": []}, 0)
        callback.on_test_end(trainer, module)
    assert not (tmp_path / "logs").exists()


def _predict(callback, trainer, module, batches: list[tuple[dict, dict]]) -> None:
    callback.on_predict_start(trainer, module)
    for index, (outputs, batch) in enumerate(batches):
        callback.on_predict_batch_end(trainer, module, outputs, batch, index)
    callback.on_predict_end(trainer, module)
    callback.teardown(trainer, module, "predict")  # where the held lines are said, after the progress bar's end


def _predict_batch(paths: list[str], probs: list[list[float]], lengths: list[int] | None = None, clips: int = 0):
    lengths = lengths or [1] * len(paths)
    steps = max(lengths)
    frames = torch.stack([_distinct_frames(steps) for _ in paths])  # [B, T, C, H, W]
    if clips:
        frames = torch.stack([frames] + [frames.flip(1)] * (clips - 1), dim=1)  # [B, K, T, C, H, W]
    outputs = {"paths": paths, "probs": torch.tensor(probs)}
    return outputs, {"frames": frames, "lengths": torch.tensor(lengths), "skipped": []}


def test_predict_end_writes_sorted_top_k_rows_and_prints_them(tmp_path, capsys):
    trainer, module = _trainer(tmp_path), _module()
    callback = _callback(trainer, module, stage="predict", top_k=2)
    batches = [
        _predict_batch(["/videos/b.mp4", "/videos/c.mp4"], [[0.25, 0.5, 0.25], [0.125, 0.125, 0.75]]),
        _predict_batch(["/videos/a.mp4"], [[0.5, 0.375, 0.125]]),
    ]
    batches[1][1]["skipped"] = [("/videos/broken.mp4", "no decodable video frames")]
    _predict(callback, trainer, module, batches)
    assert _read_csv(tmp_path / "logs" / "predictions.csv") == [
        ["path", "label_1", "prob_1", "label_2", "prob_2"],
        ["/videos/a.mp4", "jump", "0.500000", "run", "0.375000"],
        ["/videos/b.mp4", "run", "0.500000", "jump", "0.250000"],
        ["/videos/c.mp4", "sit", "0.750000", "jump", "0.125000"],
    ]
    assert (tmp_path / "logs" / "skipped_videos.txt").read_text() == "/videos/broken.mp4\tno decodable video frames\n"
    printed = capsys.readouterr().out
    assert "/videos/a.mp4\n  jump: 50.00%\n  run: 37.50%\n" in printed
    assert printed.index("/videos/a.mp4") < printed.index("/videos/b.mp4") < printed.index("/videos/c.mp4")


def test_predict_k_follows_the_row_width_when_top_k_exceeds_the_classes(tmp_path, capsys):
    trainer, module = _trainer(tmp_path), _module()
    callback = _callback(trainer, module, stage="predict", top_k=5, print_predictions=False)
    _predict(callback, trainer, module, [_predict_batch(["v.mp4"], [[0.25, 0.125, 0.625]])])
    rows = _read_csv(tmp_path / "logs" / "predictions.csv")
    assert rows[0] == ["path", "label_1", "prob_1", "label_2", "prob_2", "label_3", "prob_3"]
    assert rows[1] == ["v.mp4", "sit", "0.625000", "jump", "0.250000", "run", "0.125000"]
    assert capsys.readouterr().out == ""


def test_predict_without_videos_writes_a_header_with_top_k_columns(tmp_path):
    trainer, module = _trainer(tmp_path), _module()
    callback = _callback(trainer, module, stage="predict", top_k=2, print_predictions=False)
    _predict(callback, trainer, module, [({"paths": [], "probs": torch.zeros(0, 3)}, {"skipped": []})])
    assert _read_csv(tmp_path / "logs" / "predictions.csv") == [["path", "label_1", "prob_1", "label_2", "prob_2"]]


def test_predict_off_rank_zero_writes_only_its_own_rank_file(tmp_path):
    trainer, module = _trainer(tmp_path, is_global_zero=False), _module()
    callback = _callback(trainer, module, stage="predict", print_predictions=False)
    _predict(callback, trainer, module, [_predict_batch(["v.mp4"], [[0.25, 0.125, 0.625]])])
    assert [path.name for path in (tmp_path / "logs").iterdir()] == ["predictions.rank1.csv"]
    assert _read_csv(tmp_path / "logs" / "predictions.rank1.csv")[1][0] == "v.mp4"


@pytest.mark.parametrize("clips", [0, 2])
def test_predict_gifs_show_each_videos_real_frames_of_its_first_clip(tmp_path, clips):
    trainer, module = _trainer(tmp_path), _module()
    callback = _callback(trainer, module, stage="predict", gif=True, print_predictions=False)
    batch = _predict_batch(["/x/long.mp4", "/x/short.avi"], [[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]], [4, 2], clips)
    _predict(callback, trainer, module, [batch])
    gifs = tmp_path / "logs" / "gifs"
    assert sorted(path.name for path in gifs.iterdir()) == ["long.gif", "short.gif"]
    for name, length in (("long.gif", 4), ("short.gif", 2)):
        frames = _gif_frames(gifs / name)
        assert len(frames) == length  # padding frames are left out
        assert [frame.getpixel((10, 14)) for frame in frames] == [(40 + 50 * t,) * 3 for t in range(length)]


def test_a_second_test_or_predict_run_with_the_same_callback_starts_with_no_rows(tmp_path):
    trainer, module = _trainer(tmp_path), _module(_report())
    callback = _callback(trainer, module, stage="test", print_predictions=False)
    for paths in (["first.mp4"], ["second.mp4"]):
        callback.on_test_start(trainer, module)
        callback.on_test_batch_end(trainer, module, _test_outputs(paths, [0], [[0.5, 0.25, 0.25]]), {}, 0)
        callback.on_test_end(trainer, module)
        _predict(callback, trainer, module, [_predict_batch(paths, [[0.5, 0.25, 0.25]])])
    assert [row[0] for row in _read_csv(tmp_path / "logs" / "test_predictions.csv")[1:]] == ["second.mp4"]
    assert [row[0] for row in _read_csv(tmp_path / "logs" / "predictions.csv")[1:]] == ["second.mp4"]


def test_merge_predictions_takes_every_rank_file_once_and_refuses_a_video_in_two(tmp_path):
    from video_cnn_rnn.reports import merge_predictions

    header = "path,label_1,prob_1\n"
    parts = [tmp_path / "predictions.rank0.csv", tmp_path / "predictions.rank1.csv"]
    parts[0].write_text(header + "b.mp4,x,0.9\nd.mp4,y,0.8\n")
    parts[1].write_text(header + "a.mp4,y,0.7\n")
    path = merge_predictions(parts)
    assert _read_csv(path) == [
        ["path", "label_1", "prob_1"],
        ["a.mp4", "y", "0.7"],
        ["b.mp4", "x", "0.9"],
        ["d.mp4", "y", "0.8"],
    ]
    assert not any(part.exists() for part in parts)
    parts[0].write_text(header + "a.mp4,x,0.9\n")
    parts[1].write_text(header + "a.mp4,y,0.7\n")
    with pytest.raises(ValueError, match="a.mp4: predicted by two ranks"):
        merge_predictions(parts)
    parts[1].unlink()
    with pytest.raises(FileNotFoundError, match="predictions.rank1.csv"):
        merge_predictions(parts)
