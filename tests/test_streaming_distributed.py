"""data.streaming under 2-process gloo DDP: a fit killed mid-epoch and resumed sees the same samples in the same
order as an uninterrupted one, with identical weights; ranks see disjoint items covering each epoch."""

import subprocess
from pathlib import Path

import pytest
import torch

pytest.importorskip("litdata")

from test_distributed import RUN_TIMEOUT_S, _command, _load, _start_and_kill  # noqa: E402

STEPS_PER_EPOCH = 3  # 12 training items / 2 ranks / batch size 2
MAX_EPOCHS = 2
# Each rank appends "<epoch> <step> <path>" for every sample it trains on to seen_<name>_<rank>.txt.
CALLBACK = """
import os
from lightning.pytorch.callbacks import Callback

class SeenSamples(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        name = os.environ["SEEN_NAME"]
        with open(f"seen_{name}_{trainer.global_rank}.txt", "a") as file:
            for path in batch["paths"]:
                file.write(f"{trainer.current_epoch} {trainer.global_step} {path}\\n")
"""


def _args(shard_root: Path, checkpoints: Path) -> list[str]:
    return [
        "--seed_everything=42",
        "--model.backbone=test_efficientnet",
        "--model.rnn_hidden_sizes=[16]",
        "--model.dropout=0.3",
        f"--data.streaming={shard_root}",
        "--data.num_frames=4",
        "--data.img_size=32",
        "--data.sampling=segment",
        "--data.batch_size=2",
        "--data.num_workers=1",
        "--trainer.accelerator=cpu",
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        f"--trainer.max_epochs={MAX_EPOCHS}",
        "--trainer.deterministic=true",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={checkpoints.parent / 'runs'}",
        "--reports.print_predictions=false",
        "--trainer.callbacks+=seen_samples.SeenSamples",
        "--checkpoint.every_n_train_steps=1",
        "--checkpoint.monitor=null",
        f"--checkpoint.dirpath={checkpoints}",
    ]


def _seen(folder: Path, name: str, rank: int) -> dict[int, list[tuple[int, str]]]:
    """step -> [(epoch, path)] a rank trained on; a step redone after a resume keeps its last record."""
    steps: dict[int, list[tuple[int, str]]] = {}
    for line in (folder / f"seen_{name}_{rank}.txt").read_text().splitlines():
        epoch, step, path = line.split(" ", 2)
        steps.setdefault(int(step), [])
        steps[int(step)] = [*steps[int(step)], (int(epoch), path)][-2:]  # batch size 2: the last batch's
    return steps


@pytest.mark.slow
def test_streaming_ddp_resume_after_sigkill_sees_the_same_samples(shard_root: Path, tmp_path: Path, monkeypatch):
    (tmp_path / "seen_samples.py").write_text(CALLBACK)
    import test_distributed

    env, current = test_distributed._env(), {"name": "a"}
    # _start_and_kill launches with test_distributed._env(): give it the run's name for the callback.
    monkeypatch.setattr(test_distributed, "_env", lambda: {**env, "SEEN_NAME": current["name"]})

    straight = tmp_path / "ckpt_a"
    subprocess.run(
        _command("fit", _args(shard_root, straight)),
        cwd=tmp_path,
        env={**env, "SEEN_NAME": "a"},
        check=True,
        capture_output=True,
        timeout=RUN_TIMEOUT_S,
    )
    final_a = _load(straight / "last.ckpt")
    assert final_a["global_step"] == STEPS_PER_EPOCH * MAX_EPOCHS

    for attempt in range(3):
        current["name"] = name = f"b{attempt}"
        interrupted = tmp_path / f"ckpt_{name}"
        args = _args(shard_root, interrupted)
        killed_at = _start_and_kill(args, tmp_path, interrupted / "last.ckpt")
        if killed_at % STEPS_PER_EPOCH:
            break
    else:
        pytest.fail(f"could not kill the run mid-epoch in 3 attempts (last at step {killed_at})")
    state = _load(interrupted / "last.ckpt")
    assert state["VideoDataModule"]["streaming_loader"]["loader"]["num_samples_yielded"] == 2 * (
        killed_at % STEPS_PER_EPOCH
    )
    result = subprocess.run(
        _command("fit", [*args, f"--ckpt_path={interrupted / 'last.ckpt'}"]),
        cwd=tmp_path,
        env={**env, "SEEN_NAME": name},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    final_b = _load(interrupted / "last.ckpt")
    assert final_b["global_step"] == final_a["global_step"]
    differing = [
        key for key in final_a["state_dict"] if not torch.equal(final_a["state_dict"][key], final_b["state_dict"][key])
    ]
    assert not differing, f"weights differ after resuming from step {killed_at}: {differing}"

    for rank in range(2):
        assert _seen(tmp_path, name, rank) == _seen(tmp_path, "a", rank), f"rank {rank} saw other samples"
    for epoch in range(MAX_EPOCHS):
        shares = [
            [path for records in _seen(tmp_path, "a", rank).values() for e, path in records if e == epoch]
            for rank in range(2)
        ]
        assert len(shares[0]) == len(shares[1]) == 6  # equal counts: no rank waits for the other at the end
        assert not set(shares[0]) & set(shares[1]) and len(set(shares[0]) | set(shares[1])) == 12

    # predict over the shards' predict split (11 videos: odd) on 2 ranks: one file per rank, merged, each video once.
    predict_args = [arg for arg in args if not arg.startswith(("--checkpoint.", "--trainer.max_epochs"))]
    predict_args = [a for a in predict_args if "callbacks+=" not in a and "deterministic" not in a]
    predictions = tmp_path / "predictions"
    result = subprocess.run(
        _command(
            "predict",
            [*predict_args, f"--ckpt_path={interrupted / 'last.ckpt'}", f"--reports.output_dir={predictions}"],
        ),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [path.name for path in predictions.iterdir() if path.name.startswith("predictions")] == ["predictions.csv"]
    rows = (predictions / "predictions.csv").read_text().splitlines()[1:]
    paths = [row.split(",")[0] for row in rows]
    expected = (shard_root.parent / "predict.csv").read_text().splitlines()[1:]
    assert sorted(paths) == sorted(row.split(",")[0] for row in expected) and len(set(paths)) == 11
