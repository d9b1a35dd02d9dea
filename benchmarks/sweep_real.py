"""Recipes x seeds x folds through ``video-cnn-rnn cv``, many folds at once, with the linear probe beside every recipe.

    python benchmarks/sweep_real.py --set ut=../shared/data/ut_interaction/folds \
        --recipe small_real "--config configs/small_real.yaml" \
        --recipe finetune "--config configs/finetune_real.yaml" --seeds 42 0 1 --jobs 8

Every (set, recipe, seed, fold) is one ``cv --only_folds K --no_baseline`` process (the same ``fit`` then
``test --ckpt_path`` a user runs), ``--jobs`` at a time, each with its own output folder; the probe is
``crossval.LINEAR_PROBE`` on top of the first recipe's frame settings (``--probe_base``), run as a recipe of its own.
A set is a folder of ``train_K.csv`` / ``test_K.csv`` (``name=folder``) or annotation sources cut into stratified
folds once (``name=data:a.csv,b.csv``). The summary (printed, and ``summary.md`` in ``--output``) gives per recipe and
set: the mean over folds for each seed, mean ± std over all fold x seed runs, the gain over the probe paired by fold and
seed, the runs won, and the wall time per fold; and what it ran on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from video_cnn_rnn.crossval import LINEAR_PROBE, folds_from_folder, stratified_group_folds, write_folds
from video_cnn_rnn.data.annotations import read_source


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} x{torch.cuda.device_count()}, {os.cpu_count()} CPU cores"
    name = platform.processor()
    try:
        info = Path("/proc/cpuinfo").read_text()
        name = next(line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line)
        flags = [flag for flag in ("avx512_bf16", "amx_bf16") if f" {flag}" in info]
        name += f" ({', '.join(flags) or 'no native bf16'})"
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} CPU cores, no GPU"


def fold_folder(spec: str, output: Path) -> Path:
    """``folder`` as is; ``data:a.csv,b.csv`` pooled and cut into 5 stratified folds (written once)."""
    if not spec.startswith("data:"):
        return Path(spec)
    folder = output / "folds" / hashlib.sha1(spec.encode()).hexdigest()[:10]
    if not (folder / "test_0.csv").exists():
        items = [item for source in spec[5:].split(",") for item in read_source(source, None)]
        write_folds(stratified_group_folds(items, 5, lambda path: path, 0), folder)
    return folder


def finished(command: list[str], out: Path) -> bool:
    """Whether ``out`` holds the results of exactly this command (reused across sweeps into one ``--output``)."""
    done = out / "command.json"
    return (out / "results.json").exists() and done.exists() and json.loads(done.read_text()) == command[1:]


def run_job(command: list[str], log: Path) -> float:
    log.parent.mkdir(parents=True, exist_ok=True)
    (log.parent / "results.json").unlink(missing_ok=True)
    (log.parent / "command.json").write_text(json.dumps(command[1:]))
    started = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        print(f"FAILED ({code}): {log}", flush=True)
    return time.perf_counter() - started


def summarise(results: dict[tuple[str, str, str, int], dict], sets: list[str], recipes: list[str]) -> str:
    lines = [f"ran on: {hardware()}", ""]
    for set_name in sets:
        header = [
            "recipe",
            "fold mean per seed (seeds ascending)",
            "accuracy (all runs)",
            "macro-F1",
            "vs probe",
            "runs won",
            "min/fold",
        ]
        lines += [f"**{set_name}**", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        probe = {
            (seed, k): row["acc"] for (s, r, seed, k), row in results.items() if s == set_name and r == "linear_probe"
        }
        for recipe in recipes:
            rows = {(seed, k): row for (s, r, seed, k), row in results.items() if s == set_name and r == recipe}
            if not rows:
                continue
            seeds = sorted({seed for seed, _ in rows}, key=lambda s: int(s))
            per_seed = [
                statistics.fmean(100 * row["acc"] for (sd, _), row in rows.items() if sd == seed) for seed in seeds
            ]
            accs = [100 * row["acc"] for row in rows.values()]
            f1s = [100 * row["f1"] for row in rows.values()]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            cells = [recipe, ", ".join(f"{m:.1f}" for m in per_seed), f"{statistics.fmean(accs):.1f} ± {sd:.1f}"]
            cells.append(f"{statistics.fmean(f1s):.1f}")
            paired = [100 * (row["acc"] - probe[key]) for key, row in rows.items() if key in probe]
            if recipe != "linear_probe" and paired:
                gsd = statistics.stdev(paired) if len(paired) > 1 else 0.0
                cells += [f"{statistics.fmean(paired):+.1f} ± {gsd:.1f}", f"{sum(g > 0 for g in paired)}/{len(paired)}"]
            else:
                cells += ["—", "—"]
            cells.append(f"{statistics.fmean(row['seconds'] for row in rows.values()) / 60:.1f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, else ``sys.argv``); ``bench_scale.py run`` reads the recipes and seeds from it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", required=True, metavar="NAME=FOLDS", help="fold folder or data:a,b")
    parser.add_argument("--recipe", nargs=2, action="append", required=True, metavar=("NAME", "ARGS"))
    parser.add_argument("--seeds", nargs="+", default=["42", "0", "1"])
    parser.add_argument("--folds", type=int, nargs="+", help="only these fold indices (default: all)")
    parser.add_argument("--no_probe", action="store_true")
    parser.add_argument("--probe_only", action="store_true", help="the probe alone, on the first recipe's settings")
    parser.add_argument("--probe_base", help="arguments the probe starts from (default: the first recipe's)")
    parser.add_argument("--probe_store", help="the probe's feature store (default: OUTPUT/feature_store)")
    parser.add_argument("--common", default="", help="arguments for every run (e.g. trainer.precision)")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--output", default="runs/sweep")
    parser.add_argument(
        "--top", nargs=2, metavar=("SUMMARY_JSON", "N"),
        help="keep only the N recipes with the best mean accuracy in an earlier sweep's summary.json (all its sets)",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    options = parse_options(argv)

    output = Path(options.output)
    recipes = {name: shlex.split(args) for name, args in options.recipe}
    if options.top:
        earlier = json.loads(Path(options.top[0]).read_text())
        earlier_means = {
            name: statistics.fmean(earlier[s][name] for s in earlier if name in earlier[s]) for name in recipes
        }
        recipes = {
            name: recipes[name]
            for name in sorted(earlier_means, key=earlier_means.get, reverse=True)[: int(options.top[1])]
        }
        print(f"best of {options.top[0]}: {', '.join(recipes)}", flush=True)
    if not options.no_probe:
        base = shlex.split(options.probe_base) if options.probe_base is not None else next(iter(recipes.values()))
        # The probe trains from one feature store for every fold and seed, whatever the base recipe reads.
        probe = [*base, *LINEAR_PROBE, "--data.feature_cache", options.probe_store or str(output / "feature_store")]
        recipes = {"linear_probe": probe} if options.probe_only else {"linear_probe": probe, **recipes}
    sets = dict(spec.split("=", 1) for spec in options.set)
    jobs = []
    for set_name, spec in sets.items():
        folder = fold_folder(spec, output)
        count = len(folds_from_folder(folder))
        for name, args in recipes.items():
            for seed in options.seeds:
                for k in options.folds if options.folds is not None else range(count):
                    out = output / set_name / name / f"seed{seed}" / f"fold{k}"
                    command = [
                        sys.executable,
                        "-m",
                        "video_cnn_rnn",
                        "cv",
                        "--folds",
                        str(folder),
                        "--only_folds",
                        str(k),
                    ]
                    command += ["--no_baseline", "--output", str(out), *shlex.split(options.common)]
                    # The seed comes after the recipe's --config, which sets one of its own.
                    command += ["--recipe", name, shlex.join([*args, "--seed_everything", seed])]
                    jobs.append(((set_name, name, seed, k), command, out))
    print(f"{len(jobs)} runs, {options.jobs} at a time, on {hardware()}", flush=True)
    started = time.perf_counter()
    with ThreadPoolExecutor(options.jobs) as pool:
        # A run whose results exist (an earlier sweep into the same --output) is reused, not repeated.
        todo = [(command, out) for _, command, out in jobs if not finished(command, out)]
        futures = [pool.submit(run_job, command, out / "log.txt") for command, out in todo]
        for future in futures:
            future.result()
    results = {}
    for key, _, out in jobs:
        path = out / "results.json"
        if path.exists():
            results[key] = json.loads(path.read_text())["results"][key[1]][0]
    summary = summarise(results, list(sets), list(recipes))
    summary += f"\n{len(results)}/{len(jobs)} runs finished in {(time.perf_counter() - started) / 60:.1f} min"
    print("\n" + summary, flush=True)
    (output / "summary.md").write_text(summary + "\n")
    means: dict[str, dict[str, list[float]]] = {}
    for (set_name, recipe, _, _), row in results.items():
        means.setdefault(set_name, {}).setdefault(recipe, []).append(100 * row["acc"])
    summary_json = {s: {r: statistics.fmean(v) for r, v in rows.items()} for s, rows in means.items()}
    (output / "summary.json").write_text(json.dumps(summary_json, indent=2))


if __name__ == "__main__":
    main()
