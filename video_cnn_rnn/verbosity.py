"""How much the command line says: quiet by default (known third-party noise filtered), everything with ``--verbose``.

Only the command line calls ``quiet_third_party``: a library user who imports the package keeps every warning. The
project's own warnings are never filtered. ``verbose()`` is the one switch other modules read (e.g. to keep a
traceback): ``--verbose`` anywhere on the command line, or ``VIDEO_CNN_RNN_VERBOSE=1`` in the environment.

Standard library only, so the command line can read it before anything heavy is imported.
"""

import logging
import os
import sys
import warnings
from typing import Any

FLAG = "--verbose"
VARIABLE = "VIDEO_CNN_RNN_VERBOSE"

# Warnings from Lightning and torch that say nothing about the user's run (regexes on the message). Each was seen on
# every command of the walk-through with the pinned versions.
THIRD_PARTY_WARNINGS: tuple[str, ...] = (
    r"No seed found, seed set to",  # LightningCLI seeds 0 when no --seed_everything is given; the seed is logged
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",  # torch 2.14 deprecation hit inside Lightning's _pytree
)
# Only when a checkpoint is evaluated (validate / test / predict), where they are expected.
EVALUATION_WARNINGS: tuple[str, ...] = (
    # The checkpoint's callback state names the folder fit saved it in, never the evaluation's.
    r"The dirpath has changed from .* to ",
    # An evaluation writing into the folder an earlier one wrote (its metrics.csv is replaced).
    r"Experiment logs directory .* exists and is not empty",
)
EVALUATIONS = ("validate", "test", "predict")
# Log records (Lightning's rank-zero logger) that advertise other products.
THIRD_PARTY_LOG_LINES: tuple[str, ...] = ("Tip: For seamless cloud",)
_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")

_verbose = False


def verbose() -> bool:
    """Whether the user asked for everything: ``--verbose`` (taken off the arguments by ``take_verbose_flag``, or
    still in ``sys.argv``) or ``VIDEO_CNN_RNN_VERBOSE`` set to anything but ``0``."""
    return _verbose or FLAG in sys.argv[1:] or os.environ.get(VARIABLE, "") not in ("", "0")


def take_verbose_flag(argv: list[str]) -> list[str]:
    """``argv`` without ``--verbose``, which no subcommand parser knows; remembers that it was there."""
    global _verbose
    if FLAG in argv:
        _verbose = True
    return [arg for arg in argv if arg != FLAG]


class _DropLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(line in message for line in THIRD_PARTY_LOG_LINES)


def quiet_third_party(subcommand: str | None = None) -> None:
    """Filter ``THIRD_PARTY_WARNINGS`` and ``THIRD_PARTY_LOG_LINES`` (and ``EVALUATION_WARNINGS`` for a
    ``subcommand`` in ``EVALUATIONS``), unless ``verbose()``. Idempotent."""
    if verbose():
        return
    evaluation = EVALUATION_WARNINGS if subcommand in EVALUATIONS else ()
    for pattern in (*THIRD_PARTY_WARNINGS, *evaluation):
        warnings.filterwarnings("ignore", message=pattern)
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _DropLines) for existing in logger.filters):
            logger.addFilter(_DropLines())


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record comes (tests and tools swap it), as logging's last resort does."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def show_package_logs() -> None:
    """The package's own INFO lines (e.g. which backbone weights were loaded) on stderr, once, from rank 0 only.

    Library code logs to ``logging.getLogger("video_cnn_rnn...")`` and configures nothing; the command line shows it.
    """
    logger = logging.getLogger("video_cnn_rnn")
    if any(getattr(handler, "_video_cnn_rnn", False) for handler in logger.handlers):
        return
    handler = _StderrHandler()
    handler._video_cnn_rnn = True  # type: ignore[attr-defined]
    # Under DDP every rank builds the model; the launcher sets these for the other ranks.
    handler.addFilter(lambda _: os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose() else logging.INFO)
