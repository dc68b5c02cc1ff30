"""The log's streams and their replay plans at one moment, the input of every query view."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import blake3
import pyarrow as pa

from ..errors import NotFoundError, SchemaMismatchError
from ..manifest import Manifest
from ..record import evolve_schema, full_schema
from ..replay import Span, shape
from ..view import _END, HeadBatches, _Readable

if TYPE_CHECKING:
    from ..log import Log

__all__ = ["StreamPlan", "records_schema", "take_snapshot"]

At = datetime | str | None
"""A point in time for `at=` (a datetime, naive meaning UTC, or an ISO 8601 string)."""


@dataclass(frozen=True)
class StreamPlan:
    """One stream's replay as `Stream.read()` would return it: spans, heads and read schema."""

    name: str
    readable: _Readable
    manifest: Manifest
    heads: HeadBatches
    spans: tuple[Span, ...]
    schema: pa.Schema

    @classmethod
    def of(cls, readable: _Readable) -> StreamPlan:
        """Plan `readable` (a live stream or a time-travel view) now."""
        manifest, heads, spans, schema = readable._plan()
        return cls(readable.name, readable, manifest, heads, tuple(spans), _sql_names(schema))

    @property
    def next_offset(self) -> int:
        """The offset after the replay's last record."""
        if self.heads:
            start, _, batches = self.heads[-1]
            return start + sum(b.num_rows for b in batches)
        return self.manifest.next_offset

    def state_key(self) -> str:
        """A digest that changes whenever the replay can: a new commit or new head records."""
        heads = ",".join(f"{s}+{sum(b.num_rows for b in bs)}" for s, _, bs in self.heads)
        text = f"{self.name}\0{self.manifest.generation}\0{self.manifest.root}\0{heads}"
        return blake3.blake3(text.encode()).hexdigest()[:24]

    def head_table(self) -> pa.Table:
        """The unsealed records shaped to the read schema."""
        own = Span(self.name, self.manifest, 0, _END)
        batches = [shape(b, self.schema, own) for _, _, bs in self.heads for b in bs]
        return pa.Table.from_batches(batches, schema=self.schema)


def _sql_names(schema: pa.Schema) -> pa.Schema:
    """`schema` without the columns whose names differ from an earlier one's only by case:
    SQL cannot tell them apart (and DuckDB would read the earlier column's values for both)."""
    seen: set[str] = set()
    fields = []
    for f in schema:
        if f.name.lower() not in seen:
            seen.add(f.name.lower())
            fields.append(f)
    return pa.schema(fields)


def take_snapshot(log: Log, at: At = None) -> list[StreamPlan]:
    """Every stream's plan, sorted by name; with `at`, each stream as of that time (streams
    created later are left out, and unsealed records are not part of any past)."""
    log._check_open()
    plans = []
    for name in log._stream_names():
        stream = log.stream(name)
        if at is None:
            plans.append(StreamPlan.of(stream))
            continue
        try:
            view = stream.as_of(at)
        except NotFoundError:
            continue  # created after `at`
        plans.append(StreamPlan.of(view))
    return plans


def records_schema(plans: list[StreamPlan]) -> pa.Schema:
    """The schema of the cross-branch relation: `_branch`, the system columns (with
    `_origin_stream` / `_origin_offset`, so that queries over it work on any log), then every
    user column of every stream, widened as schema evolution would.

    A column that two streams (of unrelated roots) give types no widening reconciles is left
    out (no type holds both without loss), and so are columns spelled like an earlier one but
    for case.
    """
    user: dict[str, pa.Field[Any]] = {}
    conflicts: set[str] = set()
    spelling: dict[str, str] = {}  # SQL names are case-insensitive: the first spelling wins
    for plan in plans:
        for f in plan.schema:
            if f.name.startswith("_") or f.name in conflicts:
                continue
            if spelling.setdefault(f.name.lower(), f.name) != f.name:
                continue
            old = user.get(f.name)
            try:
                merged = evolve_schema(pa.schema([old]) if old else None, pa.schema([f]))
            except SchemaMismatchError:
                del user[f.name]
                conflicts.add(f.name)
                continue
            user[f.name] = merged.field(0)
    system = full_schema(pa.schema(list(user.values())), origin=True)
    return pa.schema([pa.field("_branch", pa.string(), nullable=False), *system])
