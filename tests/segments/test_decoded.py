"""The decoded-row-group cache (`segments.decoded`, `transit serve --read-cache-mb`): bounded
in bytes, least recently used first out, keyed by the segment's BLAKE3; a read that uses it
returns what a read without it returns, and still refuses a damaged segment file."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

import transit_arrow as ta
from transit_arrow.errors import IntegrityError
from transit_arrow.segments.decoded import DecodedCache


def batch(n: int, width: int = 1000) -> pa.RecordBatch:
    return pa.record_batch({"v": pa.array([b"x" * width] * n)})


def test_bounded_least_recently_used_first_out() -> None:
    one = batch(10)
    size = one.get_total_buffer_size()
    cache = DecodedCache(3 * size)
    keys = [cache.key(f"digest{i}", 0, None) for i in range(4)]
    for key in keys[:3]:
        cache.put(key, [one])
    assert cache.get(keys[0]) == [one]  # now the most recently used
    cache.put(keys[3], [one])  # drops the least recently used: keys[1]
    assert cache.get(keys[1]) is None
    assert all(cache.get(k) is not None for k in (keys[0], keys[2], keys[3]))
    assert cache.bytes == 3 * size <= cache.max_bytes
    cache.put(cache.key("big", 0, None), [batch(40)])  # larger than the bound: not kept
    assert cache.get(cache.key("big", 0, None)) is None and len(cache) == 3
    # Columns and row groups are part of the key.
    assert cache.get(cache.key("digest0", 1, None)) is None
    assert cache.get(cache.key("digest0", 0, ["v"])) is None
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0


def build(root: Path) -> list[Path]:
    with ta.open(root) as log:
        s = log.create_stream("s")
        for first in (0, 100):
            s.append([{"x": i, "y": f"r{i}"} for i in range(first, first + 100)])
            s.flush()
        log.branch("b", at="s@149").append({"x": -1, "y": "b"})
    return sorted((root / "streams" / "s" / "segments").glob("*.parquet"))


def test_reads_through_the_cache_return_what_reads_without_it(tmp_path: Path) -> None:
    build(tmp_path / "log")
    with ta.open(tmp_path / "log") as plain:
        expected = {
            (name, cols, start): plain.stream(name).reader(start, None, cols and [cols]).read_all()
            for name in ("s", "b")
            for cols in (None, "y")
            for start in (0, 120)
        }
    with ta.open(tmp_path / "log") as log:
        cache = log.catalog.decoded = DecodedCache(1 << 30)
        for _ in range(2):  # cold, then warm
            for (name, cols, start), want in expected.items():
                got = log.stream(name).reader(start, None, cols and [cols]).read_all()
                assert got.equals(want), (name, cols, start)
        assert cache.hits and cache.misses
        assert next(iter(log.stream("b").tail(0, timeout=0.01))).num_rows > 0  # tails too


def test_a_damaged_segment_is_refused_though_its_row_groups_are_cached(tmp_path: Path) -> None:
    files = build(tmp_path / "log")
    with ta.open(tmp_path / "log") as log:
        cache = log.catalog.decoded = DecodedCache(1 << 30)
        log.stream("s").reader().read_all()
        assert len(cache) == 2
        data = bytearray(files[0].read_bytes())
        data[len(data) // 2] ^= 0x10
        files[0].write_bytes(bytes(data))
        with pytest.raises(IntegrityError):
            log.stream("s").reader().read_all()
        with pytest.raises(IntegrityError):
            log.stream("b").reader().read_all()
