"""``video-cnn-rnn proxy``: build the proxies of videos ahead of training (``data.proxy_cache``), with progress.

    video-cnn-rnn proxy data/phone/train.csv data/phone/test.csv --proxy_cache cache/proxies --img_size 160 \
        --crop pad --jobs 2

Sources are what ``data.predict`` takes: video files, folders (searched recursively) and CSVs. ``--img_size`` and
``--crop`` must be the recipe's: they set the proxies' short side, which is in their key (``proxies.py``). A line
every ``--every`` videos says how far it got; the last one counts what was built, reused, read as is (with why)
and what failed. Exits 1 when some proxy could not be written.
"""

import argparse
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from video_cnn_rnn.data.annotations import read_unlabelled
from video_cnn_rnn.data.crops import check_crop
from video_cnn_rnn.data.proxies import Outcome, ProxySettings, ProxyStore

_STORE: ProxyStore | None = None  # each worker process's own


def _start_worker(store: ProxyStore) -> None:
    global _STORE
    _STORE = store


def _prepare(path: str) -> tuple[str, Outcome]:
    try:
        return path, _STORE.prepare(path)
    except OSError as error:  # the source vanished or cannot be read: nothing to proxy
        return path, Outcome("failed", path, f"{type(error).__name__}: {error}")


def _outcomes(store: ProxyStore, paths: list[str], jobs: int) -> Iterable[tuple[str, Outcome]]:
    if jobs <= 1:
        _start_worker(store)
        yield from map(_prepare, paths)
        return
    # fork where there is one, as DataLoader workers do: nothing here has started threads yet, and spawning
    # re-imports torch in every worker (tens of seconds on a busy machine)
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(jobs, _start_worker, (store,)) as pool:
        yield from pool.imap_unordered(_prepare, paths)


def build_proxies(
    store: ProxyStore, paths: list[str], jobs: int = 1, every: int = 10, report: Callable[[str], None] = print
) -> Counter:
    """Prepare the proxy of every path (``jobs`` processes), reporting every ``every`` videos; returns the counts
    of each ``Outcome.status``."""
    counts: Counter = Counter()
    started = time.perf_counter()
    for done, (path, outcome) in enumerate(_outcomes(store, paths, jobs), 1):
        counts[outcome.status] += 1
        if outcome.status in ("original", "failed"):
            report(f"  {path}: {'read as is' if outcome.status == 'original' else 'failed'}: {outcome.reason}")
        if done % every == 0 or done == len(paths):
            elapsed = time.perf_counter() - started
            left = elapsed / done * (len(paths) - done)
            report(f"proxy: {done}/{len(paths)} videos, {elapsed:.0f} s (about {left:.0f} s left)")
    elapsed = time.perf_counter() - started
    summary = ", ".join(f"{name} {counts[status]}" for status, name in _NAMES.items())
    report(f"proxies in {store.root}: {summary} of {len(paths)} videos in {elapsed:.1f} s")
    return counts


_NAMES = {"built": "built", "reused": "reused", "original": "read as is", "failed": "failed"}


def proxy_main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="video-cnn-rnn proxy",
        description="Build the upright, low-resolution, short-GOP proxies that data.proxy_cache decodes instead of "
        "the original videos.",
    )
    parser.add_argument("sources", nargs="+", help="video files, folders (searched recursively) or CSVs")
    parser.add_argument("--proxy_cache", required=True, help="the proxies' folder (data.proxy_cache)")
    parser.add_argument("--img_size", type=int, default=224, help="the recipe's data.img_size")
    parser.add_argument("--crop", default="centre", help="the recipe's data.crop: centre, pad or motion")
    parser.add_argument("--jobs", type=int, default=1, help="videos decoded at once (processes)")
    parser.add_argument("--every", type=int, default=10, help="a progress line every N videos")
    options = parser.parse_args(args)
    if options.img_size < 1 or options.jobs < 1 or options.every < 1:
        parser.error("--img_size, --jobs and --every must be positive")
    try:
        check_crop(options.crop)
    except ValueError as error:
        parser.error(f"--crop: {error}")
    root = Path(options.proxy_cache).resolve()
    videos = dict.fromkeys(path for path, _ in read_unlabelled(options.sources))
    paths = [path for path in videos if root not in Path(path).resolve().parents]  # not the proxies themselves
    store = ProxyStore(options.proxy_cache, ProxySettings.for_recipe(options.img_size, options.crop))
    print(f"proxy: {len(paths)} videos, short side {store.settings.short_side} px, {options.jobs} job(s)")
    counts = build_proxies(store, paths, options.jobs, options.every)
    if counts["failed"]:
        raise SystemExit(1)
