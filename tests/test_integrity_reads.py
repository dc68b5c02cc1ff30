"""Integrity on every read: no read path serves bytes that do not match their commit's BLAKE3.

A local segment is hashed the first time this process uses it and remembered by its identity
(size, mtime, ctime, inode, device), so a later change of the file is noticed; remote
segments are verified as they are fetched, and their cached copies on first use. Damage fails
only the streams whose replay reaches the damaged file (DESIGN §10).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

import transit_arrow as ta
from transit_arrow.segments import verified

HEX = "[0-9a-f]{64}"


def build(root: Path) -> dict[str, Path]:
    """main: x 0..19 in two segments (0..9, 10..19); b: a branch at main@5 (+ 3 records);
    other: an unrelated stream. Returns main's segment files, first and second."""
    with ta.open(root) as log:
        main = log.create_stream("main")
        main.append([{"x": i} for i in range(10)])
        main.flush()
        main.append([{"x": i} for i in range(10, 20)])
        main.flush()
        b = log.branch("b", at="main@5")
        b.append([{"x": 100 + i} for i in range(3)])
        b.flush()
        other = log.create_stream("other")
        other.append([{"y": i} for i in range(4)])
        other.flush()
    files = sorted((root / "streams" / "main" / "segments").glob("*.parquet"))
    assert len(files) == 2
    return {"first": files[0], "second": files[1]}


def flip(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x10
    path.write_bytes(bytes(data))


READS: dict[str, Callable[[ta.Log, str], Any]] = {
    "read": lambda log, s: log.stream(s).read(),
    "reader": lambda log, s: log.stream(s).reader().read_all(),
    "scan": lambda log, s: log.stream(s).scan().collect(),
    "view read": lambda log, s: log.stream(s).at(generation=log.stream(s).generation).read(),
    "to_duckdb": lambda log, s: log.stream(s).to_duckdb().fetchall(),
    "log.sql": lambda log, s: log.sql(f'SELECT sum(x) FROM "{s}"').fetchall(),
    "log.duckdb": lambda log, s: log.duckdb().sql(f'SELECT count(*) FROM "{s}"').fetchall(),
    "time travel": lambda log, s: log.sql(f'SELECT count(*) FROM "{s}@g1"').fetchall(),
    "materialize": lambda log, s: log.materialize(
        f"mv_{s}", s, query="SELECT count(*) AS n FROM records"
    ).refresh(),
}


@pytest.mark.parametrize("how", sorted(READS))
def test_a_flipped_byte_fails_every_read_path(tmp_path: Path, how: str) -> None:
    """One flipped byte in a local segment: every read path of every stream whose replay
    reaches it raises IntegrityError naming the file and both hashes; nothing is served."""
    files = build(tmp_path / "log")
    expected = verified.hash_file(str(files["first"]))
    flip(files["first"])
    found = verified.hash_file(str(files["first"]))
    # On a connection of the caller's (`log.duckdb()`), the stream's view raises DuckDB's
    # own error, carrying the IntegrityError's message.
    error = duckdb.Error if how == "log.duckdb" else ta.IntegrityError
    with ta.open(tmp_path / "log") as log:
        for stream in ("main", "b"):
            with pytest.raises(error) as info:
                READS[how](log, stream)
            message = str(info.value)
            assert files["first"].name in message, message
            assert expected in message and found in message, message
            if how == "log.duckdb":
                assert f"IntegrityError: stream {stream!r} cannot be read" in message


def test_damage_affects_only_the_streams_that_reach_the_segment(tmp_path: Path) -> None:
    """The second segment of main is past b's fork: b and other read and query normally,
    transit_records leaves main out, and SQL naming main says why."""
    files = build(tmp_path / "log")
    flip(files["second"])
    with ta.open(tmp_path / "log") as log:
        assert log.stream("b").read().column("x").to_pylist() == [0, 1, 2, 3, 4, 5, 100, 101, 102]
        assert log.stream("b").scan().collect()["x"].sum() == 318
        assert log.sql('SELECT sum(x) FROM "b"').fetchall() == [(318,)]
        assert log.sql("SELECT sum(y) FROM other").fetchall() == [(6,)]
        rows = log.sql("SELECT _branch, count(*) FROM transit_records GROUP BY 1 ORDER BY 1")
        assert rows.fetchall() == [("b", 9), ("other", 4)]
        with pytest.raises(ta.IntegrityError, match=r"stream 'main' cannot be read.*BLAKE3"):
            log.sql("SELECT sum(x) FROM main").fetchall()
        with pytest.raises(ta.IntegrityError, match=files["second"].name):
            log.stream("main").read(start=12)
        # Records before the damaged file are still readable by offset range.
        assert log.stream("main").read(end=10).num_rows == 10


def test_repeated_reads_hash_once_and_notice_changes(tmp_path: Path) -> None:
    """A verified file is not hashed again while its identity is unchanged; rewriting it (even
    with the same bytes, or only touching it) makes the next read hash it again; a repaired
    file reads again."""
    files = build(tmp_path / "log")
    registry = verified.registry
    with ta.open(tmp_path / "log") as log:
        main = log.stream("main")
        main.read()
        log.sql("SELECT count(*) FROM main").fetchall()  # the other streams' files too
        before = registry.hashed_files
        for _ in range(3):
            main.read()
            log.sql("SELECT count(*) FROM main").fetchall()
        assert registry.hashed_files == before
        os.utime(files["first"], ns=(1, 1))  # only the times change
        main.read()
        assert registry.hashed_files == before + 1
        good = files["first"].read_bytes()
        flip(files["first"])
        with pytest.raises(ta.IntegrityError):
            main.read()
        with pytest.raises(ta.IntegrityError):
            main.read()  # a damaged file is never remembered as verified
        files["first"].write_bytes(good)
        assert main.read().num_rows == 20


def test_footers_are_kept_only_for_the_verified_identity(tmp_path: Path) -> None:
    """A read keeps each verified segment's parsed footer; it is served again only while the
    file keeps the identity and digest it was verified with: a rewritten file (same bytes),
    a swapped one (another segment's bytes) or a forgotten registry never gets it."""
    files = build(tmp_path / "log")
    registry = verified.registry
    first = str(files["first"])
    digest = verified.hash_file(first)
    with ta.open(tmp_path / "log") as log:
        main = log.stream("main")
        expected = main.read()
        assert registry.footer(first, digest) is not None
        assert registry.footer(first, "0" * 64) is None  # another digest
        assert main.read().equals(expected)  # read again with the kept footer
        good = files["first"].read_bytes()
        files["first"].write_bytes(good)  # same bytes, new identity
        os.utime(files["first"], ns=(1, 1))
        registry.check(first, digest, len(good), what="segment")  # hashed again
        assert registry.footer(first, digest) is None  # kept under the old identity
        assert main.read().equals(expected)
        assert registry.footer(first, digest) is not None  # kept for the new identity
        files["first"].write_bytes(files["second"].read_bytes())  # valid Parquet, not ours
        os.utime(files["first"], ns=(2, 2))
        with pytest.raises(ta.IntegrityError, match=files["first"].name):
            main.read()
        assert registry.footer(first, digest) is None
        files["first"].write_bytes(good)
        assert main.read().equals(expected)
        registry.forget()
        assert registry.footer(first, digest) is None
        assert main.read().equals(expected)


def test_truncated_and_missing_segments(tmp_path: Path) -> None:
    """A truncated segment reports both sizes' hashes; a missing one says it is missing."""
    files = build(tmp_path / "log")
    data = files["first"].read_bytes()
    files["first"].write_bytes(data[:-7])
    with ta.open(tmp_path / "log") as log:
        with pytest.raises(ta.IntegrityError, match=rf"expected BLAKE3 {HEX} \({len(data)} bytes"):
            log.stream("main").read()
        files["first"].unlink()
        with pytest.raises(ta.IntegrityError, match="referenced by a commit but missing"):
            log.stream("main").read()
        with pytest.raises(ta.IntegrityError, match="stream 'main' cannot be read"):
            log.sql("SELECT * FROM main").fetchall()
        assert log.sql("SELECT count(*) FROM other").fetchall() == [(4,)]


def test_damaged_cached_copy_of_a_remote_segment_is_fetched_again(tmp_path: Path) -> None:
    """For a store without local files, a damaged copy in the local cache is noticed on first
    use, discarded and fetched again from the store (and verified), so reads stay correct."""
    uri = f"memory://integrity-reads-{os.getpid()}-{tmp_path.name}"
    with ta.open(uri, local_dir=tmp_path / "local") as log:
        s = log.create_stream("s")
        s.append([{"x": i} for i in range(50)])
        s.flush()
        assert log.stream("s").read().num_rows == 50
        cached = list((tmp_path / "local" / "cache").rglob("*.parquet"))
        assert len(cached) == 1
        fetches = log.catalog.cache.fetches
    flip(cached[0])
    verified.registry.forget()  # as a new process would
    with ta.open(uri, local_dir=tmp_path / "local") as log:
        assert sum(log.stream("s").read().column("x").to_pylist()) == sum(range(50))
        assert log.sql("SELECT sum(x) FROM s").fetchall() == [(sum(range(50)),)]
        assert log.catalog.cache.fetches == 1
    assert fetches == 1


def test_cli_read_and_sql_of_a_damaged_stream(tmp_path: Path) -> None:
    """`transit read` and `transit sql` of a damaged stream exit 1 with one `error:` line
    naming the file; `transit sql` over another stream works."""
    files = build(tmp_path / "log")
    flip(files["first"])
    root = str(tmp_path / "log")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "transit_arrow", *args], capture_output=True, text=True
        )

    for args in (("read", root, "main"), ("sql", root, "SELECT count(*) FROM main")):
        done = run(*args)
        assert done.returncode == 1, done
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert files["first"].name in lines[0]
    ok = run("sql", root, "SELECT count(*) AS n FROM other", "--output", "json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"n": 4}


def test_case_colliding_streams_get_distinct_views(tmp_path: Path) -> None:
    """Streams whose names differ only by case each get a view: the first in name order its
    own name, the n-th `<name>#<n>`; a stream named like a `transit_*` table gets `#2`."""
    with ta.open(tmp_path / "log") as log:
        for i, name in enumerate(["Main", "main", "MAIN", "transit_streams"]):
            log.create_stream(name).append({"v": i})
        rows = dict(
            log.sql(
                "SELECT 'MAIN', v FROM \"MAIN\" UNION ALL SELECT 'Main', v FROM \"Main#2\" "
                "UNION ALL SELECT 'main', v FROM \"main#3\" "
                "UNION ALL SELECT 'transit_streams', v FROM \"transit_streams#2\""
            ).fetchall()
        )
        assert rows == {"MAIN": 2, "Main": 0, "main": 1, "transit_streams": 3}
        assert log.stream("main").to_duckdb().fetchall()[0][-1] == 1
        assert log.sql("SELECT count(*) FROM transit_streams").fetchall() == [(4,)]
