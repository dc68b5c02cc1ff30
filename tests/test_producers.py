"""Idempotent producers (docs/format.md "Idempotent producers"): a retried
`append(data, producer=..., sequence=...)` is acknowledged once, with the original offsets,
across reopen and SIGKILL; sequences that skip ahead are refused and change nothing."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import transit_arrow as ta
from transit_arrow import producers

LONG = 60.0


def _tree(root: Path) -> dict[str, str]:
    """Every file under `root` with a digest of its bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            out[str(path.relative_to(root)) + "/"] = ""
    return out


def test_a_retried_call_is_appended_once_and_returns_the_original_ack(log: ta.Log) -> None:
    s = log.create_stream("s")
    first = s.append([{"x": 1}, {"x": 2}], producer="p", sequence=0)
    assert first == (0, 1, "local")
    assert s.append([{"x": 1}, {"x": 2}], producer="p", sequence=0) == first
    second = s.append(pa.table({"x": [3]}), producer="p", sequence=1)
    assert second == (2, 2, "local")
    assert s.append({"x": 3}, producer="p", sequence=1) == second  # any shape: same pair
    assert s.append({"x": 1}, producer="p", sequence=0) == first
    assert s.read().column("x").to_pylist() == [1, 2, 3]
    # Another producer has its own numbering.
    assert s.append({"x": 4}, producer="q", sequence=0) == (3, 3, "local")
    assert s.next_offset == 4


def test_the_pair_is_kept_in_the_last_records_headers_next_to_the_callers(log: ta.Log) -> None:
    s = log.create_stream("s")
    s.append(
        [{"x": 1, "_headers": {"trace": "a"}}, {"x": 2, "_headers": {"trace": "b"}}],
        producer="agent-7",
        sequence=0,
    )
    headers = s.read().column("_headers").to_pylist()
    assert headers[0] == [("trace", "a")]
    assert headers[1] == [
        ("trace", "b"),
        ("transit.producer", "agent-7"),
        ("transit.sequence", "0"),
        ("transit.records", "2"),
    ]


def test_out_of_order_sequences_are_refused_and_change_nothing(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with ta.open(root) as log:
        s = log.create_stream("s")
        s.append({"x": 0}, producer="p", sequence=0)
        s.append({"x": 1}, producer="p", sequence=1)
        before = _tree(root)
        with pytest.raises(
            ta.InvalidInputError, match=r"sequence 3 is out of order.*next must be 2"
        ):
            s.append({"x": 9}, producer="p", sequence=3)
        with pytest.raises(ta.InvalidInputError, match="first sequence must be 0, not 4"):
            s.append({"x": 9}, producer="new", sequence=4)
        assert _tree(root) == before
        assert s.next_offset == 2
        assert s.append({"x": 2}, producer="p", sequence=2) == (2, 2, "local")


def test_a_refusal_in_a_fresh_process_takes_no_writer_lease(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with ta.open(root) as log:
        log.create_stream("s").append({"x": 0}, producer="p", sequence=0)
    with ta.open(root) as log:
        s = log.stream("s")
        before = _tree(root)
        with pytest.raises(ta.InvalidInputError, match="out of order"):
            s.append({"x": 5}, producer="p", sequence=5)
        # A retry is answered from the history too, without becoming the writer.
        assert s.append({"x": 0}, producer="p", sequence=0) == (0, 0, "local")
        assert _tree(root) == before
        assert s.append({"x": 1}, producer="p", sequence=1) == (1, 1, "local")


def test_producers_survive_reopen(tmp_path: Path) -> None:
    root = tmp_path / "log"
    acks = {}
    with ta.open(root) as log:
        s = log.create_stream("s")
        for seq in range(5):
            acks[seq] = s.append([{"seq": seq}] * (seq + 1), producer="p", sequence=seq)
        s.flush()
        acks[5] = s.append({"seq": 5}, producer="p", sequence=5)  # left in the head...
    with ta.open(root) as log:  # ... and sealed by close
        s = log.stream("s")
        for seq in (5, 0, 3):
            assert s.append({"seq": -1}, producer="p", sequence=seq) == acks[seq]
        assert s.append({"seq": 6}, producer="p", sequence=6).first_offset == acks[5][1] + 1
        with pytest.raises(ta.InvalidInputError, match="next must be 7"):
            s.append({"seq": 9}, producer="p", sequence=9)
        assert -1 not in s.read().column("seq").to_pylist()


def test_a_retry_older_than_the_memory_window_is_found_in_the_history(log: ta.Log) -> None:
    s = log.create_stream("s")
    acks = [s.append({"seq": seq}, producer="p", sequence=seq) for seq in range(300)]
    assert s.append({"seq": -1}, producer="p", sequence=3) == acks[3]
    assert s.next_offset == 300


def test_a_retry_reaches_the_durability_it_asks_for(log: ta.Log) -> None:
    s = log.create_stream("s")
    ack = s.append({"x": 1}, producer="p", sequence=0, durability="memory")
    assert ack.durability == "memory"
    assert s.generation == 0
    retried = s.append({"x": 1}, producer="p", sequence=0, durability="tiered")
    assert retried == (0, 0, "tiered")
    assert log.stream("s").commits().column("last_offset").to_pylist()[-1] == 0


def test_a_branch_inherits_its_ancestors_producer_history(log: ta.Log) -> None:
    root = log.create_stream("root")
    for seq in range(4):
        root.append({"seq": seq}, producer="p", sequence=seq)
    branch = log.branch("root/b", at="root@1")  # holds calls 0 and 1
    assert branch.append({"seq": 1}, producer="p", sequence=1) == (1, 1, "local")
    assert branch.append({"seq": 2}, producer="p", sequence=2) == (2, 2, "local")
    assert branch.read().column("_stream").to_pylist() == ["root", "root", "root/b"]


def test_concurrent_producers_in_threads_are_each_appended_once(log: ta.Log) -> None:
    s = log.create_stream("s")
    errors: list[BaseException] = []

    def produce(name: str) -> None:
        try:
            for seq in range(40):
                ack = s.append({"p": name, "seq": seq}, producer=name, sequence=seq)
                assert s.append({"p": name, "seq": seq}, producer=name, sequence=seq) == ack
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=produce, args=(f"p{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(LONG)
    assert not errors
    rows = s.read().select(["p", "seq"]).to_pylist()
    assert sorted((r["p"], r["seq"]) for r in rows) == sorted(
        (f"p{i}", seq) for i in range(4) for seq in range(40)
    )


def test_a_history_read_racing_an_append_does_not_forget_it(
    log: ta.Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread reads the history (its first producer append) just before this call's
    records land, and its read is adopted: the call must still be known as acknowledged."""
    s = log.create_stream("s")
    s.append({"x": 0}, producer="p", sequence=0)
    catalog = log.catalog
    writer = catalog.writers["s"]
    table = producers._table(catalog, "s")
    real = writer.append

    def racing(data: Any, level: Any) -> Any:
        table.precheck(catalog, "s", "q")
        table.current(catalog, "s", writer, "q")  # type: ignore[arg-type]
        return real(data, level)

    monkeypatch.setattr(writer, "append", racing)
    ack = s.append({"x": 1}, producer="p", sequence=1)
    monkeypatch.undo()
    assert s.append({"x": 1}, producer="p", sequence=1) == ack
    assert s.next_offset == 2


@pytest.mark.parametrize(
    "data",
    [
        {"x": 1, "_headers": {"transit.producer": "forged"}},
        [{"x": 1}, {"x": 2, "_headers": {"transit.sequence": "1"}}],
        pa.table(
            {"x": [1], "_headers": pa.array([[("transit.records", "1")]], ta.record.HEADERS_TYPE)}
        ),
    ],
)
def test_reserved_header_keys_are_refused(log: ta.Log, data: Any) -> None:
    s = log.create_stream("s")
    with pytest.raises(ta.InvalidInputError, match="reserved for idempotent producers"):
        s.append(data)
    with pytest.raises(ta.InvalidInputError, match="reserved for idempotent producers"):
        s.append(data, producer="p", sequence=0)
    assert s.next_offset == 0
    s.append({"x": 1, "_headers": {"transit": "fine", "other.transit.producer": "fine"}})


def test_reserved_keys_are_refused_in_a_record_batch_reader(log: ta.Log) -> None:
    s = log.create_stream("s")
    table = pa.table(
        {"x": [1], "_headers": pa.array([[("transit.producer", "x")]], ta.record.HEADERS_TYPE)}
    )
    with pytest.raises(ta.InvalidInputError, match="reserved"):
        s.append(pa.RecordBatchReader.from_batches(table.schema, table.to_batches()))
    clean = pa.table({"x": [1, 2]})
    reader = pa.RecordBatchReader.from_batches(clean.schema, clean.to_batches())
    assert s.append(reader, producer="p", sequence=0) == (0, 1, "local")


@pytest.mark.parametrize(
    ("producer", "sequence", "match"),
    [
        ("p", None, "both producer= and sequence="),
        (None, 0, "both producer= and sequence="),
        ("", 0, "non-empty string"),
        ("p\n", 0, "printable"),
        ("p", -1, "int >= 0"),
        ("p", True, "int >= 0"),
        ("p", 1.0, "int >= 0"),
    ],
)
def test_bad_producer_arguments(log: ta.Log, producer: Any, sequence: Any, match: str) -> None:
    s = log.create_stream("s")
    with pytest.raises(ta.InvalidInputError, match=match):
        s.append({"x": 1}, producer=producer, sequence=sequence)
    assert s.next_offset == 0


# --- SIGKILL ---------------------------------------------------------------------------------

PRODUCER = textwrap.dedent(
    """
    import os, sys
    import transit_arrow as ta
    root, first = sys.argv[1], int(sys.argv[2])
    log = ta.open(root, segment_max_records=50)
    s = log.stream("s")
    os.write(1, b"READY\\n")
    for seq in range(first, 10**9):
        rows = [{"seq": seq, "k": k} for k in range(1 + seq % 3)]
        os.write(1, f"CALL {seq}\\n".encode())
        ack = s.append(rows, producer="p", sequence=seq)
        os.write(1, f"ACK {seq} {ack.first_offset} {ack.last_offset}\\n".encode())
    """
)


def _run_until_killed(root: Path, first: int, acks_wanted: int) -> tuple[dict[int, Any], int]:
    """Run a producer from sequence `first`; SIGKILL it after `acks_wanted` acks.
    Returns its acks and the last sequence it started."""
    child = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, str(root), str(first)], stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    acks: dict[int, Any] = {}
    started = first - 1
    try:
        for raw in child.stdout:
            parts = raw.decode().split()
            if parts[0] == "CALL":
                started = int(parts[1])
            elif parts[0] == "ACK":
                acks[int(parts[1])] = (int(parts[2]), int(parts[3]), "local")
                if len(acks) >= acks_wanted:
                    break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(LONG)
        child.stdout.close()
    return acks, started


@pytest.mark.crash
def test_retries_after_sigkill_of_the_producer_append_each_call_once(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with ta.open(root) as log:
        log.create_stream("s")
    seen: dict[int, Any] = {}
    first = 0
    for cycle in range(4):
        acks, started = _run_until_killed(root, first, 15 + 7 * cycle)
        for seq, ack in acks.items():
            assert seen.setdefault(seq, ack) == ack, f"sequence {seq} acknowledged twice"
        # The next producer retries from a few calls back: acknowledged ones must come back
        # with their original offsets, the one in flight once at most.
        first = max(0, max(acks) - 3)
        assert started >= max(acks)
    with ta.open(root) as log:
        s = log.stream("s")
        for seq in range(first, max(seen) + 3):
            ack = s.append(
                [{"seq": seq, "k": k} for k in range(1 + seq % 3)], producer="p", sequence=seq
            )
            assert seen.setdefault(seq, tuple(ack)) == tuple(ack)
        table = s.read()
    assert table.column("_offset").to_pylist() == list(range(table.num_rows))
    calls: dict[int, list[int]] = {}
    for row in table.select(["seq", "k"]).to_pylist():
        calls.setdefault(row["seq"], []).append(row["k"])
    assert sorted(calls) == list(range(max(seen) + 1))
    for seq, ks in calls.items():
        assert ks == list(range(1 + seq % 3)), f"call {seq} appended {len(ks)} records"
    for seq, (lo, hi, _) in seen.items():
        assert set(table.column("seq").to_pylist()[lo : hi + 1]) == {seq}
