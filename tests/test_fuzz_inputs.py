"""Mutation fuzzing of store entries, shard chunks, index.json, checkpoints and CSVs (issue 26): a small seeded
set of ``benchmarks/fuzz_inputs.py``'s mutants, each recovered, refused naming the file, or read unchanged."""

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("litdata")

REPO = Path(__file__).resolve().parents[1]


def _fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_inputs", REPO / "benchmarks" / "fuzz_inputs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fuzz_inputs", module)
    spec.loader.exec_module(module)
    return module


def test_no_mutant_crashes_hangs_goes_unnamed_or_is_read_wrong() -> None:
    fuzz = _fuzz()
    counts = fuzz.run(list(fuzz.KINDS), mutants=8, seed=1, timeout=60.0)
    assert set(counts) == set(fuzz.KINDS)
    for kind, counter in counts.items():
        assert sum(counter.values()) == 8
        assert not any(counter[verdict] for verdict in fuzz.BAD), f"{kind}: {dict(counter)}"
    assert counts["checkpoint"]["named"] > 0 and counts["shard_chunk"]["named"] > 0  # the mutants do bite
