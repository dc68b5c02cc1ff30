"""A Hypothesis state machine: the log against a plain in-memory model (STYLE 13).

The model is a dict of stream name -> records (Python dicts of user columns, plus the
`_timestamp`/`_headers` a caller supplied) and the user schema the records should read back
with. Rules create streams, append every accepted kind of input with every durability mode,
evolve schemas (new nullable columns, int32 -> int64 widening, null -> concrete), try
incompatible changes (which must change nothing), flush, and close and reopen the log on the
same folder so that recovery runs. Checks compare `read`, `read(start, end)`,
`read(columns=...)`, `reader()` and `scan()` with the model.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import polars.testing
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import transit_arrow as ta
from transit_arrow.typing import Durability

STREAM_NAMES = ("main", "events", "a/b", "x.y-z_1")
COLUMN_NAMES = ("a", "b", "c", "d", "e", "f")
DURABILITIES: tuple[Durability | None, ...] = (None, "memory", "local", "tiered")
INPUT_KINDS = ("dict", "list", "table", "batch", "reader", "polars")
SYSTEM = ("_stream", "_offset", "_timestamp", "_headers")
UTC = dt.UTC

INT32, INT64 = pa.int32(), pa.int64()
STRINGS = (pa.string(), pa.large_string())
# Types a new column may start with; int32 only arrives through Arrow inputs.
NEW_TYPES = (INT32, INT64, pa.string(), pa.float64(), pa.bool_(), pa.null())

_POLARS_TYPES: dict[pa.DataType, Any] = {
    INT32: pl.Int32,
    INT64: pl.Int64,
    pa.string(): pl.String,
    pa.float64(): pl.Float64,
    pa.bool_(): pl.Boolean,
    pa.null(): pl.Null,
}


def _values(t: pa.DataType) -> st.SearchStrategy[Any]:
    """Python values of Arrow type `t` (nulls included)."""
    if t == INT32:
        base: st.SearchStrategy[Any] = st.integers(-(2**31), 2**31 - 1)
    elif t == INT64:
        # Mostly small values, so dict inputs usually fit an int32 column; sometimes huge ones.
        base = st.integers(-(2**31), 2**31 - 1) | st.integers(-(2**63), 2**63 - 1)
    elif t in STRINGS:
        base = st.text(max_size=6)
    elif t == pa.float64():
        base = st.floats(allow_nan=False)
    elif t == pa.bool_():
        base = st.booleans()
    elif t == pa.null():
        return st.none()
    else:  # pragma: no cover - the model only uses the types above
        raise AssertionError(t)
    return st.none() | base


def _fits(values: list[Any], t: pa.DataType) -> bool:
    """Whether `pa.array(values, t)` accepts the values the model generates."""
    present = [v for v in values if v is not None]
    if t == pa.null():
        return not present
    if t == INT32:
        return all(-(2**31) <= v < 2**31 for v in present)
    return True


def _inferred(sent: pa.DataType, values: list[Any]) -> pa.DataType:
    """The type pyarrow infers from Python values drawn for type `sent`."""
    if all(v is None for v in values):
        return pa.null()
    if sent == INT32:
        return INT64
    if sent in STRINGS:
        return pa.string()
    return sent


def _widen(old: pa.DataType, new: pa.DataType) -> pa.DataType | None:
    """The model's schema evolution: the evolved type, or None for an incompatible change."""
    if old == new or new == pa.null():
        return old
    if old == pa.null():
        return new
    if {old, new} == {INT32, INT64}:
        return INT64
    if old in STRINGS and new in STRINGS:
        return pa.large_string()
    return None


@dataclass
class ModelStream:
    """What one stream must hold."""

    schema: pa.Schema = field(default_factory=lambda: pa.schema([]))
    rows: list[dict[str, Any]] = field(default_factory=list)
    stamps: list[int | None] = field(default_factory=list)
    headers: list[list[tuple[str, str]] | None] = field(default_factory=list)

    def types(self) -> dict[str, pa.DataType]:
        return {f.name: f.type for f in self.schema}

    def user_table(self) -> pa.Table:
        """The user columns as the model expects to read them back."""
        rows = [{n: r.get(n) for n in self.schema.names} for r in self.rows]
        return pa.Table.from_pylist(rows, schema=self.schema)


@dataclass
class Batch:
    """One generated append: columns with the types their values were drawn for."""

    sent: dict[str, pa.DataType]
    rows: list[dict[str, Any]]
    stamps: list[int | None]
    headers: list[list[tuple[str, str]] | None]

    def column(self, name: str) -> list[Any]:
        return [r.get(name) for r in self.rows]


def _stamp_us(value: dt.datetime) -> int:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    delta = aware - dt.datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


STAMPS = st.datetimes(
    min_value=dt.datetime(2000, 1, 1),
    max_value=dt.datetime(2100, 1, 1),
    timezones=st.sampled_from([None, UTC, dt.timezone(dt.timedelta(hours=5, minutes=30))]),
)
HEADERS = st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3)


class LogMachine(RuleBasedStateMachine):
    """The log on a temp folder versus `ModelStream`s."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="transit-sm-"))
        self.model: dict[str, ModelStream] = {}
        self.options: dict[str, Any] = {}
        self.log: ta.Log | None = None

    # --- setup and teardown ----------------------------------------------------------------

    @initialize(
        records=st.integers(3, 7),
        max_bytes=st.sampled_from([128 * 1024 * 1024, 2048]),
        row_group_size=st.sampled_from([2, 65536]),
    )
    def open_log(self, records: int, max_bytes: int, row_group_size: int) -> None:
        """Open a fresh log with small segments so that rolls happen."""
        self.options = {
            "segment_max_records": records,
            "segment_max_bytes": max_bytes,
            "row_group_size": row_group_size,
        }
        self.log = ta.open(self.folder / "log", **self.options)
        self.log.create_stream(STREAM_NAMES[0])
        self.model[STREAM_NAMES[0]] = ModelStream()

    def teardown(self) -> None:
        try:
            if self.log is not None:
                for name in self.model:
                    self._check_all(name)
                self.log.close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def open_log_(self) -> ta.Log:
        assert self.log is not None
        return self.log

    def stream(self, name: str) -> ta.Stream:
        return self.open_log_.stream(name)

    # --- helpers ----------------------------------------------------------------------------

    def _draw_batch(self, data: st.DataObject, name: str, arrow: bool) -> Batch:
        """Draw columns, their value types and rows for one append to stream `name`."""
        current = self.model[name].types()
        existing = data.draw(
            st.lists(st.sampled_from(sorted(current)), unique=True) if current else st.just([])
        )
        unused = [c for c in COLUMN_NAMES if c not in current]
        new = (
            data.draw(st.lists(st.sampled_from(unused), unique=True, max_size=2)) if unused else []
        )
        if not existing and not new:
            new = [unused[0]] if unused else [sorted(current)[0]]
            if new[0] in current:
                existing, new = new, []
        sent: dict[str, pa.DataType] = {}
        for c in existing:
            t = current[c]
            choices = [t]
            if (t in (INT32, INT64) and arrow) or t == INT32:
                choices = [INT32, INT64]
            elif t == pa.null():
                choices = list(NEW_TYPES)
            elif t in STRINGS:
                choices = [pa.string()]
            sent[c] = data.draw(st.sampled_from(choices))
        for c in new:
            sent[c] = data.draw(st.sampled_from(NEW_TYPES if arrow else NEW_TYPES[1:]))
        n = data.draw(st.integers(1, 6))
        rows = [{c: data.draw(_values(t)) for c, t in sent.items()} for _ in range(n)]
        stamps: list[int | None] = [None] * n
        headers: list[list[tuple[str, str]] | None] = [None] * n
        if not arrow and data.draw(st.booleans()):
            when = [data.draw(STAMPS) for _ in range(n)]
            stamps = [_stamp_us(w) for w in when]
            for row, w in zip(rows, when, strict=True):
                row["_timestamp"] = w
        if not arrow and data.draw(st.booleans()):
            drawn = [data.draw(st.none() | HEADERS) for _ in range(n)]
            headers = [None if h is None else list(h.items()) for h in drawn]
            for row, h in zip(rows, drawn, strict=True):
                row["_headers"] = h
        return Batch(sent, rows, stamps, headers)

    def _incoming(self, name: str, batch: Batch, kind: str) -> dict[str, pa.DataType]:
        """The Arrow types the engine sees for `batch` sent as `kind`."""
        current = self.model[name].types()
        if kind not in ("dict", "list"):
            # Arrow inputs keep their types (polars' string_view arrives as plain string).
            return dict(batch.sent)
        # Dict input: typed by the stream schema when every column is known and fits it;
        # otherwise every column's type is inferred from its Python values.
        if all(c in current and _fits(batch.column(c), current[c]) for c in batch.sent):
            return {c: current[c] for c in batch.sent}
        return {c: _inferred(t, batch.column(c)) for c, t in batch.sent.items()}

    def _payload(self, batch: Batch, kind: str) -> Any:
        """`batch` as the input kind `kind`."""
        if kind == "dict":
            return batch.rows[0]
        if kind == "list":
            return batch.rows
        if kind == "polars":
            return pl.DataFrame(
                [
                    pl.Series(c, batch.column(c), dtype=_POLARS_TYPES[t])
                    for c, t in batch.sent.items()
                ]
            )
        table = pa.table({c: pa.array(batch.column(c), t) for c, t in batch.sent.items()})
        if kind == "table":
            return table
        if kind == "batch":
            return table.combine_chunks().to_batches()[0]
        assert kind == "reader"
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=2))

    def _expected_schema(self, name: str, incoming: dict[str, pa.DataType]) -> pa.Schema | None:
        fields = [pa.field(f.name, f.type) for f in self.model[name].schema]
        index = {f.name: i for i, f in enumerate(fields)}
        for c, t in incoming.items():
            if c in index:
                widened = _widen(fields[index[c]].type, t)
                if widened is None:
                    return None
                fields[index[c]] = pa.field(c, widened)
            else:
                index[c] = len(fields)
                fields.append(pa.field(c, t))
        return pa.schema(fields)

    def _check_unchanged(self, name: str, before: int) -> None:
        assert self.stream(name).next_offset == before
        self._check_all(name)

    def _check_all(self, name: str) -> None:
        table = self.stream(name).read()
        assert self.stream(name).schema.equals(table.schema)
        self._check_table(name, table)
        self._check_reader(name, table)
        self._check_scan(name, table)

    def _check_table(self, name: str, table: pa.Table) -> None:
        model = self.model[name]
        n = len(model.rows)
        assert table.column_names[:4] == list(SYSTEM)
        assert table.column_names[4:] == model.schema.names
        assert table.schema.field("_offset").type == INT64
        assert table.column("_offset").to_pylist() == list(range(n))
        assert table.column("_stream").to_pylist() == [name] * n
        assert table.column("_timestamp").null_count == 0
        user = table.select(model.schema.names)
        expected = model.user_table()
        assert user.schema.equals(expected.schema), (user.schema, expected.schema)
        assert user.equals(expected), (user.to_pylist(), expected.to_pylist())
        stamps = table.column("_timestamp").cast(pa.int64()).to_pylist()
        for i, want in enumerate(model.stamps):
            if want is not None:
                assert stamps[i] == want, (i, stamps[i], want)
        assert table.column("_headers").to_pylist() == model.headers

    def _check_reader(self, name: str, table: pa.Table) -> None:
        reader = self.stream(name).reader()
        assert reader.schema.equals(table.schema)
        batches = list(reader)
        assert pa.Table.from_batches(batches, schema=table.schema).equals(table)

    def _check_scan(self, name: str, table: pa.Table) -> None:
        frame = self.stream(name).scan().collect()
        expected = pl.from_arrow(table)
        assert isinstance(expected, pl.DataFrame)
        polars.testing.assert_frame_equal(frame, expected)

    # --- rules: streams and appends ----------------------------------------------------------

    @rule(name=st.sampled_from(STREAM_NAMES), with_schema=st.booleans(), data=st.data())
    def create_stream(self, name: str, with_schema: bool, data: st.DataObject) -> None:
        """Create a stream (optionally with a schema); an existing name changes nothing."""
        log = self.open_log_
        if name in self.model:
            before = self.stream(name).next_offset
            with pytest.raises(ta.AlreadyExistsError, match="already exists"):
                log.create_stream(name)
            self._check_unchanged(name, before)
            return
        schema = None
        if with_schema:
            columns = data.draw(st.lists(st.sampled_from(COLUMN_NAMES), unique=True, min_size=1))
            schema = pa.schema([(c, data.draw(st.sampled_from(NEW_TYPES))) for c in columns])
        stream = log.create_stream(name, schema=schema)
        assert stream.name == name
        self.model[name] = ModelStream(schema=schema or pa.schema([]))
        assert stream.next_offset == 0

    @precondition(lambda self: self.model)
    @rule(data=st.data(), count=st.integers(1, 3))
    def append(self, data: st.DataObject, count: int) -> None:
        """Append compatible batches of any input kind; the model evolves its schema alike."""
        for _ in range(count):
            name = data.draw(st.sampled_from(sorted(self.model)))
            kind = data.draw(st.sampled_from(INPUT_KINDS))
            self._append_one(data, name, kind, data.draw(st.sampled_from(DURABILITIES)))

    def _append_one(
        self, data: st.DataObject, name: str, kind: str, durability: Durability | None
    ) -> None:
        batch = self._draw_batch(data, name, arrow=kind not in ("dict", "list"))
        if kind == "dict":
            del batch.rows[1:], batch.stamps[1:], batch.headers[1:]
        incoming = self._incoming(name, batch, kind)
        schema = self._expected_schema(name, incoming)
        assert schema is not None, "the generator only draws compatible batches"
        stream = self.stream(name)
        before = stream.next_offset
        assert before == len(self.model[name].rows)
        ack = stream.append(self._payload(batch, kind), durability=durability)
        n = len(batch.rows)
        assert ack == ta.Ack(before, before + n - 1, durability or "local")
        assert ack.records == n
        if durability == "tiered":
            committed = self.open_log_.streams().to_pylist()
            row = next(r for r in committed if r["name"] == name)
            assert row["committed_offset"] >= before + n
        model = self.model[name]
        model.schema = schema
        model.rows.extend({c: r.get(c) for c in batch.sent} for r in batch.rows)
        model.stamps.extend(batch.stamps)
        model.headers.extend(batch.headers)
        assert stream.next_offset == before + n

    def _typed_columns(self) -> list[tuple[str, str]]:
        """(stream, column) pairs whose column has a concrete (non-null) type."""
        return [
            (name, f.name)
            for name, m in sorted(self.model.items())
            for f in m.schema
            if f.type != pa.null()
        ]

    @precondition(lambda self: self._typed_columns())
    @rule(data=st.data(), arrow=st.booleans())
    def append_incompatible(self, data: st.DataObject, arrow: bool) -> None:
        """A type change that is not a safe widening raises SchemaMismatchError, changes nothing."""
        name, column = data.draw(st.sampled_from(self._typed_columns()))
        t = self.model[name].types()[column]
        bad: Any = 7 if t in STRINGS else "not a number"
        good = {column: None}
        stream = self.stream(name)
        before = stream.next_offset
        if arrow:
            payload: Any = pa.table({column: pa.array([None, bad])})
        else:
            payload = [good, {column: bad}]
        with pytest.raises(ta.SchemaMismatchError, match=repr(column)):
            stream.append(payload)
        self._check_unchanged(name, before)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def flush(self, data: st.DataObject) -> None:
        """flush() commits everything and returns the latest generation."""
        name = data.draw(st.sampled_from(sorted(self.model)))
        stream = self.stream(name)
        generation = stream.flush()
        commits = stream.commits()
        assert commits.column("generation").to_pylist() == list(range(commits.num_rows))
        assert generation == commits.num_rows - 1
        roots = commits.column("root").to_pylist()
        assert commits.column("prev_root").to_pylist() == [None, *roots[:-1]]
        assert sum(commits.column("records").to_pylist()) == len(self.model[name].rows)
        row = next(r for r in self.open_log_.streams().to_pylist() if r["name"] == name)
        assert row["committed_offset"] == row["next_offset"] == len(self.model[name].rows)
        assert row["generation"] == generation

    @precondition(lambda self: any(m.rows for m in self.model.values()))
    @rule()
    def reopen(self) -> None:
        """Close the log and open it again on the same folder; recovery must keep everything."""
        log = self.open_log_
        handles = [log.stream(n) for n in self.model]
        log.close()
        for handle in handles[:1]:
            with pytest.raises(ta.LogClosedError):
                handle.append({"a": 1})
        self.log = ta.open(self.folder / "log", **self.options)

    # --- rules: reads ---------------------------------------------------------------------------

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def check_read(self, data: st.DataObject) -> None:
        """read(), reader() and scan() all equal the model."""
        self._check_all(data.draw(st.sampled_from(sorted(self.model))))

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def check_slice(self, data: st.DataObject) -> None:
        """read(start, end) is the matching slice of read()."""
        name = data.draw(st.sampled_from(sorted(self.model)))
        n = len(self.model[name].rows)
        start = data.draw(st.none() | st.integers(0, n + 2))
        end = data.draw(st.none() | st.integers(0, n + 2))
        stream = self.stream(name)
        full = stream.read()
        lo = 0 if start is None else min(start, n)
        hi = n if end is None else min(end, n)
        part = stream.read(start, end)
        assert part.schema.equals(full.schema)
        assert part.equals(full.slice(lo, max(0, hi - lo)))
        via_reader = stream.reader(start, end)
        assert pa.Table.from_batches(list(via_reader), schema=full.schema).equals(part)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def check_columns(self, data: st.DataObject) -> None:
        """read(columns=[...]) is the projection of read(), in the order asked."""
        name = data.draw(st.sampled_from(sorted(self.model)))
        stream = self.stream(name)
        full = stream.read()
        columns = data.draw(st.permutations(full.column_names)).copy()
        columns = columns[: data.draw(st.integers(1, len(columns)))]
        part = stream.read(columns=columns)
        assert part.column_names == columns
        assert part.equals(full.select(columns))

    @invariant()
    def next_offsets_match(self) -> None:
        """Every stream's next_offset is its model length; streams() lists exactly the model."""
        if self.log is None:
            return
        listed = self.open_log_.streams().to_pylist()
        assert sorted(r["name"] for r in listed) == sorted(self.model)
        for row in listed:
            assert row["next_offset"] == len(self.model[row["name"]].rows)


_SETTINGS = settings(
    max_examples=30,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# The default run explores 30 histories of up to 40 steps; `pytest -m slow` explores 300 more.
TestLog = LogMachine.TestCase
TestLog.settings = _SETTINGS


@pytest.mark.slow
class TestLogLong(LogMachine.TestCase):
    """The same machine over ten times as many histories (`pytest -m slow`)."""

    settings = settings(_SETTINGS, max_examples=300)
