"""What the command line tells a user whose input is bad: one line naming the file and what to do, and an exit code.

Errors the package raises on purpose about its input are user errors; ``user_error`` turns one into ``(exit code,
line)``. Exit code 2: what was asked for is wrong (a configuration, annotations, a missing path, shards that do not
fit together); exit code 1: a file's content cannot be read (a video, a checkpoint, a feature store entry). Any
other exception is a bug and keeps its traceback, as does every error when ``VIDEO_CNN_RNN_TRACEBACK=1`` is set in
the environment or ``--verbose`` is on the command line.

An error raised inside a DataLoader worker reaches the main process re-raised by torch with the worker's whole
traceback as its message ("Caught VideoDecodeError in DataLoader worker process 0. Original Traceback ..."); the
worker's own message is its last line, and that is what the user sees.
"""

import os
import pickle
import re
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from video_cnn_rnn.data.annotations import ManifestError
from video_cnn_rnn.data.decode import VideoDecodeError
from video_cnn_rnn.data.feature_cache import FeatureStoreError

TRACEBACK_VARIABLE = "VIDEO_CNN_RNN_TRACEBACK"
# User errors by kind: exit code 2 for a wrong request, 1 for a file whose content cannot be read.
USAGE_ERRORS: tuple[type[BaseException], ...] = (ManifestError, FileNotFoundError)
_WORKER = re.compile(r"^Caught (?P<name>\w+) in DataLoader worker process \d+\.\nOriginal Traceback", re.S)
_ON_ERROR_HINT = "to leave such videos out and go on, pass --data.on_error skip"


class CheckpointError(ValueError):
    """A checkpoint file cannot be read; the message names it, its size and what to do."""


DATA_ERRORS: tuple[type[BaseException], ...] = (VideoDecodeError, CheckpointError, FeatureStoreError)


def traceback_wanted(argv: list[str]) -> bool:
    """Whether the user asked for tracebacks: ``VIDEO_CNN_RNN_TRACEBACK=1`` or ``--verbose``."""
    return os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0") or "--verbose" in argv


def _worker_message(error: BaseException) -> str:
    """The message the worker's exception had (its traceback's last lines), else the error's own."""
    text = str(error)
    match = _WORKER.match(text)
    if not match:
        return text
    lines = text.rstrip("\n").splitlines()
    for number in range(len(lines) - 1, -1, -1):
        head, separator, rest = lines[number].partition(": ")
        if separator and head.split(".")[-1] == match["name"]:
            return "\n".join([rest, *lines[number + 1 :]])
    return lines[-1]


def user_error(error: BaseException) -> tuple[int, str] | None:
    """``(exit code, message)`` for an error about the user's input; None for anything else (a bug)."""
    if isinstance(error, USAGE_ERRORS):
        code = 2
    elif isinstance(error, DATA_ERRORS):
        code = 1
    else:
        return None
    message = _worker_message(error)
    if isinstance(error, VideoDecodeError) and "on_error" not in message:
        message = f"{message} ({_ON_ERROR_HINT})"
    return code, message


def report(error: BaseException, argv: list[str]) -> None:
    """Exit with the one-line message of a user error (tracebacks where asked for); re-raise anything else."""
    found = user_error(error)
    if found is None or traceback_wanted(argv):
        raise error
    code, message = found
    hint = f" (set {TRACEBACK_VARIABLE}=1 for the traceback)" if code == 1 else ""
    print(f"video-cnn-rnn: error: {message}{hint}", file=sys.stderr)
    raise SystemExit(code) from None


def _damaged_member(path: Path) -> str | None:
    """What fails in a zip-format checkpoint's members (a CRC, a header), or None where all read back (or for a file
    that is no zip at all: ``torch.load`` says what it is)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile:
        return None
    except (OSError, EOFError, ValueError, NotImplementedError, zlib.error) as error:
        return f"a member cannot be read ({error})"
    return None if bad is None else f"member {bad} fails its CRC check"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load`` of a Lightning checkpoint on the CPU; a ``CheckpointError`` naming the file and its size
    when it is empty, truncated or not a checkpoint at all."""
    path = Path(path)
    size = path.stat().st_size
    advice = "point --ckpt_path at a complete .ckpt file (a run stopped while saving leaves a partial one)"
    if size == 0:
        raise CheckpointError(f"{path}: the checkpoint is empty (0 bytes); {advice}")
    # torch.load reads a damaged tensor without a word (it does not check the zip's CRCs): check them first.
    damage = _damaged_member(path)
    if damage is not None:
        raise CheckpointError(f"{path} ({size:,} bytes): {damage} (the file is damaged); {advice}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (
        EOFError,
        RuntimeError,
        OSError,
        ValueError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        zlib.error,
    ) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0].split(". ")[0]  # torch's first sentence
        raise CheckpointError(f"{path} ({size:,} bytes): not a readable checkpoint ({reason}); {advice}") from error
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(f"{path} ({size:,} bytes): not a Lightning checkpoint (no state_dict); {advice}")
    return state
