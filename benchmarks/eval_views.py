"""Re-test a ``sweep_real.py`` sweep's checkpoints with other evaluation views (clips x mirror), no re-training.

    python benchmarks/eval_views.py runs/sweep [runs/other_sweep ...] --recipe finetune_real --views 2 2f 4 4f

A view is ``K`` (``eval_clips: K``) or ``Kf`` (also ``eval_flip: true``). With no validation split
(``val_fraction: 0``, as the real-footage recipes ship) the evaluation views never touch training, so a checkpoint
re-tested with other views gives exactly what a run trained with them would. Each view is the same ``test
--ckpt_path`` a user runs, on a copy of the checkpoint whose recorded views are replaced (the checkpoint's settings
win over the command line, by design). Prints per view: the mean over folds per seed, mean ± std over all runs, and
the change from the first view paired by run, for every set. Only finished runs (``results.json`` written) of
recipes without validation are re-tested.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import tempfile
import warnings
from pathlib import Path

import torch

from video_cnn_rnn.cli import run_cli
from video_cnn_rnn.crossval import mean_std


def parse_view(view: str) -> tuple[int, bool]:
    match = re.fullmatch(r"(\d+)(f?)", view)
    if not match or int(match[1]) < 1:
        raise SystemExit(f"eval_views: view {view!r} is not K or Kf (K clips, f: also mirrored)")
    return int(match[1]), bool(match[2])


def test_with_view(checkpoint: Path, cli_args: list[str], view: str, scratch: Path) -> float:
    clips, flip = parse_view(view)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    data = state.get("datamodule_hyper_parameters", {})
    if data.get("val") or data.get("val_fraction", 0) > 0:
        raise SystemExit(f"eval_views: {checkpoint} was trained with a validation split, which its views shaped")
    for hparams in (state["hyper_parameters"], data):
        hparams.update(eval_clips=clips, eval_flip=flip)
    patched = scratch / "view.ckpt"
    torch.save(state, patched)
    run_cli([
        "test", *cli_args,
        "--ckpt_path", str(patched),
        "--reports.output_dir", str(scratch / view),
        "--trainer.logger", "false",
        "--trainer.default_root_dir", str(scratch),  # where LightningCLI saves the run's config.yaml
    ])  # fmt: skip
    return json.loads((scratch / view / "test_metrics.json").read_text())["test_acc"]


def retest(command_file: Path, views: list[str]) -> dict[str, float]:
    """One sweep run (``cv --only_folds K``) re-tested with each view -> accuracy per view."""
    command = json.loads(command_file.read_text())
    folds, fold = Path(command[command.index("--folds") + 1]), int(command[command.index("--only_folds") + 1])
    recipe = shlex.split(command[command.index("--recipe") + 2])
    common = command[command.index("--output") + 2 : command.index("--recipe")]
    recipe_folder = command_file.parent / command[command.index("--recipe") + 1]
    checkpoint = recipe_folder / f"fold_{fold}" / "checkpoints" / "best.ckpt"
    cli_args = [
        *common, *recipe,
        "--data.train", str(folds / f"train_{fold}.csv"),
        "--data.test", str(folds / f"test_{fold}.csv"),
        "--reports.print_predictions", "false",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        return {view: test_with_view(checkpoint, cli_args, view, Path(scratch)) for view in views}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", type=Path, nargs="+", help="sweep_real.py --output folders")
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--views", nargs="+", default=["2", "2f", "4", "4f"])
    args = parser.parse_args()
    for view in args.views:
        parse_view(view)
    # run_cli is given its arguments while sys.argv holds this script's: intended here, not a mistake.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    warnings.filterwarnings("ignore", message="The dirpath has changed")  # a test saves no checkpoint

    runs = sorted(path for sweep in args.sweeps for path in sweep.glob(f"*/{args.recipe}/seed*/fold*/command.json"))
    runs = [path for path in runs if (path.parent / "results.json").exists()]  # a killed run left no results
    if not runs:
        raise SystemExit(f"eval_views: no finished {args.recipe} runs under {', '.join(map(str, args.sweeps))}")
    # (set, seed, fold) -> view -> accuracy; a sweep's folders are SET/RECIPE/seedS/foldK
    accuracy: dict[tuple[str, str, str], dict[str, float]] = {}
    for command_file in runs:
        run = (command_file.parents[3].name, command_file.parents[1].name, command_file.parent.name)
        accuracy[run] = retest(command_file, args.views)
        print(" ".join(run), " ".join(f"{v}: {100 * a:.1f}" for v, a in accuracy[run].items()), flush=True)

    first = args.views[0]
    for name in sorted({run[0] for run in accuracy}):
        in_set = {run: acc for run, acc in accuracy.items() if run[0] == name}
        seeds = sorted({run[1] for run in in_set})
        print(f"\n**{name}**\n")
        print(f"| views | fold mean per seed ({', '.join(seeds)}) | accuracy (all runs) | vs {first} | runs up/down |")
        print("| --- | --- | --- | --- | --- |")
        for view in args.views:
            per_seed = [mean_std([acc[view] for run, acc in in_set.items() if run[1] == s])[0] for s in seeds]
            mean, spread = mean_std([acc[view] for acc in in_set.values()])
            deltas = [acc[view] - acc[first] for acc in in_set.values()]
            change, change_spread = mean_std(deltas)
            print(
                f"| {view} | {', '.join(f'{100 * m:.1f}' for m in per_seed)} "
                f"| {100 * mean:.1f} ± {100 * spread:.1f} "
                f"| {100 * change:+.1f} ± {100 * change_spread:.1f} "
                f"| {sum(d > 0 for d in deltas)}/{sum(d < 0 for d in deltas)} |"
            )


if __name__ == "__main__":
    main()
