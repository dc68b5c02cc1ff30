"""The replay as data (docs/scan_plan.md): a scan plan, read back by the reference reader from
its JSON form alone, equals `stream.read()` for every kind of replay.

The log covers roots, branches, branches of branches, every merge policy (pin, fast_forward,
concat, interleave, a custom resolver, and a concat of merges), forks inside segments, schema
evolution (a new column, int32 widened to int64), unsealed head records and time travel. The
plan's own fields are checked against the segment files independently: the files it names
hold, between `read_first` and `read_last`, exactly the offsets the replay shows minus the
shift.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from replay_kinds import STREAMS, open_branchy, rows

import transit_arrow as ta
from transit_arrow.errors import IntegrityError, InvalidInputError
from transit_arrow.scanplan import (
    FILES_SCHEMA,
    FORMAT,
    LogScanPlan,
    ScanPlan,
    load_plan,
    prune,
    read_scan_plan,
)


@pytest.fixture(scope="module")
def branchy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ta.Log]:
    yield from open_branchy(tmp_path_factory)


def _via_json(plan: ScanPlan | LogScanPlan) -> pa.Table:
    """Read a plan from its JSON text alone (what another process or language gets)."""
    text = plan.to_json()
    json.loads(text)  # plain JSON
    return read_scan_plan(text)


@pytest.mark.parametrize("name", STREAMS)
def test_plan_reads_exactly_what_read_returns(branchy: ta.Log, name: str) -> None:
    stream = branchy.stream(name)
    expected = stream.read()
    plan = stream.scan_plan()
    assert plan.schema == expected.schema
    assert plan.records == expected.num_rows
    assert plan.next_offset == stream.next_offset
    got = _via_json(plan)
    assert got.schema == expected.schema
    assert got.equals(expected), name


def test_every_merge_kind_and_unsealed_records_are_covered(branchy: ta.Log) -> None:
    plans = {n: branchy.stream(n).scan_plan() for n in STREAMS}
    concat = plans["m/concat"].files
    assert any(f.shift != 0 and f.provenance and f.stream_label == "m/concat" for f in concat)
    assert any(not f.whole for f in plans["retry/deeper"].files)  # forks inside segments
    inline = [f for f in plans["retry/deeper"].files if f.kind == "inline"]
    assert len(inline) == 1 and inline[0].records == 2 and inline[0].path is None
    assert inline[0].replay_last == plans["retry/deeper"].next_offset - 1
    # the concat of merges reads the interleave merge's own segment, which stores provenance
    nested = plans["m/concat-of-merges"].files
    assert any(f.origin == "m/interleave" for f in nested)
    table = branchy.stream("m/concat-of-merges").read()
    assert set(table["_origin_stream"].drop_null().to_pylist()) >= {"retry", "critique"}


@pytest.mark.parametrize("name", ["retry/deeper", "m/concat", "m/interleave"])
def test_plan_fields_match_the_segment_files(branchy: ta.Log, name: str) -> None:
    """Check the plan against the Parquet files directly, not through the reader."""
    stream = branchy.stream(name)
    expected = stream.read().column("_offset").to_pylist()
    offsets: list[int] = []
    for f in stream.scan_plan().files:
        if f.kind == "inline":
            head = pa.ipc.open_stream(f.inline).read_all()
            offsets += head["_offset"].to_pylist()
            continue
        assert f.url is not None and f.url.startswith("file://")
        stored = pq.read_table(branchy.store.local_path(f.path or ""))["_offset"].to_pylist()
        assert stored == list(range(f.first_offset, f.last_offset + 1))
        assert f.whole == (f.read_first == f.first_offset and f.read_last == f.last_offset)
        assert f.replay_first == f.read_first + f.shift
        offsets += [o + f.shift for o in stored if f.read_first <= o <= f.read_last]
    assert offsets == expected


def test_arrow_form_has_one_row_per_file_span(branchy: ta.Log) -> None:
    plan = branchy.stream("m/concat").scan_plan()
    table = plan.to_arrow()
    assert table.schema.remove_metadata() == FILES_SCHEMA
    assert table.num_rows == len(plan.files)
    assert table["index"].to_pylist() == list(range(len(plan.files)))
    meta = table.schema.metadata
    assert meta[b"transit.format"] == FORMAT.encode()
    schema = pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(meta[b"transit.schema"].decode())))
    assert schema == plan.schema
    first = table["replay_first"].to_pylist()
    assert first == sorted(first)  # replay order


def test_json_round_trip_is_exact(branchy: ta.Log) -> None:
    plan = branchy.stream("retry/deeper").scan_plan()
    again = ScanPlan.from_json(plan.to_json())
    assert again == plan
    data = json.loads(plan.to_json())
    assert data["format"] == FORMAT and data["version"] == 1 and data["kind"] == "stream"
    assert [f["name"] for f in data["schema"]["fields"]] == plan.schema.names


def test_time_travel_view_plans_its_generation(branchy: ta.Log) -> None:
    main = branchy.stream("main")
    view = main.at(generation=1)
    plan = view.scan_plan()
    assert plan.generation == 1
    assert not any(f.kind == "inline" for f in plan.files)
    assert read_scan_plan(plan.to_json()).equals(view.read())


def test_heads_exclude_and_seal(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log", segment_max_records=100) as log:
        s = log.create_stream("s")
        s.append(rows(5, 0, "a"))
        s.flush()
        s.append(rows(3, 5, "b"))
        committed = s.scan_plan(heads="exclude")
        assert committed.records == 5 and committed.next_offset == 5
        assert read_scan_plan(committed).equals(s.read(end=5))
        sealed = s.scan_plan(heads="seal")  # seals this process's head first
        assert sealed.records == 8 and all(f.kind == "segment" for f in sealed.files)
        assert read_scan_plan(sealed).equals(s.read())
        with pytest.raises(InvalidInputError, match="heads must be"):
            s.scan_plan(heads="later")  # type: ignore[arg-type]


def test_filters_and_columns_match_a_filtered_read(branchy: ta.Log) -> None:
    stream = branchy.stream("m/concat")
    full = stream.read()
    plan = stream.scan_plan()
    cases: list[Any] = [
        [("_offset", ">=", 12), ("_offset", "<", 16)],
        [("_origin_stream", "==", "critique")],
        [[("x", "<", 3)], [("who", "==", "retry"), ("score", ">", 10.2)]],
        [("_stream", "==", "main")],
        [("_offset", "in", [0, 13, 99])],
    ]
    for filters in cases:
        got = read_scan_plan(plan.to_json(), columns=["_offset", "x"], filters=filters)
        mask = _mask(full, filters)
        assert got.equals(full.filter(mask).select(["_offset", "x"])), filters


def _mask(table: pa.Table, filters: list[Any]) -> pa.Array:
    conjunctions = [filters] if isinstance(filters[0], tuple) else filters
    keep = [False] * table.num_rows
    rows = table.to_pylist()
    ops = {
        "==": lambda a, b: a == b,
        "<": lambda a, b: a < b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
        "in": lambda a, b: a in b,
    }
    for i, row in enumerate(rows):
        for conj in conjunctions:
            if all(row[c] is not None and ops[op](row[c], v) for c, op, v in conj):
                keep[i] = True
    return pa.array(keep)


def test_prune_skips_spans_outside_the_offsets(branchy: ta.Log) -> None:
    plan = branchy.stream("retry/deeper").scan_plan()
    kept = prune(plan.files, [("_offset", ">=", 10)])
    assert kept and all(f.replay_last >= 10 for f in kept)
    assert len(kept) < len(plan.files)
    assert prune(plan.files, [("_stream", "==", "nope")]) == []


def test_whole_log_plan_equals_scan_all(branchy: ta.Log) -> None:
    plan = branchy.scan_plan()
    assert isinstance(plan, LogScanPlan)
    assert sorted(p.stream for p in plan.streams) == sorted(STREAMS)
    got = _via_json(plan)
    frame = branchy.scan_all().collect()
    expected = frame.to_arrow()
    assert got.schema.names == expected.schema.names
    key = [("_branch", "ascending"), ("_offset", "ascending")]
    assert got.sort_by(key).equals(expected.cast(got.schema).sort_by(key))
    assert isinstance(load_plan(plan.to_json()), LogScanPlan)


def test_tampered_segment_is_refused(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log") as log:
        s = log.create_stream("s")
        s.append(rows(10, 0, "a"))
        s.flush()
        plan = s.scan_plan()
    path = Path(plan.files[0].url.removeprefix("file://"))  # type: ignore[union-attr]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match the scan plan"):
        read_scan_plan(plan.to_json())


def test_malformed_plans_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="not a scan plan"):
        load_plan('{"format": "other"}')
    with pytest.raises(InvalidInputError, match="version 99"):
        load_plan(json.dumps({"format": FORMAT, "version": 99}))
    with pytest.raises(InvalidInputError, match="malformed"):
        load_plan(json.dumps({"format": FORMAT, "version": 1, "kind": "stream"}))


def test_memory_log_plans_read_in_process() -> None:
    import uuid

    with ta.open(f"memory://scanplan-{uuid.uuid4().hex}") as log:
        s = log.create_stream("s")
        s.append(rows(6, 0, "a"))
        s.flush()
        b = log.branch("b", at="s@2")
        b.append(rows(2, 10, "b"))
        plan = b.scan_plan()
        assert plan.files[0].url is not None and plan.files[0].url.startswith("memory://")
        assert read_scan_plan(plan.to_json()).equals(b.read())
        assert read_scan_plan(plan, log.store).equals(b.read())


# --- the command line -------------------------------------------------------------------------


def test_cli_plan_json_reads_back_exactly(branchy: ta.Log) -> None:
    from click.testing import CliRunner

    from transit_arrow.cli import main

    root = branchy.store.local_path("")
    sealed = branchy.stream("critique")  # no unsealed records: another process can plan it
    result = CliRunner().invoke(main, ["plan", str(root), "critique", "--output", "json"])
    assert result.exit_code == 0, result.output
    assert read_scan_plan(result.output).equals(sealed.read())
    text = CliRunner().invoke(main, ["plan", str(root), "m/concat"])
    assert text.exit_code == 0 and "scan plan of 'm/concat'" in text.output
    assert "stream_label" in text.output and "schema: _stream string" in text.output
    whole = CliRunner().invoke(main, ["plan", str(root), "-o", "json"])
    assert whole.exit_code == 0
    assert isinstance(load_plan(whole.output), LogScanPlan)


def test_cli_plan_refuses_a_missing_stream(branchy: ta.Log) -> None:
    from click.testing import CliRunner

    from transit_arrow.cli import main

    root = branchy.store.local_path("")
    result = CliRunner().invoke(main, ["plan", str(root), "nope"])
    assert result.exit_code == 1
    assert result.output.startswith("error: stream 'nope' does not exist")
    assert result.output.count("\n") == 1


def test_unknown_columns_and_bad_filters_are_refused(branchy: ta.Log) -> None:
    plan = branchy.stream("main").scan_plan()
    with pytest.raises(InvalidInputError, match="no column"):
        read_scan_plan(plan, filters=[("nope", "==", 1)])
    with pytest.raises(InvalidInputError, match="no column"):
        read_scan_plan(plan, columns=["x", "nope"])
    with pytest.raises(InvalidInputError, match="not a string"):
        read_scan_plan(plan, columns="x")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="terms with op"):
        read_scan_plan(plan, filters=[("x", "~", 1)])
