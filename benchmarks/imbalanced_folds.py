"""A fold folder made imbalanced: some classes cut to a share of their training clips, the test files unchanged.

    python benchmarks/imbalanced_folds.py ../shared/data/ut_interaction/folds runs/ut_imbalanced \
        --cut Punching Pushing --keep 3

For ``data.balance`` on real footage (docs/models.md, "Class balance"): every ``train_K.csv`` keeps, of each cut class,
the first ``len // keep`` clips in file order (deterministic); ``test_K.csv`` is copied. Paths are written absolute,
so the new folder works from anywhere.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def read_rows(path: Path) -> list[tuple[str, str]]:
    """``video_name,tag`` rows with each path resolved against the CSV's folder."""
    with path.open(newline="") as file:
        rows = list(csv.reader(file))[1:]
    return [(str((path.parent / video).resolve()), tag) for video, tag in rows]


def cut(rows: list[tuple[str, str]], classes: set[str], keep: int) -> list[tuple[str, str]]:
    """Each class in ``classes`` down to the first ``len // keep`` of its rows; the others whole."""
    kept = []
    for tag in sorted({tag for _, tag in rows}):
        of_class = [row for row in rows if row[1] == tag]
        kept += of_class[: len(of_class) // keep] if tag in classes else of_class
    return kept


def write_rows(rows: list[tuple[str, str]], path: Path) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["video_name", "tag"])
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folds", type=Path, help="folder of train_K.csv / test_K.csv")
    parser.add_argument("output", type=Path, help="the folder to write")
    parser.add_argument("--cut", nargs="+", required=True, help="classes to cut in every training file")
    parser.add_argument("--keep", type=int, default=3, help="keep 1/KEEP of each cut class's training clips")
    options = parser.parse_args()
    trains = sorted(options.folds.glob("train_*.csv"))
    if not trains:
        raise SystemExit(f"{options.folds}: no train_K.csv files")
    options.output.mkdir(parents=True, exist_ok=True)
    for train in trains:
        rows = read_rows(train)
        missing = set(options.cut) - {tag for _, tag in rows}
        if missing:
            raise SystemExit(f"{train}: no class {', '.join(sorted(missing))} to cut")
        write_rows(cut(rows, set(options.cut), options.keep), options.output / train.name)
        test = train.with_name(train.name.replace("train_", "test_"))
        write_rows(read_rows(test), options.output / test.name)
    print(f"{len(trains)} folds written to {options.output}")


if __name__ == "__main__":
    main()
