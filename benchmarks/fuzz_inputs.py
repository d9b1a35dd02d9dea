"""Mutation fuzzing of the inputs that are not video streams (issue 26): feature store entries, shard chunks,
shard ``index.json`` files, checkpoints and annotation CSVs.

    python benchmarks/fuzz_inputs.py                      # 200 mutants per kind, seed 0
    python benchmarks/fuzz_inputs.py --mutants 50 --seed 3 --kinds csv checkpoint

Inputs are made once in a temporary folder from a tiny synthetic dataset: a feature store (``test_efficientnet``),
shards (``write_shards``), a checkpoint and a CSV. Each mutant (bits flipped, a block overwritten with random
bytes, the file truncated, a block duplicated, bytes zeroed, junk appended; for text, lines duplicated, dropped
or relabelled) replaces one file, goes through what a run does with that kind of file, and the file is put back:

- store entry: the start-up check (``read_entry_meta`` + ``entry_problem``), then the entry's arrays as a run reads them;
- shard chunk / index.json: ``read_manifest`` (the checks before training), then every item of the split decoded;
- checkpoint: ``errors.load_checkpoint`` (as the CLI loads ``--ckpt_path``), then the weights;
- CSV: ``read_source`` and ``check_manifest``, as the data module reads annotations.

Verdicts: ``recovered`` (a store entry found damaged: extracted again), ``named`` (a user error naming the file),
``ok`` (accepted, and what is read equals the original), ``changed`` (a CSV accepted with other rows: what the text
now says, e.g. another label; not a reading error), ``unnamed`` (a user error not naming the file), ``crash``
(any other exception: a bug), ``hang`` (over ``--timeout`` s), ``wrong`` (accepted, and what is read differs from
the original: silently wrong).
"""

import argparse
import collections
import io
import random
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
KINDS = ("store_entry", "shard_chunk", "index_json", "checkpoint", "csv")
BAD = ("crash", "hang", "unnamed", "wrong")


def _mutate_bytes(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    buffer = bytearray(data)
    size = len(buffer)
    start = rng.randrange(size)
    length = min(size - start, rng.choice([1, 4, 8, 64, 512]))
    kind = rng.choice(["flip_bits", "random_block", "truncate", "duplicate_block", "zero_block", "append_junk"])
    if kind == "flip_bits":
        for _ in range(rng.randint(1, 16)):
            buffer[rng.randrange(size)] ^= 1 << rng.randrange(8)
    elif kind == "random_block":
        buffer[start : start + length] = rng.randbytes(length)
    elif kind == "truncate":
        buffer = buffer[: rng.randrange(size)]
    elif kind == "duplicate_block":
        buffer[start:start] = buffer[rng.randrange(size) :][:length]
    elif kind == "zero_block":
        buffer[start : start + length] = bytes(length)
    else:
        buffer += rng.randbytes(length)
    return kind, bytes(buffer)


def _mutate_text(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    lines = data.decode().splitlines(keepends=True)
    kind = rng.choice(["bytes", "duplicate_line", "drop_line", "relabel_copy", "bom", "crlf", "swap_columns"])
    row = rng.randrange(1, len(lines))
    if kind == "bytes":
        return _mutate_bytes(data, rng)
    if kind == "duplicate_line":
        lines.insert(rng.randrange(len(lines) + 1), lines[row])
    elif kind == "drop_line":
        del lines[rng.randrange(len(lines))]
    elif kind == "relabel_copy":  # the same video again under another label
        path, label = lines[row].rstrip("\r\n").split(",")
        lines.append(f"{path},{label}_other\n")
    elif kind == "bom":
        return kind, "\ufeff".encode() + data
    elif kind == "crlf":
        lines = [line.rstrip("\n") + "\r\n" for line in lines]
    else:
        lines = [",".join(reversed(line.rstrip("\r\n").split(","))) + "\n" for line in lines]
    return kind, "".join(lines).encode()


def _in_thread(fn: Callable[[], str], timeout: float) -> tuple[str, BaseException | None]:
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["verdict"] = fn()
        except BaseException as error:  # classified by the caller (_classify)
            result["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return "hang", None
    return result.get("verdict", "error"), result.get("error")


def _classify(error: BaseException, file: Path, text: bytes) -> str:
    """``named``: a user error (``video_cnn_rnn.errors.user_error``) naming the file, its folder or, for a CSV, an
    entry of it; ``unnamed``: a user error naming none; ``crash``: anything else."""
    from video_cnn_rnn.errors import user_error

    if user_error(error) is None:
        return "crash"
    names = [file.name, str(file.parent)]
    if file.suffix == ".csv":
        fields = text.decode(errors="replace").replace("\r", "").replace("\n", ",").split(",")
        names += [field.strip() for field in fields if len(field.strip()) > 1]
    return "named" if any(name in str(error) for name in names) else "unnamed"


class Inputs:
    """The originals, made once, and per kind: the files a mutant may replace and how a run reads them."""

    def __init__(self, folder: Path) -> None:
        from video_cnn_rnn.data.synthetic import generate_synthetic_dataset

        self.folder = folder
        self.data = generate_synthetic_dataset(folder / "data", 2, 1, width=48, height=40, max_frames=8)
        self.csv = folder / "train.csv"
        rows = (self.data / "train.csv").read_text().splitlines()[1:]
        self.csv.write_text("video_name,tag\n" + "".join(f"{self.data / row}\n" for row in rows))
        self._store()
        self._shards()
        self._checkpoint()

    def _store(self) -> None:
        import lightning as L

        from video_cnn_rnn.data.annotations import read_csv
        from video_cnn_rnn.data.dataset import VideoDataset
        from video_cnn_rnn.extraction import _entries, _weights_digest, build_feature_cache, recipe_key
        from video_cnn_rnn.models.classifier import VideoClassifier

        torch.manual_seed(0)
        model = VideoClassifier(backbone="test_efficientnet", num_classes=6, num_frames=4, img_size=32)
        dataset = VideoDataset([(p, 0) for p, _ in read_csv(self.data / "test.csv")], num_frames=4, img_size=32)
        trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
        build_feature_cache(model.network, {"test": dataset}, self.folder / "store", trainer, batch_size=6)
        recipe = recipe_key(model.network, dataset, trainer.precision, _weights_digest(model.network.backbone))
        locate = _entries(self.folder / "store" / "v2", recipe)
        self.entries = [(*locate(path), path) for path, _ in dataset.items]  # (file, key, video)
        self.entry_arrays = {file: self._arrays(file) for file, _, _ in self.entries}

    @staticmethod
    def _arrays(file: Path) -> dict[str, np.ndarray]:
        with np.load(file) as entry:
            return {name: entry[name] for name in entry.files if name != "meta"}

    def _shards(self) -> None:
        from video_cnn_rnn.data.annotations import read_csv
        from video_cnn_rnn.data.shards.writer import write_shards

        items = [(path, 0) for path, _ in read_csv(self.data / "test.csv")]
        self.shards = self.folder / "shards"
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            write_shards({"test": items}, str(self.shards), ["a"], chunk_bytes="20KB")
        self.shard_items = self._read_shards()

    def _read_shards(self) -> list[tuple[str, bytes, int]]:
        from video_cnn_rnn.data.dataset import VideoDataset
        from video_cnn_rnn.data.shards import read_manifest
        from video_cnn_rnn.data.shards.reader import ShardItems, unpack

        count = read_manifest(str(self.shards))["splits"]["test"]["items"]
        items = ShardItems(str(self.shards / "test"), VideoDataset([], num_frames=4, img_size=32), count)
        result = []
        for index in range(count):
            item = items[index]  # decoded (on_error raise), so damage that only decoding sees is met
            raw = unpack(items.raw(index))
            result.append((raw["path"], raw["video"], int(item["frames"].sum())))
        return result

    def _checkpoint(self) -> None:
        self.checkpoint = self.folder / "model.ckpt"
        torch.manual_seed(0)
        state = {"w": torch.randn(64, 64), "b": torch.randn(64)}
        torch.save({"state_dict": state, "hyper_parameters": {"num_classes": 6}}, self.checkpoint)
        self.weights = state

    def files(self, kind: str) -> list[Path]:
        if kind == "store_entry":
            return [file for file, _, _ in self.entries]
        if kind == "shard_chunk":
            return sorted((self.shards / "test").glob("*.bin"))
        if kind == "index_json":
            return [self.shards / "test" / "index.json"]
        return [self.checkpoint] if kind == "checkpoint" else [self.csv]

    def read(self, kind: str, file: Path) -> str:
        """What a run does with ``file``: ``recovered`` / ``ok`` / ``changed`` / ``wrong``, or it raises."""
        if kind == "store_entry":
            from video_cnn_rnn.data.feature_cache import entry_problem, read_entry_meta

            _, key, _ = next(entry for entry in self.entries if entry[0] == file)
            if read_entry_meta(file, key) is None or entry_problem(file, key) is not None:
                return "recovered"
            same = _equal_arrays(self._arrays(file), self.entry_arrays[file])
            return "ok" if same else "wrong"
        if kind in ("shard_chunk", "index_json"):
            return "ok" if self._read_shards() == self.shard_items else "wrong"
        if kind == "checkpoint":
            from video_cnn_rnn.errors import load_checkpoint

            state = load_checkpoint(file)["state_dict"]
            same = state.keys() == self.weights.keys() and all(torch.equal(state[k], self.weights[k]) for k in state)
            return "ok" if same else "wrong"
        from video_cnn_rnn.data.annotations import check_manifest, class_names_from, read_source

        items = read_source(file)
        check_manifest({"train": items}, class_names_from(items))
        original = read_source(self.csv_original)
        if items == original:
            return "ok"
        return "wrong" if len({path for path, _ in items}) < len(items) else "changed"

    csv_original: Path


def _equal_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


class _quiet:
    """Silence stdout (LitData's progress lines) inside a block."""

    def __enter__(self) -> None:
        self._saved, sys.stdout = sys.stdout, io.StringIO()

    def __exit__(self, *exc: object) -> None:
        sys.stdout = self._saved


def run(kinds: list[str], mutants: int, seed: int, timeout: float) -> dict[str, collections.Counter]:
    """``mutants`` mutants of each kind; returns the verdict counts per kind (and prints the bad ones)."""
    warnings.filterwarnings("ignore")
    counts: dict[str, collections.Counter] = {}
    with tempfile.TemporaryDirectory() as scratch, _quiet():
        inputs = Inputs(Path(scratch))
        inputs.csv_original = Path(scratch) / "original.csv"
        shutil.copy(inputs.csv, inputs.csv_original)
        for kind in kinds:
            rng = random.Random(f"{seed}:{kind}")
            counts[kind] = collections.Counter()
            for number in range(mutants):
                file = rng.choice(inputs.files(kind))
                original = file.read_bytes()
                mutate = _mutate_text if kind == "csv" else _mutate_bytes
                mutation, data = mutate(original, rng)
                file.write_bytes(data)
                try:
                    verdict, error = _in_thread(lambda: inputs.read(kind, file), timeout)  # noqa: B023
                    if error is not None:
                        verdict = _classify(error, file, data)
                finally:
                    file.write_bytes(original)
                counts[kind][verdict] += 1
                if verdict in BAD:
                    detail = f"{type(error).__name__}: {error}" if error is not None else ""
                    print(f"{kind} #{number} {mutation}: {verdict} {detail[:300]}", file=sys.stderr)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mutants", type=int, default=200, help="mutants per kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a mutant counts as a hang")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    options = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from sweep_real import hardware

    print(f"hardware: {hardware()}; {options.mutants} mutants per kind, seed {options.seed}")
    counts = run(options.kinds, options.mutants, options.seed, options.timeout)
    verdicts = ["recovered", "named", "ok", "changed", *BAD]
    print("| kind | " + " | ".join(verdicts) + " |")
    print("|---" * (len(verdicts) + 1) + "|")
    for kind, counter in counts.items():
        print(f"| {kind} | " + " | ".join(str(counter[verdict]) for verdict in verdicts) + " |")


if __name__ == "__main__":
    main()
