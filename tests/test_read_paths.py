"""`read()`'s three ways through segments give the same records (issue 16): a small read split
between the caller and one pool thread, a large read whose small segments are decoded by the
thread that opened them and whose large ones spread over the pool, and a fresh handle's time
travel to an early generation (which reads only the commits up to it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import transit_arrow as ta
from transit_arrow.engine import read as read_module
from transit_arrow.errors import IntegrityError, NotFoundError, StreamNotFoundError


def _rows(first: int, n: int, pad: int = 0) -> pa.Table:
    """Records `i` = first.., `s` a string with `pad` random hex digits (incompressible)."""
    noise = np.random.default_rng(first).bytes(pad // 2 * n).hex() if pad else ""
    return pa.table(
        {
            "i": pa.array(range(first, first + n), pa.int64()),
            "s": pa.array(
                [
                    f"v{k}" + noise[j * pad : (j + 1) * pad]
                    for j, k in enumerate(range(first, first + n))
                ]
            ),
        }
    )


def _expected(root: Path, stream: str) -> pa.Table:
    """The stream's user columns, from its segment files read by pyarrow in offset order."""
    files = sorted((root / "streams" / stream / "segments").glob("*.parquet"))
    return pq.read_table([str(f) for f in files], columns=["_offset", "i", "s"])


@pytest.fixture
def small_log(tmp_path: Path) -> Path:
    """`t`: 8 segments of 5 records (a small read); `big`: 3 small segments, one of 3 row
    groups of 300 rows with 12 KB values (over `SPLIT_SEGMENT_BYTES`: its row groups are
    shared out), 2 more small ones and one of 3 row groups under it (decoded whole)."""
    with ta.open(tmp_path, row_group_size=300) as log:
        t = log.create_stream("t")
        for k in range(8):
            t.append(_rows(5 * k, 5), durability="tiered")
        big = log.create_stream("big")
        for k in range(3):
            big.append(_rows(5 * k, 5), durability="tiered")
        big.append(_rows(15, 900, pad=12_000), durability="tiered")
        for k in range(2):
            big.append(_rows(915 + 5 * k, 5), durability="tiered")
        big.append(_rows(925, 900, pad=100), durability="tiered")
    return tmp_path


def test_a_small_read_split_between_threads_reads_every_record_in_order(small_log: Path) -> None:
    files = list((small_log / "streams" / "t" / "segments").glob("*.parquet"))
    assert len(files) == 8 >= read_module.SPLIT_READ_SEGMENTS
    want = _expected(small_log, "t")
    with ta.open(small_log) as log:
        t = log.stream("t")
        got = t.read()
        assert got.select(["_offset", "i", "s"]).equals(want)
        assert got.column("_stream").to_pylist() == ["t"] * 40
        # Ranges cutting the first and last segments, and one inside a single segment.
        for lo, hi in ((3, 37), (12, 14), (0, 40), (39, 40)):
            part = t.read(start=lo, end=hi)
            assert part.column("_offset").to_pylist() == list(range(lo, hi))
            assert part.column("i").to_pylist() == list(range(lo, hi))


def test_a_large_read_mixing_small_and_multi_task_segments(small_log: Path) -> None:
    total = sum(
        f.stat().st_size for f in (small_log / "streams" / "big" / "segments").glob("*.parquet")
    )
    assert total > read_module.INLINE_READ_BYTES
    sizes = sorted(
        f.stat().st_size for f in (small_log / "streams" / "big" / "segments").glob("*.parquet")
    )
    assert sizes[-1] >= read_module.SPLIT_SEGMENT_BYTES > sizes[-2]
    want = _expected(small_log, "big")
    with ta.open(small_log) as log:
        big = log.stream("big")
        got = big.read()
        assert got.select(["_offset", "i", "s"]).equals(want)
        for lo, hi in ((10, 920), (400, 1500), (0, 1825), (1000, 1001)):
            part = big.read(start=lo, end=hi)
            assert part.column("_offset").to_pylist() == list(range(lo, hi))
            assert part.column("i").to_pylist() == list(range(lo, hi))


def test_a_large_read_raises_the_earliest_failure_and_reads_again_once_repaired(
    small_log: Path,
) -> None:
    files = sorted((small_log / "streams" / "big" / "segments").glob("*.parquet"))
    second = files[1]
    saved = second.read_bytes()
    second.write_bytes(saved[:-10] + bytes(10))
    with ta.open(small_log) as log:
        with pytest.raises(IntegrityError, match=second.name):
            log.stream("big").read()
        second.write_bytes(saved)
        assert log.stream("big").read().num_rows == 1825


def test_a_branch_read_through_the_pools_equals_its_parent_prefix(small_log: Path) -> None:
    with ta.open(small_log) as log:
        b = log.branch("b", at="big@600")
        b.append(_rows(10_000, 3), durability="tiered")
        got = b.read()
        parent = log.stream("big").read(end=601)
        assert got.slice(0, 601).drop_columns(["_stream"]).equals(parent.drop_columns(["_stream"]))
        assert got.column("i").to_pylist()[601:] == [10_000, 10_001, 10_002]


def test_a_fresh_handle_reads_an_early_generation_from_its_commits_alone(
    small_log: Path,
) -> None:
    with ta.open(small_log) as log:
        want = {g: log.stream("t").at(generation=g).read() for g in (0, 1, 3, 8)}
    # Damage a later commit: the early generations still read (their chain is intact), the
    # latest state does not.
    commits = small_log / "streams" / "t" / "commits"
    later = sorted(commits.glob("*.json"))[6]
    later.write_bytes(later.read_bytes().replace(b'"generation"', b'"generation" ', 1))
    with ta.open(small_log) as fresh:
        t = fresh.stream("t")
        for g in (3, 1, 0):
            assert t.at(generation=g).read().equals(want[g])
        with pytest.raises(IntegrityError):
            t.at(generation=8).read()
        with pytest.raises(IntegrityError):
            t.read()
    with ta.open(small_log) as fresh:
        with pytest.raises(NotFoundError, match="no generation 99"):
            fresh.stream("big").at(generation=99)
        with pytest.raises(StreamNotFoundError):
            fresh.stream("nope")


def test_a_fresh_handle_of_a_deleted_stream_is_refused(small_log: Path) -> None:
    with ta.open(small_log) as log:
        log.delete_stream("t")
    with ta.open(small_log) as fresh, pytest.raises(StreamNotFoundError):
        fresh.stream("t")
