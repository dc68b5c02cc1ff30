"""One error tree at the surface: hostile input to every public method and CLI command.

Each case must raise a `TransitError` subclass (the CLI: exit 1 and exactly one `error:`
line), and leave the log folder byte for byte as it was. A second part checks that names
and values never reach SQL unescaped: hostile column, key and materialization names read
back exactly, and no statement smuggled into a name runs.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

import transit_arrow as ta
from tests.test_refusals import assert_unchanged, snapshot

Case = Callable[[ta.Log], Any]

BAD_NAMES: list[Any] = [
    "",
    "/a",
    "a/",
    "a//b",
    "a/../b",
    "..",
    ".",
    "a b",
    'a"b',
    "a'b",
    "a;DROP",
    "x" * 256,
    "a\x00b",
    "é",
    None,
    42,
    b"main",
    ["main"],
]

BAD_RECORDS: list[Any] = [
    {"_reserved": 1},
    {"_stream": "x"},
    {"_offset": 3},
    {"": 1},
    {1: "x"},
    {"x": 2**64},
    {"x": -(2**64)},
    {"x": {1, 2}},
    {"x": frozenset()},
    {"x": [1, "two"]},
    {"x": object()},
    {"x": 1, "_timestamp": "not a time"},
    {"x": 1, "_timestamp": 1.5},
    {"x": 1, "_headers": 5},
    {"_timestamp": "2024-01-01T00:00:00Z"},
    [],
    [{"x": 1}, "not a dict"],
    [{"x": 1}, None],
    object(),
    12,
    3.5,
    None,
    {"x": {"nested": {1, 2}}},
    pa.table({"_x": [1]}),
    pa.table({"a": [1], "A": [2]}).rename_columns(["a", "a"]),
]

# On a stream whose `x` is int64 and `s` is string.
SCHEMA_CONFLICTS: list[Any] = [
    {"x": "text"},
    {"x": 1.5},
    {"x": True},
    {"x": [1]},
    {"x": {"a": 1}},
    {"x": dt.datetime(2024, 1, 1)},
    {"x": decimal.Decimal("1.5")},
    {"s": 5},
    {"s": b"bytes"},
    pa.table({"x": pa.array([1.0])}),
    pa.table({"x": pa.array(["1"])}),
    pa.table({"x": pa.array([1], pa.uint64())}),
]


def _cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for i, name in enumerate(BAD_NAMES):
        cases[f"create_stream name {i}"] = lambda log, n=name: log.create_stream(n)
        cases[f"stream name {i}"] = lambda log, n=name: log.stream(n)
        cases[f"branch name {i}"] = lambda log, n=name: log.branch(n, at="main@1")
    for i, record in enumerate(BAD_RECORDS):
        cases[f"append record {i}"] = lambda log, r=record: log.stream("main").append(r)
    for i, record in enumerate(SCHEMA_CONFLICTS):
        cases[f"append conflict {i}"] = lambda log, r=record: log.stream("main").append(r)
    more: dict[str, Case] = {
        "open bad durability": lambda log: ta.open(log.uri, durability="fast"),
        "open zero segment": lambda log: ta.open(log.uri, segment_max_records=0),
        "open negative age": lambda log: ta.open(log.uri, segment_max_age=-1),
        "open nan age": lambda log: ta.open(log.uri, segment_max_age=math.nan),
        "open bool age": lambda log: ta.open(log.uri, segment_max_age=True),
        "open string rows": lambda log: ta.open(log.uri, row_group_size="many"),
        "open unknown codec": lambda log: ta.open(log.uri, segment_compression="gzip9"),
        "open storage options on a folder": lambda log: ta.open(
            log.uri, storage_options={"key": "k"}
        ),
        "open a file": lambda log: ta.open(Path(log.uri.removeprefix("file://")) / "_transit.json"),
        "open unknown scheme": lambda log: ta.open("gopher://x/y"),
        "open not a log": lambda log: ta.open(Path(log.uri.removeprefix("file://")) / "streams"),
        "open create=False missing": lambda log: ta.open(
            Path(log.uri.removeprefix("file://")).parent / "missing", create=False
        ),
        "create_stream schema not schema": lambda log: log.create_stream("n", schema={"a": 1}),
        "create_stream reserved schema": lambda log: log.create_stream(
            "n", schema=pa.schema([("_a", pa.int64())])
        ),
        "create_stream bad metadata": lambda log: log.create_stream("n", metadata={"actor": 5}),
        "create_stream bad labels": lambda log: log.create_stream(
            "n", metadata={"labels": {"a": 1}}
        ),
        "create_stream existing": lambda log: log.create_stream("main"),
        "stream missing": lambda log: log.stream("nope"),
        "append bad durability": lambda log: log.stream("main").append({"x": 1}, durability="x"),
        "read negative start": lambda log: log.stream("main").read(start=-1),
        "read string end": lambda log: log.stream("main").read(end="5"),
        "read bool start": lambda log: log.stream("main").read(start=True),
        "read unknown column": lambda log: log.stream("main").read(columns=["nope"]),
        "read columns string": lambda log: log.stream("main").read(columns="x"),
        "reader unknown column": lambda log: log.stream("main").reader(columns=["_nope"]),
        "at neither": lambda log: log.stream("main").at(),
        "at missing generation": lambda log: log.stream("main").at(generation=99),
        "at string generation": lambda log: log.stream("main").at(generation="1"),
        "at not a checkpoint": lambda log: log.stream("main").at("cp"),
        "as_of garbage": lambda log: log.stream("main").as_of("yesterday"),
        "as_of before creation": lambda log: log.stream("main").as_of("1990-01-01T00:00:00Z"),
        "as_of number": lambda log: log.stream("main").as_of(5),
        "branch missing parent": lambda log: log.branch("n", at="nope@1"),
        "branch past end": lambda log: log.branch("n", at="main@99"),
        "branch negative": lambda log: log.branch("n", at="main@-1"),
        "branch garbage position": lambda log: log.branch("n", at="main@x"),
        "branch position type": lambda log: log.branch("n", at=5),
        "branch existing": lambda log: log.branch("b", at="main@1"),
        "branch bad labels": lambda log: log.branch("n", at="main@1", labels={"a": 1}),
        "merge one parent": lambda log: log.merge("n", ["main"]),
        "merge same parent": lambda log: log.merge("n", ["main", "main"]),
        "merge parents string": lambda log: log.merge("n", "main,b"),
        "merge parents none": lambda log: log.merge("n", None),
        "merge unknown policy": lambda log: log.merge("n", ["main", "b"], policy="best"),
        "merge unknown resolver": lambda log: log.merge("n", ["main", "b"], policy="custom:zz"),
        "merge policy not str": lambda log: log.merge("n", ["main", "b"], policy=3),
        "merge bad base": lambda log: log.merge("n", ["main", "b"], base="other@0"),
        "merge fast_forward diverged": lambda log: log.merge(
            "n", ["main", "b"], policy="fast_forward"
        ),
        "merge bad params": lambda log: log.merge("n", ["main", "b"], policy_params=[1]),
        "merge missing parent": lambda log: log.merge("n", ["main", "nope"]),
        "materialize no query": lambda log: log.materialize("m", "main"),
        "materialize both": lambda log: log.materialize(
            "m", "main", query="SELECT 1 AS a FROM records", reducer=lambda s, b: b
        ),
        "materialize query not str": lambda log: log.materialize("m", "main", query=5),
        "materialize bad sql": lambda log: log.materialize("m", "main", query="SELEC"),
        "materialize two statements": lambda log: log.materialize(
            "m", "main", query="SELECT x FROM records; SELECT 2"
        ),
        "materialize attach": lambda log: log.materialize("m", "main", query="ATTACH 'x.db'"),
        "materialize copy": lambda log: log.materialize(
            "m", "main", query="COPY (SELECT 1) TO 'evil.csv'"
        ),
        "materialize file read": lambda log: log.materialize(
            "m", "main", query="SELECT * FROM read_csv('/etc/passwd')"
        ),
        "materialize key string": lambda log: log.materialize(
            "m", "main", query="SELECT x, _offset FROM records", key="x"
        ),
        "materialize key missing": lambda log: log.materialize(
            "m", "main", query="SELECT x, _offset FROM records", key=["nope"]
        ),
        "materialize bad name": lambda log: log.materialize(
            "m;x", "main", query="SELECT x FROM records"
        ),
        "materialize reducer not callable": lambda log: log.materialize("m", "main", reducer=5),
        "materialization missing": lambda log: log.materialization("nope"),
        "sql syntax": lambda log: log.sql("SELEC 1"),
        "sql missing table": lambda log: log.sql("SELECT * FROM nope"),
        "sql missing param": lambda log: log.sql("SELECT $a"),
        "sql bad generation": lambda log: log.sql('SELECT * FROM "main@g99"'),
        "sql not a string": lambda log: log.sql(5),
        # On a connection of the caller's: `log.duckdb()` itself succeeds, and may write the
        # log's local caches (metadata cache, view pack) while doing so.
        "create_view two points": lambda log: log.create_view(
            duckdb.connect(), "main", generation=0, as_of="2030-01-01T00:00:00Z"
        ),
        "create_view missing stream": lambda log: log.create_view(
            duckdb.connect(), "nope", generation=0
        ),
        "create_view forged checkpoint": lambda log: log.create_view(
            duckdb.connect(),
            "main",
            checkpoint=ta.Checkpoint("main", 0, 0, "ab" * 32),
        ),
        "verify missing": lambda log: log.verify("nope"),
        "verify number": lambda log: log.verify(5),
        "verify deep not bool": lambda log: log.verify("main", deep="yes"),
        "verify trusted without checkpoint": lambda log: log.verify("main", trusted_keys=b"x"),
        "checkpoint bad kind": lambda log: log.stream("main").checkpoint(kind="a b"),
        "checkpoint kind type": lambda log: log.stream("main").checkpoint(kind=5),
        "checkpoint bad key": lambda log: log.stream("main").checkpoint(sign_with=5),
        "checkpoint json garbage": lambda log: ta.Checkpoint.from_json("{nope"),
        "checkpoint json list": lambda log: ta.Checkpoint.from_json("[1, 2]"),
        "checkpoint json bytes": lambda log: ta.Checkpoint.from_json(b"\xff\xfe\x00"),
        "checkpoint json deep": lambda log: ta.Checkpoint.from_json("[" * 100_000),
        "checkpoint json types": lambda log: ta.Checkpoint.from_json(
            '{"stream": 1, "generation": "x", "head_offset": 0, "root": "r"}'
        ),
        "checkpoint json extra": lambda log: ta.Checkpoint.from_json(
            '{"stream": "main", "generation": 0, "head_offset": 0, "root": "r", "evil": 1}'
        ),
        "checkpoint json half signed": lambda log: ta.Checkpoint.from_json(
            '{"stream": "main", "generation": 0, "head_offset": 0, "root": "r", '
            '"public_key": "' + "a" * 64 + '"}'
        ),
        "gc negative": lambda log: log.gc(min_age="old"),
        "children missing": lambda log: log.children("nope"),
        "register resolver bad name": lambda log: ta.register_merge_resolver("a:b", len),
        "register resolver not callable": lambda log: ta.register_merge_resolver("zz", 5),
    }
    cases.update(more)
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile") / "log"
    with ta.open(root) as log:
        main = log.create_stream("main")
        main.append([{"x": i, "s": str(i)} for i in range(5)])
        main.flush()
        log.branch("b", at="main@2").append({"x": 9, "s": "b"})
        log.create_stream("other").append({"y": 1})
    return root


@pytest.fixture
def hostile_log(template: Path, tmp_path: Path) -> Iterator[tuple[Path, ta.Log]]:
    root = tmp_path / "log"
    subprocess.run(["cp", "-a", str(template), str(root)], check=True)
    with ta.open(root) as log:
        yield root, log


def test_the_corpus_is_large() -> None:
    assert len(CASES) + len(CLI_CASES) >= 100


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input_raises_a_transit_error(hostile_log: tuple[Path, ta.Log], name: str) -> None:
    """The call raises a TransitError subclass and changes no file."""
    root, log = hostile_log
    before = snapshot(root)
    cwd = os.getcwd()
    os.chdir(root.parent)
    try:
        with pytest.raises(ta.TransitError):
            result = CASES[name](log)
            if hasattr(result, "fetchall"):
                result.fetchall()
    finally:
        os.chdir(cwd)
    assert_unchanged(before, snapshot(root))
    assert not (root.parent / "evil.csv").exists()


CLI_CASES: dict[str, tuple[list[str], bytes]] = {
    "append binary stdin": (["append", "{root}", "n"], bytes(range(256)) * 4),
    "append nul stdin": (["append", "{root}", "n"], b"\x00" * 64),
    "append latin-1": (["append", "{root}", "n"], b'{"a": "caf\xe9"}\n'),
    "append deep json": (["append", "{root}", "n"], b"[" * 100_000 + b"\n"),
    "append json array": (["append", "{root}", "n"], b"[1, 2]\n"),
    "append reserved ndjson": (["append", "{root}", "n"], b'{"_x": 1}\n'),
    "append huge int": (["append", "{root}", "n"], b'{"x": 100000000000000000000000}\n'),
    "append mixed types": (["append", "{root}", "n"], b'{"x": 1}\n{"x": "a"}\n'),
    "append conflict": (["append", "{root}", "main"], b'{"x": "a"}\n'),
    "append bad timestamp": (["append", "{root}", "n"], b'{"x": 1, "_timestamp": "then"}\n'),
    "append ragged csv": (["append", "{root}", "n", "--format", "csv"], b"a,b\n1,2,3\n"),
    "append empty csv": (["append", "{root}", "n", "--format", "csv"], b""),
    "append dup csv": (["append", "{root}", "n", "--format", "csv"], b"a,a\n1,2\n"),
    "append garbage parquet": (["append", "{root}", "n", "--format", "parquet"], b"PAR1\x00"),
    "append bad name": (["append", "{root}", "a b"], b'{"x": 1}\n'),
    "append no create": (["append", "{root}", "n", "--no-create"], b'{"x": 1}\n'),
    "read missing": (["read", "{root}", "nope"], b""),
    "read bad column": (["read", "{root}", "main", "--columns", "nope"], b""),
    "branch bad at": (["branch", "{root}", "n", "--at", "main@x"], b""),
    "branch existing": (["branch", "{root}", "b", "--at", "main@0"], b""),
    "merge one parent": (["merge", "{root}", "n", "main", "main"], b""),
    "sql syntax": (["sql", "{root}", "SELEC 1"], b""),
    "sql copy blocked table": (["sql", "{root}", "SELECT * FROM nope"], b""),
    "checkpoint bad kind": (["checkpoint", "{root}", "main", "--kind", "a/b"], b""),
    "verify garbage checkpoint": (["verify", "{root}", "--checkpoint", "-"], b"\xff\xfe"),
    "verify checkpoint list": (["verify", "{root}", "--checkpoint", "-"], b"[]"),
    "verify missing stream": (["verify", "{root}", "nope"], b""),
    "materialize bad query": (
        ["materialize", "create", "{root}", "m", "main", "--query", "SELECT nope"],
        b"",
    ),
    "materialize refresh missing": (["materialize", "refresh", "{root}", "nope"], b""),
    "streams not a log": (["streams", "{root}/streams"], b""),
}


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_hostile_cli_input(hostile_log: tuple[Path, ta.Log], name: str) -> None:
    """Exit code 1, exactly one `error:` line, no traceback, no file changed."""
    root, log = hostile_log
    log.close()
    args, stdin = CLI_CASES[name]
    before = snapshot(root)
    done = subprocess.run(
        [sys.executable, "-m", "transit_arrow", *(a.format(root=root) for a in args)],
        input=stdin,
        capture_output=True,
        cwd=root.parent,
    )
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 1, (done.returncode, err)
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert "unexpected" not in err and "Traceback" not in err, err
    assert_unchanged(before, snapshot(root))


HOSTILE_COLUMNS = [
    'a"b',
    "a'b",
    "a\\b",
    "a}b",
    "a=b, c",
    "a;COPY",
    '"',
    "x\ny",
    "ünï",
    "a::b",
    "{",
    "'); COPY (SELECT 1) TO 'evil.csv'; --",
    "\"); COPY (SELECT 1) TO 'evil.csv'; --",
    "a\\'b",
    "$1",
]


def test_hostile_names_reach_sql_quoted(tmp_path: Path) -> None:
    """Hostile column names read back exactly through the stream's view, transit_records and
    a materialization keyed on them; nothing smuggled into a name runs."""
    os.chdir(tmp_path)
    hostile_streams = ["x.y-z/w", "select", "from", "_x", "a-b.c"]
    with ta.open(tmp_path / "log") as log:
        for stream in hostile_streams:
            s = log.create_stream(stream)
            s.append([{c: i for i, c in enumerate(HOSTILE_COLUMNS)}])
            s.flush()
            s.append([{c: 100 + i for i, c in enumerate(HOSTILE_COLUMNS)}])
        for stream in hostile_streams:
            table = log.sql(f'SELECT * FROM "{stream}" ORDER BY _offset').to_arrow_table()
            assert table.column_names[4:] == HOSTILE_COLUMNS
            user = table.select(HOSTILE_COLUMNS).to_pylist()
            assert user == log.stream(stream).read(columns=HOSTILE_COLUMNS).to_pylist()
            assert log.stream(stream).to_duckdb().fetchall()[1][4:] == tuple(
                100 + i for i in range(len(HOSTILE_COLUMNS))
            )
        count = log.sql("SELECT count(*) FROM transit_records").fetchall()
        assert count == [(2 * len(hostile_streams),)]
        for i, column in enumerate(HOSTILE_COLUMNS[:8]):
            mv = log.materialize(f"mv.{i}-x", "select", query="SELECT * FROM records", key=[column])
            assert mv.refresh().records_processed == 2
            assert mv.read().num_rows == 2
        assert log.sql('SELECT count(*) FROM "mv_mv.0-x"').fetchall() == [(2,)]
        assert log.sql("SELECT count(*) FROM transit_records WHERE _branch = $b", b="from")
    assert not (tmp_path / "evil.csv").exists()
