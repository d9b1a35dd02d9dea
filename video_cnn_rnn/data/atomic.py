"""Files written atomically: to a temporary name beside the file, then renamed over it (``os.replace``), so a
reader sees the whole file or none, two writers at once leave one whole file, and a killed writer leaves a
``.*.tmp`` that nothing reads. The feature store's entries and views, proxies and their notes, and the probe's
memory of clean videos are written this way.
"""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_beside(file: Path) -> Path:
    """A temporary name beside ``file``, unique to this process and call: ``.<stem>.<pid>.<random>.tmp``."""
    return file.with_name(f".{file.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_path(file: Path) -> Iterator[Path]:
    """A temporary path to write ``file``'s content to: renamed over ``file`` when the block ends, removed when it
    raises. Makes ``file``'s folder."""
    file.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_beside(file)
    try:
        yield temporary
        os.replace(temporary, file)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomically(file: Path, text: str) -> None:
    with atomic_path(file) as temporary:
        temporary.write_text(text)
