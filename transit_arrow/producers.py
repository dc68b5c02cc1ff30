"""Idempotent producers: `append(data, producer=..., sequence=...)` is acknowledged once.

A producer is any string naming one sequential source of appends (a process, a client, an
agent run); it numbers its calls 0, 1, 2, ... When a call is retried (a timeout, a lost
connection, a crash before the ack arrived), the log recognises `(producer, sequence)` and
returns the `Ack` of the original call instead of appending again; a sequence that skips ahead
is refused. That makes retries safe over any transport.

**Where the state lives.** The last record of each producer call carries three reserved
`_headers` entries: `transit.producer`, `transit.sequence` and `transit.records` (how many
records the call appended). So the state is durable exactly when the records are (same append,
same durability), needs no change to the writer or the commit format, and survives reopen,
crashes and moves between machines. A process rebuilds it on its first producer append to a
stream by reading only the `_headers` column of the stream's replay (its ancestors' history
included), then keeps, per producer, the last sequence and the offsets of its latest
`_WINDOW` calls in memory; an older duplicate is looked up in the history. Header keys
starting with `transit.` are reserved: appends that supply them are refused.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .engine.catalog import Catalog
from .engine.read import live_plan
from .engine.writer import Ack, Writer, writer_for
from .errors import InvalidInputError, SchemaMismatchError
from .record import HEADERS_TYPE, coerce_input
from .typing import Durability

__all__ = [
    "PRODUCER_KEY",
    "RECORDS_KEY",
    "RESERVED_PREFIX",
    "SEQUENCE_KEY",
    "append_once",
    "check_producer",
    "screen_headers",
]

RESERVED_PREFIX = "transit."
PRODUCER_KEY = "transit.producer"
SEQUENCE_KEY = "transit.sequence"
RECORDS_KEY = "transit.records"

#: Calls per producer whose offsets are kept in memory (older duplicates read the history).
_WINDOW = 256
_MAX_PRODUCER = 255


def check_producer(producer: object, sequence: object) -> tuple[str, int]:
    """Validate a `(producer, sequence)` pair: a non-empty string of at most 255 printable
    characters, and an int >= 0."""
    if producer is None or sequence is None:
        raise InvalidInputError(
            "an idempotent append needs both producer= and sequence= (got only "
            f"{'sequence' if producer is None else 'producer'})"
        )
    if not isinstance(producer, str) or not producer:
        raise InvalidInputError(f"producer must be a non-empty string, not {producer!r}")
    if len(producer) > _MAX_PRODUCER or not producer.isprintable():
        raise InvalidInputError(
            f"producer must be at most {_MAX_PRODUCER} printable characters, not {producer!r}"
        )
    if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 0:
        raise InvalidInputError(f"sequence must be an int >= 0, not {sequence!r}")
    return producer, sequence


# --- reserved header keys ----------------------------------------------------------------------


def _refuse(keys: list[str]) -> None:
    raise InvalidInputError(
        f"header keys starting with {RESERVED_PREFIX!r} are reserved for idempotent producers "
        f"(found {sorted(set(keys))}); drop them from '_headers' (pass producer= and "
        "sequence= to append instead)"
    )


def _check_row(row: Any) -> None:
    if isinstance(row, Mapping):
        headers = row.get("_headers")
        if isinstance(headers, Mapping):
            bad = [str(k) for k in headers if str(k).startswith(RESERVED_PREFIX)]
            if bad:
                _refuse(bad)


def _check_column(table: pa.Table) -> None:
    if "_headers" not in table.column_names:
        return
    try:
        column = table.column("_headers").cast(HEADERS_TYPE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return  # not a map of strings: the writer refuses it, saying so
    for chunk in column.chunks:
        bad = [key for _, tags in _tags(chunk) for key in tags]
        if bad:
            _refuse(bad)


def screen_headers(data: Any) -> Any:
    """Refuse appended records whose `_headers` use the reserved `transit.` keys.

    Returns the data to append: `data` itself, or, for an Arrow producer that can be read only
    once (a `RecordBatchReader`, a DuckDB result, ...), the table it was read into.
    """
    if type(data) is dict and "_headers" not in data:
        return data  # the per-record fast path: nothing to look at
    if isinstance(data, bytes | bytearray | memoryview | str):
        return data
    if isinstance(data, Mapping):
        _check_row(data)
        return data
    if isinstance(data, list | tuple):
        for row in data:
            _check_row(row)
        return data
    table = coerce_input(data, None)
    _check_column(table)
    return table


def _tags(column: pa.Array[Any]) -> list[tuple[int, dict[str, str]]]:
    """`(row, {reserved key: value})` for the rows of a `_headers` array with reserved keys."""
    headers: Any = column  # a MapArray (keys, items and offsets are typed loosely by the stubs)
    if headers.null_count == len(headers):
        return []
    offsets = np.asarray(headers.offsets)
    lo, hi = int(offsets[0]), int(offsets[-1])
    if hi == lo:
        return []
    keys = headers.keys.slice(lo, hi - lo)
    hits = pc.starts_with(keys, RESERVED_PREFIX).to_numpy(zero_copy_only=False)
    where = np.flatnonzero(hits)
    if not len(where):
        return []
    where = where + lo
    rows = np.searchsorted(offsets, where, side="right") - 1
    names: list[str] = headers.keys.take(where).to_pylist()
    values: list[str] = headers.items.take(where).to_pylist()
    valid = headers.is_valid().to_numpy(zero_copy_only=False)
    out: dict[int, dict[str, str]] = {}
    for row, key, value in zip(rows.tolist(), names, values, strict=True):
        if valid[row]:
            out.setdefault(row, {})[key] = value
    return sorted(out.items())


# --- the state of one stream's producers -------------------------------------------------------


@dataclass(eq=False)
class _Producer:
    """One producer's state on one stream."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    last: int = -1  # the last sequence acknowledged (-1: none)
    acks: OrderedDict[int, tuple[int, int]] = field(default_factory=OrderedDict)
    epoch: int = -1  # the table epoch this state was taken from
    uncertain: bool = False  # an append failed midway: re-read the history before trusting it

    def record(self, sequence: int, first: int, last: int) -> None:
        self.last = max(self.last, sequence)
        self.acks[sequence] = (first, last)
        self.acks.move_to_end(sequence)
        while len(self.acks) > _WINDOW:
            self.acks.popitem(last=False)

    def absorb(self, other: _Producer) -> None:
        """Add what a read of the history found. What this process acknowledged itself is
        kept: a read that started before an append finished does not show it."""
        merged = dict(other.acks)
        merged.update(self.acks)
        self.acks = OrderedDict(sorted(merged.items())[-_WINDOW:])
        self.last = max(self.last, other.last)


@dataclass
class _Scan:
    """What a read of the history found: per producer, its last sequence and latest calls."""

    next_offset: int
    producers: dict[str, _Producer]


def _scan(catalog: Catalog, name: str, only: str | None = None) -> _Scan:
    """Read the `_headers` of `name`'s replay (this process's unsealed records included)."""
    plan = live_plan(catalog, name)
    found: dict[str, _Producer] = {}
    calls: dict[str, list[tuple[int, int, int]]] = {}
    for batch in plan.reader(columns=["_offset", "_headers"]):
        if not batch.num_rows:
            continue
        tagged = _tags(batch.column(1))
        if not tagged:
            continue
        offsets = batch.column(0)
        for row, tags in tagged:
            producer = tags.get(PRODUCER_KEY)
            if producer is None or (only is not None and producer != only):
                continue
            try:
                sequence = int(tags[SEQUENCE_KEY])
                records = int(tags[RECORDS_KEY])
            except (KeyError, ValueError):
                continue  # not written by this module (appends refuse such keys)
            last = offsets[row].as_py()
            calls.setdefault(producer, []).append((sequence, last - records + 1, last))
    for producer, entries in calls.items():
        state = found[producer] = _Producer()
        for sequence, first, last in sorted(entries)[-_WINDOW:]:
            state.record(sequence, first, last)
    return _Scan(plan.next_offset, found)


def _find(catalog: Catalog, name: str, producer: str, sequence: int) -> tuple[int, int] | None:
    """The offsets of an old call of `producer`, read from the history."""
    plan = live_plan(catalog, name)
    for batch in plan.reader(columns=["_offset", "_headers"]):
        for row, tags in _tags(batch.column(1)) if batch.num_rows else []:
            if tags.get(PRODUCER_KEY) == producer and tags.get(SEQUENCE_KEY) == str(sequence):
                last = batch.column(0)[row].as_py()
                return last - int(tags.get(RECORDS_KEY, "1")) + 1, last
    return None


class _Table:
    """The producers of one stream in one process, rebuilt from the history on first use."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.scan: _Scan | None = None
        self.writer: Writer | None = None  # the writer whose appends `scan` is current with
        self.epoch = 0
        self.producers: dict[str, _Producer] = {}

    def precheck(self, catalog: Catalog, name: str, producer: str) -> _Producer:
        """The producer's state as the history shows it, without becoming the writer."""
        scan = _scan(catalog, name)  # another process may have appended since any earlier scan
        with self.lock:
            self._adopt(scan, None)
            return self._producer(producer)

    def current(self, catalog: Catalog, name: str, writer: Writer, producer: str) -> _Producer:
        """The producer's state, current with `writer` (rebuilt when the writer changed)."""
        with self.lock:
            if self.writer is not writer:
                scan = self.scan
                if scan is None or scan.next_offset != writer.next_offset:
                    scan = _scan(catalog, name)
                self._adopt(scan, writer)
            return self._producer(producer)

    def refresh(self, catalog: Catalog, name: str, producer: str, state: _Producer) -> None:
        """Bring `state` (whose lock the caller holds) up to date with the table or history."""
        if state.uncertain:
            fresh = _scan(catalog, name, only=producer).producers.get(producer, _Producer())
            state.uncertain = False
        else:
            with self.lock:
                assert self.scan is not None
                fresh = self.scan.producers.get(producer, _Producer())
        state.absorb(fresh)
        state.epoch = self.epoch

    def _adopt(self, scan: _Scan, writer: Writer | None) -> None:
        self.scan, self.writer = scan, writer
        self.epoch += 1

    def _producer(self, producer: str) -> _Producer:
        state = self.producers.get(producer)
        if state is None:
            state = self.producers[producer] = _Producer()
        return state


_TABLES: weakref.WeakKeyDictionary[Catalog, dict[str, _Table]] = weakref.WeakKeyDictionary()
_TABLES_LOCK = threading.Lock()


def _table(catalog: Catalog, name: str) -> _Table:
    with _TABLES_LOCK:
        tables = _TABLES.setdefault(catalog, {})
        table = tables.get(name)
        if table is None:
            table = tables[name] = _Table()
        return table


# --- appending -------------------------------------------------------------------------------


def _tag(data: Any, writer: Writer, producer: str, sequence: int) -> pa.Table:
    """The records as a table whose last record carries the producer's reserved headers."""
    table = coerce_input(data, writer.user_schema)
    n = table.num_rows
    if not n:
        raise InvalidInputError("an idempotent append needs at least one record")
    tags = [(PRODUCER_KEY, producer), (SEQUENCE_KEY, str(sequence)), (RECORDS_KEY, str(n))]
    if "_headers" in table.column_names:
        _check_column(table)
        try:
            column = table.column("_headers").cast(HEADERS_TYPE).combine_chunks()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise InvalidInputError(f"'_headers' must be a map of strings: {e}") from e
        own = column[n - 1].as_py() or []
        last = pa.array([[*own, *tags]], HEADERS_TYPE)
        headers = pa.concat_arrays([column.slice(0, n - 1), last])
        return table.set_column(table.column_names.index("_headers"), "_headers", headers)
    headers = pa.concat_arrays([pa.nulls(n - 1, HEADERS_TYPE), pa.array([tags], HEADERS_TYPE)])
    return table.append_column(pa.field("_headers", HEADERS_TYPE), headers)


def _reach(catalog: Catalog, writer: Writer, first: int, last: int, level: Durability) -> Ack:
    """The ack of an earlier call, once its records are at least as durable as `level`."""
    if level == "local":
        writer.sync_through(last)
    elif level == "tiered" and writer.manifest.next_offset <= last:
        catalog.flush(writer.name)
    return Ack(first, last, level)


def _out_of_order(name: str, producer: str, sequence: int, last: int) -> InvalidInputError:
    if last < 0:
        return InvalidInputError(
            f"producer {producer!r} has never appended to stream {name!r}: its first sequence "
            f"must be 0, not {sequence}; nothing was appended"
        )
    return InvalidInputError(
        f"producer {producer!r} on stream {name!r}: sequence {sequence} is out of order; the "
        f"last acknowledged is {last}, so the next must be {last + 1} (a retry of an earlier "
        "one returns its original ack); nothing was appended"
    )


def _duplicate(catalog: Catalog, name: str, producer: str, sequence: int, state: _Producer) -> Ack:
    """The original ack of a retried call (offsets; durability as asked)."""
    found = state.acks.get(sequence) or _find(catalog, name, producer, sequence)
    if found is None:
        raise InvalidInputError(
            f"producer {producer!r} on stream {name!r}: sequence {sequence} was acknowledged "
            f"before (the last is {state.last}) but its records are not in the stream's "
            "history; nothing was appended"
        )
    return Ack(found[0], found[1], "memory")


def append_once(
    catalog: Catalog,
    name: str,
    data: Any,
    level: Durability,
    producer: str,
    sequence: int,
    *,
    take_over: bool = False,
) -> Ack:
    """Append `data` as call `sequence` of `producer`, or return the ack of that call if it
    was acknowledged before (see the module docs).

    Raises:
        InvalidInputError: the sequence skips ahead (or a new producer does not start at 0);
            nothing is appended and no writer lease is taken for it.
    """
    table = _table(catalog, name)
    if not catalog.has_writer(name):
        # Refuse (or answer a retry) from the history, before taking the writer lease.
        seen = table.precheck(catalog, name, producer)
        with seen.lock:
            if seen.epoch != table.epoch:
                table.refresh(catalog, name, producer, seen)
            if sequence > seen.last + 1:
                raise _out_of_order(name, producer, sequence, seen.last)
            if sequence <= seen.last and level != "tiered":
                return _duplicate(catalog, name, producer, sequence, seen)._replace(
                    durability=level
                )
    writer = writer_for(catalog, name, take_over=take_over)
    state = table.current(catalog, name, writer, producer)
    with state.lock:
        if state.uncertain or state.epoch != table.epoch:
            table.refresh(catalog, name, producer, state)
        if sequence <= state.last:
            original = _duplicate(catalog, name, producer, sequence, state)
            return _reach(catalog, writer, original.first_offset, original.last_offset, level)
        if sequence != state.last + 1:
            raise _out_of_order(name, producer, sequence, state.last)
        tagged = _tag(data, writer, producer, sequence)
        try:
            ack = writer.append(tagged, level)
        except (InvalidInputError, SchemaMismatchError):
            raise  # refused before anything was added
        except BaseException:
            state.uncertain = True  # the records may be in the head: read the history again
            raise
        state.record(sequence, ack.first_offset, ack.last_offset)
        return ack
