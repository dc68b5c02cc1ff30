"""Durable cursors (docs/format.md "Cursors"): positions stored in the log, surviving restarts
and machines, committed put-if-absent per generation so concurrent handles conflict clearly,
listed as `Log.cursors()` and the SQL table `transit_cursors`; at-least-once replay."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

import transit_arrow as ta
from transit_arrow.layout import cursor_folder, cursor_path

LONG = 60.0


def _files(log: ta.Log, name: str, stream: str) -> list[str]:
    return log.store.list(cursor_folder(name, stream))


def test_a_new_cursor_starts_at_zero_and_its_commits_survive_reopen(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with ta.open(root) as log:
        s = log.create_stream("events")
        s.append([{"i": i} for i in range(10)])
        c = log.cursor("indexer", "events")
        assert (c.position, c.generation, c.committed_at) == (0, None, None)
        t = c.tail(timeout=0)
        got = [o for b in t for o in b.column("_offset").to_pylist()]
        assert got == list(range(10))
        assert c.commit(t.position) == 0
        assert (c.position, c.generation) == (10, 0)
        assert c.committed_at is not None
    with ta.open(root) as log:
        c = log.cursor("indexer", "events")
        assert (c.position, c.generation) == (10, 0)
        log.stream("events").append({"i": 10})
        assert [b.column("i").to_pylist() for b in c.tail(timeout=0)] == [[10]]


def test_the_same_name_follows_several_streams_independently(log: ta.Log) -> None:
    log.create_stream("a").append([{"i": 0}, {"i": 1}])
    log.create_stream("b/c").append({"i": 0})
    log.cursor("worker", "a").commit(2)
    log.cursor("worker", "b/c").commit(1)
    log.cursor("other", "a").commit(1)
    assert log.cursor("worker", "a").position == 2
    assert log.cursor("worker", "b/c").position == 1
    rows = log.cursors().select(["name", "stream", "position", "generation"]).to_pylist()
    assert rows == [
        {"name": "other", "stream": "a", "position": 1, "generation": 0},
        {"name": "worker", "stream": "a", "position": 2, "generation": 0},
        {"name": "worker", "stream": "b/c", "position": 1, "generation": 0},
    ]
    sql = log.sql("SELECT name, stream, position FROM transit_cursors ORDER BY ALL").fetchall()
    assert sql == [("other", "a", 1), ("worker", "a", 2), ("worker", "b/c", 1)]


def test_two_handles_committing_one_cursor_conflict_and_the_loser_changes_nothing(
    log: ta.Log,
) -> None:
    log.create_stream("s").append([{"i": i} for i in range(10)])
    first = log.cursor("c", "s")
    second = log.cursor("c", "s")
    first.commit(3)
    files = _files(log, "c", "s")
    with pytest.raises(ta.CommitConflictError, match=r"generation 0 exists \(position 3"):
        second.commit(5)
    assert _files(log, "c", "s") == files
    assert log.cursor("c", "s").position == 3
    assert second.position == 0  # unchanged until it reads the log again
    assert second.refresh() == 3
    assert second.commit(5) == 1
    with pytest.raises(ta.CommitConflictError):
        first.commit(6)


def test_two_processes_committing_one_cursor_conflict(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with ta.open(root) as log:
        log.create_stream("s").append([{"i": i} for i in range(10)])
    script = textwrap.dedent(
        """
        import json, sys, time
        import transit_arrow as ta
        with ta.open(sys.argv[1]) as log:
            c = log.cursor("shared", "s")
            print("OPEN", flush=True)
            sys.stdin.readline()
            try:
                print(json.dumps({"generation": c.commit(int(sys.argv[2]))}), flush=True)
            except ta.TransitError as e:
                print(json.dumps({"error": type(e).__name__, "message": str(e)}), flush=True)
        """
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(root), str(offset)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for offset in (4, 7)
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline().strip() == "OPEN"
    answers = []
    for child in children:  # one after the other: both read generation "none" before
        out, _ = child.communicate("go\n", timeout=LONG)
        answers.append(json.loads(out))
    assert answers[0] == {"generation": 0}
    assert answers[1]["error"] == "CommitConflictError"
    assert "cursor 'shared' on stream 's' was committed by another handle" in answers[1]["message"]
    with ta.open(root) as log:
        assert log.cursor("shared", "s").position == 4


def test_old_generations_are_pruned_and_a_stale_handle_still_conflicts(log: ta.Log) -> None:
    log.create_stream("s").append([{"i": i} for i in range(10)])
    c = log.cursor("c", "s")
    stale = log.cursor("c", "s")
    for offset in range(1, 8):
        c.commit(offset)
    assert _files(log, "c", "s") == [f"{g:020d}.json" for g in (5, 6)]
    # `stale` (generation None) creates generation 0 again, which was pruned: it must learn
    # that it lost, and readers keep seeing the newest position.
    with pytest.raises(ta.CommitConflictError, match="generation 6 exists"):
        stale.commit(2)
    assert log.cursor("c", "s").position == 7


def test_commit_bounds(log: ta.Log) -> None:
    s = log.create_stream("s")
    s.append([{"i": i} for i in range(5)])
    c = log.cursor("c", "s")
    with pytest.raises(ta.InvalidInputError, match="its next offset is 5"):
        c.commit(6)
    for bad in (-1, 1.0, "3", True, None):
        with pytest.raises(ta.InvalidInputError, match="offset >= 0"):
            c.commit(bad)  # type: ignore[arg-type]
    assert _files(log, "c", "s") == []
    c.commit(5)
    c.commit(2)  # moving back replays
    assert log.cursor("c", "s").position == 2


def test_a_cursor_can_commit_records_another_process_has_not_sealed(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with ta.open(root) as log:
        log.create_stream("s")
    writer = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys, transit_arrow as ta\n"
            "log = ta.open(sys.argv[1]); log.stream('s').append([{'i': 0}, {'i': 1}])\n"
            "os._exit(0)  # no close: the records stay in the head",
            str(root),
        ],
        check=True,
        timeout=LONG,
    )
    assert writer.returncode == 0
    with ta.open(root) as log:
        assert log.stream("s").generation == 0
        c = log.cursor("c", "s")
        c.commit(2)
        assert c.position == 2


def test_at_least_once_replay_from_a_cursor(tmp_path: Path) -> None:
    """A consumer processes batches and commits after each; it crashes after processing a
    batch it did not commit. The next consumer replays that batch: nothing is skipped."""
    root = tmp_path / "log"
    processed: list[int] = []
    with ta.open(root) as log:
        s = log.create_stream("s")
        for k in range(6):
            s.append([{"i": 3 * k + j} for j in range(3)])
        c = log.cursor("consumer", "s")
        for n, batch in enumerate(c.tail(timeout=0)):
            processed += batch.column("i").to_pylist()
            if n == 1:
                break  # "crash": processed, not committed
            c.commit(batch.column("_offset")[-1].as_py() + 1)
    with ta.open(root) as log:
        c = log.cursor("consumer", "s")
        replay = [i for b in c.tail(timeout=0) for i in b.column("i").to_pylist()]
        assert replay[0] == c.position
    assert sorted(set(processed + replay)) == list(range(18))
    assert processed[-len(replay) :] != replay  # the uncommitted batch came again
    assert set(processed) & set(replay)


def test_cursor_names_streams_and_damage(log: ta.Log) -> None:
    log.create_stream("s").append({"i": 0})
    with pytest.raises(ta.StreamNotFoundError):
        log.cursor("c", "missing")
    for bad in ("", "a b", "/x", "../x"):
        with pytest.raises(ta.InvalidInputError, match="cursor name"):
            log.cursor(bad, "s")
    c = log.cursor("c", "s")
    c.commit(1)
    path = log.store.local_path(cursor_path("c", "s", 0))
    assert path is not None
    Path(path).write_text(Path(path).read_text().replace('"position":1', '"position": 1'))
    with pytest.raises(ta.IntegrityError, match=r"cursor file .* is damaged"):
        log.cursor("c", "s")
    Path(path).write_bytes(b"{not json")
    with pytest.raises(ta.IntegrityError, match="damaged"):
        log.cursor("c", "s")
    rows = log.cursors().to_pylist()
    assert len(rows) == 1 and rows[0]["error"] and rows[0]["position"] is None


def test_log_cursors_is_empty_without_cursors(log: ta.Log) -> None:
    table = log.cursors()
    assert table.num_rows == 0
    assert table.schema.names[:4] == ["name", "stream", "position", "generation"]
    assert log.sql("SELECT count(*) FROM transit_cursors").fetchall() == [(0,)]


@pytest.mark.s3
def test_cursors_on_s3_survive_machines(s3_uri: str, s3_endpoint: object, tmp_path: Path) -> None:
    options = s3_endpoint.storage_options  # type: ignore[attr-defined]
    with ta.open(s3_uri, storage_options=options, local_dir=tmp_path / "a") as log:
        log.create_stream("s").append(pa.table({"i": list(range(5))}), durability="tiered")
        log.cursor("c", "s").commit(3)
        stale = log.cursor("c", "s")
        with ta.open(s3_uri, storage_options=options, local_dir=tmp_path / "b") as other:
            c = other.cursor("c", "s")  # "another machine": another local dir
            assert c.position == 3
            assert [b.column("i").to_pylist() for b in c.tail(timeout=0)] == [[3, 4]]
            c.commit(5)
        with pytest.raises(ta.CommitConflictError):
            stale.commit(4)
        assert stale.refresh() == 5


CONSUMER = textwrap.dedent(
    """
    import os, sys
    import transit_arrow as ta
    with ta.open(sys.argv[1]) as log:
        cursor = log.cursor("consumer", "s")
        os.write(1, f"FROM {cursor.position}\\n".encode())
        for batch in cursor.tail(timeout=30):
            offsets = batch.column("_offset").to_pylist()
            os.write(1, ("GOT " + " ".join(map(str, offsets)) + "\\n").encode())
            cursor.commit(offsets[-1] + 1)
            os.write(1, f"COMMITTED {offsets[-1] + 1}\\n".encode())
    """
)


@pytest.mark.crash
def test_a_killed_consumer_resumes_from_its_cursor(tmp_path: Path) -> None:
    """Consumers tail through a cursor while another process appends; each is SIGKILLed at a
    random point. Every record is processed at least once, and a consumer resumes exactly at
    the position its predecessor committed last."""
    root = tmp_path / "log"
    total = 200
    with ta.open(root) as log:
        log.create_stream("s")
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, transit_arrow as ta\n"
            "with ta.open(sys.argv[1], segment_max_records=40) as log:\n"
            "    s = log.stream('s')\n"
            "    for i in range(int(sys.argv[2])):\n"
            "        s.append({'i': i})\n"
            "        time.sleep(0.003)\n",
            str(root),
            str(total),
        ]
    )
    seen: set[int] = set()
    committed = 0
    try:
        for cycle in range(4):
            child = subprocess.Popen(
                [sys.executable, "-c", CONSUMER, str(root)], stdout=subprocess.PIPE, text=True
            )
            assert child.stdout is not None
            assert child.stdout.readline().split() == ["FROM", str(committed)]
            expected, batches = committed, 0
            for line in child.stdout:
                kind, *numbers = line.split()
                if kind == "GOT":  # in order, from the committed position, no gap
                    offsets = [int(n) for n in numbers]
                    assert offsets == list(range(expected, expected + len(offsets)))
                    expected = offsets[-1] + 1
                    seen.update(offsets)
                    batches += 1
                elif kind == "COMMITTED":
                    committed = int(numbers[0])
                if batches >= 3 + cycle or len(seen) >= total:
                    break
            child.kill()  # SIGKILL, between any two steps
            child.communicate(timeout=LONG)
            if len(seen) >= total:
                break
    finally:
        writer.wait(LONG)
    assert writer.returncode == 0
    with ta.open(root) as log:
        cursor = log.cursor("consumer", "s")
        rest = [o for b in cursor.tail(timeout=0) for o in b.column("_offset").to_pylist()]
    assert seen | set(rest) == set(range(total))
    assert rest == list(range(cursor.position, total))
