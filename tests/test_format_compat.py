"""Logs written by earlier versions open, read the same and verify (DEVELOPERS: formats stay
readable).

`fixtures/log_v1` was written by transit-arrow 0.1.0 at commit f30bd17 (before the engine was
layered) with `fixtures/make_log_v1.py`; `log_v1.expected.json` holds what that version read
back from it (`/tmp`-free: timestamps and roots are data of the fixture).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import transit_arrow as ta
from transit_arrow.errors import IntegrityError
from transit_arrow.scanplan import read_scan_plan
from transit_arrow.segments.head import load_head, read_heads
from transit_arrow.segments.head_reader import HeadsReader

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def old_log(tmp_path: Path) -> Path:
    target = tmp_path / "log"
    shutil.copytree(FIXTURES / "log_v1", target)
    return target


def _plain(rows: list[dict[str, Any]]) -> Any:
    return json.loads(json.dumps(rows, default=str))


def test_a_log_written_by_version_0_1_reads_the_same(old_log: Path) -> None:
    expected = json.loads((FIXTURES / "log_v1.expected.json").read_text())
    with ta.open(old_log) as log:
        names = log.streams().column("name").to_pylist()
        assert names == sorted(k for k in expected if not k.startswith("__"))
        for name in names:
            table = log.stream(name).read()
            assert table.column_names == expected[name]["columns"], name
            assert _plain(table.to_pylist()) == expected[name]["rows"], name
        mv = log.materialization("per_s").read().sort_by("s")
        assert _plain(mv.to_pylist()) == expected["__mv__"]
        lineage = log.lineage().select(
            ["name", "kind", "parent_stream", "parent_offset", "policy", "root"]
        )
        assert lineage.to_pylist() == expected["__lineage__"]


def test_a_log_written_by_version_0_1_verifies_deeply(old_log: Path) -> None:
    checkpoint = ta.Checkpoint.from_json((FIXTURES / "log_v1.checkpoint.json").read_text())
    with ta.open(old_log) as log:
        for name in log.streams().column("name").to_pylist():
            report = log.verify(name, deep=True)
            assert report.ok, str(report)
        report = log.verify(checkpoint, deep=True)
        assert report.ok, str(report)
        assert log.stream("events").at(checkpoint).read().num_rows == checkpoint.head_offset + 1


def test_a_log_written_by_version_0_1_takes_new_appends(old_log: Path) -> None:
    with ta.open(old_log) as log:
        retry = log.stream("events/retry")
        before = retry.next_offset
        ack = retry.append({"i": 1, "s": "new", "x": 0.0})
        assert ack.first_offset == before
        retry.flush()
        assert log.verify("events/retry").ok


# --- heads of format 2 (frames checked by BLAKE3-64; format 3 checks them by XXH3-64) ----------


@pytest.fixture
def heads_v2(tmp_path: Path) -> Path:
    """`fixtures/log_heads_v2` (`fixtures/make_log_heads_v2.py`): 3 sealed records, then 8
    acknowledged `local` in a head of format 2 whose writer died."""
    target = tmp_path / "log"
    shutil.copytree(FIXTURES / "log_heads_v2", target)
    return target


def _head_file(root: Path) -> Path:
    (path,) = (root / "_local" / "streams" / "events" / "heads").glob("0*.arrow")
    return path


def test_a_head_of_format_2_is_read_recovered_and_continued(heads_v2: Path) -> None:
    path = _head_file(heads_v2)
    assert b"TAFRAME1:" in path.read_bytes() and b"TAFRAME2:" not in path.read_bytes()
    assert load_head(path).status == "ok"
    (reader,) = HeadsReader(path.parent).refresh()  # what a tail in another process reads
    assert (reader.status, reader.start_offset, reader.records) == ("ok", 3, 8)
    with ta.open(heads_v2) as log:
        events = log.stream("events")
        assert events.read().column("s").to_pylist() == [
            *(f"sealed{i}" for i in range(3)),
            *(f"head{i}" for i in range(3, 8)),
            *(f"batch{i}" for i in range(8, 11)),
        ]
        events.append({"i": 11, "s": "new", "x": 2.0}, durability="local")
        # The adopted head (format 2, its frames re-checked by BLAKE3 before it is sealed)
        # is sealed as it is; the new record is in a head of format 3.
        (new,) = [h for h in read_heads(path.parent) if h.start_offset == 11]
        assert (new.status, new.records) == ("ok", 1)
        assert b"TAFRAME2:" in new.path.read_bytes()
        new.recheck()
        events.flush()
        assert events.read().column("i").to_pylist() == list(range(12))
        assert log.verify("events", deep=True).ok


def test_damage_in_a_head_of_format_2_is_detected(heads_v2: Path) -> None:
    path = _head_file(heads_v2)
    first = load_head(path).frames[0]
    data = bytearray(path.read_bytes())
    data[first.start + 20] ^= 1  # inside the first data frame; valid frames follow
    path.write_bytes(bytes(data))
    damaged = load_head(path)
    assert damaged.status == "damaged" and damaged.records == 0
    with ta.open(heads_v2) as log:
        events = log.stream("events")
        with pytest.raises(IntegrityError, match=path.name):
            events.read()
        events.append({"i": 99, "s": "after", "x": 0.0})  # the writer sets the head aside
        assert events.read().column("i").to_pylist() == [0, 1, 2, 99]  # nothing damaged sealed
        assert log.orphaned_heads().column("kind").to_pylist() == ["damaged"]


def _codecs(log_root: Path, stream: str) -> set[str]:
    """The codecs of every column chunk of a stream's own segment files."""
    codecs = set()
    for path in (log_root / "streams" / stream / "segments").glob("*.parquet"):
        meta = pq.read_metadata(path)
        for g in range(meta.num_row_groups):
            codecs.update(meta.row_group(g).column(c).compression for c in range(meta.num_columns))
    return codecs


def test_segments_of_another_codec_mix_with_old_ones_in_one_stream(old_log: Path) -> None:
    """Segments sealed with another codec (`segment_compression`) sit beside the fixture's
    zstd ones and new zstd ones: the stream reads, queries and verifies as one."""
    assert _codecs(old_log, "events") == {"ZSTD"}
    with ta.open(old_log, segment_compression="snappy") as log:
        events = log.stream("events")
        before = events.read()
        events.append([{"i": 10_000 + k, "s": "snappy", "x": 1.0} for k in range(5)])
        events.flush()
    with ta.open(old_log, segment_compression="zstd") as log:
        log.stream("events").append([{"i": 20_000, "s": "zstd", "x": 2.0}])
        log.stream("events").flush()
    assert _codecs(old_log, "events") == {"ZSTD", "SNAPPY"}
    with ta.open(old_log) as log:
        events = log.stream("events")
        table = events.read()
        assert table.num_rows == before.num_rows + 6
        assert table.slice(0, before.num_rows).equals(before)
        assert table.column("s").to_pylist()[-6:] == ["snappy"] * 5 + ["zstd"]
        ((count,),) = log.sql('SELECT count(*) FROM "events"').fetchall()
        assert count == table.num_rows
        report = log.verify("events", deep=True)
        assert report.ok, str(report)


def test_segments_without_headers_mix_with_old_ones_in_one_stream(old_log: Path) -> None:
    """New segments of records without headers leave the all-null `_headers` column out;
    the fixture's segments have it. The stream reads (every path), queries, compacts and
    verifies as one, `_headers` null where the files lack it."""
    seg_folder = old_log / "streams" / "events" / "segments"
    old = {p.name for p in seg_folder.glob("*.parquet")}
    assert all("_headers" in pq.read_schema(seg_folder / n).names for n in old)
    with ta.open(old_log) as log:
        events = log.stream("events")
        before = events.read()
        events.append([{"i": 30_000 + k, "s": "bare", "x": 3.0} for k in range(4)])
        events.flush()
        events.append([{"i": 40_000, "s": "tagged", "x": 4.0, "_headers": {"k": "v"}}])
        events.flush()
    new = sorted(p for p in seg_folder.glob("*.parquet") if p.name not in old)
    assert len(new) == 2
    assert [("_headers" in pq.read_schema(p).names) for p in new] == [False, True]
    with ta.open(old_log) as log:
        events = log.stream("events")
        table = events.read()
        assert table.num_rows == before.num_rows + 5
        assert table.slice(0, before.num_rows).equals(before)
        headers = table.column("_headers").to_pylist()[-5:]
        assert headers[:4] == [None] * 4
        assert dict(headers[4]) == {"k": "v"}
        assert pa.Table.from_batches(list(events.reader()), table.schema).equals(table)
        assert read_scan_plan(events.scan_plan().to_json()).equals(table)
        frame = events.scan().collect()
        assert frame["_headers"].null_count() == table.column("_headers").null_count
        rows = log.sql(
            'SELECT count(*), count("_headers") FROM "events" WHERE s = \'bare\''
        ).fetchall()
        assert rows == [(4, 0)]
        report = events.compact(min_segments=2)
        assert report.created, report
        assert events.read().equals(table)
        report = log.verify("events", deep=True)
        assert report.ok, str(report)
