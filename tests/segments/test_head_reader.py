"""`HeadReader`: a head file read incrementally serves exactly the verified frames that
`load_head` serves, never a torn or damaged frame, and never bytes of another head."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

import transit_arrow as ta
from transit_arrow.errors import IntegrityError
from transit_arrow.layout import heads_dir
from transit_arrow.segments.head import load_head
from transit_arrow.segments.head_reader import HeadReader, HeadsReader, chain


def _offsets(batches: list[pa.RecordBatch]) -> list[int]:
    return [o for b in batches for o in b.column("_offset").to_pylist()]


def _head_file(log: ta.Log, name: str) -> Path:
    files = sorted(heads_dir(log.catalog.local_dir, name).glob("0*.arrow"))
    assert len(files) == 1, files
    return files[0]


def test_each_refresh_reads_only_the_new_frames_and_matches_load_head(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log") as log:
        s = log.create_stream("s")
        s.append({"i": 0, "text": "a"}, durability="local")
        path = _head_file(log, "s")
        reader = HeadReader(path, 0)
        assert reader.refresh() and reader.ready and reader.records == 1
        for k in range(1, 30):
            if k % 3:
                s.append({"i": k, "text": "x" * k}, durability="local")
            else:
                s.append([{"i": k, "text": "b"}, {"i": k, "text": "c"}], durability="local")
            size_before = reader._pos
            assert reader.refresh()
            assert reader._pos > size_before  # moved on by one frame, not re-read
            full = load_head(path)
            assert full.status == "ok"
            assert reader.records == full.records
            assert pa.Table.from_batches(reader.batches).equals(full.table())
        start, batches = reader.batches_from(20)
        assert start <= 20 < start + batches[0].num_rows
        assert _offsets(batches)[-1] == reader.end_offset - 1


def _frames_copy(tmp_path: Path, records: int) -> tuple[Path, bytes, list[int]]:
    """A copy of a head file of `records` one-record frames, and each frame's end byte."""
    with ta.open(tmp_path / "log") as log:
        s = log.create_stream("s")
        ends = []
        for k in range(records):
            s.append({"i": k}, durability="local")
            ends.append(os.path.getsize(_head_file(log, "s")))
        data = _head_file(log, "s").read_bytes()
    folder = tmp_path / "heads"
    folder.mkdir()
    return folder / "00000000000000000000-00000000000000000001.arrow", data, ends


def test_a_torn_frame_is_not_served_until_it_is_complete(tmp_path: Path) -> None:
    path, data, ends = _frames_copy(tmp_path, 4)
    path.write_bytes(data[: ends[1] + 10])  # two frames, then part of the third
    reader = HeadReader(path, 1)
    assert reader.refresh()
    assert reader.records == 2 and reader.status == "ok"
    with open(path, "ab") as f:
        f.write(data[ends[1] + 10 : ends[2] - 1])  # all but its last byte
    assert reader.refresh() and reader.records == 2
    with open(path, "ab") as f:
        f.write(data[ends[2] - 1 :])
    assert reader.refresh() and reader.records == 4
    assert _offsets(reader.batches) == [0, 1, 2, 3]


def test_a_frame_failing_its_hash_is_never_served(tmp_path: Path) -> None:
    path, data, ends = _frames_copy(tmp_path, 4)
    damaged = bytearray(data)
    damaged[ends[1] + 60] ^= 0xFF  # inside the third frame's data: the fourth one follows
    path.write_bytes(bytes(damaged[: ends[1]]))
    reader = HeadReader(path, 1)
    assert reader.refresh() and reader.records == 2
    with open(path, "ab") as f:
        f.write(bytes(damaged[ends[1] : ends[2]]))  # the last frame, damaged: unknown yet
    assert reader.refresh() and reader.records == 2 and reader.status == "ok"
    with open(path, "ab") as f:
        f.write(bytes(damaged[ends[2] :]))  # a valid frame follows: it is damage
    assert reader.refresh() and reader.records == 2 and reader.status == "damaged"
    with pytest.raises(IntegrityError, match="damaged"):
        chain([reader], 0, 0, 0)


def test_a_file_replaced_under_its_name_is_read_anew(tmp_path: Path) -> None:
    path, data, ends = _frames_copy(tmp_path, 3)
    path.write_bytes(data)
    reader = HeadReader(path, 1)
    assert reader.refresh() and reader.records == 3
    other = path.with_name("other")
    other.write_bytes(data[: ends[0]])
    os.replace(other, path)  # another file (inode) under the same name
    assert reader.refresh() and reader.records == 1
    path.unlink()
    assert not reader.refresh()


def test_heads_reader_follows_a_folder_and_chain_cuts_at_the_position(tmp_path: Path) -> None:
    path, data, ends = _frames_copy(tmp_path, 5)
    folder = HeadsReader(path.parent)
    assert folder.refresh() == []
    path.write_bytes(data[: ends[2]])
    readers = folder.refresh()
    assert [r.records for r in readers] == [3]
    assert [(s, _offsets(b)) for s, _, b in chain(readers, 0, 0, 0)] == [(0, [0, 1, 2])]
    assert [(s, _offsets(b)) for s, _, b in chain(readers, 0, 0, 2)] == [(2, [2])]
    assert chain(readers, 0, 0, 3) == []
    assert chain(readers, 0, 1, 0) == []  # its writer (epoch 1) was fenced
    assert chain(readers, 1, 0, 0) == []  # it does not start at the committed end
    with open(path, "ab") as f:
        f.write(data[ends[2] :])
    readers = folder.refresh()
    assert [(s, _offsets(b)) for s, _, b in chain(readers, 0, 0, 3)] == [(3, [3, 4])]
    path.unlink()
    assert folder.refresh() == []
