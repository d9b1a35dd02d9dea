"""``video-cnn-rnn shard``: annotation sources -> LitData shards that ``data.streaming`` trains from.

video-cnn-rnn shard --train data/train.csv --test data/test.csv --output shards/ucf101
video-cnn-rnn shard --train ... --output s3://bucket/shards/ucf101   # credentials from the environment

Writes ``<output>/<split>/`` (LitData's ``index.json`` and chunks, via ``litdata.optimize``) for each split given
(``val`` held out of ``train`` by the data module's group-aware split when not given), and the manifest
``<output>/video_cnn_rnn_shards.json`` (``video_cnn_rnn.data.shards``). Items are shuffled (seeded) before
writing: LitData shuffles chunks and the items within a chunk, never across chunks (litData#797), so a chunk
written in annotation order would hold one class.

Every video is probed first (demuxing only: frame count, frame rate, keyframes). One the demuxer cannot read or
reports damaged is reported and left out under ``--on_error`` (``raise`` stops, naming it; ``skip`` / ``warn``
leave it out, print it, and list it with the reason in the manifest's ``skipped``). Damage only the decoder sees
is met at training time, where ``data.on_error`` applies as for files.

``--short_side N`` re-encodes every video (H.264, CRF ``--crf``, shorter side N, the frame rate kept) instead of
storing its bytes unchanged. It costs a full decode and encode of every video at shard time and a second
generation of compression loss, and the clips then differ from those of the original files; it pays where the
sources are much larger than the model's input (benchmarks/bench_streaming.py measures both sizes).
"""

import argparse
import functools
import io
import json
import multiprocessing
import random
import shutil
import tempfile
import uuid
from fractions import Fraction
from importlib.metadata import version
from pathlib import Path
from typing import Any

from video_cnn_rnn.data.annotations import (
    ManifestError,
    check_same_classes,
    class_names_from,
    group_of,
    read_source,
    read_unlabelled,
    split_train_val,
)
from video_cnn_rnn.data.dataset import ON_ERROR
from video_cnn_rnn.data.decode import describe_damage, probe_pyav
from video_cnn_rnn.data.frames import Source
from video_cnn_rnn.data.shards._checks import chunk_crc32, index_digest
from video_cnn_rnn.data.shards._manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    STREAMING_EXTRA,
    check_credentials,
    is_url,
    join,
)

try:  # imported only by ``video-cnn-rnn shard``
    import litdata  # noqa: F401
except ImportError as error:
    raise ImportError(STREAMING_EXTRA) from error


def reencode(data: bytes, short_side: int, crf: int = 23) -> bytes:
    """The video re-encoded as H.264 in MP4 with its shorter side at ``short_side`` (even sizes, aspect kept) and
    its frame rate kept; every frame is decoded and encoded once."""
    import av

    output = io.BytesIO()
    with av.open(io.BytesIO(data)) as source, av.open(output, "w", format="mp4") as target:
        stream = source.streams.video[0]
        rate = stream.average_rate or Fraction(25)
        width, height = stream.codec_context.width, stream.codec_context.height
        scale = short_side / min(width, height)
        size = [max(2, round(side * scale / 2) * 2) for side in (width, height)]
        encoder = target.add_stream("libx264", rate=rate)
        encoder.width, encoder.height, encoder.pix_fmt = size[0], size[1], "yuv420p"
        encoder.options = {"crf": str(crf), "preset": "veryfast"}
        for number, frame in enumerate(source.decode(stream)):
            frame = frame.reformat(width=size[0], height=size[1], format="yuv420p")
            frame.pts, frame.time_base = number, 1 / Fraction(rate)  # numbered anew at the kept rate
            target.mux(encoder.encode(frame))
        target.mux(encoder.encode())
    return output.getvalue()


def video_info(source: Source) -> dict[str, Any]:
    """Frame count, frame rate and keyframes (frame indices, display order) of a video, by demuxing alone.
    Raises on a video the demuxer cannot read or reports damaged (``probe.damage``)."""
    rate: list[float | None] = []

    def past_the_end(num_video_frames: int, fps: float | None) -> list[int]:
        rate.append(fps)
        return [num_video_frames + 1]  # never a prefix, so the probe reads the whole packet index

    probe = probe_pyav(source, past_the_end)
    if probe.damage:
        raise ValueError(describe_damage(probe.damage))
    index = probe.index
    if not index:
        raise ValueError("no video packets")
    # Display order: by pts where they give it (the readers' rule), else decode order.
    order = sorted(range(len(index)), key=lambda i: index[i][0]) if probe.pts_ordered else range(len(index))
    keyframes = [frame for frame, position in enumerate(order) if index[position][1]]
    return {"num_frames": len(index), "fps": float(rate[-1] or 0.0), "keyframes": keyframes}


def shard_item(entry: dict[str, Any], short_side: int | None = None, crf: int = 23) -> dict[str, Any]:
    """One shard item (``video_cnn_rnn.data.shards.META_FIELDS``) from a probed entry; runs in ``litdata.optimize``'s workers."""
    data = Path(entry["path"]).read_bytes()
    info = {key: entry[key] for key in ("num_frames", "fps", "keyframes")}
    if short_side is not None:
        data = reencode(data, short_side, crf)
        info = video_info(io.BytesIO(data))
    meta = {"path": entry["path"], "group": entry["group"], **info}
    # One JSON string: LitData would store a str naming a video file as that file (its VideoSerializer).
    return {"video": data, "label": entry["label"], "meta": json.dumps(meta)}


def probe_items(items: list[tuple[str, int]], on_error: str) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Entries of the videos that probe cleanly, and ``{"path", "error"}`` of those left out (``on_error``)."""
    entries, skipped = [], []
    for path, label in items:
        try:
            if not Path(path).is_file():
                raise ValueError("no such file")
            info = video_info(path)
        except Exception as error:  # anything the demuxer raises: the video cannot be read
            reason = str(error) or type(error).__name__
            if on_error == "raise":
                raise ManifestError(f"{path}: cannot shard ({reason}); fix it, or pass --on_error skip") from error
            print(f"video-cnn-rnn shard: leaving out {path}: {reason}")
            skipped.append({"path": path, "error": reason})
            continue
        entries.append({"path": path, "label": label, "group": group_of(path), **info})
    return entries, skipped


def write_shards(
    splits: dict[str, list[tuple[str, int]]],
    output: str,
    class_names: list[str],
    short_side: int | None = None,
    crf: int = 23,
    chunk_bytes: str = "64MB",
    seed: int = 42,
    on_error: str = "raise",
    num_workers: int = 1,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``splits`` (name -> ``[(path, label id or -1)]``) as shards under ``output`` and return the manifest."""
    from litdata import optimize

    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    check_credentials(output)
    if not is_url(output):
        if Path(output).exists() and any(Path(output).iterdir()):
            if not overwrite:
                raise ManifestError(f"{output}: not empty; choose another folder, or pass --overwrite")
            shutil.rmtree(output)
        Path(output).mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "id": uuid.uuid4().hex,  # this write's: a feature cache extracted from the shards is keyed by it
        "package_version": version("video_cnn_rnn"),
        "litdata_version": version("litdata"),
        "class_names": class_names,
        "settings": {"short_side": short_side, "crf": crf if short_side else None, "chunk_bytes": chunk_bytes},
        "seed": seed,
        "splits": {},
        "skipped": [],
    }
    for split, items in splits.items():
        entries, skipped = probe_items(items, on_error)
        manifest["skipped"] += [{"split": split, **entry} for entry in skipped]
        if not entries:
            raise ManifestError(f"{split}: no video left to shard")
        random.Random(f"{seed}:{split}").shuffle(entries)  # LitData shuffles within chunks only (litData#797)
        optimize(
            fn=functools.partial(shard_item, short_side=short_side, crf=crf),
            inputs=entries,
            output_dir=join(output, split),
            chunk_bytes=chunk_bytes,
            num_workers=num_workers,
            reorder_files=False,  # keep the shuffled order (LitData would sort the inputs by file size)
            mode="overwrite" if overwrite else None,
            verbose=False,
            # Spawned workers import torch again (~10 s each); the writing itself needs nothing fork-unsafe.
            start_method="fork" if "fork" in multiprocessing.get_all_start_methods() else None,
        )
        manifest["splits"][split] = {"items": len(entries), **_split_record(output, split)}
    _write_json(manifest, join(output, MANIFEST_NAME))
    return manifest


def _split_record(output: str, split: str) -> dict[str, Any]:
    """The manifest's record of a written split: its chunk files and its ``index.json``'s digest, which tie the
    index to this write (``check_split`` compares them before training)."""
    with tempfile.TemporaryDirectory() as folder:
        data = _read_bytes(join(output, split, "index.json"), Path(folder) / "index.json")
    chunks = [chunk["filename"] for chunk in json.loads(data)["chunks"]]
    record: dict[str, Any] = {"chunks": chunks, "index_sha256": index_digest(data)}
    if not is_url(output):  # LitData's chunks carry no checksum: one per chunk, checked before training
        record["chunk_crc32"] = [chunk_crc32(Path(output) / split / name) for name in chunks]
    return record


def _read_bytes(location: str, scratch: Path) -> bytes:
    if is_url(location):
        from litdata.streaming.fs_provider import _get_fs_provider

        _get_fs_provider(location).download_file(location, str(scratch))
        location = str(scratch)
    return Path(location).read_bytes()


def _write_json(data: dict[str, Any], location: str) -> None:
    text = json.dumps(data, indent=2) + "\n"
    if not is_url(location):
        Path(location).write_text(text)
        return
    from litdata.streaming.fs_provider import _get_fs_provider

    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / Path(location).name
        local.write_text(text)
        _get_fs_provider(location).upload_file(str(local), location)


def shard_main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="video-cnn-rnn shard",
        description="Write annotation sources as LitData shards for data.streaming (see video_cnn_rnn.data.shards).",
    )
    parser.add_argument("--output", required=True, help="shard root: a folder, or s3:// gs:// azure:// URL")
    parser.add_argument("--train", help="training annotations (CSV, class folders or a UCF101 split file)")
    parser.add_argument("--val", help="validation annotations; default: held out of --train (--val_fraction)")
    parser.add_argument("--test", help="test annotations")
    parser.add_argument("--predict", help="unlabelled videos: a file, folder or CSV")
    parser.add_argument("--video_root", help="folder relative paths resolve against (as data.video_root)")
    parser.add_argument("--val_fraction", type=float, default=0.2, help="held out of --train without --val")
    parser.add_argument("--class_names", nargs="+", help="the vocabulary in label order (default: --train's)")
    parser.add_argument("--short_side", type=int, help="re-encode to this shorter side (H.264); default: bytes as is")
    parser.add_argument("--crf", type=int, default=23, help="H.264 quality of --short_side (lower: larger, better)")
    parser.add_argument("--chunk_bytes", default="64MB", help="target size of one chunk file")
    parser.add_argument("--seed", type=int, default=42, help="the shuffle before writing and the val split")
    parser.add_argument("--on_error", choices=ON_ERROR, default="raise", help="a video that cannot be read")
    parser.add_argument("--num_workers", type=int, default=1, help="processes writing chunks")
    parser.add_argument("--overwrite", action="store_true", help="replace what is in --output")
    options = parser.parse_args(args)
    labelled = {
        name: read_source(source, options.video_root)
        for name, source in (("train", options.train), ("val", options.val), ("test", options.test))
        if source
    }
    if not labelled and not options.predict:
        parser.error("give at least one of --train, --val, --test, --predict")
    class_names = options.class_names or class_names_from(labelled.get("train") or next(iter(labelled.values()), []))
    for name, items in labelled.items():
        check_same_classes(class_names, class_names_from(items), f"--{name}")
    if "train" in labelled and "val" not in labelled and options.val_fraction > 0:
        labelled["train"], labelled["val"] = split_train_val(labelled["train"], options.val_fraction, options.seed)
    ids = {name: i for i, name in enumerate(class_names)}
    splits = {name: [(path, ids[label]) for path, label in items] for name, items in labelled.items() if items}
    if options.predict:
        splits["predict"] = [(path, -1) for path, _ in read_unlabelled(options.predict)]
    manifest = write_shards(
        splits,
        options.output,
        class_names,
        options.short_side,
        options.crf,
        options.chunk_bytes,
        options.seed,
        options.on_error,
        options.num_workers,
        options.overwrite,
    )
    counts = ", ".join(f"{split} {info['items']}" for split, info in manifest["splits"].items())
    print(f"shards ready: {options.output} ({counts} videos; {len(manifest['skipped'])} left out)")
