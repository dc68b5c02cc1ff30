"""The read plan: one `ReplayPlan` behind `read`, `reader`, `scan`, `commits` and the DuckDB
views (DESIGN §8).

A plan freezes, at one moment, what a stream's replay is: the manifest it replays, the spans of
segment files (its ancestors' and its own, see `replay`), the unsealed heads after them, and
the read schema. Live streams and time-travel views differ only in how the plan is made
(`live_plan` / `plan_at`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import blake3
import pyarrow as pa
import pyarrow.parquet as pq

from ..commit import Commit
from ..errors import IntegrityError, InvalidInputError, TransitError
from ..manifest import Manifest, SegmentRef
from ..record import empty_table, full_schema
from ..segments.head import HeadBatches
from ..segments.parquet import open_segment, read_groups
from ..segments.prefetch import prefetch_spans
from .catalog import Catalog
from .replay import (
    Span,
    clip,
    has_origin_columns,
    iter_spans,
    replay_spans,
    shape,
    union_schema,
)

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "COMMITS_SCHEMA",
    "END",
    "READ_WORKERS",
    "ReplayPlan",
    "align_frame",
    "commits_table",
    "live_plan",
    "plan_at",
]

#: An offset past any stream's end.
END = 1 << 62
#: Threads of `read`'s pool (each decoding with pyarrow's own threads as well); with the
#: caller, `READ_WORKERS` threads work on a large read.
READ_WORKERS = max(2, min(8, os.cpu_count() or 2))
#: A read of segments totalling at most this many bytes is a small read: for a few small
#: files, handing each to a pool costs more than decoding it (10 files of 40 KB: 8 ms inline
#: vs 19 ms through the pools on 2 busy cores), so it is split in two halves only.
INLINE_READ_BYTES = 1 << 20
#: In a larger read, a segment of at least this many bytes has its row groups decoded by
#: several threads (a few row groups each); a smaller one is decoded whole by one.
SPLIT_SEGMENT_BYTES = 4 << 20
#: A small read of at least this many segments is split between the caller and one thread of
#: the pool (a fresh handle's read of 10 segments of 1,000 records: the pyarrow decoding of
#: each, about 0.5 ms, is most of the read).
SPLIT_READ_SEGMENTS = 4

COMMITS_SCHEMA = pa.schema(
    [  # type: ignore[arg-type]
        ("generation", pa.int64()),
        ("time", pa.string()),
        ("root", pa.string()),
        ("prev_root", pa.string()),
        ("writer_id", pa.string()),
        ("writer_epoch", pa.int64()),
        ("actions", pa.list_(pa.string())),
        ("first_offset", pa.int64()),
        ("last_offset", pa.int64()),
        ("records", pa.int64()),
    ]
)


def commits_table(commits: list[Commit]) -> pa.Table:
    """Commits as an Arrow table, one row per commit (see `Stream.commits`)."""
    rows = []
    for c in commits:
        segs = [a for a in c["actions"] if a.get("type") == "add_segment"]
        rows.append(
            {
                "generation": c["generation"],
                "time": c["time"],
                "root": c["root"],
                "prev_root": c["prev_root"],
                "writer_id": c["writer"].get("id"),
                "writer_epoch": c["writer"].get("epoch"),
                "actions": [a.get("type") for a in c["actions"]],
                "first_offset": segs[0]["first_offset"] if segs else None,
                "last_offset": segs[-1]["last_offset"] if segs else None,
                "records": sum(a["records"] for a in segs),
            }
        )
    return pa.Table.from_pylist(rows, schema=COMMITS_SCHEMA)


@dataclass(frozen=True)
class ReplayPlan:
    """One stream's replay at one moment: spans of segments, unsealed heads, read schema."""

    catalog: Catalog
    name: str
    manifest: Manifest
    heads: HeadBatches
    spans: tuple[Span, ...]
    schema: pa.Schema

    @classmethod
    def of(cls, catalog: Catalog, name: str, manifest: Manifest, heads: HeadBatches) -> ReplayPlan:
        """Plan the replay of `manifest` followed by `heads`."""
        spans = replay_spans(catalog, manifest)
        own = [manifest.schema] if manifest.schema is not None else []
        user = union_schema(spans, [*own, *(u for _, u, _ in heads)])
        schema = full_schema(user, origin=has_origin_columns(spans))
        return cls(catalog, name, manifest, heads, tuple(spans), schema)

    @property
    def next_offset(self) -> int:
        """The offset after the replay's last record."""
        if self.heads:
            start, _, batches = self.heads[-1]
            return start + sum(b.num_rows for b in batches)
        return self.manifest.next_offset

    def state_key(self) -> str:
        """A digest that changes whenever the replay can: a new commit or new head records."""
        known: str | None = self.__dict__.get("_state_key")  # computed once per plan
        if known is None:
            heads = ",".join(f"{s}+{sum(b.num_rows for b in bs)}" for s, _, bs in self.heads)
            text = f"{self.name}\0{self.manifest.generation}\0{self.manifest.root}\0{heads}"
            known = blake3.blake3(text.encode()).hexdigest()[:24]
            object.__setattr__(self, "_state_key", known)
        return known

    def head_table(self) -> pa.Table:
        """The unsealed records shaped to the read schema."""
        own = Span(self.name, self.manifest, 0, END)
        batches = [shape(b, self.schema, own) for _, _, bs in self.heads for b in bs]
        return pa.Table.from_batches(batches, schema=self.schema)

    def check_files(self) -> None:
        """Verify every local segment file the replay reads against its commit's BLAKE3
        (see `Catalog.segment_file`): the DuckDB views read these files directly. Segments of
        a remote store are verified as they are fetched into the cache, so nothing is fetched
        here.

        Raises:
            IntegrityError: a file is missing or damaged (the message names it and the stream).
        """
        if self.catalog.store.local_path("") is None:
            return
        for span in self.spans:
            for seg in span.manifest.segments:
                if seg.last_offset >= span.lo and seg.first_offset < span.hi:
                    self.catalog.segment_file(seg, span.origin)

    def commits(self) -> pa.Table:
        """The commit log through the planned generation, as an Arrow table."""
        history = self.catalog.commits(self.name)[: self.manifest.generation + 1]
        return commits_table(history)

    # --- reading --------------------------------------------------------------------------

    def batches(
        self, start: int | None, end: int | None, columns: list[str] | None
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """The read schema and the record batches with `start <= _offset < end`."""
        schema, spans, lo, hi, read_columns = self._clipped(start, end, columns)
        return schema, self._iter(spans, lo, hi, schema, read_columns)

    def _clipped(
        self, start: int | None, end: int | None, columns: list[str] | None
    ) -> tuple[pa.Schema, list[Span], int, int, list[str] | None]:
        """Check a read's arguments; return its schema, spans, offset range and the stored
        columns to read (None: all)."""
        schema = self.schema
        if columns is not None:
            if isinstance(columns, str):
                raise InvalidInputError("columns must be a list of names, not a string")
            unknown = [c for c in columns if c not in schema.names]
            if unknown:
                raise InvalidInputError(
                    f"stream {self.name!r} has no column(s) {unknown}; its columns are "
                    f"{schema.names}"
                )
            schema = pa.schema([schema.field(c) for c in columns])
        for label, value in (("start", start), ("end", end)):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 0
            ):
                raise InvalidInputError(f"{label} must be an offset >= 0, not {value!r}")
        lo = 0 if start is None else start
        hi = END if end is None else max(end, lo)
        read_columns = None if columns is None else [*columns, "_stream", "_offset"]
        return schema, clip(list(self.spans), lo, hi), lo, hi, read_columns

    def _iter(
        self,
        spans: list[Span],
        lo: int,
        hi: int,
        schema: pa.Schema,
        columns: list[str] | None,
    ) -> Iterator[pa.RecordBatch]:
        prefetch_spans(self.catalog, spans)  # remote segments: fetched in parallel first
        yield from iter_spans(self.catalog, spans, schema, columns)
        yield from self._head_batches(lo, hi, schema)

    def _head_batches(self, lo: int, hi: int, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        own = Span(self.name, self.manifest, 0, END)
        for start, _, batches in self.heads:
            offset = start
            for batch in batches:
                n = batch.num_rows
                if offset + n > lo and offset < hi:
                    a = max(0, lo - offset)
                    yield shape(batch.slice(a, min(n, hi - offset) - a), schema, own)
                offset += n

    def read(
        self, start: int | None = None, end: int | None = None, columns: list[str] | None = None
    ) -> pa.Table:
        """The records with `start <= _offset < end` as one table.

        Every segment is verified against its BLAKE3 before it is opened
        (`Catalog.segment_file`: fetched into the verified cache first for a remote store).
        The caller and `READ_WORKERS - 1` threads of a pool take the segments in turn and
        decode each whole, except large ones, whose row groups they share a few at a time;
        a small read is split in two halves (the caller's and one thread's). The result is
        assembled from the decoded batches in offset order without copying them.
        """
        schema, spans, lo, hi, read_columns = self._clipped(start, end, columns)
        prefetch_spans(self.catalog, spans)  # remote segments: fetched in parallel first
        pieces = [
            (seg, span)
            for span in spans
            for seg in span.manifest.segments
            if seg.last_offset >= span.lo and seg.first_offset < span.hi
        ]
        catalog = self.catalog

        opened: list[pa.NativeFile] = []

        def plan(item: tuple[SegmentRef, Span]) -> list[_Task]:
            seg, span = item
            for attempt in range(_EVICTED_RETRIES + 1):
                source = catalog.segment_file(seg, span.origin)  # verified against its BLAKE3
                try:
                    with _reading(catalog, seg, span):
                        whole = span.lo <= seg.first_offset and span.hi > seg.last_offset
                        file, pf, tasks, names = open_segment(
                            source, span.lo, span.hi, read_columns, whole=whole, digest=seg.blake3
                        )
                    break
                except IntegrityError as e:
                    # A cached copy of a remote segment evicted between its check and its
                    # open (another thread's fetch made room): fetch and check it again.
                    evicted = isinstance(e.__cause__, FileNotFoundError)
                    if not evicted or catalog.store.local_path(seg.path) is not None:
                        raise
                    if attempt == _EVICTED_RETRIES:
                        raise
            opened.append(file)  # held open until decoded: a cache eviction cannot remove it
            # One task decodes with the reader that read the footer; several (decoded at once
            # by several threads) each make their own from the footer's metadata.
            meta = pf if len(tasks) == 1 else pf.metadata
            return [_Task(file, meta, groups, names, seg, span) for groups in tasks]

        def decode(task: _Task) -> list[pa.RecordBatch]:
            seg, span = task.seg, task.span
            with _reading(catalog, seg, span):
                table = read_groups(
                    task.source, task.meta, task.groups, task.names, seg, span.lo, span.hi
                )
            return [shape(b, schema, span) for b in table.to_batches()]

        def load(items: list[tuple[SegmentRef, Span]]) -> list[list[pa.RecordBatch]]:
            return [decode(t) for p in items for t in plan(p)]

        def run(item: tuple[SegmentRef, Span] | _Task) -> list[pa.RecordBatch]:
            if isinstance(item, _Task):
                return decode(item)
            return [b for t in plan(item) for b in decode(t)]

        pending: list[Future[Any]] = []
        try:
            if sum(seg.bytes for seg, _ in pieces) <= INLINE_READ_BYTES:
                # A small read: the caller decodes half of the segments and one thread of the
                # pool the other half (one hand-off); a read of a few runs in the caller.
                if len(pieces) < SPLIT_READ_SEGMENTS:
                    return self._assemble(load(pieces), lo, hi, schema)
                half = (len(pieces) + 1) // 2
                pending.append(_read_pool().submit(load, pieces[half:]))
                parts = load(pieces[:half])
                parts += pending[0].result()
                return self._assemble(parts, lo, hi, schema)
            # One list of work in reading order: a large segment's row groups (planned here:
            # its footer) as tasks of a few, each other segment whole (verified, opened and
            # decoded by one thread). The caller and the pool's threads take the next item
            # until none is left: no hand-off per segment.
            work: list[tuple[SegmentRef, Span] | _Task] = []
            for piece in pieces:
                if piece[0].bytes >= SPLIT_SEGMENT_BYTES:
                    work += plan(piece)
                else:
                    work.append(piece)
            parts = _run_all(run, work)
        except BaseException:
            for f in pending:
                f.cancel()
            wait(pending)  # tasks already running finish before their files are closed
            raise
        finally:
            for file in opened:
                file.close()
        return self._assemble(parts, lo, hi, schema)

    def _assemble(
        self, parts: list[list[pa.RecordBatch]], lo: int, hi: int, schema: pa.Schema
    ) -> pa.Table:
        batches = [b for part in parts for b in part]
        batches += self._head_batches(lo, hi, schema)
        return pa.Table.from_batches(batches, schema=schema)

    def reader(
        self, start: int | None = None, end: int | None = None, columns: list[str] | None = None
    ) -> pa.RecordBatchReader:
        """Like `read`, as a `RecordBatchReader` holding about one row group in memory."""
        schema, batches = self.batches(start, end, columns)
        return pa.RecordBatchReader.from_batches(schema, batches)

    def scan(self) -> pl.LazyFrame:
        """The replay as a polars LazyFrame; filters and projections reach the Parquet files."""
        import polars as pl  # imported on use: it adds ~0.2 s to every CLI start

        target = pl.from_arrow(empty_table(self.schema))
        assert isinstance(target, pl.DataFrame)
        frames: list[pl.LazyFrame] = []
        prefetch_spans(self.catalog, self.spans)  # remote segments: fetched in parallel first
        for span in self.spans:
            for seg in span.manifest.segments:
                if seg.last_offset < span.lo or seg.first_offset >= span.hi:
                    continue
                frame = pl.scan_parquet(self.catalog.segment_file(seg, span.origin))
                if span.lo > seg.first_offset or span.hi <= seg.last_offset:
                    frame = frame.filter(pl.col("_offset").is_between(span.lo, span.hi - 1))
                frames.append(_span_frame(frame, span))
        own = Span(self.name, self.manifest, 0, END)
        for _, _, batches in self.heads:
            if batches:
                tail = pa.Table.from_batches([shape(b, self.schema, own) for b in batches])
                head = pl.from_arrow(tail)
                assert isinstance(head, pl.DataFrame)
                frames.append(head.lazy())
        if not frames:
            return target.lazy()
        return pl.concat([align_frame(f, target) for f in frames], how="vertical")


@dataclass(frozen=True)
class _Task:
    """Row groups of one verified segment file that one worker of `read` decodes."""

    source: pa.NativeFile
    meta: pq.FileMetaData | pq.ParquetFile
    groups: list[int]
    names: list[str] | None
    seg: SegmentRef
    span: Span


_W = TypeVar("_W")
_POOL: tuple[int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


def _read_pool() -> ThreadPoolExecutor:
    """The process's pool of `read` (`READ_WORKERS` threads).

    Shared by every read (starting threads per read cost a few milliseconds, as much as a
    small read itself) and made again in a forked child, which inherits no threads.
    """
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid():
            _POOL = (os.getpid(), ThreadPoolExecutor(READ_WORKERS, "transit-read"))
        return _POOL[1]


def _run_all(run: Callable[[_W], list[pa.RecordBatch]], work: list[_W]) -> list[Any]:
    """`[run(w) for w in work]`, by the caller and `READ_WORKERS - 1` threads of the pool,
    each taking the next item not taken yet. After a failure no item is started any more, and
    the failure of the earliest item is raised once every running one has finished (the items
    before it were all taken, so they all ran)."""
    results: list[Any] = [None] * len(work)
    failed: dict[int, BaseException] = {}
    taken = itertools.count()

    def worker() -> None:
        for i in taken:
            if i >= len(work) or failed:
                return
            try:
                results[i] = run(work[i])
            except BaseException as e:
                failed[i] = e
                return

    helpers = [_read_pool().submit(worker) for _ in range(min(READ_WORKERS, len(work)) - 1)]
    try:
        worker()
    finally:
        wait(helpers)
    if failed:
        raise failed[min(failed)]
    return results


#: How often a read fetches again a cached segment copy evicted before it was opened.
_EVICTED_RETRIES = 3


@contextlib.contextmanager
def _reading(catalog: Catalog, seg: SegmentRef, span: Span) -> Iterator[None]:
    """Turn a failure to read a (verified) segment file into an `IntegrityError` naming it."""
    what = f"segment {catalog.uri}/{seg.path} of stream {span.origin!r}"
    try:
        yield
    except TransitError:
        raise
    except FileNotFoundError as e:
        raise IntegrityError(f"{what} is referenced by a commit but missing") from e
    except (OSError, pa.ArrowInvalid) as e:
        raise IntegrityError(f"{what} cannot be read: {e}") from e


def _span_frame(frame: pl.LazyFrame, span: Span) -> pl.LazyFrame:
    import polars as pl

    exprs = []
    if span.provenance:
        have = frame.collect_schema()
        if "_origin_stream" not in have:
            exprs.append(pl.col("_stream").cast(pl.String).alias("_origin_stream"))
        if "_origin_offset" not in have:
            exprs.append(pl.col("_offset").alias("_origin_offset"))
    if span.label is not None:
        exprs.append(pl.lit(span.label, pl.String).alias("_stream"))
    if span.shift:
        exprs.append((pl.col("_offset") + span.shift).alias("_offset"))
    return frame.with_columns(exprs) if exprs else frame


def align_frame(frame: pl.LazyFrame, target: pl.DataFrame) -> pl.LazyFrame:
    """`frame` with exactly `target`'s columns and types (missing ones as nulls)."""
    import polars as pl

    have = frame.collect_schema()
    exprs: list[Any] = []
    for name, dtype in target.schema.items():
        expr = pl.col(name) if name in have else pl.lit(None)
        exprs.append(expr.cast(dtype).alias(name))
    return frame.select(exprs)


def live_plan(catalog: Catalog, name: str) -> ReplayPlan:
    """The latest replay of `name`, this machine's unsealed records included."""
    manifest, heads = catalog.live_state(name)
    return ReplayPlan.of(catalog, name, manifest, heads)


def plan_at(catalog: Catalog, name: str, manifest: Manifest) -> ReplayPlan:
    """The replay of `name` at `manifest`'s generation (no unsealed records)."""
    catalog.check_open()
    return ReplayPlan.of(catalog, name, manifest, [])
