"""Fetching the segments a read needs in parallel, before it reads them (DESIGN §3).

A cold read of a remote log used to fetch its segments one after another, each only when the
reader reached it. Now a read starts fetching them all into the verified local cache with a
bounded pool of threads (`prefetch_spans`: each fetch is one GET, a BLAKE3 check and an atomic
write, the work of `SegmentCache.path`, which fetches a given segment once at a time) and
reads each segment as soon as it is there, so fetching overlaps decoding. A read fetches at
most half the cache's budget ahead, so that nothing it fetched is evicted before it gets
there; the rest is fetched on demand, as before. `prefetch` is the blocking form, for
`hydrate`; long fetches show a progress bar on a terminal.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Protocol

from tqdm import tqdm

from ..errors import TransitError
from ..manifest import Manifest, SegmentRef
from ..storage import ObjectStore
from .cache import SegmentCache

__all__ = [
    "DEFAULT_WORKERS",
    "PROGRESS_BYTES",
    "SegmentSource",
    "SpanLike",
    "needed_segments",
    "prefetch",
    "prefetch_spans",
]

#: Concurrent fetches: enough to hide an object store's latency, few enough to be polite.
DEFAULT_WORKERS = 8
#: A fetch at least this large shows a progress bar when stderr is a terminal.
PROGRESS_BYTES = 256 * 1024 * 1024


class SegmentSource(Protocol):
    """What prefetching needs of a log's catalog."""

    @property
    def store(self) -> ObjectStore:
        """The log's object store."""

    @property
    def cache(self) -> SegmentCache:
        """The verified local cache of remote segments."""

    def segment_file(self, seg: SegmentRef, stream: str | None = None) -> str:
        """A local, verified file with the segment's bytes (fetching it if needed)."""


class SpanLike(Protocol):
    """A replay span: records `lo <= offset < hi` of `origin`'s segments in `manifest`."""

    @property
    def origin(self) -> str:
        """The stream holding the records."""

    @property
    def manifest(self) -> Manifest:
        """The origin's manifest at the pinned generation."""

    @property
    def lo(self) -> int:
        """First stored offset of the span."""

    @property
    def hi(self) -> int:
        """Stored offset after the span."""


def needed_segments(spans: Iterable[SpanLike]) -> list[tuple[SegmentRef, str]]:
    """The segments the spans read (each once, in reading order), with their stream."""
    seen: set[str] = set()
    out = []
    for span in spans:
        for seg in span.manifest.segments:
            if seg.last_offset >= span.lo and seg.first_offset < span.hi and seg.path not in seen:
                seen.add(seg.path)
                out.append((seg, span.origin))
    return out


def prefetch(
    source: SegmentSource,
    segments: Sequence[tuple[SegmentRef, str]],
    *,
    workers: int = DEFAULT_WORKERS,
    budget: int | None = None,
    progress: bool | None = None,
    desc: str = "fetch",
) -> int:
    """Fetch the segments not cached yet into the cache, `workers` at a time, and return how
    many were fetched. Nothing happens for a store with local files.

    Args:
        source: the catalog.
        segments: (segment, stream) pairs in the order they will be read.
        workers: the pool's size.
        budget: fetch at most about this many bytes (the first segments first).
        progress: show a progress bar (None: on a terminal, for fetches of at least
            `PROGRESS_BYTES`).
        desc: the progress bar's label.

    Raises:
        IntegrityError, StorageError: a fetch failed (the first failure in reading order,
            once every fetch already started has finished).
    """
    if source.store.local_path("") is not None:
        return 0
    todo: list[tuple[SegmentRef, str]] = []
    total = 0
    for seg, stream in segments:
        if source.cache.cached(seg):
            continue
        if budget is not None and todo and total + seg.bytes > budget:
            break
        todo.append((seg, stream))
        total += seg.bytes
    if not todo:
        return 0
    show = progress if progress is not None else total >= PROGRESS_BYTES and sys.stderr.isatty()
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=desc) if show else None
    sizes: dict[Future[str], int] = {}
    try:
        with ThreadPoolExecutor(max(1, min(workers, len(todo))), "transit-fetch") as pool:
            for seg, stream in todo:
                sizes[pool.submit(source.segment_file, seg, stream)] = seg.bytes
            for future in as_completed(sizes):
                if bar is not None:
                    bar.update(sizes[future])
                if future.exception() is not None:
                    for other in sizes:
                        other.cancel()
                    break
    finally:
        if bar is not None:
            bar.close()
    for future in sizes:  # submission (= reading) order
        if not future.cancelled():
            future.result()  # raises the first failure
    return len(todo)


def prefetch_spans(source: SegmentSource, spans: Iterable[SpanLike]) -> None:
    """Start fetching the remote segments a read of `spans` needs, `DEFAULT_WORKERS` at a
    time, in reading order, and return at once: the reader then reads each segment as soon
    as it is in the cache (it waits for a segment being fetched, `SegmentCache.path`, and
    fetches one no worker has started yet itself). At most half the cache's budget is
    fetched ahead. A failed background fetch caches nothing; the reader fetches that segment
    again when it gets there and raises the error."""
    if source.store.local_path("") is not None:
        return
    needed = [(s, name) for s, name in needed_segments(spans) if not source.cache.cached(s)]
    if len(needed) < 2:  # one segment: the reader fetches it when it gets there, no pool
        return
    budget, total = source.cache.max_bytes // 2, 0
    pool = ThreadPoolExecutor(min(DEFAULT_WORKERS, len(needed)), "transit-prefetch")
    for seg, stream in needed:
        total += seg.bytes
        if total > budget and total > seg.bytes:
            break
        pool.submit(_quietly, source, seg, stream)
    pool.shutdown(wait=False)  # the workers finish the queue, then exit


def _quietly(source: SegmentSource, seg: SegmentRef, stream: str) -> None:
    with contextlib.suppress(TransitError, OSError):  # the reader meets it again, and raises
        source.segment_file(seg, stream)
