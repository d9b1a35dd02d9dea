"""Probing videos before the first epoch: each one opened and its first frame decoded, in parallel threads.

A file that cannot be decoded is then named in seconds, not found mid-epoch: under ``on_error="raise"`` the run
stops before training with one error listing them; under ``skip`` / ``warn`` one warning lists them, and the
training loop skips and reports them where it meets them, as for any video.

Videos that probe cleanly are remembered by their identity (resolved path, size, modification time) in a small
JSON file, so the next run over the same files pays nothing: ``$VIDEO_CNN_RNN_PROBE_CACHE`` when set (``off``: no
cache), else ``$XDG_CACHE_HOME/video_cnn_rnn/probed_videos.json`` (``~/.cache`` without ``XDG_CACHE_HOME``). A
failed probe is not remembered: a file fixed in place is probed again. Two runs writing at once lose nothing but a
few entries (probed again next time): the file is replaced atomically.
"""

import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from video_cnn_rnn.data.atomic import write_text_atomically
from video_cnn_rnn.data.decode._clips import Backend, VideoDecodeError, decode_frames

CACHE_VARIABLE = "VIDEO_CNN_RNN_PROBE_CACHE"
# Decoding one small frame: the threads wait on FFmpeg (which releases the GIL) and on the disk.
MAX_THREADS = 16
SHOWN = 5  # failures named in the message; the rest are counted


def cache_file() -> Path | None:
    """Where clean probes are remembered; None when ``$VIDEO_CNN_RNN_PROBE_CACHE`` is ``off``."""
    configured = os.environ.get(CACHE_VARIABLE)
    if configured:
        return None if configured.lower() in ("off", "0", "none") else Path(configured)
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "video_cnn_rnn" / "probed_videos.json"


def _identity(path: str) -> tuple[str, list[int]] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return os.path.realpath(path), [stat.st_size, stat.st_mtime_ns]


def _load(file: Path | None) -> dict[str, list[int]]:
    try:
        content = json.loads(file.read_text()) if file is not None else {}
    except (OSError, ValueError):
        return {}  # absent or damaged: everything is probed again, and the file written anew
    return content if isinstance(content, dict) else {}


def _save(file: Path, known: dict[str, list[int]]) -> None:
    try:
        write_text_atomically(file, json.dumps(known))
    except OSError as error:  # a read-only home: probing still works, it is just not remembered
        warnings.warn(f"cannot remember probed videos in {file} ({error}); set {CACHE_VARIABLE}", stacklevel=3)


def probe_video(
    path: str, backend: Backend = "auto", decode_timeout: float | None = 60.0, damage_ok: bool = False
) -> None:
    """Open ``path`` and decode its first frame (small); raises ``VideoDecodeError`` naming the file.
    ``damage_ok``: a damaged but decodable first frame passes (``on_error="warn"`` keeps clean frames)."""
    damage = [] if damage_ok else None
    decode_frames(path, _first_frame, long_side=32, backend=backend, decode_timeout=decode_timeout, damage=damage)


def _first_frame(num_video_frames: int, fps: float | None) -> list[int]:
    return [0]


def probe_videos(
    paths: Iterable[str],
    backend: Backend = "auto",
    decode_timeout: float | None = 60.0,
    damage_ok: bool = False,
    progress: bool = True,
) -> dict[str, str]:
    """Probe every video of ``paths`` not known to be clean; returns ``{path: reason}`` of those that fail."""
    file = cache_file()
    known = _load(file)
    identities = {path: _identity(path) for path in dict.fromkeys(paths)}
    todo = [path for path, ident in identities.items() if ident is None or known.get(ident[0]) != ident[1]]
    if not todo:
        return {}
    failures: dict[str, str] = {}

    def one(path: str) -> None:
        try:
            probe_video(path, backend, decode_timeout, damage_ok)
        except VideoDecodeError as error:
            failures[path] = str(error)
        else:
            known[identities[path][0]] = identities[path][1]  # type: ignore[index]

    with _progress(len(todo), progress) as bar, ThreadPoolExecutor(min(MAX_THREADS, len(todo))) as pool:
        for _ in pool.map(one, todo):
            bar.update()
    if file is not None and len(failures) < len(todo):
        _save(file, {**_load(file), **known})  # merged with what another run may have written meanwhile
    return {path: failures[path] for path in todo if path in failures}


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm  # Lightning's own progress bars' dependency

    # disable=None: shown on a terminal only, never in a log file.
    return tqdm(total=total, desc="probing videos", unit="video", leave=False, disable=None if enabled else True)


def check_videos(
    splits: Mapping[str, Sequence[tuple[str, Any]]],
    on_error: str,
    backend: Backend = "auto",
    decode_timeout: float | None = 60.0,
) -> None:
    """Probe the videos of ``splits`` (name -> ``[(path, label)]``) before training: under ``on_error="raise"`` a
    ``VideoDecodeError`` listing every video that fails; otherwise one warning listing them (the loaders skip them
    where they meet them)."""
    paths = [path for items in splits.values() for path, _ in items]
    failures = probe_videos(paths, backend, decode_timeout, damage_ok=on_error == "warn")
    if not failures:
        return
    reasons = list(failures.values())
    shown = "; ".join(reasons[:SHOWN]) + (f"; (+{len(reasons) - SHOWN} more)" if len(reasons) > SHOWN else "")
    count = f"{len(failures)} of {len(set(paths))} videos cannot be decoded"
    if on_error == "raise":
        raise VideoDecodeError(f"{count}: {shown}; fix or remove them, or pass --data.on_error skip to leave them out")
    warnings.warn(f"{count}; they are skipped where met: {shown}", stacklevel=3)
