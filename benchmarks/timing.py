"""What every benchmark shares: interleaved timing, so a burst of load on a shared machine hits every case alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def time_interleaved(
    fns: list[Callable[[], Any]], repeats: int, warmup: int = 1, sync: Callable[[], None] = lambda: None
) -> list[float]:
    """Median wall seconds of each function, running them alternately (a, b, c, a, b, c, ...).

    ``sync`` waits for queued device work (``torch.cuda.synchronize``) before a clock is read.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            sync()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]
