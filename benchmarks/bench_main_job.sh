#!/usr/bin/env bash
# The main job's figures: test accuracy of the demo settings (configs/demo.yaml) with each head on the synthetic
# dataset, per-pair accuracy of the order-blind mean head, and the same settings on real footage
# (../shared/data/real_actions, evaluated on its val + test clips). Wall time of each run is printed.
#   bash benchmarks/bench_main_job.sh            # about 15 minutes on 2 CPU cores
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install
declare -A TIMES HEAD_ARGS
# demo.yaml sets the GRU's settings; the other heads replace them with their own.
HEAD_ARGS[gru]="--model.head gru"
HEAD_ARGS[transformer]="--model.head transformer --model.rnn_hidden_sizes null --model.d_model 128 --model.num_heads 4 --model.dense_dim 256 --model.pooling max"
HEAD_ARGS[mean]="--model.head mean --model.rnn_hidden_sizes null"
for head in gru transformer mean; do
    start=$SECONDS
    # shellcheck disable=SC2086  # the head's arguments are meant to split into words
    RUN="bench_$head" bash .ci/demo ${HEAD_ARGS[$head]} > "runs/bench_$head.log" 2>&1
    TIMES[$head]=$((SECONDS - start))
done
REAL=../shared/data/real_actions
if [ -f "$REAL/train.csv" ]; then
    # val + test in one CSV, with absolute paths
    VALTEST=runs/real_actions_valtest.csv
    .venv/bin/python - "$REAL" "$VALTEST" <<'PY'
import csv, sys
from pathlib import Path
real, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
rows = [(str(real / r["video_name"]), r["tag"]) for s in ("val", "test") for r in csv.DictReader((real / f"{s}.csv").open())]
with out.open("w", newline="") as f:
    csv.writer(f).writerows([("video_name", "tag"), *rows])
PY
    start=$SECONDS
    ARGS=(--config configs/demo.yaml --trainer.logger.init_args.name bench_real --checkpoint.dirpath runs/bench_real/checkpoints
          --data.train "$REAL/train.csv" --data.val "$REAL/val.csv" --data.test "$VALTEST")
    rm -f runs/bench_real/checkpoints/*.ckpt
    .venv/bin/video-cnn-rnn fit "${ARGS[@]}" > runs/bench_real.log 2>&1
    .venv/bin/video-cnn-rnn test "${ARGS[@]}" --ckpt_path runs/bench_real/checkpoints/best.ckpt >> runs/bench_real.log 2>&1
    TIMES[real]=$((SECONDS - start))
fi
.venv/bin/python - "${TIMES[gru]}" "${TIMES[transformer]}" "${TIMES[mean]}" "${TIMES[real]:-0}" <<'PY'
import csv, json, sys
from pathlib import Path

def latest_report(run):
    reports = sorted(Path("runs", run).glob("version_*/test_metrics.json"), key=lambda p: p.stat().st_mtime)
    return reports[-1].parent

print(f"{'run':28s} {'test acc':>9s} {'wall s':>7s}")
for run, seconds in zip(("bench_gru", "bench_transformer", "bench_mean", "bench_real"), sys.argv[1:]):
    if not Path("runs", run).exists():
        continue
    folder = latest_report(run)
    acc = json.loads((folder / "test_metrics.json").read_text())["test_acc"]
    print(f"{run:28s} {100 * acc:8.2f}% {seconds:>7s}")
    if run == "bench_mean":
        rows = {r["class"]: r for r in csv.DictReader((folder / "test_per_class.csv").open())}
        print("  mean head recall per class (pairs differ only in frame order):")
        for a, b in (("disc_grow", "disc_shrink"), ("fade_in", "fade_out"), ("red_to_blue", "blue_to_red")):
            print(f"    {a:12s} {float(rows[a]['recall']):.2f}   {b:12s} {float(rows[b]['recall']):.2f}")
PY
