"""Refusals change nothing: every refused operation leaves the log folder (store and local
dir: heads, leases, locks) byte for byte as it was, with no temporary file left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import blake3
import pyarrow as pa
import pytest

import transit_arrow as ta


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under `root`: path -> BLAKE3 of the bytes ("dir" for folders)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(folder, d), root)] = "dir"
        for f in files:
            path = os.path.join(folder, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = blake3.blake3(fh.read()).hexdigest()
    return out


def assert_unchanged(before: dict[str, str], after: dict[str, str]) -> None:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    assert (added, removed, changed) == ([], [], [])


def wrong_type_resolver(base: pa.Table, parents: list[pa.Table]) -> Any:
    return 42


def raising_resolver(base: pa.Table, parents: list[pa.Table]) -> Any:
    raise RuntimeError("no")


def clashing_resolver(base: pa.Table, parents: list[pa.Table]) -> Any:
    return pa.table({"x": ["a string where the parents hold ints"]})


def bad_time_resolver(base: pa.Table, parents: list[pa.Table]) -> Any:
    return pa.table({"x": [1], "_timestamp": ["not a time"]})


for _name, _fn in {
    "wrong_type": wrong_type_resolver,
    "raising": raising_resolver,
    "clashing": clashing_resolver,
    "bad_time": bad_time_resolver,
}.items():
    ta.register_merge_resolver(f"refusals_{_name}", _fn)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A log with sealed history, a branch and a materialization (closed, then reopened by
    each test), so that refusals meet every kind of file."""
    path = tmp_path / "log"
    with ta.open(path) as log:
        main = log.create_stream("main")
        main.append([{"x": i, "s": str(i)} for i in range(10)])
        main.flush()
        log.branch("b", at="main@4").append({"x": 100, "s": "b"})
        log.materialize("m", "main", query="SELECT count(*) AS n FROM records").refresh()
    yield path


REFUSALS: dict[str, Callable[[ta.Log], Any]] = {
    # append: the first append of the process (it would take the lease) and later ones
    "append reserved column": lambda log: log.stream("main").append({"_x": 1}),
    "append schema conflict": lambda log: log.stream("main").append({"x": "text"}),
    "append float into int": lambda log: log.stream("main").append({"x": 1.5}),
    "append huge int": lambda log: log.stream("main").append({"x": 2**70}),
    "append set": lambda log: log.stream("main").append({"x": {1, 2}}),
    "append not a record": lambda log: log.stream("main").append([{"x": 1}, 5]),
    "append empty list": lambda log: log.stream("main").append([]),
    "append bad durability": lambda log: log.stream("main").append({"x": 1}, durability="x"),
    "append object": lambda log: log.stream("main").append(object()),
    "append bad timestamp": lambda log: log.stream("main").append(
        {"x": 1, "_timestamp": "yesterday"}
    ),
    "append lossy float32": lambda log: log.stream("main").append(
        pa.table({"x": pa.array([1], pa.int64()), "s": pa.array([1.5], pa.float32())})
    ),
    # branch
    "branch existing name": lambda log: log.branch("b", at="main@1"),
    "branch missing parent": lambda log: log.branch("c", at="nope@1"),
    "branch offset past end": lambda log: log.branch("c", at="main@99"),
    "branch bad name": lambda log: log.branch("../c", at="main@1"),
    # merge (the parents have unsealed records of this process where noted)
    "merge one parent": lambda log: log.merge("mm", ["main"]),
    "merge unknown policy": lambda log: log.merge("mm", ["main", "b"], policy="best"),
    "merge diverged fast_forward": lambda log: log.merge(
        "mm", ["main", "b"], policy="fast_forward"
    ),
    # materialize
    "materialize bad query": lambda log: log.materialize("m2", "main", query="SELECT nope"),
    "materialize two statements": lambda log: log.materialize(
        "m2", "main", query="SELECT 1 AS a FROM records; COPY (SELECT 1) TO 'evil.csv'"
    ),
    "materialize not a select": lambda log: log.materialize(
        "m2", "main", query="COPY (SELECT 1) TO 'evil.csv'"
    ),
    "materialize key not output": lambda log: log.materialize(
        "m2", "main", query="SELECT x FROM records", key=["s"]
    ),
    "materialize missing source": lambda log: log.materialize(
        "m2", "nope", query="SELECT x FROM records"
    ),
    "refresh unknown branch": lambda log: log.materialization("m").refresh("nope"),
}


# Refusals that need something done first: (set-up, refused call).
SET_UP: dict[str, Callable[[ta.Log], Any]] = {
    "append after an accepted one": lambda log: log.stream("b").append({"x": 1}),
    "materialize refresh without reducer": lambda log: (
        log.stream("main").append({"x": 51, "s": "unsealed"}),
        log.materialize("r", "main", reducer=lambda state, batch: batch),
    ),
    **{
        f"merge resolver {kind}": lambda log: log.stream("main").append({"x": 50, "s": "unsealed"})
        for kind in ("wrong_type", "raising", "clashing", "bad_time")
    },
}
REFUSALS["append after an accepted one"] = lambda log: log.stream("b").append({"x": "no"})
REFUSALS["materialize refresh without reducer"] = lambda log: log.materialization("r").refresh()
for _kind in ("wrong_type", "raising", "clashing", "bad_time"):
    REFUSALS[f"merge resolver {_kind}"] = lambda log, kind=_kind: log.merge(
        "mm", ["main", "b"], policy=f"custom:refusals_{kind}"
    )


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refusal_changes_nothing(root: Path, name: str) -> None:
    """The operation raises a TransitError, and the folder (store, heads, leases, locks) is
    byte for byte as it was just before it; unsealed records of this process stay unsealed."""
    with ta.open(root) as log:
        if name in SET_UP:
            SET_UP[name](log)  # e.g. unsealed records a refused merge must not seal
        before = snapshot(root)
        with pytest.raises(ta.TransitError):
            REFUSALS[name](log)
        assert_unchanged(before, snapshot(root))


CLI_REFUSALS: dict[str, tuple[list[str], bytes]] = {
    "append binary garbage to a new stream": (["append", "{root}", "new"], b"\x00\xff\xfe{"),
    "append bad line to a new stream": (["append", "{root}", "new"], b'{"a": 1}\n{nope\n'),
    "append reserved column from csv": (
        ["append", "{root}", "new", "--format", "csv"],
        b"_x,y\n1,2\n",
    ),
    "append inconsistent csv": (["append", "{root}", "new", "--format", "csv"], b"a,b\n1\n"),
    "append schema conflict": (["append", "{root}", "main"], b'{"x": "text"}\n'),
    "append garbage parquet": (["append", "{root}", "new", "--format", "parquet"], b"PAR1xx"),
    "branch existing": (["branch", "{root}", "b", "--at", "main@1"], b""),
    "merge bad policy": (["merge", "{root}", "mm", "main", "b", "--policy", "best"], b""),
    "verify bad checkpoint file": (["verify", "{root}", "--checkpoint", "-"], b"\xff\x00{"),
    "verify checkpoint of a missing stream": (
        ["verify", "{root}", "--checkpoint", "-"],
        b'{"stream":"nope","generation":0,"head_offset":0,"root":"' + b"a" * 64 + b'"}',
    ),
    "sql bad query": (["sql", "{root}", "SELEC nope"], b""),
    "materialize create with a COPY": (
        ["materialize", "create", "{root}", "m2", "main", "--query", "COPY main TO 'x.csv'"],
        b"",
    ),
    "checkpoint bad kind": (["checkpoint", "{root}", "main", "--kind", "a b"], b""),
    "read missing stream": (["read", "{root}", "nope"], b""),
}


@pytest.mark.parametrize("name", sorted(CLI_REFUSALS))
def test_cli_refusal_changes_nothing(root: Path, name: str) -> None:
    """A refused CLI command prints one `error:` line, exits 1 and changes no file."""
    args, stdin = CLI_REFUSALS[name]
    before = snapshot(root)
    done = subprocess.run(
        [sys.executable, "-m", "transit_arrow", *(a.format(root=root) for a in args)],
        input=stdin,
        capture_output=True,
        cwd=root.parent,
    )
    err = done.stderr.decode()
    assert done.returncode == 1, (done.returncode, err)
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert_unchanged(before, snapshot(root))
    assert not (root.parent / "evil.csv").exists() and not (root.parent / "x.csv").exists()
