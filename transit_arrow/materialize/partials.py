"""Per-segment partial results of an incremental view, computed by Dask tasks over the scan
plan (`Materialization.refresh(dask=client)`, docs/scan_plan.md "Refreshing a view on Dask").

The records a refresh must process (replay offsets `start..through` of the branch) are cut
from the branch's scan plan into file spans. Each span becomes one task: it fetches its
segment from the log's store, verifies the bytes against the BLAKE3 the commit records
(`scanplan.read_file_span`, so nothing unverified is read), shapes the rows exactly as
`stream.read()` does and runs the view's partial SQL over them (per-group partial aggregates,
or a filter view's output rows) on a sandboxed DuckDB connection. The tasks return their
partial tables with the replay range and row count they read; the caller checks that the
ranges tile `start..through` exactly and that each task read every record of its range, then
combines the partials locally with the same exact combine step as a local refresh.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pyarrow as pa

from ..engine.catalog import Catalog
from ..engine.read import plan_at
from ..errors import IntegrityError
from ..manifest import Manifest
from ..scanplan import FileSpan, fetcher, read_file_span, scan_plan
from ..storage.memory import MemoryStore
from .sandbox import sandbox

__all__ = ["Partial", "clip_spans", "dask_partials", "span_partial"]


@dataclasses.dataclass(frozen=True)
class Partial:
    """What one task computed: the replay offsets it covered, the records it read and its
    partial table."""

    first: int
    last: int
    records: int
    table: pa.Table


def span_partial(span: FileSpan, *, schema: pa.Schema, filesystem: Any, sql: str) -> Partial:
    """Read one file span (verified against its BLAKE3) and run `sql` over it as `records`
    (runs on a Dask worker)."""
    records = read_file_span(span, schema, fetcher(filesystem))
    con = sandbox()
    try:
        con.register("records", records)
        table = con.sql(sql).to_arrow_table()
    finally:
        con.close()
    return Partial(span.replay_first, span.replay_last, records.num_rows, table)


def clip_spans(files: tuple[FileSpan, ...], start: int, through: int) -> list[FileSpan]:
    """The file spans holding replay offsets `start..through`, cut to that range."""
    out = []
    for f in files:
        lo, hi = max(f.replay_first, start), min(f.replay_last, through)
        if lo > hi:
            continue
        if (lo, hi) != (f.replay_first, f.replay_last):
            first, last = lo - f.shift, hi - f.shift
            f = dataclasses.replace(
                f,
                read_first=first,
                read_last=last,
                replay_first=lo,
                replay_last=hi,
                whole=first == f.first_offset and last == f.last_offset,
            )
        out.append(f)
    return out


def _filesystem(catalog: Catalog) -> Any:
    """What tasks fetch files from: the log's store (picklable), or None (the spans' URLs)
    for `memory://` logs, which only this process can read."""
    store = catalog.store
    return None if isinstance(getattr(store, "inner", store), MemoryStore) else store


def dask_partials(
    client: Any,
    catalog: Catalog,
    manifest: Manifest,
    start: int,
    through: int,
    sql: str,
) -> tuple[list[pa.Table], int]:
    """`sql` over replay offsets `start..through` of `manifest`'s stream, one Dask task per
    file span: the partial tables in replay order and the number of records read.

    Raises:
        IntegrityError: a segment does not match its BLAKE3, or the tasks' results do not
            cover `start..through` exactly once.
    """
    plan = scan_plan(plan_at(catalog, manifest.stream, manifest), heads="exclude")
    spans = clip_spans(plan.files, start, through)
    token = uuid.uuid4().hex[:12]
    futures = client.map(
        span_partial,
        spans,
        schema=plan.schema,
        filesystem=_filesystem(catalog),
        sql=sql,
        pure=False,
        key=[f"transit-partial-{token}-{s.replay_first}-{s.replay_last}" for s in spans],
    )
    results: list[Partial] = client.gather(futures)
    expected = start
    for r in results:
        if r.first != expected or r.records != r.last - r.first + 1:
            raise IntegrityError(
                f"the partial results of {manifest.stream!r} do not cover offsets {start}.."
                f"{through} exactly: a task covered {r.first}..{r.last} and read {r.records} "
                f"records where offset {expected} was next"
            )
        expected = r.last + 1
    if expected != through + 1:
        raise IntegrityError(
            f"the partial results of {manifest.stream!r} end at offset {expected - 1}, not "
            f"{through}"
        )
    return [r.table for r in results], through - start + 1
