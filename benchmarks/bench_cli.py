"""How long the command line takes to answer ``--help``: now, and (with ``--before``) an older source tree's.

    python benchmarks/bench_cli.py                                   # this tree
    git archive 20b7f2f | tar -x -C /tmp/before                      # an older tree, without touching this checkout
    python benchmarks/bench_cli.py --before /tmp/before --repeats 5  # side by side

Each case is a fresh ``python -m video_cnn_rnn ...`` process (what a user waits for), run alternately with the
others so load on a shared machine hits every case alike; the median wall time is reported with the machine and its
load average (the figure that matters is on an idle machine).
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "video-cnn-rnn --help": ["--help"],
    "video-cnn-rnn fit --help": ["fit", "--help"],
    "video-cnn-rnn predict --help": ["predict", "--help"],
    "video-cnn-rnn fit --help-all": ["fit", "--help-all"],  # the full parser: what fit --help was before
}


def hardware() -> str:
    name = platform.processor() or platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
        name = next(line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line)
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return f"{name}, {os.cpu_count()} CPU cores, load average {load}, Python {platform.python_version()}"


def run_once(tree: Path, args: list[str]) -> float:
    """Wall seconds of ``python -m video_cnn_rnn *args`` with ``tree`` first on the import path."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "video_cnn_rnn", *args], cwd=tree, env=env, capture_output=True, timeout=600
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{args} failed in {tree}: {result.stderr.decode()[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="an older source tree to time beside this one")
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    trees = {"now": ROOT, **({"before": options.before} if options.before else {})}
    runs = [(case, tree) for case in CASES for tree in trees if not (tree == "before" and case.endswith("-all"))]
    times: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    for _ in range(options.repeats):
        for case, tree in runs:
            times[case, tree].append(run_once(trees[tree], CASES[case]))
    print(f"# {hardware()}; median of {options.repeats} fresh processes, seconds")
    print("| command | " + " | ".join(trees) + " |")
    print("|---" * (len(trees) + 1) + "|")
    for case in CASES:
        cells = [f"{statistics.median(times[case, tree]):.2f}" if (case, tree) in times else "—" for tree in trees]
        print(f"| `{case}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
