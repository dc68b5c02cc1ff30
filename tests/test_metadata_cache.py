"""The local metadata cache (`engine/metacache.py`, issue 16): a fresh handle uses it only for
streams whose commit files did not change, sees every change made after it was written, ignores
a damaged cache, and never lets it stand in for `verify()`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import transit_arrow as ta
from tests.test_snapshots import CountingStore
from transit_arrow.engine.metacache import CACHE_FILE

REPO = Path(__file__).resolve().parent.parent


def _build(root: Path) -> None:
    """A root stream with three commits, branches of it, a merge and a stream with a schema."""
    with ta.open(root) as log:
        main = log.create_stream("main")
        for i in range(3):
            main.append({"x": i})
            main.flush()
        for i in range(4):
            b = log.branch(f"exp/b{i}", f"main@{i % 3}", actor="t", labels={"i": str(i)})
            b.append({"x": 100 + i})
            b.flush()
        log.merge("merged", ["exp/b0", "exp/b1"], policy="concat", reason="join")
        log.create_stream("typed", schema=pa.schema([("v", pa.int64())]))


def _state(root: Path, *, cache: bool) -> dict[str, Any]:
    """What a fresh handle reports, with the cache as it is or removed first."""
    if not cache:
        (root / "_local" / CACHE_FILE).unlink(missing_ok=True)
    with ta.open(root) as log:
        lineage = log.lineage().to_pylist()
        streams = log.streams().to_pylist()
        sql = log.sql("SELECT * FROM transit_lineage ORDER BY name").fetchall()
        records = {name: log.stream(name).read().to_pylist() for name in log.catalog.names()}
    return {"lineage": lineage, "streams": streams, "sql": sql, "records": records}


def _cached(root: Path) -> dict[str, Any]:
    data = (root / "_local" / CACHE_FILE).read_bytes()
    return json.loads(data.partition(b"\n")[2])["streams"]  # type: ignore[no-any-return]


def _commit_reads(root: Path) -> list[str]:
    store = CountingStore(root)
    with ta.open(store) as log:
        log.lineage()
    return [p for p in store.gets if "/commits/" in p]


def test_a_fresh_handle_reads_no_commit_and_reports_the_same(tmp_path: Path) -> None:
    _build(tmp_path)
    without = _state(tmp_path, cache=False)  # writes the cache
    names = ["exp/b0", "exp/b1", "exp/b2", "exp/b3", "main", "merged", "typed"]
    assert sorted(_cached(tmp_path)) == names
    assert _commit_reads(tmp_path) == []
    assert _state(tmp_path, cache=True) == without
    # Without the cache, every stream's commits are read again.
    (tmp_path / "_local" / CACHE_FILE).unlink()
    assert len(_commit_reads(tmp_path)) >= 7


def test_history_below_a_cached_generation_is_folded_from_the_commits(tmp_path: Path) -> None:
    _build(tmp_path)
    with ta.open(tmp_path) as log:
        log.lineage()
        expected = log.stream("main").commits().to_pylist()
        first = log.stream("main").at(generation=1).read().to_pylist()
    with ta.open(tmp_path) as log:
        log.lineage()  # from the cache
        main = log.stream("main")
        assert main.at(generation=1).read().to_pylist() == first
        assert main.commits().to_pylist() == expected
        assert [c["generation"] for c in log.catalog.commits("main")] == [0, 1, 2, 3]


_OTHER_PROCESS = """
import sys
import transit_arrow as ta
with ta.open(sys.argv[1]) as log:
    log.stream("main").append({"x": 7})
    log.stream("main").flush()
    log.stream("exp/b1").append({"x": 8})
    log.stream("exp/b1").flush()
"""


def test_changes_made_after_the_cache_was_written_are_seen(tmp_path: Path) -> None:
    _build(tmp_path)
    with ta.open(tmp_path) as log:
        log.lineage()  # writes the cache
    # Another handle: a new branch, a new merge, a deletion, appends.
    with ta.open(tmp_path) as other:
        other.branch("exp/new", "main@1")
        other.merge("merged2", ["exp/new", "exp/b3"], policy="concat")
        other.delete_stream("exp/b2")
        other.stream("typed").append({"v": 5})
        other.stream("typed").flush()
    # Another process: appends to streams the cache holds.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", _OTHER_PROCESS, str(tmp_path)], check=True, env=env)
    cached = _state(tmp_path, cache=True)
    names = [row["name"] for row in cached["lineage"]]
    assert "exp/new" in names and "merged2" in names and "exp/b2" not in names
    assert cached["records"]["main"][-1]["x"] == 7
    assert cached["records"]["exp/b1"][-1]["x"] == 8
    assert cached == _state(tmp_path, cache=False)
    # The cache now holds the new state: the next handle reads no commit.
    assert _commit_reads(tmp_path) == []


@pytest.mark.parametrize("damage", ["flip", "truncate", "version", "other_log", "empty", "garbage"])
def test_a_damaged_cache_is_ignored(tmp_path: Path, damage: str) -> None:
    _build(tmp_path)
    expected = _state(tmp_path, cache=False)
    path = tmp_path / "_local" / CACHE_FILE
    data = path.read_bytes()
    head, _, body = data.partition(b"\n")
    if damage == "flip":  # one byte of the body: its BLAKE3 no longer matches
        at = body.index(b'"next_offset":') + len(b'"next_offset":')
        body = body[:at] + (b"9" if body[at : at + 1] != b"9" else b"8") + body[at + 1 :]
        path.write_bytes(head + b"\n" + body)
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "version":
        header = json.loads(head)
        path.write_bytes(json.dumps({**header, "version": 99}).encode() + b"\n" + body)
    elif damage == "other_log":
        header = json.loads(head)
        path.write_bytes(json.dumps({**header, "log": "file:///elsewhere"}).encode() + b"\n" + body)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(b"\x00\xff not json")
    assert _state(tmp_path, cache=True) == expected
    # ... and rebuilt: the next handle reads no commit.
    assert _commit_reads(tmp_path) == []


def test_a_forged_entry_for_changed_commit_files_is_not_used(tmp_path: Path) -> None:
    """An entry whose recorded identity no longer matches the commit file (here: the file was
    rewritten with the same bytes) is folded from the commits again."""
    _build(tmp_path)
    expected = _state(tmp_path, cache=False)
    commit = tmp_path / "streams" / "main" / "commits" / f"{3:020d}.json"
    data = commit.read_bytes()
    commit.unlink()
    commit.write_bytes(data)
    reads = _commit_reads(tmp_path)
    assert "streams/main/commits/00000000000000000003.json" in reads
    assert _state(tmp_path, cache=True) == expected


def test_a_tampered_commit_is_detected_by_verify_and_not_served(tmp_path: Path) -> None:
    _build(tmp_path)
    with ta.open(tmp_path) as log:
        log.lineage()  # writes the cache
        assert log.verify().ok
    commit = tmp_path / "streams" / "exp%2Fb3" / "commits" / f"{0:020d}.json"
    data = commit.read_bytes()
    assert b'"actor":"t"' in data
    commit.write_bytes(data.replace(b'"actor":"t"', b'"actor":"u"'))
    with ta.open(tmp_path) as log:
        report = log.verify()
        assert not report.ok
        assert any("exp/b3" in f.stream for f in report.failures)
        # The cached state of that stream is not used: its history cannot be read now.
        assert "exp/b3" not in log.lineage().column("name").to_pylist()
        errors = {r["name"]: r["error"] for r in log.streams().to_pylist()}
        assert errors["exp/b3"] is not None
        assert errors["main"] is None
    # The cache no longer holds the damaged stream.
    assert "exp/b3" not in _cached(tmp_path)


def test_a_log_on_an_object_store_has_no_cache(tmp_path: Path) -> None:
    with ta.open("memory://metacache-none") as log:
        log.create_stream("a").append({"x": 1})
        log.stream("a").flush()
        assert log.lineage().num_rows == 1
        assert not (log.local_dir / CACHE_FILE).exists()


def test_a_stream_a_few_commits_past_its_entry_reads_only_the_new_commits(tmp_path: Path) -> None:
    _build(tmp_path)
    expected_before = _state(tmp_path, cache=False)
    with ta.open(tmp_path) as other:  # never lists every stream: the cache is not rewritten
        other.stream("main").append({"x": 9})
        other.stream("main").flush()
    store = CountingStore(tmp_path)
    with ta.open(store) as log:
        rows = {r["name"]: r for r in log.lineage().to_pylist()}
        assert rows["main"]["generation"] == 4
        assert log.stream("main").read().column("x").to_pylist()[-1] == 9
    assert [p for p in store.gets if "/commits/" in p] == [
        "streams/main/commits/00000000000000000004.json"
    ]
    assert _state(tmp_path, cache=True) == _state(tmp_path, cache=False) != expected_before


def test_stream_folders_listed_are_the_names_folders(tmp_path: Path) -> None:
    names = ["a", "a.b", "...", "x/..y", "-_./q", "n/" + "z" * 190, "p/" * 60 + "q"]
    with ta.open(tmp_path) as log:
        for name in names:
            log.create_stream(name).append({"x": 1})
            log.stream(name).flush()
    with ta.open(tmp_path) as log:
        assert log.catalog.names() == sorted(names)
        assert sorted(log.lineage().column("name").to_pylist()) == sorted(names)
    with ta.open(tmp_path) as log:  # from the cache
        assert [log.stream(n).read().column("x").to_pylist() for n in names] == [[1]] * 7
        assert sorted(r["name"] for r in log.streams().to_pylist() if r["error"] is None) == sorted(
            names
        )
