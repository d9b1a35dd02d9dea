"""``video-cnn-rnn cv``: k-fold cross-validation through the real ``fit`` and ``test`` commands.

Every fold runs ``fit`` on its training videos, then ``test --ckpt_path`` on its test videos, exactly as a user
would; the accuracy and macro-F1 come from the test's own ``test_metrics.json``. Each recipe is reported next
to a linear probe (frozen backbone, mean over frames, one linear layer) run on the same folds in the same
command, because a number on a few hundred real clips means little without a baseline measured beside it.

video-cnn-rnn cv --folds ../shared/data/ut_interaction/folds --config configs/small_real.yaml
video-cnn-rnn cv --data train.csv val.csv --k 5 --group_pattern 'set\\d+_\\d+_(\\d+)_' --config configs/small_real.yaml
video-cnn-rnn cv ... --recipe demo "--config configs/demo.yaml" --recipe transformer "--model.head transformer"

Folds come from ``train_K.csv`` / ``test_K.csv`` files in a folder, or are made from one annotation source:
stratified by class and group-aware (clips of one group, e.g. one long recording, never sit on both sides).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import shlex
import statistics
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from video_cnn_rnn.data.annotations import (
    Item,
    ManifestError,
    check_manifest,
    class_names_from,
    group_of,
    read_source,
)
from video_cnn_rnn.models.heads import HEAD_SETTINGS

# Overrides that turn any recipe into its linear probe: the same backbone and frames (num_frames, img_size,
# sampling), frozen and average-pooled per frame; one clip per video, no augmentation or test-time averaging; dropout
# 0.5 on the frame features, their masked mean and one linear layer, trained with AdamW on every training video for
# 60 epochs.
LINEAR_PROBE: tuple[str, ...] = (
    "--model.freeze", "frozen",
    "--model.spatial_pool", "avg",
    "--model.spatial_maps", "null",
    "--model.spatial_dim", "null",
    "--model.temporal_shift", "0",
    "--model.head", "mean",
    "--model.fc_hidden", "null",
    "--model.feature_dropout", "0.5",
    "--model.dropout", "0.0",
    "--model.label_smoothing", "0.0",
    "--model.optimizer", "torch.optim.AdamW",
    "--model.optimizer.lr", "0.001",
    "--model.optimizer.weight_decay", "0.01",
    "--model.lr_scheduler", "null",
    "--trainer.max_epochs", "60",
    "--trainer.callbacks", "[]",
    "--data.val_fraction", "0",
    "--data.cache_clips", "1",
    "--data.train_clips_per_video", "1",
    "--data.augment", "false",
    "--data.eval_clips", "1",
    "--data.train_flip", "false",
    "--data.eval_flip", "false",
    "--checkpoint.monitor", "null",
    # The recipe's head settings belong to another head.
    *(option for name in sorted({n for names in HEAD_SETTINGS.values() for n in names}) for option in (f"--model.{name}", "null")),
)  # fmt: skip


@dataclass(frozen=True)
class Fold:
    """One fold's annotation files (Keras-example CSVs or any source ``data.train`` / ``data.test`` accept)."""

    train: str
    test: str


# ---------------------------------------------------------------------------------------------------- folds


def folds_from_folder(folder: str | Path) -> list[Fold]:
    """``train_K.csv`` / ``test_K.csv`` pairs in ``folder``, in K order."""
    folder = Path(folder)
    trains = {int(m[1]): p for p in folder.glob("train_*.csv") if (m := re.fullmatch(r"train_(\d+)\.csv", p.name))}
    if not trains:
        raise ManifestError(f"{folder}: no fold files found (expected train_K.csv and test_K.csv, K = 0, 1, ...)")
    missing = [f"test_{k}.csv" for k in sorted(trains) if not (folder / f"test_{k}.csv").is_file()]
    if missing:
        raise ManifestError(f"{folder}: fold files without their test file: {', '.join(missing)}")
    return [Fold(str(trains[k]), str(folder / f"test_{k}.csv")) for k in sorted(trains)]


def group_function(pattern: str | None) -> Callable[[str], str]:
    """Group of a video path: the regex's first group (or whole match) on the file name, else ``group_of``."""
    if pattern is None:
        return group_of
    regex = re.compile(pattern)

    def group(path: str) -> str:
        match = regex.search(Path(path).name)
        if match is None:
            raise ManifestError(f"{path}: file name does not match the group pattern {pattern!r}")
        return match[1] if regex.groups else match[0]

    return group


def read_groups_column(csv_path: str | Path) -> list[str] | None:
    """A CSV's ``group`` column in row order (the order ``read_csv`` keeps), or None when it has none."""
    with open(csv_path, newline="") as file:
        rows = list(csv.DictReader(file))
    if not rows or "group" not in rows[0]:
        return None
    return [(row["group"] or "").strip() for row in rows]


def stratified_group_folds(
    items: Sequence[Item], k: int, group: Callable[[str], str], seed: int = 0
) -> list[tuple[list[Item], list[Item]]]:
    """``k`` (train, test) splits: every group in exactly one test fold, class counts as even as groups allow.

    Groups may hold several classes (a long recording cut into clips of different actions). Greedy, like
    scikit-learn's StratifiedGroupKFold: the largest groups first (ties in a seeded order), each into the
    fold whose class counts it unbalances least.
    """
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    members: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        members[group(item[0])].append(item)
    if len(members) < k:
        raise ManifestError(f"{len(members)} groups cannot make {k} folds: every fold needs a group of its own")
    totals = Counter(label for _, label in items)
    names = sorted(members)
    random.Random(seed).shuffle(names)
    names.sort(key=lambda name: -len(members[name]))  # stable: equal sizes keep the seeded order
    counts = [Counter() for _ in range(k)]
    assigned: list[list[str]] = [[] for _ in range(k)]
    for name in names:
        group_counts = Counter(label for _, label in members[name])

        best = min(range(k), key=lambda fold, add=group_counts: _imbalance(counts[fold] + add, totals))
        counts[best] += group_counts
        assigned[best].append(name)
    folds = []
    for test_groups in assigned:
        chosen = set(test_groups)
        test = sorted(item for name in chosen for item in members[name])
        train = sorted(item for name in members if name not in chosen for item in members[name])
        folds.append((train, test))
    return folds


def _imbalance(counts: Counter, totals: Counter) -> tuple[float, int]:
    """Lower is better: class counts relative to each class's size (squared, so spreading wins), then size."""
    return sum(counts[label] ** 2 / totals[label] for label in totals), sum(counts.values())


def write_folds(splits: list[tuple[list[Item], list[Item]]], folder: Path) -> list[Fold]:
    """Write each split as ``train_K.csv`` / ``test_K.csv`` (absolute paths, seed format) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    folds = []
    for k, (train, test) in enumerate(splits):
        paths = []
        for name, items in (("train", train), ("test", test)):
            path = folder / f"{name}_{k}.csv"
            with path.open("w", newline="") as file:
                writer = csv.writer(file)
                writer.writerow(["video_name", "tag"])
                writer.writerows([str(Path(video).resolve()), label] for video, label in items)
            paths.append(str(path))
        folds.append(Fold(*paths))
    return folds


def check_folds(folds: Sequence[Fold], video_root: str | None = None) -> None:
    """Every problem of every fold at once, before any training: missing videos, test labels unseen in training."""
    problems = []
    for k, fold in enumerate(folds):
        try:
            train = read_source(fold.train, video_root)
            test = read_source(fold.test, video_root)
            check_manifest({"train": train, "test": test}, class_names_from(train))
        except ManifestError as error:
            problems.append(f"fold {k} ({fold.train}, {fold.test}): {error}")
    if problems:
        raise ManifestError("the folds cannot be trained:\n" + "\n".join(problems))


# ---------------------------------------------------------------------------------------------------- runs


def run_fold(
    run_cli: Callable[[list[str]], Any], cli_args: Sequence[str], fold: Fold, folder: Path
) -> dict[str, float]:
    """``fit`` on the fold's training videos, ``test`` its checkpoint on the test videos -> the test metrics.

    ``run_cli`` is ``video_cnn_rnn.cli.run_cli``, passed in because the command line sits above this module.
    """
    # run_cli is given its arguments while sys.argv holds the cv command's: intended here, not a mistake.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    args = [
        *cli_args,
        "--data.train", fold.train,
        "--data.test", fold.test,
        "--trainer.logger.init_args.save_dir", str(folder.parent),
        "--trainer.logger.init_args.name", folder.name,
        "--checkpoint.dirpath", str(folder / "checkpoints"),
        "--reports.output_dir", str(folder / "test"),
        "--reports.print_predictions", "false",
    ]  # fmt: skip
    for stale in (folder / "checkpoints").glob("*.ckpt"):
        stale.unlink()  # a fresh fit, never a resume of an earlier run's checkpoint
    started = time.perf_counter()
    fit = run_cli(["fit", *args])
    checkpoint = fit.trainer.checkpoint_callback.best_model_path or fit.trainer.checkpoint_callback.last_model_path
    run_cli(["test", *args, "--ckpt_path", checkpoint])
    metrics = json.loads((folder / "test" / "test_metrics.json").read_text())
    return {"acc": metrics["test_acc"], "f1": metrics["test_f1"], "seconds": time.perf_counter() - started}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def format_report(results: dict[str, list[dict[str, float]]], baseline: str | None) -> str:
    """A markdown table: per-fold accuracy, mean ± std accuracy and macro-F1, and the gain over the baseline."""
    folds = max(len(rows) for rows in results.values())
    header = ["recipe", *(f"fold {k}" for k in range(folds)), "accuracy", "macro-F1"]
    if baseline:
        header += ["vs linear probe", "folds won"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, rows in results.items():
        accs = [100 * row["acc"] for row in rows]
        f1s = [100 * row["f1"] for row in rows]
        acc_mean, acc_std = mean_std(accs)
        f1_mean, f1_std = mean_std(f1s)
        cells = [name, *(f"{a:.1f}" for a in accs), f"{acc_mean:.1f} ± {acc_std:.1f}", f"{f1_mean:.1f} ± {f1_std:.1f}"]
        if baseline:
            base = [100 * row["acc"] for row in results[baseline]]
            gains = [a - b for a, b in zip(accs, base, strict=True)]
            gain_mean, gain_std = mean_std(gains)
            wins = sum(gain > 0 for gain in gains)
            cells += ["—", "—"] if name == baseline else [f"{gain_mean:+.1f} ± {gain_std:.1f}", f"{wins}/{len(gains)}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(args: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="video-cnn-rnn cv",
        description="k-fold cross-validation through fit and test, beside a linear probe. Other arguments "
        "(--config, --model.*, --data.*, --trainer.*) go to every fit and test.",
        allow_abbrev=False,  # --data.* and the like belong to fit and test, not to an abbreviated --data
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--folds", help="folder of train_K.csv / test_K.csv fold files")
    source.add_argument("--data", nargs="+", help="annotation sources (CSVs, class folders) pooled and cut into folds")
    parser.add_argument("--k", type=int, default=5, help="folds made from --data")
    parser.add_argument("--group_pattern", help="regex on file names whose first group is the clip's group")
    parser.add_argument("--fold_seed", type=int, default=0, help="seed of the fold assignment (--data)")
    parser.add_argument("--video_root", help="folder that relative paths in the annotation files resolve against")
    parser.add_argument(
        "--recipe", nargs=2, action="append", metavar=("NAME", "ARGS"), default=[],
        help="a named recipe: extra arguments on top of the common ones (repeatable; default: one recipe)",
    )  # fmt: skip
    parser.add_argument("--no_baseline", action="store_true", help="skip the linear probe")
    parser.add_argument(
        "--probe_store",
        help="feature store the linear probe reads (default: OUTPUT/feature_store; a recipe's own data.feature_cache, "
        "when it sets one, is overridden): the probe is frozen, so every fold reuses one extraction per video",
    )
    parser.add_argument("--only_folds", type=int, nargs="+", help="run only these fold indices")
    parser.add_argument("--output", default="runs/cv", help="folder for the runs, the folds and results.md")
    return parser.parse_known_args(args)


def cv_main(args: Sequence[str], run_cli: Callable[[list[str]], Any]) -> dict[str, list[dict[str, float]]]:
    options, common = parse_args(args)
    output = Path(options.output)
    if options.folds:
        folds = folds_from_folder(options.folds)
    else:
        items, groups = [], {}
        for source in options.data:
            source_items = read_source(source, options.video_root)
            column = read_groups_column(source) if source.endswith(".csv") else None
            if column is not None:
                groups.update(zip((path for path, _ in source_items), column, strict=True))
            items += source_items
        pattern_group = group_function(options.group_pattern)

        def group(path: str) -> str:
            return groups[path] if path in groups else pattern_group(path)

        splits = stratified_group_folds(items, options.k, group, options.fold_seed)
        folds = write_folds(splits, output / "folds")
    check_folds(folds, options.video_root)
    if options.video_root:
        common += ["--data.video_root", options.video_root]
    recipes = {name: shlex.split(extra) for name, extra in options.recipe} or {"recipe": []}
    # The probe always trains from the store, also beside a fine-tuning recipe that decodes videos every epoch.
    probe_store = options.probe_store or str(output / "feature_store")
    runs = {} if options.no_baseline else {"linear_probe": [*LINEAR_PROBE, "--data.feature_cache", probe_store]}
    runs.update(recipes)
    chosen = options.only_folds if options.only_folds is not None else range(len(folds))
    results: dict[str, list[dict[str, float]]] = {}
    for name, extra in runs.items():
        for k in chosen:
            print(f"== cv: {name}, fold {k} of {len(folds)}", flush=True)
            # A recipe's own arguments come last, so they override the common ones.
            row = run_fold(run_cli, [*common, *extra], folds[k], output / name / f"fold_{k}")
            results.setdefault(name, []).append(row)
    report = format_report(results, None if options.no_baseline else "linear_probe")
    print("\n" + report)
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.md").write_text(report + "\n")
    (output / "results.json").write_text(json.dumps({"folds": [vars(f) for f in folds], "results": results}, indent=2))
    return results
