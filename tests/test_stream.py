"""Unit tests of the `Log` / `Stream` API (DESIGN §2-5, §8): every accepted input, every bad one.

Every rejected call is checked twice: it raises a specific, explanatory error, and it changes
nothing (next offset, records, commits and, where it matters, the files under the log root).
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import transit_arrow as ta

SYSTEM = ["_stream", "_offset", "_timestamp", "_headers"]
UTC = dt.UTC


# --- helpers --------------------------------------------------------------------------------------


def _files(root: Path) -> list[str]:
    """Every file under `root`, relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _state(stream: ta.Stream) -> tuple[int, list[dict[str, Any]], int, pa.Schema]:
    """What a rejected call must not change: next offset, records, commits, schema."""
    return stream.next_offset, stream.read().to_pylist(), stream.commits().num_rows, stream.schema


def _user(stream: ta.Stream) -> list[dict[str, Any]]:
    """The user columns of every record."""
    table = stream.read()
    return table.drop_columns(SYSTEM).to_pylist()


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _segments(stream: ta.Stream) -> list[tuple[int, int]]:
    """(first, last) offsets of every committed segment."""
    commits = stream.commits().to_pylist()
    return [(c["first_offset"], c["last_offset"]) for c in commits if "add_segment" in c["actions"]]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The folder of a log (created by the first `ta.open`)."""
    return tmp_path / "log"


@pytest.fixture
def written(log: ta.Log) -> ta.Stream:
    """A stream with three committed records and an open writer (so no file is created lazily)."""
    stream = log.create_stream("events")
    stream.append([{"n": 1, "s": "a"}, {"n": 2, "s": "b"}, {"n": 3, "s": "c"}])
    stream.flush()
    return stream


@pytest.fixture
def unchanged(written: ta.Stream) -> Iterator[Callable[[], None]]:
    """A check that `written` and its log's files are as they were when the test started."""
    root = Path(written.log.store.local_path(""))  # type: ignore[arg-type]
    before, files = _state(written), _files(root)

    def check() -> None:
        assert _state(written) == before
        assert _files(root) == files

    yield check


# --- stream names ---------------------------------------------------------------------------------

BAD_NAMES: list[Any] = ["..", ".", "/x", "x/", "a//b", "a/./b", "a/../b", "", "x" * 300, "a b"]
BAD_NAMES += ["a\\b", "é", "a\nb", 5, None, b"bytes"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_stream_names_are_rejected(log: ta.Log, root: Path, name: Any) -> None:
    """A bad name fails with InvalidInputError saying why, creating nothing."""
    files = _files(root)
    with pytest.raises(ta.InvalidInputError, match="stream name"):
        log.create_stream(name)
    with pytest.raises(ta.InvalidInputError, match="stream name"):
        log.stream(name)
    assert log.streams().num_rows == 0
    assert _files(root) == files


def test_stream_name_limits(log: ta.Log) -> None:
    """255 characters and every allowed character class make a valid, listable name."""
    names = ["x" * 255, "A-z_0.9/sub/leaf", ".hidden", "a..b", "-"]
    for name in names:
        log.create_stream(name).append({"v": 1})
    assert sorted(log.streams().column("name").to_pylist()) == sorted(names)
    for name in names:
        assert log.stream(name).read().column("_stream").to_pylist() == [name]


def test_similar_names_do_not_collide(log: ta.Log) -> None:
    """Names that differ only in '/', '-', '.' or '_' are distinct streams (injective encoding)."""
    for name in ["a/b", "a-b", "a.b", "a_b", "a"]:
        log.create_stream(name).append({"name": name})
    for name in ["a/b", "a-b", "a.b", "a_b", "a"]:
        assert _user(log.stream(name)) == [{"name": name}]


# --- stream lookup and creation -------------------------------------------------------------------


def test_creating_an_existing_stream_fails_and_changes_nothing(
    written: ta.Stream, unchanged: Callable[[], None]
) -> None:
    """AlreadyExistsError names the stream and how to open it; the stream is untouched."""
    with pytest.raises(ta.AlreadyExistsError, match=r"'events' already exists.*log\.stream"):
        written.log.create_stream("events")
    unchanged()


def test_unknown_stream_suggests_near_names(written: ta.Stream) -> None:
    """StreamNotFoundError is a LookupError and suggests near names."""
    with pytest.raises(ta.StreamNotFoundError, match="did you mean 'events'") as info:
        written.log.stream("evnts")
    assert isinstance(info.value, LookupError)
    assert isinstance(info.value, ta.NotFoundError)
    with pytest.raises(LookupError, match="create_stream"):
        written.log.stream("nothing-like-it")


def test_streams_table_lists_every_stream(log: ta.Log) -> None:
    """log.streams() has one row per stream with its offsets and generation."""
    log.create_stream("b").append([{"v": 1}, {"v": 2}])
    log.create_stream("a")
    rows = {r["name"]: r for r in log.streams().to_pylist()}
    assert sorted(rows) == ["a", "b"]
    assert rows["b"]["next_offset"] == 2
    assert rows["a"]["next_offset"] == 0
    assert rows["a"]["generation"] == 0
    assert rows["a"]["kind"] == "root"


def test_stream_handles_are_shared(log: ta.Log) -> None:
    """log.stream(name) returns one handle per name."""
    created = log.create_stream("s")
    assert log.stream("s") is created


def test_bad_creation_schema_and_metadata(log: ta.Log) -> None:
    """A schema with reserved columns, a non-schema and unknown metadata keys are rejected."""
    with pytest.raises(ta.InvalidInputError, match="reserved"):
        log.create_stream("s", schema=pa.schema([("_offset", pa.int64())]))
    with pytest.raises(ta.InvalidInputError, match=r"pyarrow\.Schema"):
        log.create_stream("s", schema={"a": "int"})  # type: ignore[arg-type]
    with pytest.raises(ta.InvalidInputError, match="metadata"):
        log.create_stream("s", metadata={"colour": "red"})
    assert log.streams().num_rows == 0


def test_creation_metadata_is_recorded(log: ta.Log) -> None:
    """Creation metadata goes into generation 0, whose only action is `create`."""
    stream = log.create_stream(
        "s", metadata={"actor": "me", "reason": "test", "labels": {"k": "v"}}
    )
    commits = stream.commits()
    assert commits.num_rows == 1
    assert commits.column("actions").to_pylist() == [["create"]]
    assert commits.column("prev_root").to_pylist() == [None]


def test_creation_schema_fixes_types(log: ta.Log) -> None:
    """A creation schema types later dict appends (int values into a float column)."""
    stream = log.create_stream("s", schema=pa.schema([("x", pa.float64()), ("y", pa.int32())]))
    stream.append({"x": 1, "y": 2})
    assert stream.schema.field("x").type == pa.float64()
    assert stream.schema.field("y").type == pa.int32()
    assert _user(stream) == [{"x": 1.0, "y": 2}]


def test_empty_stream_reads_with_its_creation_schema(root: Path) -> None:
    """An empty stream created with a schema reads as an empty table with that schema."""
    with ta.open(root) as log:
        stream = log.create_stream("s", schema=pa.schema([("x", pa.int32())]))
        assert stream.schema.names == [*SYSTEM, "x"]
        assert stream.schema.field("x").type == pa.int32()
        assert stream.read().schema.equals(stream.schema)
        assert stream.read(columns=["x"]).num_rows == 0
        assert stream.scan().collect().columns == [*SYSTEM, "x"]
    with ta.open(root) as log:
        assert log.stream("s").read().schema.names == [*SYSTEM, "x"]


# --- bad input ------------------------------------------------------------------------------------

RESERVED: list[Any] = [
    {"_offset": 1, "n": 1},
    {"_stream": "x", "n": 1},
    {"_foo": 1, "n": 1},
    {"__index_level_0__": 0, "n": 1},
    [{"n": 1}, {"n": 2, "_offset": 5}],
    pa.table({"n": [1], "_offset": [0]}),
    pa.record_batch({"n": [1], "_stream": ["x"]}),
    pl.DataFrame({"n": [1], "_foo": [1]}),
]


@pytest.mark.parametrize("data", RESERVED, ids=lambda d: type(d).__name__)
def test_reserved_columns_are_rejected(
    written: ta.Stream, unchanged: Callable[[], None], data: Any
) -> None:
    """Names starting with '_' (other than _timestamp/_headers) are reserved: nothing appended."""
    with pytest.raises(ta.InvalidInputError, match="reserved"):
        written.append(data)
    unchanged()


UNSUPPORTED: list[tuple[Any, str]] = [
    (object(), "cannot append a builtins.object"),
    (None, "cannot append a builtins.NoneType"),
    (5, "cannot append a builtins.int"),
    ([1, 2, 3], "must hold dicts, not int"),
    ([{"n": 1}, "x"], "must hold dicts, not str"),
    ([], "empty list"),
    ({}, "no user columns"),
    ({"_timestamp": dt.datetime(2020, 1, 1)}, "no user columns"),
    ({"n": 1, 2: 3}, "column names must be strings"),
    ({"": 1}, "must not be empty"),
    ({"n": object()}, "cannot store column 'n'"),
    ([{"n": 1}, {"n": {"not": "an int"}}], "'n'"),
    ([{"n": 4}, {"n": "four"}], "cannot store column 'n'"),
    (pa.table({"n": [1], "m": [2]}).rename_columns(["n", "n"]), "duplicate"),
]


@pytest.mark.parametrize(
    ("data", "message"),
    UNSUPPORTED,
    # Stable ids (no object addresses): pytest-xdist workers must collect the same names.
    ids=lambda d: re.sub(r" at 0x[0-9a-f]+", "", repr(d))[:30],
)
def test_unsupported_input_is_rejected(
    written: ta.Stream, unchanged: Callable[[], None], data: Any, message: str
) -> None:
    """Unsupported objects raise a TransitError saying what is accepted; nothing is appended."""
    with pytest.raises((ta.InvalidInputError, ta.SchemaMismatchError), match=message):
        written.append(data)
    unchanged()


@pytest.mark.parametrize(
    "data",
    [
        {"n": 4, "tags": {3, 1, 2}},
        {"n": 4, "tags": frozenset({"a"})},
        [{"n": 4}, {"n": 5, "tags": [{1, 2}]}],
        {"n": 4, "obj": {"k": {1}}},
    ],
    ids=repr,
)
def test_set_inside_a_record_is_rejected(
    written: ta.Stream, unchanged: Callable[[], None], data: Any
) -> None:
    """A set has no order, so it is not a list value: InvalidInputError, nothing appended."""
    with pytest.raises(ta.InvalidInputError, match="sets have no order"):
        written.append(data)
    unchanged()


def test_bad_timestamp_and_headers_are_rejected(
    written: ta.Stream, unchanged: Callable[[], None]
) -> None:
    """A `_timestamp` that is not a time, or `_headers` that are not a string map, fail."""
    with pytest.raises(ta.InvalidInputError, match="_timestamp"):
        written.append({"n": 4, "_timestamp": "yesterday"})
    with pytest.raises(ta.InvalidInputError, match="_timestamp"):
        written.append(pa.table({"n": [4], "_timestamp": pa.array([True])}))
    with pytest.raises(ta.InvalidInputError, match="_headers"):
        written.append(pa.table({"n": [4], "_headers": [5]}))
    unchanged()


@pytest.mark.parametrize(
    "data",
    [
        {"n": "four"},
        [{"n": None}, {"n": "four"}],
        {"s": 5},
        pa.table({"n": pa.array(["x"])}),
        pa.table({"s": pa.array([1.5])}),
        pl.DataFrame({"n": [True]}),
    ],
    ids=repr,
)
def test_incompatible_types_raise_schema_mismatch(
    written: ta.Stream, unchanged: Callable[[], None], data: Any
) -> None:
    """SchemaMismatchError names the column and both types; the call appends nothing."""
    with pytest.raises(ta.SchemaMismatchError, match=r"column '[ns]'") as info:
        written.append(data)
    assert "int64" in str(info.value) or "string" in str(info.value)
    unchanged()


@pytest.mark.parametrize("value", [4.5, -0.1, [1.5, 2.0]], ids=repr)
def test_float_into_int_column_is_not_truncated(
    written: ta.Stream, unchanged: Callable[[], None], value: Any
) -> None:
    """A fractional float is not an int64: SchemaMismatchError, and no truncated value is stored."""
    rows = [{"n": v} for v in value] if isinstance(value, list) else {"n": value}
    with pytest.raises(ta.SchemaMismatchError, match="'n'"):
        written.append(rows)
    unchanged()


@pytest.mark.parametrize("durability", ["fast", "", 1, "LOCAL", ["local"]], ids=repr)
def test_bad_durability_is_rejected(
    written: ta.Stream, unchanged: Callable[[], None], durability: Any
) -> None:
    """An unknown durability fails before anything is written."""
    with pytest.raises(ta.InvalidInputError, match="durability must be one of"):
        written.append({"n": 4}, durability=durability)
    unchanged()


# --- reads ----------------------------------------------------------------------------------------


def test_reading_past_the_end_is_empty_with_full_schema(written: ta.Stream) -> None:
    """read() beyond the last offset returns an empty table with the stream's schema."""
    for start, end in [(3, None), (100, 200), (2, 2), (3, 1)]:
        table = written.read(start, end)
        assert table.num_rows == 0
        assert table.schema.equals(written.schema)
        assert table.column_names == [*SYSTEM, "n", "s"]
    reader = written.reader(50)
    assert reader.schema.equals(written.schema)
    assert reader.read_all().num_rows == 0


def test_inverted_range_over_the_head_is_empty(written: ta.Stream) -> None:
    """read(start, end) with end < start is empty over the head, as it is over segments."""
    written.append([{"n": 4}, {"n": 5}, {"n": 6}])  # offsets 3, 4, 5 in the head
    assert written.read(2, 1).num_rows == 0  # over the segment
    assert written.read(5, 4).num_rows == 0  # over the head


def test_read_ranges_and_columns(written: ta.Stream) -> None:
    """read(start, end, columns) selects offsets [start, end) and the named columns in order."""
    written.append({"n": 4, "s": "d"})  # one record in the head, three in a segment
    assert written.read(1, 3).column("n").to_pylist() == [2, 3]
    assert written.read(2).column("_offset").to_pylist() == [2, 3]
    assert written.read(end=1).column("n").to_pylist() == [1]
    table = written.read(columns=["s", "_offset"])
    assert table.column_names == ["s", "_offset"]
    assert table.to_pylist()[-1] == {"s": "d", "_offset": 3}
    assert written.reader(1, 4, columns=["n"]).read_all().column("n").to_pylist() == [2, 3, 4]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"columns": ["nope"]}, "no column"),
        ({"columns": "n"}, "list of names"),
        ({"start": -1}, "start"),
        ({"end": -5}, "end"),
        ({"start": "0"}, "start"),
    ],
    ids=repr,
)
def test_bad_read_arguments(written: ta.Stream, kwargs: dict[str, Any], message: str) -> None:
    """Bad read arguments raise InvalidInputError naming the problem."""
    with pytest.raises(ta.InvalidInputError, match=message):
        written.read(**kwargs)


def test_reader_scan_and_read_agree(written: ta.Stream) -> None:
    """reader() batches and scan().collect() equal read() (segment + head)."""
    written.append({"n": 4, "s": "d"})
    table = written.read()
    assert written.reader().read_all().equals(table)
    frame = written.scan().collect()
    assert frame.equals(pl.from_arrow(table))  # type: ignore[arg-type]
    assert frame.filter(pl.col("n") > 2).get_column("_offset").to_list() == [2, 3]


# --- accepted inputs ------------------------------------------------------------------------------


def _duckdb_relation() -> Any:
    return duckdb.sql("SELECT 7::BIGINT AS n, 'duck' AS s")


INPUTS: list[tuple[str, Callable[[], Any]]] = [
    ("dict", lambda: {"n": 7, "s": "x"}),
    ("list", lambda: [{"n": 7, "s": "x"}, {"n": 8}]),
    ("tuple", lambda: ({"n": 7, "s": "x"},)),
    ("table", lambda: pa.table({"n": [7, 8], "s": ["x", None]})),
    ("batch", lambda: pa.record_batch({"n": [7], "s": ["x"]})),
    (
        "reader",
        lambda: pa.RecordBatchReader.from_batches(
            pa.schema([("n", pa.int64()), ("s", pa.string())]),
            [pa.record_batch({"n": [7], "s": ["x"]}), pa.record_batch({"n": [8], "s": ["y"]})],
        ),
    ),
    ("polars", lambda: pl.DataFrame({"n": [7, 8], "s": ["x", "y"]})),
    ("pandas", lambda: pd.DataFrame({"n": [7, 8], "s": ["x", "y"]})),
    ("pandas-filtered", lambda: pd.DataFrame({"n": [6, 7], "s": ["w", "x"]}).iloc[[1]]),
    ("duckdb", _duckdb_relation),
]


@pytest.mark.parametrize(("kind", "make"), INPUTS, ids=[k for k, _ in INPUTS])
def test_each_input_kind_is_accepted(log: ta.Log, kind: str, make: Callable[[], Any]) -> None:
    """Every documented input kind appends atomically to a fresh stream and reads back."""
    data = make()
    expected = _expected_rows(kind, data)
    stream = log.create_stream(kind)
    ack = stream.append(data)
    assert ack == ta.Ack(0, len(expected) - 1, "local")
    assert stream.read().column("_offset").to_pylist() == list(range(len(expected)))
    assert _user(stream) == expected
    assert stream.read().column("_stream").to_pylist() == [kind] * len(expected)
    assert pa.types.is_integer(stream.schema.field("n").type)


def _expected_rows(kind: str, data: Any) -> list[dict[str, Any]]:
    if kind == "dict":
        return [data]
    if kind in ("list", "tuple"):
        return [{"n": r["n"], "s": r.get("s")} for r in data]
    if kind == "duckdb":
        return [{"n": 7, "s": "duck"}]
    if kind == "reader":
        return [{"n": 7, "s": "x"}, {"n": 8, "s": "y"}]
    if kind.startswith("pandas"):
        return data.to_dict("records")  # type: ignore[no-any-return]
    if kind == "polars":
        return data.to_dicts()  # type: ignore[no-any-return]
    return data.to_pylist()  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", ["table", "batch", "reader", "polars", "pandas", "duckdb", "list"])
def test_each_input_kind_appends_to_a_dict_made_stream(log: ta.Log, kind: str) -> None:
    """Arrow producers append to a stream whose columns came from dicts."""
    stream = log.create_stream("s")
    stream.append({"n": 1, "s": "first"})
    data = dict(INPUTS)[kind]()
    stream.append(data)
    assert _user(stream) == [{"n": 1, "s": "first"}, *_expected_rows(kind, data)]
    assert pa.types.is_integer(stream.schema.field("n").type)


def test_polars_strings_mix_with_dict_strings(log: ta.Log) -> None:
    """A polars frame's string column appends to a string column made by dicts."""
    stream = log.create_stream("s")
    stream.append({"s": "first"})
    stream.append(pl.DataFrame({"s": ["second"]}))
    assert [r["s"] for r in _user(stream)] == ["first", "second"]


def test_polars_string_segment_reads_a_slice(log: ta.Log) -> None:
    """A sealed segment holding a polars string column can be read from the middle."""
    stream = log.create_stream("s")
    stream.append(pl.DataFrame({"s": ["a", "b", "c"]}))
    stream.flush()
    assert stream.read(1, 2).column("s").to_pylist() == ["b"]


def test_bytes_and_str_become_payload(log: ta.Log) -> None:
    """bytes -> a binary `payload` column; str -> a string `payload` column."""
    raw = log.create_stream("raw")
    raw.append(b"\x00\xff")
    raw.append(bytearray(b"ab"))
    assert raw.schema.field("payload").type == pa.binary()
    assert _user(raw) == [{"payload": b"\x00\xff"}, {"payload": b"ab"}]
    text = log.create_stream("text")
    text.append("héllo")
    assert text.schema.field("payload").type == pa.string()
    assert _user(text) == [{"payload": "héllo"}]
    before = _state(text)
    with pytest.raises(ta.SchemaMismatchError, match="'payload'"):
        text.append(pa.table({"payload": pa.array([b"x"], pa.binary())}))
    assert _state(text) == before


def test_supplied_timestamp_and_headers(log: ta.Log) -> None:
    """`_timestamp` may be supplied (naive means UTC) and `_headers` is a dict -> map."""
    stream = log.create_stream("s")
    naive = dt.datetime(2020, 1, 2, 3, 4, 5, 6)
    aware = dt.datetime(2020, 1, 2, 8, 34, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=5.5)))
    stream.append({"n": 1, "_timestamp": naive, "_headers": {"trace": "abc", "k": "v"}})
    stream.append([{"n": 2, "_timestamp": aware}, {"n": 3, "_timestamp": aware}])
    stream.append(
        pa.table(
            {
                "n": [4],
                "_timestamp": pa.array([naive], pa.timestamp("ms")),
                "_headers": pa.array([[("a", "b")]], pa.map_(pa.string(), pa.string())),
            }
        )
    )
    before = dt.datetime.now(UTC)
    stream.append({"n": 5})
    stream.append([{"n": 6, "_timestamp": "2020-01-02T03:04:05.000006"}, {"n": 7}])
    table = stream.read()
    assert table.schema.field("_timestamp").type == pa.timestamp("us", tz="UTC")
    stamps = table.column("_timestamp").to_pylist()
    utc = naive.replace(tzinfo=UTC)
    assert stamps[:3] == [utc, utc, utc]
    assert stamps[3] == utc.replace(microsecond=0)  # millisecond input
    assert stamps[4] >= before.replace(microsecond=0)  # assigned at append
    assert stamps[5] == utc  # ISO 8601 text, naive means UTC
    assert stamps[6] >= before.replace(microsecond=0)  # a record without one gets the append time
    assert table.column("_headers").to_pylist() == [
        [("trace", "abc"), ("k", "v")],
        None,
        None,
        [("a", "b")],
        None,
        None,
        None,
    ]
    stream.flush()
    assert stream.read().equals(table)


def test_nested_values_become_struct_and_list_columns(log: ta.Log) -> None:
    """dict values -> struct columns, list values -> list columns, surviving a seal."""
    stream = log.create_stream("s")
    stream.append({"obj": {"x": 1, "y": "a"}, "items": [1, 2], "deep": [{"k": [True]}]})
    stream.append({"obj": None, "items": [], "deep": None})
    schema = stream.schema
    assert schema.field("obj").type == pa.struct([("x", pa.int64()), ("y", pa.string())])
    assert schema.field("items").type == pa.list_(pa.int64())
    assert pa.types.is_list(schema.field("deep").type)
    expected = [
        {"obj": {"x": 1, "y": "a"}, "items": [1, 2], "deep": [{"k": [True]}]},
        {"obj": None, "items": [], "deep": None},
    ]
    assert _user(stream) == expected
    stream.flush()
    assert _user(stream) == expected


def test_struct_gains_a_field_from_arrow_input(log: ta.Log) -> None:
    """A struct column widens with a later new field (Arrow input); old rows read it as null."""
    stream = log.create_stream("s")
    stream.append(pa.table({"obj": pa.array([{"x": 1}])}))
    stream.flush()
    stream.append(pa.table({"obj": pa.array([{"x": 2, "z": True}])}))
    assert stream.schema.field("obj").type == pa.struct([("x", pa.int64()), ("z", pa.bool_())])
    assert [r["obj"] for r in _user(stream)] == [{"x": 1, "z": None}, {"x": 2, "z": True}]


def test_struct_gains_a_field_from_dict_input(log: ta.Log) -> None:
    """A struct column widens with a later new field given in a dict; nothing is dropped."""
    stream = log.create_stream("s")
    stream.append({"obj": {"x": 1}})
    stream.append({"obj": {"x": 2, "z": True}})
    assert [r["obj"] for r in _user(stream)] == [{"x": 1, "z": None}, {"x": 2, "z": True}]


def test_schema_evolution_survives_reopen(root: Path) -> None:
    """New nullable columns and int32 -> int64 widening are committed and kept on reopen."""
    with ta.open(root) as log:
        stream = log.create_stream("s")
        stream.append(pa.table({"n": pa.array([1], pa.int32())}))
        assert stream.schema.field("n").type == pa.int32()
        stream.append({"n": 2**40, "extra": "new"})
        stream.append(pa.table({"n": pa.array([3], pa.int32())}))
        assert stream.schema.field("n").type == pa.int64()
        assert stream.schema.names == [*SYSTEM, "n", "extra"]
    with ta.open(root) as log:
        stream = log.stream("s")
        assert stream.schema.field("n").type == pa.int64()
        assert stream.schema.field("extra").type == pa.string()
        assert _user(stream) == [
            {"n": 1, "extra": None},
            {"n": 2**40, "extra": "new"},
            {"n": 3, "extra": None},
        ]
        actions = [a for row in stream.commits().column("actions").to_pylist() for a in row]
        assert "evolve_schema" in actions
        stream.append({"n": 4})
        assert stream.read().column("n").type == pa.int64()


# --- durability, acks and rolls -------------------------------------------------------------------


@pytest.mark.parametrize("durability", ["memory", "local", "tiered"])
def test_ack_reports_durability_reached(root: Path, durability: str) -> None:
    """Each mode acknowledges with the level it reached, and that level really holds."""
    with ta.open(root) as log:
        stream = log.create_stream("s")
        ack = stream.append([{"n": 1}, {"n": 2}], durability=durability)  # type: ignore[arg-type]
        assert ack == ta.Ack(0, 1, durability)  # type: ignore[arg-type]
        assert (ack.first_offset, ack.last_offset, ack.durability, ack.records) == (
            0,
            1,
            durability,
            2,
        )
        # What another handle sees right after the ack: (committed, visible) records.
        expected = {"memory": (0, 0), "local": (0, 2), "tiered": (2, 2)}[durability]
        with ta.open(root) as other:
            seen = other.stream("s")
            committed = sum(seen.commits().column("records").to_pylist())
            assert (committed, seen.next_offset) == expected


def test_default_durability_comes_from_open(root: Path) -> None:
    """append() without durability uses open(durability=...)."""
    with ta.open(root, durability="memory") as log:
        assert log.create_stream("s").append({"n": 1}).durability == "memory"
    with ta.open(root, durability="tiered") as log:
        stream = log.stream("s")
        ack = stream.append({"n": 2})
        assert ack.durability == "tiered"
        assert _segments(stream)[-1] == (1, 1)


def test_tiered_ack_only_after_commit_exists(root: Path) -> None:
    """After a tiered ack, the commit holding its records is already on the store."""
    with ta.open(root) as log:
        stream = log.create_stream("s")
        stream.append({"n": 0}, durability="memory")
        ack = stream.append([{"n": 1}, {"n": 2}], durability="tiered")
        commits = sorted((root / "streams" / "s" / "commits").glob("*.json"))
        assert len(commits) == 2
        last = _segments(stream)[-1]
        assert last[1] >= ack.last_offset
        assert list((root / "streams" / "s" / "segments").glob("*.parquet"))


def test_rolls_by_record_count(root: Path) -> None:
    """segment_max_records=3 seals every third record without flush()."""
    with ta.open(root, segment_max_records=3) as log:
        stream = log.create_stream("s")
        for i in range(7):
            stream.append({"n": i})
        assert _wait_for(lambda: len(_segments(stream)) == 2)
        assert _segments(stream) == [(0, 2), (3, 5)]
        assert stream.read().column("n").to_pylist() == list(range(7))


def test_rolls_by_bytes(root: Path) -> None:
    """segment_max_bytes seals a head once it holds that many bytes."""
    blobs = [f"{i}" + "x" * 400 for i in range(6)]
    with ta.open(root, segment_max_bytes=1000) as log:
        stream = log.create_stream("s")
        for blob in blobs:
            stream.append({"blob": blob})
        assert _wait_for(lambda: len(_segments(stream)) >= 2)
        assert stream.read().column("blob").to_pylist() == blobs
        spans = _segments(stream)
        assert all(last - first + 1 <= 3 for first, last in spans)


def test_per_record_appends_survive_rolls(tmp_path: Path) -> None:
    """Per-record dict appends with local durability and frequent rolls keep every record once.

    A regression test: the sealer once materialized buffered rows without the writer lock,
    racing group commit (failed seals, duplicated records). The race is timing-dependent, so
    the scenario is repeated.
    """
    for attempt in range(15):
        with ta.open(tmp_path / f"log{attempt}", segment_max_records=3) as log:
            stream = log.create_stream("s")
            for i in range(50):
                stream.append({"i": i, "s": "x"})
            stream.flush()
            table = stream.read()
            assert table.column("i").to_pylist() == list(range(50))
            assert table.column("_offset").to_pylist() == list(range(50))


def test_rolls_by_age(root: Path) -> None:
    """segment_max_age seals a lone record after that many seconds, without another append."""
    with ta.open(root, segment_max_age=0.2) as log:
        stream = log.create_stream("s")
        stream.append({"n": 1})
        assert _segments(stream) == []
        assert _wait_for(lambda: _segments(stream) == [(0, 0)], timeout=5.0)


def test_flush_returns_generation_and_commits_rows(log: ta.Log) -> None:
    """flush() seals the head and returns the new generation; commits() has one row each."""
    stream = log.create_stream("s")
    assert stream.flush() == 0  # nothing to seal
    stream.append([{"n": 1}, {"n": 2}])
    assert stream.flush() == 1
    assert stream.flush() == 1  # idempotent
    stream.append({"n": 3})
    assert stream.flush() == 2
    commits = stream.commits()
    assert commits.column("generation").to_pylist() == [0, 1, 2]
    assert commits.column("records").to_pylist() == [0, 2, 1]
    assert commits.column("first_offset").to_pylist() == [None, 0, 2]
    assert commits.column("last_offset").to_pylist() == [None, 1, 2]
    roots = commits.column("root").to_pylist()
    assert commits.column("prev_root").to_pylist() == [None, *roots[:-1]]
    assert stream.generation == 2


def test_group_commit_with_concurrent_appenders(log: ta.Log) -> None:
    """8 threads appending at once get dense, unique offsets; every ack's record is there."""
    stream = log.create_stream("s")
    acks: list[tuple[ta.Ack, int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for j in range(40):
                data: Any = {"t": t, "j": j} if j % 2 else [{"t": t, "j": j}]
                ack = stream.append(data, durability="local" if j % 3 else None)
                with lock:
                    acks.append((ack, t, j))
        except BaseException as e:  # surface in the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    offsets = sorted(ack.first_offset for ack, _, _ in acks)
    assert offsets == list(range(320))
    assert all(ack.records == 1 and ack.durability == "local" for ack, _, _ in acks)
    rows = stream.read().to_pylist()
    for ack, t, j in acks:
        assert (rows[ack.first_offset]["t"], rows[ack.first_offset]["j"]) == (t, j)
    for t in range(8):
        mine = [r["j"] for r in rows if r["t"] == t]
        assert mine == list(range(40)), "one thread's appends keep their order"


# --- several handles on one folder ----------------------------------------------------------------


def test_reader_log_sees_writer_heads(root: Path) -> None:
    """Another Log on the same folder reads the writer's acknowledged local-mode records,
    read-only: its reads change no file, and the memory-mode tail is not visible."""
    with ta.open(root) as writer_log:
        writer = writer_log.create_stream("s")
        writer.append([{"n": 0}, {"n": 1}])
        writer.flush()
        writer.append({"n": 2})
        writer.append({"n": 3}, durability="local")
        writer.append({"n": 4}, durability="memory")
        with ta.open(root) as reader_log:
            files = _files(root)
            reader = reader_log.stream("s")
            assert reader.next_offset == 4
            assert reader.read().column("n").to_pylist() == [0, 1, 2, 3]
            assert reader.read(2, 4).column("_offset").to_pylist() == [2, 3]
            assert reader.scan().collect().get_column("n").to_list() == [0, 1, 2, 3]
            assert _files(root) == files
        assert writer.read().column("n").to_pylist() == [0, 1, 2, 3, 4]
    with ta.open(root) as log:
        assert log.stream("s").read().column("n").to_pylist() == [0, 1, 2, 3, 4]


def test_second_writer_in_process_is_busy(root: Path) -> None:
    """A second Log on the same folder cannot write a stream another Log writes (the local
    flock is per open file, so it conflicts within one process too); nothing changes."""
    with ta.open(root) as first:
        stream = first.create_stream("s")
        stream.append({"n": 1})
        with ta.open(root) as second:
            other = second.stream("s")
            before = _state(other)
            with pytest.raises(ta.WriterBusyError, match="'s' is being written"):
                other.append({"n": 2})
            with pytest.raises(ta.WriterBusyError):
                other.append({"n": 2})
            assert _state(other) == before
        stream.append({"n": 3})
        assert stream.read().column("n").to_pylist() == [1, 3]


def test_second_writer_with_own_local_dir_is_busy(root: Path, tmp_path: Path) -> None:
    """With another local dir the lease still refuses a second writer, and says take_over."""
    with ta.open(root) as first:
        first.create_stream("s").append({"n": 1})
        with ta.open(root, local_dir=tmp_path / "elsewhere") as second:
            with pytest.raises(ta.WriterBusyError, match="take_over=True"):
                second.stream("s").append({"n": 2})
            assert second.stream("s").commits().num_rows == 1


def test_writer_can_write_again_after_close(root: Path) -> None:
    """Closing a Log releases its leases: a new Log on the folder writes right away."""
    with ta.open(root) as log:
        log.create_stream("s").append({"n": 1})
    with ta.open(root, local_dir=root.parent / "other") as log:
        log.stream("s").append({"n": 2})
        assert log.stream("s").read().column("n").to_pylist() == [1, 2]


def test_take_over_fences_the_old_writer(root: Path, tmp_path: Path) -> None:
    """take_over=True fences a live writer: a `fence` commit, the old writer's next seal
    fails with FencedError naming its kept head file, and no acknowledged record is lost."""
    with ta.open(root) as old_log:
        old = old_log.create_stream("s")
        old.append({"n": 0})
        old.flush()
        old.append({"n": 1})  # acknowledged, unsealed: stays in the old writer's head
        with ta.open(root, local_dir=tmp_path / "new") as new_log:
            new = new_log.stream("s", take_over=True)
            ack = new.append({"n": 100})
            assert ack.first_offset == 1
            actions = new.commits().column("actions").to_pylist()
            assert actions[-1] == ["fence"]
            assert new.commits().column("writer_epoch").to_pylist()[-1] == 2
            with pytest.raises(ta.FencedError, match=r"fenced.*\.arrow") as info:
                old.flush()
            kept = Path(str(info.value).rsplit(" ", 1)[-1])
            assert pa.ipc.open_stream(kept.read_bytes()).read_all().column("n").to_pylist() == [1]
            with pytest.raises(ta.FencedError):
                old.append({"n": 2})
            new.flush()
            assert new.read().column("n").to_pylist() == [0, 100]


def test_take_over_in_same_local_dir_fences_the_live_writer(root: Path) -> None:
    """Without take_over a second writer of the same local dir is refused (WriterBusyError);
    with take_over=True it fences the live writer like any other (issue 10: this used to be
    refused too, while the README says take_over fences the other writer)."""
    with ta.open(root) as first:
        first.create_stream("s").append({"n": 1})
        with ta.open(root) as second:
            with pytest.raises(ta.WriterBusyError, match="local dir"):
                second.stream("s").append({"n": 2})
            assert second.stream("s", take_over=True).append({"n": 2}).first_offset == 0
            with pytest.raises(ta.FencedError):
                first.stream("s").flush()


# --- closed logs ----------------------------------------------------------------------------------


def test_closed_log_refuses_everything(root: Path) -> None:
    """After close(), every call raises LogClosedError; close() is idempotent."""
    log = ta.open(root)
    stream = log.create_stream("s")
    stream.append({"n": 1})
    log.close()
    log.close()
    calls: list[Callable[[], Any]] = [
        lambda: stream.append({"n": 2}),
        lambda: stream.append({"n": 2}, durability="memory"),
        lambda: stream.read(),
        lambda: stream.flush(),
        lambda: stream.next_offset,
        lambda: log.stream("s"),
        lambda: log.create_stream("t"),
        lambda: log.streams(),
    ]
    for call in calls:
        with pytest.raises(ta.LogClosedError, match="closed"):
            call()
    with ta.open(root) as again:
        assert again.stream("s").read().column("n").to_pylist() == [1]
        assert again.streams().num_rows == 1


def test_close_seals_every_head(root: Path) -> None:
    """close() commits what is unsealed, memory-mode records included."""
    with ta.open(root) as log:
        stream = log.create_stream("s")
        stream.append({"n": 1}, durability="memory")
    with ta.open(root) as log:
        stream = log.stream("s")
        assert _segments(stream) == [(0, 0)]
        assert stream.read().column("n").to_pylist() == [1]


# --- opening --------------------------------------------------------------------------------------


def test_opening_a_folder_that_is_not_a_log(tmp_path: Path) -> None:
    """A non-empty folder without a marker is NotALogError (a NotFoundError); nothing is written."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"meow")
    for create in (True, False):
        with pytest.raises(ta.NotALogError, match="not a transit-arrow log") as info:
            ta.open(folder, create=create)
        assert isinstance(info.value, ta.NotFoundError)
    assert _files(folder) == ["cat.jpg"]


@pytest.mark.parametrize("marker", [b"{not json", b'{"format": 99}', b"[]"], ids=repr)
def test_bad_format_marker(tmp_path: Path, marker: bytes) -> None:
    """A corrupt or future format marker is NotALogError saying what is wrong."""
    (tmp_path / "_transit.json").write_bytes(marker)
    with pytest.raises(ta.NotALogError, match=r"_transit\.json|format"):
        ta.open(tmp_path)
    assert _files(tmp_path) == ["_transit.json"]


def test_create_false_on_empty_or_missing_folder(tmp_path: Path) -> None:
    """create=False refuses an empty or missing folder and creates nothing."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ta.NotALogError, match="no transit-arrow log"):
        ta.open(empty, create=False)
    assert list(empty.iterdir()) == []
    missing = tmp_path / "missing"
    with pytest.raises(ta.NotALogError):
        ta.open(missing, create=False)
    assert not missing.exists()


def test_create_false_opens_an_existing_log(root: Path) -> None:
    """create=False opens a log that exists."""
    with ta.open(root) as log:
        log.create_stream("s")
    with ta.open(root, create=False) as log:
        assert log.streams().column("name").to_pylist() == ["s"]


BAD_OPTIONS: list[dict[str, Any]] = [
    {"durability": "fast"},
    {"durability": None},
    {"segment_max_records": 0},
    {"segment_max_records": -1},
    {"segment_max_records": 1.5},
    {"segment_max_records": "10"},
    {"segment_max_bytes": 0},
    {"row_group_size": 0},
    {"segment_max_age": 0},
    {"segment_max_age": -1.0},
    {"segment_max_age": float("nan")},
    {"segment_max_age": "soon"},
]


@pytest.mark.parametrize("options", BAD_OPTIONS, ids=repr)
def test_bad_open_options(root: Path, options: dict[str, Any]) -> None:
    """Out-of-range or mistyped options raise InvalidInputError naming the option."""
    name = next(iter(options))
    with pytest.raises(ta.InvalidInputError, match=name):
        ta.open(root, **options)
    assert not root.exists()


def test_unsupported_uri_scheme() -> None:
    """An unknown URI scheme is InvalidInputError listing the supported ones."""
    with pytest.raises(ta.InvalidInputError, match="unsupported URI scheme 'ftp'"):
        ta.open("ftp://host/log")


# --- memory:// logs -------------------------------------------------------------------------------


def test_memory_log_round_trip() -> None:
    """A memory:// log supports the whole API and keeps its data for the process's life."""
    uri = f"memory://{uuid.uuid4().hex}"
    with ta.open(uri, segment_max_records=2) as log:
        assert log.uri == uri
        stream = log.create_stream("s")
        for i in range(5):
            stream.append({"n": i}, durability="local" if i % 2 else "tiered")
        stream.flush()
        assert stream.read().column("n").to_pylist() == list(range(5))
        assert stream.scan().collect().get_column("n").to_list() == list(range(5))
        assert len(_segments(stream)) >= 2
    with ta.open(uri) as log:
        stream = log.stream("s")
        assert stream.read().column("n").to_pylist() == list(range(5))
        stream.append({"n": 5})
        assert stream.read(4).column("n").to_pylist() == [4, 5]
    with ta.open(f"memory://{uuid.uuid4().hex}") as other:
        assert other.streams().num_rows == 0
