"""`ArenaPool`: large encodes reuse mapped buffers, never one that something still holds."""

from __future__ import annotations

from pathlib import Path

import blake3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import transit_arrow as ta
from transit_arrow.record import HEADERS_TYPE, TIMESTAMP_TYPE
from transit_arrow.segments import arena
from transit_arrow.segments.arena import ArenaPool
from transit_arrow.segments.parquet import encode_segment


def test_a_buffer_is_lent_again_only_when_nothing_else_holds_it() -> None:
    pool = ArenaPool(keep=2)
    first = pool.take(1000)
    first[:5] = b"hello"
    pool.give(first)
    # `first` is still referenced here: a second take must not hand it out again.
    second = pool.take(1000)
    assert second is not first
    assert first[:5] == b"hello"
    ident = id(first)
    view = memoryview(first)
    del first
    third = pool.take(10)  # only `view` holds the first buffer: still not free
    assert id(third) != ident
    assert bytes(view[:5]) == b"hello"
    view.release()
    del view
    pool.give(second)
    pool.give(third)  # keep=2: the smallest (third) is forgotten
    assert len(pool) == 2
    del second, third
    again = pool.take(2000)
    assert id(again) == ident and len(again) == 2000
    shrunk = pool.take(10)
    assert len(shrunk) == 10


def test_idle_buffers_are_dropped_and_clear_forgets_all() -> None:
    pool = ArenaPool(keep=4, idle_seconds=0.0)
    pool.give(pool.take(100))
    assert len(pool) == 1
    fresh = pool.take(100)  # the idle one is dropped first
    assert len(pool) == 0
    pool.give(fresh)
    pool.clear()
    assert len(pool) == 0


def _head(table: pa.Table) -> pa.Table:
    n = table.num_rows
    head = table.add_column(0, "_offset", pa.array(np.arange(n, dtype=np.int64)))
    head = head.add_column(1, "_timestamp", pa.array(np.zeros(n, np.int64), TIMESTAMP_TYPE))
    return head.add_column(2, "_headers", pa.nulls(n, HEADERS_TYPE))


def _blobs(n: int, size: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, n * size, dtype=np.uint8).tobytes()
    offsets = pa.array(np.arange(0, (n + 1) * size, size, dtype=np.int32))
    blobs = pa.BinaryArray.from_buffers(
        pa.binary(), n, [None, offsets.buffers()[1], pa.py_buffer(data)]
    )
    return pa.table({"i": np.arange(n), "blob": blobs})


def test_large_segments_encode_through_the_pool_into_the_same_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = ArenaPool()
    monkeypatch.setattr(arena, "pool", pool)
    head = _head(_blobs(6000, 4096, seed=1))  # ~24 MiB: above ARENA_MIN_BYTES
    data, meta = encode_segment(head, "s")
    assert isinstance(data, bytearray) and len(pool) == 1
    assert meta["bytes"] == len(data)
    assert meta["blake3"] == blake3.blake3(bytes(data)).hexdigest()
    expected = bytes(data)
    # Below the threshold the same function writes to a plain sink: identical bytes.
    monkeypatch.setattr(arena, "ARENA_MIN_BYTES", 1 << 40)
    plain, plain_meta = encode_segment(head, "s")
    assert isinstance(plain, bytes) and plain == expected and plain_meta == meta
    monkeypatch.setattr(arena, "ARENA_MIN_BYTES", 16 * 1024 * 1024)
    # While `data` is alive the next encode gets another buffer; its bytes stay intact.
    other, _ = encode_segment(_head(_blobs(5000, 4096, seed=2)), "s")
    assert other is not data and bytes(data) == expected
    ident = id(data)
    del data
    third, _ = encode_segment(head, "s")  # now the first buffer is free again
    assert id(third) == ident and len(pool) == 2
    assert bytes(third) == expected
    assert pq.read_table(pa.BufferReader(third)).num_rows == 6000


def test_an_output_larger_than_its_estimate_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # A pool whose buffers are always too small: the encode overflows, then writes to a sink.
    class Tiny(ArenaPool):
        def take(self, capacity: int) -> bytearray:
            return super().take(1024)

    monkeypatch.setattr(arena, "pool", Tiny())
    head = _head(_blobs(5000, 4096, seed=3))
    data, meta = encode_segment(head, "s")
    assert isinstance(data, bytes)
    assert meta["blake3"] == blake3.blake3(data).hexdigest()
    assert pq.read_table(pa.BufferReader(data)).num_rows == 5000


def test_compressible_segments_do_not_take_a_pooled_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Sized for the Arrow data, the buffer would be mostly trimmed, then faulted in to regrow.
    pool = ArenaPool()
    monkeypatch.setattr(arena, "pool", pool)
    n = 400_000
    text = pa.array(["the same words again and again " * 2] * n)
    head = _head(pa.table({"i": np.arange(n), "text": text}))
    data, meta = encode_segment(head, "s")
    assert isinstance(data, bytes) and len(pool) == 0
    assert meta["bytes"] < head.nbytes // 4


def test_stores_that_copy_a_bytearray_get_bytes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The memory store keeps a copy of what it is given: only stores that write a file from
    # the buffer or send it in place (local folders, S3) take pooled buffers.
    pool = ArenaPool()
    monkeypatch.setattr(arena, "pool", pool)
    head = _head(_blobs(6000, 4096, seed=4))
    plain, meta = encode_segment(head, "s", pooled=False)
    assert isinstance(plain, bytes) and len(pool) == 0
    assert meta["blake3"] == blake3.blake3(plain).hexdigest()
    with ta.open("memory://arena-test") as memory:
        data, _ = memory.catalog.encode_segment(head, "s")
    assert isinstance(data, bytes) and data == plain and len(pool) == 0
    with ta.open(tmp_path / "log") as local:
        pooled, _ = local.catalog.encode_segment(head, "s")
    assert isinstance(pooled, bytearray) and bytes(pooled) == plain and len(pool) == 1
