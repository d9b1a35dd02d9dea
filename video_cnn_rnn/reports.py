"""Files a run leaves behind: test reports, prediction CSVs, skipped and damaged video lists and prediction GIFs.

One callback, ``RunReports``, owns them all so every subcommand writes into the run's log folder the same
way, and so DDP ranks coordinate in one place (each rank writes its share, rank 0 merges).
"""

import csv
import json
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info


def write_test_report(report: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Write ``test_metrics.json``, ``test_per_class.csv`` and ``confusion_matrix.png`` into ``folder``.

    Without matplotlib (the ``plots`` extra) the PNG is left out with a warning; the returned paths are those written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": folder / "test_metrics.json",
        "per_class": folder / "test_per_class.csv",
        "confusion_matrix": folder / "confusion_matrix.png",
    }
    paths["metrics"].write_text(json.dumps(report["metrics"], indent=2, sort_keys=True) + "\n")
    with paths["per_class"].open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["class", "precision", "recall", "f1", "support"])
        writer.writeheader()
        writer.writerows(report["per_class"])
    try:
        plot_confusion_matrix(report["confusion_matrix"], report["class_names"], paths["confusion_matrix"])
    except ImportError as error:  # matplotlib is an extra: the numbers are written without the picture
        warnings.warn(f"{error}; the test report is written without confusion_matrix.png", stacklevel=2)
        del paths["confusion_matrix"]
    return paths


def merge_predictions(parts: list[Path]) -> Path:
    """Merge the ranks' ``predictions.rank<R>.csv`` into ``predictions.csv`` beside them, sorted by path, and
    remove them. Every video must come from exactly one rank: a missing file or a video in two is an error."""
    missing = [str(part) for part in parts if not part.is_file()]
    if missing:
        raise FileNotFoundError(f"prediction files of other ranks not found: {missing} (share the output folder)")
    header, rows, seen = None, [], {}
    for part in parts:
        with part.open(newline="") as file:
            lines = list(csv.reader(file))
        header = max(header or lines[0], lines[0], key=len)
        for row in lines[1:]:
            if row[0] in seen:
                raise ValueError(f"{row[0]}: predicted by two ranks ({seen[row[0]].name}, {part.name})")
            seen[row[0]] = part
            rows.append(row)
    path = parts[0].parent / "predictions.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(sorted(rows, key=lambda row: row[0]))
    for part in parts:
        part.unlink()
    return path


def write_test_predictions(rows: list[tuple[str, int, list[float]]], class_names: list[str], path: Path) -> Path:
    """One row per test video: path, true label, predicted label and every class's probability."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "label", "predicted", *(f"prob_{name}" for name in class_names)])
        for video, label, probs in sorted(rows):
            predicted = class_names[max(range(len(probs)), key=probs.__getitem__)]
            writer.writerow([video, class_names[label], predicted, *(f"{p:.6f}" for p in probs)])
    return path


def plot_confusion_matrix(matrix: list[list[int]], class_names: list[str], path: Path) -> None:
    """``confusion_matrix.png``: each cell the share of its true class (row) in percent and its count of videos,
    coloured by that share (so a rare class reads like a common one); the accuracy in the title."""
    figure = confusion_matrix_figure(matrix, class_names)
    figure.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(figure)


def confusion_matrix_figure(matrix: list[list[int]], class_names: list[str]) -> Any:
    """The matplotlib figure of ``plot_confusion_matrix`` (needs the ``plots`` extra)."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            f"confusion_matrix.png needs matplotlib ({error}); install it with: pip install 'video_cnn_rnn[plots]'"
        ) from error

    matplotlib.use("Agg")  # no display on servers and in DataLoader-free reporting
    import matplotlib.pyplot as plt

    totals = [sum(row) for row in matrix]
    shares = [[count / total if total else 0.0 for count in row] for row, total in zip(matrix, totals, strict=True)]
    correct, videos = sum(matrix[i][i] for i in range(len(matrix))), sum(totals)
    size = max(4.0, 0.6 * len(class_names) + 2.0)
    figure, axes = plt.subplots(figsize=(size, size))
    cmap = plt.get_cmap("Blues")
    image = axes.imshow(shares, cmap=cmap, vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, format=lambda value, _: f"{value:.0%}")
    axes.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axes.set_yticks(range(len(class_names)), [f"{name} ({n})" for name, n in zip(class_names, totals, strict=True)])
    axes.set_xlabel("predicted")
    axes.set_ylabel("true (videos)")
    fontsize = 9 if len(class_names) <= 8 else 7
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            red, green, blue, _ = cmap(shares[i][j])
            # Dark text on pale cells, white on dark ones: by the cell's luminance, not by its count. Empty cells
            # in grey, so the eye goes to the ones that hold videos.
            colour = "#1a1a1a" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.55 else "white"
            colour = colour if count else "#8c8c8c"
            text = f"{shares[i][j]:.0%}\n{count}" if totals[i] else "–"
            axes.text(j, i, text, ha="center", va="center", color=colour, fontsize=fontsize, linespacing=1.1)
    accuracy = f"{correct / videos:.1%} ({correct}/{videos})" if videos else "n/a (no videos)"
    axes.set_title(f"test accuracy {accuracy}\ncell: % of the true class, count", fontsize=10)
    figure.tight_layout()
    return figure


def write_gif(frames: torch.Tensor, caption: str, path: Path, fps: int = 10) -> None:
    """The Keras example's ``to_gif``: uint8 frames [T, C, H, W] as an animated GIF, with the prediction written on."""
    from PIL import Image, ImageDraw

    images = []
    for frame in frames:
        image = Image.fromarray(frame.permute(1, 2, 0).cpu().numpy())  # [C, H, W] -> [H, W, C]
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, 0, image.width, 12), fill=(0, 0, 0))
        draw.text((2, 0), caption, fill=(255, 255, 255))
        images.append(image)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)


def top_k(probs: torch.Tensor, class_names: list[str], k: int) -> list[tuple[str, float]]:
    values, indices = probs.topk(min(k, probs.numel()))
    return [(class_names[i], float(v)) for v, i in zip(values.tolist(), indices.tolist(), strict=True)]


class RunReports(L.Callback):
    """Writes the run's report files into the trainer's log folder (or ``output_dir``).

    Args:
        top_k: labels per video in printed and written predictions.
        output_dir: folder for the files; default: the trainer's log folder.
        print_predictions: print each video's top-k like the Keras example's ``sequence_prediction``.
        gif: also write an animated GIF per predicted video: its sampled frames with the predicted label.
    """

    def __init__(
        self, top_k: int = 5, output_dir: str | None = None, print_predictions: bool = True, gif: bool = False
    ) -> None:
        self.top_k, self.output_dir = top_k, output_dir
        self.print_predictions, self.gif = print_predictions, gif
        self._rows: list[list[Any]] = []
        # path -> reason, for the videos the batches report (on_error "skip" / "warn").
        # And videos the motion crop did not zoom in on (crop="motion": no motion, a moving background, ...).
        self._lists: dict[str, dict[str, str]] = {"skipped": {}, "damaged": {}, "crop_fallback": {}}
        self._held: list[tuple[str, bool]] = []  # (text, as a log line) said at teardown, see _say_after_the_bars

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Resolved once here, where every rank runs: under DDP trainer.log_dir is a collective call, so asking
        # for it later on rank 0 alone would wait forever for the other ranks.
        self._folder = Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)

    # Skipped videos (on_error "skip" / "warn") and damaged ones kept with their clean frames ("warn"): collected
    # from every batch of every stage.
    def _collect_skipped(self, batch: Any) -> None:
        if isinstance(batch, dict):
            for key, videos in self._lists.items():
                videos.update(batch.get(key, []))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._collect_skipped(batch)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect_skipped(batch)

    def on_test_start(self, trainer, pl_module) -> None:
        self._test_rows: list[tuple[str, int, list[float]]] = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect_skipped(batch)
        if isinstance(outputs, dict) and "probs" in outputs:
            for path, label, probs in zip(outputs["paths"], outputs["labels"], outputs["probs"], strict=True):
                self._test_rows.append((path, int(label), probs.tolist()))

    def _write_skipped(self, trainer: L.Trainer) -> None:
        """``skipped_videos.txt``, ``damaged_videos.txt`` and ``crop_fallback_videos.txt``: ``path<TAB>reason`` per
        video, every rank's merged."""
        told = {
            "skipped": "could not be decoded and were skipped",
            "damaged": "have damaged streams; their clean frames were used",
            "crop_fallback": "were not zoomed in by the motion crop (the reasons are listed)",
        }
        for key, videos in self._lists.items():
            rows = sorted(dict(self._gather(trainer, sorted(videos.items()))).items())
            if trainer.is_global_zero and rows:
                path = self._folder / f"{key}_videos.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(f"{video}\t{reason}\n" for video, reason in rows))
                self._say_after_the_bars(f"{len(rows)} video(s) {told[key]}; list: {path}")

    @staticmethod
    def _gather(trainer: L.Trainer, values: list[Any]) -> list[Any]:
        """Concatenate a picklable list from every rank (identity without DDP)."""
        if trainer.world_size <= 1 or not torch.distributed.is_initialized():
            return values
        gathered: list[list[Any]] = [[] for _ in range(trainer.world_size)]
        torch.distributed.all_gather_object(gathered, values)
        return [value for part in gathered for value in part]

    def on_fit_end(self, trainer, pl_module) -> None:
        self._write_skipped(trainer)

    def on_test_end(self, trainer, pl_module) -> None:
        self._write_skipped(trainer)
        rows = self._gather(trainer, self._test_rows)
        report = getattr(pl_module, "test_report", None)
        if not trainer.is_global_zero or not report:
            return
        paths = write_test_report(report, self._folder)
        paths["predictions"] = write_test_predictions(
            rows, pl_module.class_names, self._folder / "test_predictions.csv"
        )
        self._say_after_the_bars(f"test reports: {', '.join(str(p) for p in paths.values())}")

    # Predictions: each rank keeps its rows; rank 0 merges them into one file at the end.
    def on_predict_start(self, trainer, pl_module) -> None:
        self._rows = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect_skipped(batch)
        names = pl_module.class_names
        for row, (path, probs) in enumerate(zip(outputs["paths"], outputs["probs"], strict=True)):
            ranked = top_k(probs, names, self.top_k)
            self._rows.append([path] + [value for pair in ranked for value in pair])
            if self.gif:
                frames = batch["frames"][row]
                if frames.dim() == 5:  # [K, T, C, H, W]: show the first clip
                    frames = frames[0]
                frames = frames[: int(batch["lengths"][row])]
                gif_dir = self._folder / "gifs"
                gif_dir.mkdir(parents=True, exist_ok=True)
                caption = f"{ranked[0][0]} {100 * ranked[0][1]:.1f}%"
                write_gif(frames, caption, gif_dir / f"{Path(path).stem}.gif")

    def on_predict_end(self, trainer, pl_module) -> None:
        """Each rank writes its rows to ``predictions.rank<R>.csv``; rank 0 merges them into ``predictions.csv``
        (so no rank holds every row in memory at once before writing; under DDP on several nodes the output
        folder must be shared)."""
        self._write_skipped(trainer)
        folder = self._folder
        folder.mkdir(parents=True, exist_ok=True)
        k = max(((len(row) - 1) // 2 for row in self._rows), default=self.top_k)
        header = ["path"] + [f"{field}_{i}" for i in range(1, k + 1) for field in ("label", "prob")]
        part = folder / f"predictions.rank{trainer.global_rank}.csv"
        with part.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(header)
            writer.writerows(
                [[row[0]] + [f"{v:.6f}" if isinstance(v, float) else v for v in row[1:]] for row in self._rows]
            )
        trainer.strategy.barrier("predictions written")
        if not trainer.is_global_zero:
            return
        path = merge_predictions([folder / f"predictions.rank{rank}.csv" for rank in range(trainer.world_size)])
        if self.print_predictions:
            with path.open(newline="") as file:
                for row in list(csv.reader(file))[1:]:
                    pairs = zip(row[1::2], row[2::2], strict=True)
                    lines = [f"  {label}: {100 * float(prob):5.2f}%" for label, prob in pairs]
                    self._say_after_the_bars("\n".join([row[0], *lines]), log=False)
        self._say_after_the_bars(f"predictions written to {path}")

    def _say_after_the_bars(self, text: str, log: bool = True) -> None:
        """Hold ``text`` (a log line, or printed) until ``teardown``: said in an ``on_*_end`` hook, it would continue
        the progress bar's last line, which the bar only ends in its own ``on_*_end``, after this callback's."""
        self._held.append((text, log))

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        held, self._held = self._held, []
        for text, log in held:
            if log:
                rank_zero_info(text)
            else:
                print(text)
