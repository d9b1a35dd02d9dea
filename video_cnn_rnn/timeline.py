"""Long videos as a timeline: ``predict`` with ``--timeline.window_s`` writes, into the run's folder,

- ``timeline.csv``: one row per window: path, start_s, end_s, the top-k labels and probabilities, a note;
- ``segments.csv``: consecutive windows of a video with the same top label joined: path, start_s, end_s, label,
  the label's mean probability over those windows;
- ``timeline.png`` (the ``plots`` extra): each class's probability over time per video, the top label as a band.

The rows come from ``video_cnn_rnn.models.windowed.timeline_rows``, the loop ``VideoClassifier.predict_timeline``
runs too (one streaming decode per file); this module writes them.
"""

from __future__ import annotations

import contextlib
import csv
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from video_cnn_rnn.models.windowed import timeline_rows


def _top_label(row: dict[str, Any]) -> int:
    probs = row["probs"]
    return max(range(len(probs)), key=probs.__getitem__)


def merge_segments(rows: Sequence[dict[str, Any]], class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Join consecutive windows of one video whose top label is the same into segments.

    Overlapping windows (hop < window) share time, so two neighbouring segments meet halfway between the centres
    of the last window of one and the first window of the next; a video's first segment starts at its first
    window's start and its last ends at its last window's end. -> ``{"path", "start_s", "end_s", "label",
    "mean_prob", "windows"}`` in order.
    """
    runs: list[tuple[str, int, list[dict[str, Any]]]] = []  # (path, label, windows)
    for row in rows:
        label = _top_label(row)
        if runs and runs[-1][0] == row["path"] and runs[-1][1] == label:
            runs[-1][2].append(row)
        else:
            runs.append((row["path"], label, [row]))
    segments = []
    for i, (path, label, windows) in enumerate(runs):
        start, end = windows[0]["start_s"], windows[-1]["end_s"]
        if i > 0 and runs[i - 1][0] == path:
            before = runs[i - 1][2][-1]
            start = max(start, (before["start_s"] + before["end_s"] + windows[0]["start_s"] + windows[0]["end_s"]) / 4)
        if i + 1 < len(runs) and runs[i + 1][0] == path:
            after = runs[i + 1][2][0]
            end = min(end, (windows[-1]["start_s"] + windows[-1]["end_s"] + after["start_s"] + after["end_s"]) / 4)
        segments.append(
            {
                "path": path,
                "start_s": round(start, 6),
                "end_s": round(end, 6),
                "label": class_names[label],
                "mean_prob": sum(w["probs"][label] for w in windows) / len(windows),
                "windows": len(windows),
            }
        )
    return segments


def write_timeline(
    rows: Sequence[dict[str, Any]], class_names: Sequence[str], folder: str | Path, top_k: int = 3
) -> dict[str, Path]:
    """Write ``timeline.csv``, ``segments.csv`` and ``timeline.png`` into ``folder``; -> the paths written.

    Without matplotlib the PNG is left out with a warning naming the extra to install.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    k = min(top_k, len(class_names))
    paths = {"timeline": folder / "timeline.csv", "segments": folder / "segments.csv"}
    with paths["timeline"].open("w", newline="") as file:
        writer = csv.writer(file)
        ranks = [f"{field}_{i}" for i in range(1, k + 1) for field in ("label", "prob")]
        writer.writerow(["path", "start_s", "end_s", *ranks, "note"])
        for row in rows:
            ranked = sorted(range(len(class_names)), key=lambda c: -row["probs"][c])[:k]
            cells = [value for c in ranked for value in (class_names[c], f"{row['probs'][c]:.6f}")]
            writer.writerow([row["path"], f"{row['start_s']:.3f}", f"{row['end_s']:.3f}", *cells, row["note"]])
    with paths["segments"].open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "start_s", "end_s", "label", "mean_prob", "windows"])
        for segment in merge_segments(rows, class_names):
            writer.writerow(
                [segment["path"], f"{segment['start_s']:.3f}", f"{segment['end_s']:.3f}", segment["label"],
                 f"{segment['mean_prob']:.6f}", segment["windows"]]
            )  # fmt: skip
    try:
        paths["plot"] = plot_timeline(rows, class_names, folder / "timeline.png")
    except ImportError as error:
        warnings.warn(f"{error}; the timeline is written without timeline.png", stacklevel=2)
    return paths


def plot_timeline(rows: Sequence[dict[str, Any]], class_names: Sequence[str], path: Path) -> Path:
    """One panel per video: every class's probability at the window centres, and the top label as a band."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            f"timeline.png needs matplotlib ({error}); install it with: pip install 'video_cnn_rnn[plots]'"
        ) from error

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    videos = list(dict.fromkeys(row["path"] for row in rows))
    colours = [plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")(i % 20) for i in range(len(class_names))]
    figure, panels = plt.subplots(len(videos) or 1, 1, figsize=(10, 2.6 * max(len(videos), 1)), squeeze=False)
    for axes, video in zip(panels[:, 0], videos, strict=False):
        video_rows = [row for row in rows if row["path"] == video]
        centres = [(row["start_s"] + row["end_s"]) / 2 for row in video_rows]
        for c, name in enumerate(class_names):
            axes.plot(centres, [row["probs"][c] for row in video_rows], color=colours[c], label=name, lw=1.2)
        for segment in merge_segments(video_rows, class_names):
            colour = colours[list(class_names).index(segment["label"])]
            axes.axvspan(segment["start_s"], segment["end_s"], ymin=0.0, ymax=0.06, color=colour, lw=0)
        axes.set_ylim(-0.08, 1.02)
        axes.set_ylabel("probability")
        axes.set_title(Path(video).name, fontsize=9)
    panels[-1, 0].set_xlabel("time (s); band: top label")
    # One legend above the panels at body-text size (inside the first panel it was 7 pt and hid the curves).
    handles, labels = panels[0, 0].get_legend_handles_labels()
    columns = max(min(len(class_names), 6), 1)
    legend_rows = -(-len(class_names) // columns)
    figure.legend(handles, labels, loc="upper center", ncol=columns, fontsize=10, frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 1 - (0.3 * legend_rows + 0.05) / figure.get_figheight()))
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def run_timeline(
    model: Any,
    videos: Sequence[str],
    folder: str | Path,
    window_s: float,
    hop_s: float,
    batch_size: int = 16,
    top_k: int = 3,
    on_error: str = "raise",
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, Path]:
    """The CLI's timeline mode: every video's windows through ``model`` (a ``VideoClassifier``), then the files.

    A video that fails mid-way keeps the windows read before the failure; then ``on_error="raise"`` writes the
    files and re-raises; ``skip`` / ``warn`` warn, list the video with the reason in ``skipped_videos.txt`` /
    ``damaged_videos.txt`` and go on.
    ``context`` wraps the forward passes (the Trainer's precision, e.g. bf16 autocast). The model is given back in
    the mode it was in.
    """
    rows: list[dict[str, Any]] = []
    failed: list[tuple[str, str]] = []
    try:
        for video in videos:
            video_rows, error = timeline_rows(model, video, window_s, hop_s, batch_size, top_k, context)
            rows += video_rows
            if error is not None:
                if on_error == "raise":
                    raise error
                warnings.warn(f"timeline of {video} cut short: {error}", stacklevel=2)
                failed.append((video, str(error)))
    finally:
        paths = write_timeline(rows, model.class_names, folder, top_k)
        if failed:
            # Its windows so far are kept either way; the report file says how the policy calls the video.
            name = "damaged" if on_error == "warn" else "skipped"
            paths[name] = Path(folder) / f"{name}_videos.txt"
            paths[name].write_text("".join(f"{video}\t{reason}\n" for video, reason in failed))
    print(f"timeline of {len(videos)} video(s), {len(rows)} windows: {', '.join(str(p) for p in paths.values())}")
    return paths
