"""Records and schemas: input coercion, schema evolution, conforming, system columns (DESIGN §2)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from transit_arrow.errors import InvalidInputError, SchemaMismatchError
from transit_arrow.record import (
    HEADERS_TYPE,
    TIMESTAMP_TYPE,
    coerce_input,
    conform,
    evolve_schema,
    system_columns,
)

UTC = dt.UTC


def _one(name: str, type_: pa.DataType) -> pa.Schema:
    return pa.schema([pa.field(name, type_)])


def _struct(**fields: pa.DataType) -> pa.DataType:
    return pa.struct([pa.field(k, v) for k, v in fields.items()])


# --- evolve_schema: the widening lattice ------------------------------------------------------

# (a, b, join): a column of either type must widen to `join` whichever of the two comes first.
_JOINS: list[tuple[pa.DataType, pa.DataType, pa.DataType]] = [
    (pa.int8(), pa.int64(), pa.int64()),
    (pa.int16(), pa.int32(), pa.int32()),
    (pa.uint8(), pa.uint32(), pa.uint32()),
    (pa.uint8(), pa.int16(), pa.int16()),
    (pa.uint16(), pa.int64(), pa.int64()),
    (pa.uint32(), pa.int32(), pa.int64()),
    (pa.uint8(), pa.int8(), pa.int16()),
    (pa.float16(), pa.float32(), pa.float32()),
    (pa.float32(), pa.float64(), pa.float64()),
    (pa.string(), pa.large_string(), pa.large_string()),
    (pa.binary(), pa.large_binary(), pa.large_binary()),
    (pa.null(), pa.int32(), pa.int32()),
    (pa.null(), pa.string(), pa.string()),
    (pa.list_(pa.int32()), pa.list_(pa.int64()), pa.list_(pa.int64())),
    (pa.large_list(pa.int8()), pa.large_list(pa.int16()), pa.large_list(pa.int16())),
    (pa.list_(pa.float32()), pa.list_(pa.float64()), pa.list_(pa.float64())),
    (
        pa.list_(_struct(a=pa.int32())),
        pa.list_(_struct(a=pa.int64())),
        pa.list_(_struct(a=pa.int64())),
    ),
]


def _widening_cases() -> list[Any]:
    cases = []
    for a, b, join in _JOINS:
        cases.append(pytest.param(a, b, join, id=f"{a}+{b}"))
        if a != b:
            # Widening is symmetric: the same join whichever type the stream held first.
            cases.append(pytest.param(b, a, join, id=f"{b}+{a}"))
    return cases


_INCOMPATIBLE: list[tuple[str, pa.DataType, pa.DataType, str, pa.DataType, pa.DataType]] = [
    # (label, old, new, named column, named old type, named new type)
    ("int64-uint64", pa.int64(), pa.uint64(), "c", pa.int64(), pa.uint64()),
    ("int64-float64", pa.int64(), pa.float64(), "c", pa.int64(), pa.float64()),
    ("int32-string", pa.int32(), pa.string(), "c", pa.int32(), pa.string()),
    ("bool-int8", pa.bool_(), pa.int8(), "c", pa.bool_(), pa.int8()),
    ("string-binary", pa.string(), pa.binary(), "c", pa.string(), pa.binary()),
    (
        "ts-us-ns",
        pa.timestamp("us"),
        pa.timestamp("ns"),
        "c",
        pa.timestamp("us"),
        pa.timestamp("ns"),
    ),
    (
        "ts-tz",
        pa.timestamp("us", tz="UTC"),
        pa.timestamp("us"),
        "c",
        pa.timestamp("us", tz="UTC"),
        pa.timestamp("us"),
    ),
    ("date-ts", pa.date32(), pa.timestamp("us"), "c", pa.date32(), pa.timestamp("us")),
    ("int-struct", pa.int32(), _struct(a=pa.int32()), "c", pa.int32(), _struct(a=pa.int32())),
    (
        "list-item",
        pa.list_(pa.int32()),
        pa.list_(pa.string()),
        "c[]",
        pa.int32(),
        pa.string(),
    ),
    (
        "struct-field",
        _struct(a=pa.int32(), b=pa.string()),
        _struct(b=pa.int64()),
        "c.b",
        pa.string(),
        pa.int64(),
    ),
]


class TestEvolveSchema:
    """`evolve_schema(current, incoming)`: new nullable columns and safe widening only."""

    @pytest.mark.parametrize(("old", "new", "join"), _widening_cases())
    def test_widening(self, old: pa.DataType, new: pa.DataType, join: pa.DataType) -> None:
        """Each pair widens to its join, in either order."""
        evolved = evolve_schema(_one("c", old), _one("c", new))
        assert evolved == _one("c", join)

    @pytest.mark.parametrize(
        ("old", "new", "join"),
        [
            (pa.int32(), pa.int8(), pa.int32()),
            (pa.int16(), pa.uint8(), pa.int16()),
            (pa.int64(), pa.uint32(), pa.int64()),
            (pa.float64(), pa.float32(), pa.float64()),
            (pa.large_string(), pa.string(), pa.large_string()),
            (pa.int32(), pa.null(), pa.int32()),
        ],
    )
    def test_narrower_input_keeps_the_stream_type(
        self, old: pa.DataType, new: pa.DataType, join: pa.DataType
    ) -> None:
        """Data of a type the stream's column already holds leaves the schema as it is."""
        assert evolve_schema(_one("c", old), _one("c", new)) == _one("c", join)

    def test_struct_field_additions(self) -> None:
        """Struct fields are matched by name: new ones are appended, missing ones kept."""
        old = _one("s", _struct(a=pa.int32(), b=pa.string()))
        new = _one("s", _struct(c=pa.float64(), a=pa.int64()))
        evolved = evolve_schema(old, new)
        assert evolved == _one("s", _struct(a=pa.int64(), b=pa.string(), c=pa.float64()))
        assert all(f.nullable for f in evolved.field("s").type)

    def test_nested_struct_in_list(self) -> None:
        """Evolution recurses through lists of structs."""
        old = _one("l", pa.list_(_struct(a=pa.int8())))
        new = _one("l", pa.list_(_struct(a=pa.int16(), b=pa.bool_())))
        evolved = evolve_schema(old, new)
        assert evolved == _one("l", pa.list_(_struct(a=pa.int16(), b=pa.bool_())))

    def test_new_columns_appended_nullable(self) -> None:
        """New columns go last, nullable; existing columns keep their order and presence."""
        current = pa.schema([pa.field("a", pa.int64()), pa.field("b", pa.string())])
        incoming = pa.schema(
            [pa.field("c", pa.float64(), nullable=False), pa.field("a", pa.int64())]
        )
        evolved = evolve_schema(current, incoming)
        assert evolved.names == ["a", "b", "c"]
        assert evolved.field("c").type == pa.float64()
        assert all(f.nullable for f in evolved)

    def test_first_schema(self) -> None:
        """With no current schema the incoming one is taken, every column nullable."""
        incoming = pa.schema(
            [pa.field("x", pa.int32(), nullable=False), pa.field("y", pa.list_(pa.string()))]
        )
        evolved = evolve_schema(None, incoming)
        assert evolved.names == ["x", "y"]
        assert evolved.types == incoming.types
        assert all(f.nullable for f in evolved)

    @pytest.mark.parametrize(
        ("old", "new", "column", "old_type", "new_type"),
        [pytest.param(*case[1:], id=case[0]) for case in _INCOMPATIBLE],
    )
    def test_incompatible_raises(
        self,
        old: pa.DataType,
        new: pa.DataType,
        column: str,
        old_type: pa.DataType,
        new_type: pa.DataType,
    ) -> None:
        """Any other change raises `SchemaMismatchError` naming the column and both types."""
        current = pa.schema([pa.field("keep", pa.int64()), pa.field("c", old)])
        before = pa.schema(list(current))
        with pytest.raises(SchemaMismatchError) as info:
            evolve_schema(current, pa.schema([pa.field("c", new), pa.field("extra", pa.bool_())]))
        message = str(info.value)
        assert f"column '{column}'" in message
        assert f"type {old_type} in the stream" in message
        assert f"but {new_type} in the appended data" in message
        assert current == before

    @pytest.mark.parametrize(
        ("old", "new"), [pytest.param(case[2], case[1], id=case[0]) for case in _INCOMPATIBLE]
    )
    def test_incompatible_either_way(self, old: pa.DataType, new: pa.DataType) -> None:
        """Incompatibility does not depend on which type came first."""
        with pytest.raises(SchemaMismatchError):
            evolve_schema(_one("c", old), _one("c", new))


# --- conform ----------------------------------------------------------------------------------


class TestConform:
    """`conform(table, user)` casts a coerced input to the stream's user schema."""

    def test_widens_and_fills_missing_columns(self) -> None:
        """Columns are cast to the schema's types, reordered, and missing ones are null."""
        user = pa.schema(
            [
                pa.field("a", pa.int64()),
                pa.field("s", _struct(x=pa.int64(), y=pa.string())),
                pa.field("l", pa.list_(pa.int64())),
                pa.field("missing", pa.string()),
            ]
        )
        table = pa.table(
            {
                "l": pa.array([[1, 2], None], pa.list_(pa.int32())),
                "_timestamp": pa.array([0, 1], TIMESTAMP_TYPE),
                "a": pa.array([1, -1], pa.int8()),
                "s": pa.array([{"x": 1}, {"x": 2}], _struct(x=pa.int32())),
            }
        )
        out = conform(table, user)
        assert out.schema == user
        assert out.to_pylist() == [
            {"a": 1, "s": {"x": 1, "y": None}, "l": [1, 2], "missing": None},
            {"a": -1, "s": {"x": 2, "y": None}, "l": None, "missing": None},
        ]

    def test_evolve_then_conform(self) -> None:
        """Whatever `evolve_schema` accepts, `conform` can cast to."""
        for a, b, _ in _JOINS:
            for stream_type, data_type in ((a, b), (b, a)):
                table = pa.table({"c": pa.array([None], data_type)})
                try:
                    user = evolve_schema(_one("c", stream_type), table.schema)
                except SchemaMismatchError:
                    continue  # a refusal is covered by `test_widening`
                assert conform(table, user).schema == user

    def test_value_out_of_range(self) -> None:
        """A value that does not fit raises `SchemaMismatchError` naming the column."""
        table = pa.table({"a": pa.array([300], pa.int64())})
        with pytest.raises(SchemaMismatchError, match=r"column 'a'.*int64.*int8"):
            conform(table, _one("a", pa.int8()))


# --- coerce_input -----------------------------------------------------------------------------


class TestCoerceInput:
    """`coerce_input` accepts every input kind of DESIGN §2."""

    def test_dict(self) -> None:
        """A dict is one record; nested dicts become structs and lists become lists."""
        table = coerce_input({"a": 1, "s": "x", "n": {"k": 1.5, "t": [True]}, "l": [1, 2]}, None)
        assert table.num_rows == 1
        assert table.schema == pa.schema(
            [
                ("a", pa.int64()),
                ("s", pa.string()),
                ("n", _struct(k=pa.float64(), t=pa.list_(pa.bool_()))),
                ("l", pa.list_(pa.int64())),
            ]
        )
        assert table.to_pylist() == [{"a": 1, "s": "x", "n": {"k": 1.5, "t": [True]}, "l": [1, 2]}]

    def test_list_of_dicts(self) -> None:
        """A list of dicts is many records; keys missing from a record are null."""
        table = coerce_input([{"a": 1}, {"b": "x"}, {"a": 3, "b": "y"}], None)
        assert table.column_names == ["a", "b"]
        assert table.to_pydict() == {"a": [1, None, 3], "b": [None, "x", "y"]}

    def test_tuple_of_dicts(self) -> None:
        """A tuple of dicts is accepted like a list."""
        assert coerce_input(({"a": 1}, {"a": 2}), None).to_pydict() == {"a": [1, 2]}

    def test_uses_the_stream_types(self) -> None:
        """Python values are built with the stream's types when they fit."""
        current = pa.schema([("a", pa.int8()), ("b", pa.large_string())])
        table = coerce_input([{"a": 1, "b": "x"}], current)
        assert table.schema == current

    def test_incompatible_values_surface_in_evolution(self) -> None:
        """Values that do not fit the stream's type are inferred, so evolution names the clash."""
        current = _one("a", pa.int8())
        table = coerce_input([{"a": "text"}], current)
        assert table.schema == _one("a", pa.string())
        with pytest.raises(SchemaMismatchError, match=r"'a'.*int8.*string"):
            evolve_schema(current, table.schema)

    def test_mixed_python_types(self) -> None:
        """A column of values Arrow cannot unify is refused, naming the column and types."""
        with pytest.raises(InvalidInputError, match=r"'a'.*int.*str"):
            coerce_input([{"a": 1}, {"a": "x"}], None)

    @pytest.mark.parametrize("data", [b"\x00\xffbytes", bytearray(b"ba"), memoryview(b"mv")])
    def test_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes-like input is one record in a binary `payload` column."""
        table = coerce_input(data, None)
        assert table.schema == _one("payload", pa.binary())
        assert table.column("payload").to_pylist() == [bytes(data)]

    def test_str(self) -> None:
        """A str is one record in a string `payload` column."""
        table = coerce_input("héllo", None)
        assert table.schema == _one("payload", pa.string())
        assert table.column("payload").to_pylist() == ["héllo"]

    def test_pyarrow_inputs(self) -> None:
        """Tables, record batches and readers are taken as they are."""
        table = pa.table({"a": pa.array([1, 2], pa.int16()), "b": ["x", "y"]})
        batch = table.to_batches()[0]
        reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
        for data in (table, batch, reader):
            assert coerce_input(data, None).equals(table)

    def test_polars(self) -> None:
        """A polars DataFrame is read through the Arrow PyCapsule interface."""
        df = pl.DataFrame({"a": [1, 2], "s": [{"x": 1}, {"x": 2}]})
        table = coerce_input(df, None)
        assert table.num_rows == 2
        assert table.column_names == ["a", "s"]
        assert table.column("a").to_pylist() == [1, 2]
        assert table.column("s").to_pylist() == [{"x": 1}, {"x": 2}]

    def test_pandas(self) -> None:
        """A pandas DataFrame with a default index is read without the index."""
        df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
        table = coerce_input(df, None)
        assert table.column_names == ["a", "b"]
        assert table.to_pydict() == {"a": [1, 2], "b": ["x", "y"]}

    def test_pandas_with_a_non_default_index(self) -> None:
        """A filtered or re-indexed pandas DataFrame is read without its index."""
        df = pd.DataFrame({"a": [1, 2, 3]}, index=[10, 20, 30])
        table = coerce_input(df[df["a"] != 2], None)
        assert table.column_names == ["a"]
        assert table.column("a").to_pylist() == [1, 3]

    def test_duckdb(self) -> None:
        """A DuckDB relation is read through the Arrow PyCapsule interface."""
        con = duckdb.connect()
        try:
            rel = con.sql("SELECT range AS a, 'v' || range AS b FROM range(3)")
            table = coerce_input(rel, None)
        finally:
            con.close()
        assert table.to_pydict() == {"a": [0, 1, 2], "b": ["v0", "v1", "v2"]}

    def test_headers_dict_becomes_a_map(self) -> None:
        """`_headers` given as a dict becomes a map<string, string>, values as strings."""
        table = coerce_input([{"a": 1, "_headers": {"k": "v", "n": 1}}, {"a": 2}], None)
        assert table.schema.field("_headers").type == HEADERS_TYPE
        assert table.column("_headers").to_pylist() == [[("k", "v"), ("n", "1")], None]

    @pytest.mark.parametrize(
        "data",
        [
            {"_offset": 1, "a": 1},
            {"_stream": "x", "a": 1},
            {"_private": 1},
            [{"a": 1}, {"_x": 2}],
            pa.table({"a": [1], "_offset": [1]}),
            pl.DataFrame({"__index_level_0__": [1], "a": [1]}),
        ],
        ids=["_offset", "_stream", "_private", "in-a-later-row", "arrow", "polars"],
    )
    def test_reserved_names(self, data: Any) -> None:
        """Names starting with '_' are reserved, except `_timestamp` and `_headers`."""
        with pytest.raises(InvalidInputError, match="reserved"):
            coerce_input(data, None)

    def test_caller_system_columns_allowed(self) -> None:
        """`_timestamp` and `_headers` may be supplied next to user columns."""
        now = dt.datetime(2024, 5, 1, tzinfo=UTC)
        table = coerce_input({"a": 1, "_timestamp": now, "_headers": {"h": "v"}}, None)
        assert table.schema.field("_timestamp").type == TIMESTAMP_TYPE
        assert table.column("_timestamp").to_pylist() == [now]

    @pytest.mark.parametrize(
        "data",
        [
            {},
            {"_timestamp": dt.datetime(2024, 1, 1, tzinfo=UTC)},
            {"_headers": {"a": "b"}},
            pa.table({"_timestamp": pa.array([0], TIMESTAMP_TYPE)}),
        ],
        ids=["empty-dict", "timestamp-only", "headers-only", "arrow-system-only"],
    )
    def test_no_user_columns(self, data: Any) -> None:
        """Input with no user column is refused."""
        with pytest.raises(InvalidInputError, match="no user columns"):
            coerce_input(data, None)

    @pytest.mark.parametrize(
        ("data", "match"),
        [
            ([], "empty list"),
            (42, "builtins.int"),
            (object(), "builtins.object"),
            ({1: "x"}, "must be strings"),
            ({"": 1}, "must not be empty"),
            ([{"a": 1}, 2], "must hold dicts"),
            (pa.table([pa.array([1]), pa.array([2])], names=["a", "a"]), "duplicate"),
        ],
        ids=["empty-list", "int", "object", "non-str-key", "empty-name", "non-dict-row", "dup"],
    )
    def test_unacceptable(self, data: Any, match: str) -> None:
        """Unsupported inputs raise `InvalidInputError` saying what is wrong."""
        with pytest.raises(InvalidInputError, match=match):
            coerce_input(data, None)


# --- system_columns ---------------------------------------------------------------------------


def _system(table: pa.Table, first: int = 0, now_us: int | None = None) -> list[Any]:
    return [c.to_pylist() for c in system_columns(table, first, now_us)]


class TestSystemColumns:
    """`system_columns` assigns `_offset`, `_timestamp` and `_headers`."""

    def test_assigned(self) -> None:
        """Offsets are dense from `first_offset`; the time is `now_us`; headers are null."""
        table = pa.table({"a": [1, 2, 3]})
        offsets, stamps, headers = system_columns(table, 40, now_us=1_700_000_000_000_001)
        assert offsets.type == pa.int64()
        assert offsets.to_pylist() == [40, 41, 42]
        assert stamps.type == TIMESTAMP_TYPE
        expected = dt.datetime(2023, 11, 14, 22, 13, 20, 1, tzinfo=UTC)
        assert stamps.to_pylist() == [expected] * 3
        assert headers.type == HEADERS_TYPE
        assert headers.to_pylist() == [None] * 3

    def test_clock(self) -> None:
        """Without `now_us` the time is the current UTC time."""
        before = dt.datetime.now(UTC)
        _, stamps, _ = _system(pa.table({"a": [1]}))
        after = dt.datetime.now(UTC)
        assert before - dt.timedelta(microseconds=1) <= stamps[0] <= after

    @pytest.mark.parametrize("unit", ["s", "ms", "us"])
    def test_naive_timestamp_is_utc(self, unit: str) -> None:
        """A tz-naive `_timestamp` is read as UTC wall-clock time, whatever its unit."""
        naive = dt.datetime(2024, 3, 1, 12, 30, 15)
        table = pa.table({"a": [1], "_timestamp": pa.array([naive], pa.timestamp(unit))})
        _, stamps, _ = _system(table)
        assert stamps == [naive.replace(tzinfo=UTC)]

    def test_naive_python_datetime_is_utc(self) -> None:
        """A naive `datetime` in a dict record is read as UTC."""
        naive = dt.datetime(2024, 3, 1, 12, 30, 15, 123456)
        table = coerce_input({"a": 1, "_timestamp": naive}, None)
        _, stamps, _ = _system(table)
        assert stamps == [naive.replace(tzinfo=UTC)]

    def test_naive_pandas_timestamp_is_utc(self) -> None:
        """A naive pandas datetime64[ns] `_timestamp` is read as UTC."""
        df = pd.DataFrame({"a": [1], "_timestamp": [pd.Timestamp("2024-03-01 12:30:15.5")]})
        _, stamps, _ = _system(coerce_input(df, None))
        assert stamps == [dt.datetime(2024, 3, 1, 12, 30, 15, 500000, tzinfo=UTC)]

    def test_aware_timestamp_is_converted(self) -> None:
        """A `_timestamp` in another zone keeps its instant."""
        plus2 = dt.timezone(dt.timedelta(hours=2))
        aware = dt.datetime(2024, 3, 1, 12, 0, tzinfo=plus2)
        table = coerce_input({"a": 1, "_timestamp": aware}, None)
        _, stamps, _ = _system(table)
        assert stamps == [dt.datetime(2024, 3, 1, 10, 0, tzinfo=UTC)]

    @pytest.mark.parametrize(
        "nanos",
        [
            pytest.param(1_700_000_000_123_456_000, id="whole-microseconds"),
            pytest.param(
                1_700_000_000_123_456_789,
                id="sub-microsecond",
            ),
        ],
    )
    def test_naive_behaves_like_utc(self, nanos: int) -> None:
        """A naive `_timestamp` gives exactly what the same values labelled UTC give."""

        def outcome(tz: str | None) -> Any:
            arr = pa.array([nanos], pa.timestamp("ns", tz=tz))
            try:
                return _system(pa.table({"a": [1], "_timestamp": arr}))[1]
            except InvalidInputError as e:
                return type(e)

        assert outcome(None) == outcome("UTC")

    def test_null_timestamp_gets_the_append_time(self) -> None:
        """Records that supply no `_timestamp` in a call that supplies some get the append
        time (DESIGN §2: assigned at append unless the caller supplies one)."""
        table = pa.table({"a": [1, 2], "_timestamp": pa.array([0, None], TIMESTAMP_TYPE)})
        ts = system_columns(table, 0, now_us=123)[1]
        assert ts.to_pylist() == pa.array([0, 123], TIMESTAMP_TYPE).to_pylist()

    @pytest.mark.parametrize(
        "values",
        [pa.array([True]), pa.array(["2024-01-01T00:00:00"])],
        ids=["bool", "zone-less-string"],
    )
    def test_non_timestamp_refused(self, values: pa.Array) -> None:
        """A `_timestamp` that is not a timestamp is refused."""
        with pytest.raises(InvalidInputError, match="'_timestamp' must be a timestamp"):
            system_columns(pa.table({"a": [1], "_timestamp": values}), 0)

    def test_headers_kept(self) -> None:
        """Supplied headers come back as a map, nulls where a record has none."""
        table = coerce_input([{"a": 1, "_headers": {"k": "v"}}, {"a": 2}], None)
        _, _, headers = _system(table)
        assert headers == [[("k", "v")], None]

    def test_headers_of_wrong_type_refused(self) -> None:
        """`_headers` that cannot be a map of strings are refused."""
        table = pa.table({"a": [1], "_headers": pa.array([1])})
        with pytest.raises(InvalidInputError, match="'_headers' must be a map of strings"):
            system_columns(table, 0)
