"""What a command did, said at its end: the summary block the command line prints after fit, validate, test,
predict and cv, on its own lines once the progress bars have closed.

Each block is a list of lines built by small functions, one per section, so a new fact (e.g. how many videos a crop
fell back on) is one more function called from ``fit_summary_lines``. Library code (``RunReports``, the model) prints
none of this: a user who calls ``Trainer.fit`` gets Lightning's own output only.
"""

import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from video_cnn_rnn.data.balance import describe_balance
from video_cnn_rnn.reports import RunReports

PROG = "video-cnn-rnn"
MAX_CLASS_ROWS = 20  # a table row per class up to this many; beyond, the largest and a count of the rest


# ---------------------------------------------------------------------------------------------------- sections


def split_counts(data: Any) -> dict[str, Counter]:
    """Clips per class name of every split the data module set up (videos, or a feature cache's rows)."""
    names = data.class_names or []
    counts: dict[str, Counter] = {}
    for split in ("train", "val", "test"):
        dataset = data.datasets.get(split)
        labels = [item[1] for item in getattr(dataset, "items", None) or getattr(dataset, "rows", None) or []]
        if labels:
            counts[split] = Counter(names[label] if isinstance(label, int) else str(label) for label in labels)
    return counts


def class_lines(counts: dict[str, Counter], class_names: list[str]) -> list[str]:
    """``classes (N): a, b, c`` and a table of clips per class per split."""
    lines = [f"classes ({len(class_names)}): {', '.join(class_names)}"]
    if not counts:
        return lines
    splits = list(counts)
    width = max(len("clips per class"), *(len(name) + 2 for name in class_names[:MAX_CLASS_ROWS]))
    lines.append(f"{'clips per class':<{width}}" + "".join(f"{split:>8}" for split in splits))
    shown = class_names[:MAX_CLASS_ROWS]
    for name in shown:
        lines.append(f"{'  ' + name:<{width}}" + "".join(f"{counts[split][name]:>8}" for split in splits))
    if len(class_names) > len(shown):
        lines.append(f"  ... {len(class_names) - len(shown)} more classes")
    lines.append(f"{'  total':<{width}}" + "".join(f"{sum(counts[split].values()):>8}" for split in splits))
    return lines


def split_rule_line(data: Any) -> str:
    """How the validation videos were chosen."""
    hp = data.hparams
    if hp.get("val"):
        return f"validation: data.val ({hp.val})"
    if hp.get("val_fraction", 0) > 0 and "val" in data.datasets:
        return (
            f"validation: {100 * hp.val_fraction:g}% of data.train held out, stratified by class "
            f"(data.val_fraction {hp.val_fraction}, data.seed {hp.seed})"
        )
    return "validation: none (data.val_fraction 0, or no class had a second video to hold out)"


def epochs_line(trainer: Any) -> str:
    ran, most = trainer.current_epoch, trainer.max_epochs
    stopped = "" if most is None or ran >= most else " (stopped early)"
    return f"epochs: {ran} of max_epochs {most}{stopped}, {trainer.global_step} steps"


def best_checkpoint(trainer: Any) -> str | None:
    callback = getattr(trainer, "checkpoint_callback", None)
    if callback is None:
        return None
    return callback.best_model_path or callback.last_model_path or None


def checkpoint_lines(trainer: Any) -> list[str]:
    callback = getattr(trainer, "checkpoint_callback", None)
    if callback is None or not best_checkpoint(trainer):
        return ["checkpoint: none saved (checkpointing is off)"]
    lines = []
    if callback.monitor and callback.best_model_score is not None:
        lines.append(
            f"best checkpoint: {callback.best_model_path} ({callback.monitor} {callback.best_model_score:.4f})"
        )
    elif callback.best_model_path:
        lines.append(f"checkpoint: {callback.best_model_path} (the last epoch: checkpoint.monitor is null)")
    if callback.last_model_path and callback.last_model_path != callback.best_model_path:
        lines.append(f"last checkpoint: {callback.last_model_path} (resume with --ckpt_path last)")
    return lines


def folder_line(label: str, folder: str | Path | None) -> list[str]:
    """``label: folder (its files)``, or nothing for a folder that was not written."""
    if folder is None or not Path(folder).is_dir():
        return []
    files = sorted(path.name for path in Path(folder).iterdir() if path.is_file())
    return [f"{label}: {folder}" + (f" ({', '.join(files)})" if files else "")]


def balance_lines(data: Any) -> list[str]:
    """The training split's counts and what ``data.balance`` made of them (a sampler, loss weights, or nothing)."""
    if "train" not in getattr(data, "datasets", {}) or not hasattr(data, "class_counts"):
        return []
    try:
        counts = data.class_counts("train")
    except TypeError:  # shards (data.streaming): the labels are inside the chunks, not counted up front
        return []
    return [describe_balance(data.hparams.get("balance") or "none", counts)]


def crop_lines(data: Any, reports: str | Path | None) -> list[str]:
    """With ``crop: motion``: how many videos the crop did not zoom in on, from the reports' list of them."""
    if getattr(data, "crop", None) != "motion":  # VideoDataModule.crop, its clip spec's
        return []
    listed = Path(reports) / "crop_fallback_videos.txt" if reports else None
    count = len(listed.read_text().splitlines()) if listed is not None and listed.is_file() else 0
    where = f" (list: {listed})" if count else ""
    return [f"motion crop: {count} video(s) not zoomed in (see motion.py: no motion, a moving background, ...){where}"]


def run_folder(trainer: Any) -> str | None:
    """``trainer.log_dir`` without its collective call: the summary prints on global rank 0 alone, once DDP's other
    ranks have finished, so a broadcast there would wait for peers that are gone."""
    logger = trainer.loggers[0] if getattr(trainer, "loggers", None) else None
    folder = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
    return folder or getattr(trainer, "default_root_dir", None)


def config_args(argv: list[str]) -> list[str]:
    """The ``--config`` arguments of ``argv``, for the next command to reuse."""
    found = []
    for index, arg in enumerate(argv):
        if arg in ("-c", "--config") and index + 1 < len(argv):
            found += ["--config", argv[index + 1]]
        elif arg.startswith("--config="):
            found.append(arg)
    return found


def command(subcommand: str, argv: list[str], *args: str) -> str:
    return shlex.join([PROG, subcommand, *config_args(argv), *args])


# ---------------------------------------------------------------------------------------------------- blocks


def fit_summary_lines(trainer: Any, data: Any, argv: list[str]) -> list[str]:
    """What fit did: classes and clips per split, the split rule, epochs, checkpoints, the run folder, what next."""
    lines = [f"fit done. {epochs_line(trainer)}"]
    lines += class_lines(split_counts(data), data.class_names or [])
    lines.append(split_rule_line(data))
    lines += balance_lines(data)
    lines += checkpoint_lines(trainer)
    lines += crop_lines(data, run_folder(trainer))
    lines += folder_line("run folder", run_folder(trainer))
    checkpoint = best_checkpoint(trainer)
    if checkpoint:
        test = data.hparams.get("test") or "path/to/test_videos"
        lines.append("next: " + command("test", argv, "--ckpt_path", checkpoint, "--data.test", str(test)))
    return lines


def test_summary_lines(trainer: Any, model: Any, data: Any, reports: Path, argv: list[str]) -> list[str]:
    metrics = (getattr(model, "test_report", None) or {}).get("metrics", {})
    counts = split_counts(data).get("test", Counter())
    lines = [
        f"test done: accuracy {100 * metrics.get('test_acc', float('nan')):.2f}%, "
        f"macro-F1 {100 * metrics.get('test_f1', float('nan')):.2f}% on {sum(counts.values())} videos"
    ]
    lines += crop_lines(data, reports)
    lines += folder_line("reports", reports)
    if Path(run_folder(trainer) or reports) != reports:
        lines += folder_line("logs", run_folder(trainer))
    checkpoint = trainer.ckpt_path
    if checkpoint:
        lines.append("next: " + command("predict", argv, "--ckpt_path", checkpoint, "--data.predict", "path/to/videos"))
    return lines


def predict_summary_lines(reports: Path) -> list[str]:
    predictions = reports / "predictions.csv"
    if predictions.is_file():
        rows = max(0, len(predictions.read_text().splitlines()) - 1)
        return [f"predict done: {rows} videos", *folder_line("predictions", reports)]
    return ["predict done", *folder_line("output", reports)]


def validate_summary_lines(trainer: Any) -> list[str]:
    values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
    shown = ", ".join(f"{key} {value:.4f}" for key, value in sorted(values.items()))
    return [f"validate done: {shown or 'no metrics'}", *folder_line("logs", run_folder(trainer))]


def cv_summary_lines(output: Path) -> list[str]:
    return [
        f"cv done: the table above is in {output / 'results.md'} (every fold's numbers: {output / 'results.json'})",
        f"runs: {output}/<recipe>/fold_<k>/ (checkpoints/, test/ reports); folds: {output / 'folds'}",
    ]


def print_block(lines: list[str]) -> None:
    """The block on stdout after a blank line, so it never continues a progress bar's last line; logs first."""
    sys.stderr.flush()
    print("\n" + "\n".join(lines), flush=True)


def print_summary(cli: Any, argv: list[str]) -> None:
    """The summary of a finished LightningCLI subcommand, printed by the global rank 0."""
    trainer = cli.trainer
    if not trainer.is_global_zero or not trainer.state.finished:
        return  # e.g. predict --timeline.window_s, which runs no Trainer loop and says what it wrote itself
    reports = next((callback for callback in trainer.callbacks if isinstance(callback, RunReports)), None)
    folder = Path(getattr(reports, "_folder", None) or run_folder(trainer) or trainer.default_root_dir)
    if cli.subcommand == "fit":
        lines = fit_summary_lines(trainer, cli.datamodule, argv)
    elif cli.subcommand == "test":
        lines = test_summary_lines(trainer, cli.model, cli.datamodule, folder, argv)
    elif cli.subcommand == "predict":
        lines = predict_summary_lines(folder)
    elif cli.subcommand == "validate":
        lines = validate_summary_lines(trainer)
    else:
        return
    print_block(lines)
