"""Shards checked before anything trains: the manifest, every split's ``index.json`` and the chunks on disk agree.

LitData reads ``index.json`` and the chunks lazily, so shards that do not fit together (an ``index.json`` from
another write, a chunk cut short or damaged) used to fail after training had started, in LitData's words ("Chunk 7
header item count (1) does not match ...", "Timed out ... waiting for chunk", ``struct.error``) and naming no file.
``check_split`` compares, for one split of a local shard root: the index's digest with the one the manifest
recorded when it was written (manifests written before this check have none: skipped), its chunk list with the
manifest's, its item count with the manifest's, each chunk's size on disk with the index's, and each chunk's
header (LitData's ``uint32 count, uint32 offsets[count + 1]``) with the index's item count and the file's size,
and each chunk's CRC-32 with the one recorded when it was written (LitData's chunks carry no checksum of their own;
reading every chunk once costs about what copying them does, a small part of an epoch that decodes them).
"""

import hashlib
import json
import struct
import zlib
from pathlib import Path
from typing import Any

from video_cnn_rnn.data.annotations import ManifestError

FIX = "write the shards again (video-cnn-rnn shard ... --overwrite)"


def index_digest(data: bytes) -> str:
    """The digest the manifest records of a split's ``index.json`` (its bytes as written)."""
    return hashlib.sha256(data).hexdigest()


def chunk_crc32(path: Path) -> int:
    """The CRC-32 of a chunk file (read in 1 MiB blocks)."""
    crc = 0
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            crc = zlib.crc32(block, crc)
    return crc


def _fail(folder: Path, what: str) -> None:
    raise ManifestError(f"{folder}: {what}; {FIX}")


def chunk_header_problem(chunk: Path, items: int) -> str | None:
    """What is wrong with ``chunk``'s header for ``items`` items, or None."""
    size = chunk.stat().st_size
    with chunk.open("rb") as file:
        head = file.read(4 * (items + 2))
    if len(head) < 4 * (items + 2):
        return f"{chunk.name} is {size} bytes, too short for the header of {items} item(s)"
    count = struct.unpack_from("<I", head)[0]
    if count != items:
        return f"{chunk.name}'s header counts {count} item(s), index.json {items}"
    offsets = struct.unpack_from(f"<{items + 1}I", head, 4)
    in_order = all(a <= b for a, b in zip(offsets, offsets[1:], strict=False))
    if offsets[0] != 4 * (items + 2) or offsets[-1] != size or not in_order:
        return f"{chunk.name}'s header is damaged (item offsets {list(offsets)} in a file of {size} bytes)"
    return None


def check_split(root: Path, split: str, recorded: dict[str, Any]) -> None:
    """Raise ``ManifestError`` naming the split, the chunk and what differs, where ``root/split`` does not match
    ``recorded`` (the manifest's entry of the split: ``items``, ``chunks`` and, since this check, ``index_sha256``)."""
    folder = root / split
    try:
        data = (folder / "index.json").read_bytes()
        chunks = json.loads(data)["chunks"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        _fail(folder, f"index.json cannot be read ({error})")
    if recorded.get("index_sha256") not in (None, index_digest(data)):
        _fail(folder, "index.json is not the one this write made (another write's?)")
    names = [chunk.get("filename") for chunk in chunks]
    if names != recorded["chunks"]:
        differ = sorted(set(names).symmetric_difference(recorded["chunks"])) or "their order"
        _fail(folder, f"index.json lists other chunks than the manifest ({differ})")
    total = sum(int(chunk.get("chunk_size") or 0) for chunk in chunks)
    if total != recorded["items"]:
        _fail(folder, f"index.json holds {total} item(s), the manifest {recorded['items']}")
    for chunk in chunks:
        path = folder / chunk["filename"]
        if not path.is_file():
            _fail(folder, f"chunk {chunk['filename']} is missing")
        if path.stat().st_size != chunk.get("chunk_bytes"):
            _fail(
                folder, f"chunk {path.name} is {path.stat().st_size} bytes, index.json says {chunk.get('chunk_bytes')}"
            )
        problem = chunk_header_problem(path, int(chunk["chunk_size"]))
        if problem:
            _fail(folder, problem)
    for name, crc in zip(recorded["chunks"], recorded.get("chunk_crc32") or [], strict=False):
        if chunk_crc32(folder / name) != crc:
            _fail(folder, f"chunk {name} is damaged (its CRC-32 differs from the one written)")
