"""Live tails (DESIGN §8, docs/format.md "Tails"): `Stream.tail` yields every record of the
replay from an offset on, then new ones as they are appended, in offset order, with no gap and
no duplicate across seals, branches, reopen and processes, without busy polling."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import transit_arrow as ta
from transit_arrow.engine import tail as tail_module
from transit_arrow.engine.tail import Tail

# Generous bounds: a tail that works answers in milliseconds; these only stop a broken one.
LONG = 60.0


def _offsets(batches: list[pa.RecordBatch]) -> list[int]:
    return [o for b in batches for o in b.column("_offset").to_pylist()]


class Collector(threading.Thread):
    """Tails a stream in a thread until `until` records arrived (or the tail ends)."""

    def __init__(self, stream: ta.Stream, start: int, until: int, timeout: float = LONG) -> None:
        super().__init__(daemon=True)
        self.tail = stream.tail(start, timeout=timeout)
        self.until = until
        self.batches: list[pa.RecordBatch] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for batch in self.tail:
                self.batches.append(batch)
                if batch.num_rows and batch.column("_offset")[-1].as_py() >= self.until - 1:
                    break
        except BaseException as e:
            self.error = e

    def result(self) -> list[pa.RecordBatch]:
        self.join(LONG)
        assert not self.is_alive(), "the tail did not finish"
        if self.error is not None:
            raise self.error
        return self.batches


def _table(batches: list[pa.RecordBatch]) -> pa.Table:
    return pa.Table.from_batches(batches).combine_chunks()


# --- in one process -------------------------------------------------------------------------


def test_tail_yields_history_then_new_records_as_they_are_appended(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log", segment_max_records=7) as log:
        s = log.create_stream("events")
        s.append([{"i": i, "text": f"t{i}"} for i in range(5)])
        collector = Collector(s, 0, 40)
        collector.start()
        s.append({"i": 5, "text": "t5"})  # the per-record fast path
        s.append(pa.table({"i": list(range(6, 20)), "text": [f"t{i}" for i in range(6, 20)]}))
        s.flush()  # sealed while the tail runs
        for i in range(20, 40):
            s.append({"i": i, "text": f"t{i}"}, durability="memory" if i % 2 else "local")
        got = collector.result()
        assert _offsets(got) == list(range(40))
        assert _table(got).equals(s.read().combine_chunks())


def test_tail_from_an_offset_and_timeout_zero_stops_at_the_end(log: ta.Log) -> None:
    s = log.create_stream("s")
    s.append([{"i": i} for i in range(10)])
    assert _offsets(list(s.tail(4, timeout=0))) == list(range(4, 10))
    assert list(s.tail(10, timeout=0)) == []
    assert list(s.tail(99, timeout=0)) == []
    empty = log.create_stream("empty")
    assert list(empty.tail(timeout=0)) == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_gap_no_duplicate_while_appends_and_seals_interleave(tmp_path: Path, seed: int) -> None:
    """A random schedule of appends (every input shape, every durability), flushes and
    size-triggered rolls; a live tail must see exactly what `read()` sees, in order."""
    rng = random.Random(seed)
    with ta.open(tmp_path / "log", segment_max_records=rng.choice([3, 17, 100])) as log:
        s = log.create_stream("s")
        s.append({"i": -1})
        total = 1
        collector = Collector(s, 0, 1 << 62)  # `until` is set once the total is known
        collector.start()
        for step in range(150):
            n = rng.choice([1, 1, 2, 5, 30])
            rows = [{"i": total + k} for k in range(n)]
            shape = rng.choice(["dict", "list", "table"])
            data: Any = rows[0] if shape == "dict" and n == 1 else rows
            if shape == "table":
                data = pa.Table.from_pylist(rows)
            s.append(data, durability=rng.choice(["memory", "local", "local", "tiered"]))
            total += len(rows)
            if rng.random() < 0.1:
                s.flush()
            if step % 10 == 0:
                time.sleep(rng.random() / 200)
        collector.until = total
        s.append({"i": total})  # wakes the tail after `until` was set
        got = collector.result()
        assert _offsets(got)[:total] == list(range(total))
        assert _table(got).slice(0, total).equals(s.read(end=total).combine_chunks())


def test_tail_of_a_branch_starts_in_its_ancestors_history(log: ta.Log) -> None:
    root = log.create_stream("root")
    root.append([{"i": i} for i in range(10)])
    child = log.branch("root/retry", at="root@4")
    child.append([{"i": 100}, {"i": 101}])
    deeper = child.branch("root/retry/deeper", at=5)
    deeper.append({"i": 200})
    root.append({"i": 10})  # after the fork: not part of either branch

    got = _table(list(deeper.tail(timeout=0)))
    assert got.column("_offset").to_pylist() == list(range(7))
    assert got.column("i").to_pylist() == [0, 1, 2, 3, 4, 100, 200]
    assert got.column("_stream").to_pylist() == ["root"] * 5 + ["root/retry", "root/retry/deeper"]

    collector = Collector(child, 3, 9)
    collector.start()
    root.append({"i": 11})  # the parent's appends never reach the branch
    child.append([{"i": 102}, {"i": 103}])
    got = _table(collector.result())
    assert got.column("_offset").to_pylist() == list(range(3, 9))
    assert got.column("i").to_pylist() == [3, 4, 100, 101, 102, 103]


def test_tail_of_a_merge(log: ta.Log) -> None:
    a = log.create_stream("a")
    a.append([{"i": 0}, {"i": 1}])
    b = log.branch("b", at="a@0")
    b.append({"i": 10})
    merged = log.merge("m", parents=["a", "b"], policy="concat")
    merged.append({"i": 99})
    assert _table(list(merged.tail(timeout=0))).equals(merged.read().combine_chunks())


def test_tail_resumes_across_reopen_without_gap_or_duplicate(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with ta.open(root) as log:
        s = log.create_stream("s")
        s.append([{"i": i} for i in range(10)])
        t = s.tail(0, timeout=0)
        first = [next(t)]
        position = t.position
        s.append([{"i": i} for i in range(10, 15)])  # unsealed, then sealed by close
    with ta.open(root) as log:
        s = log.stream("s")
        rest = list(s.tail(position, timeout=0))
        assert _offsets(first + rest) == list(range(15))
        assert position == 10


def test_a_column_added_later_appears_in_later_batches(log: ta.Log) -> None:
    s = log.create_stream("s")
    s.append({"a": 1})
    t = s.tail(0, timeout=5)
    assert next(t).schema.names[-1] == "a"
    s.append({"a": 2, "b": "new"})
    later = next(t)
    assert later.schema.names[-2:] == ["a", "b"]
    assert later.column("b").to_pylist() == ["new"]
    t.close()


def test_idle_timeout_close_and_closing_the_log_end_a_tail(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log") as log:
        s = log.create_stream("s")
        s.append({"i": 0})
        assert _offsets(list(s.tail(0, timeout=0.2))) == [0]  # then 0.2 s without records

        t = s.tail(1)  # no timeout: waits until closed
        ended = threading.Event()

        def run() -> None:
            list(t)
            ended.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        time.sleep(0.1)
        assert not ended.is_set()
        t.close()
        assert ended.wait(LONG)

        t2 = s.tail(1)
        thread = threading.Thread(target=list, args=(t2,), daemon=True)
        thread.start()
        time.sleep(0.1)
        assert thread.is_alive()
        log.close()  # a tail of a closed log stops
        thread.join(LONG)
        assert not thread.is_alive()
        with pytest.raises(ta.LogClosedError):
            s.tail()


def test_with_block_and_abandoned_tails_release_their_watch(log: ta.Log) -> None:
    s = log.create_stream("s")
    s.append({"i": 0})
    with s.tail(0) as t:
        assert next(t).num_rows == 1
    for _ in range(3):
        t = s.tail(0)
        next(t)
        del t
    deadline = time.monotonic() + LONG
    while tail_module._HUB.subs and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not tail_module._HUB.subs


def test_bad_arguments_are_refused(log: ta.Log) -> None:
    s = log.create_stream("s")
    for start in (-1, 1.5, "0", True):
        with pytest.raises(ta.InvalidInputError, match="start"):
            s.tail(start)  # type: ignore[arg-type]
    for timeout in (-1, "1", True, float("nan")):
        with pytest.raises(ta.InvalidInputError, match="timeout"):
            s.tail(0, timeout=timeout)  # type: ignore[arg-type]


def test_an_idle_tail_does_not_busy_wait(tmp_path: Path) -> None:
    """Idle tails (in-process condition, inotify watch) use a small fraction of a core. This
    bounds busy waiting (CPU seconds used while idle), not speed."""
    with ta.open(tmp_path / "log") as log:
        s = log.create_stream("s")
        s.append({"i": 0})
        other = log.create_stream("other")
        tails = [s.tail(1), other.tail(0)]
        threads = [threading.Thread(target=list, args=(t,), daemon=True) for t in tails]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        cpu0, wall0 = time.process_time(), time.monotonic()
        time.sleep(2.0)
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
        for t in tails:
            t.close()
        assert cpu / wall < 0.02, f"idle tails used {cpu:.3f} CPU s in {wall:.2f} s"


# --- across processes -----------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import json, sys, time
    import transit_arrow as ta
    root, stream, calls, seal_every, pause = sys.argv[1:6]
    with ta.open(root, segment_max_records=int(seal_every)) as log:
        s = log.stream(stream)
        n = s.next_offset
        for call in range(int(calls)):
            size = 1 + call % 4
            ack = s.append([{"i": n + k} for k in range(size)])
            n += size
            if call % 7 == 6:
                s.flush()
            time.sleep(float(pause))
    print(json.dumps({"next": n}), flush=True)
    """
)


def _writer(
    root: Path, stream: str, calls: int, seal_every: int, pause: float
) -> subprocess.Popen[str]:
    args = [str(root), stream, str(calls), str(seal_every), str(pause)]
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, *args], stdout=subprocess.PIPE, text=True
    )


def test_a_second_process_tails_a_stream_another_process_writes(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with ta.open(root) as log:
        log.create_stream("s").append({"i": 0})
    expected = 1 + sum(1 + c % 4 for c in range(120))
    with ta.open(root) as log:
        s = log.stream("s")
        collector = Collector(s, 0, expected)
        collector.start()
        child = _writer(root, "s", 120, 13, 0.002)
        got = collector.result()
        out, _ = child.communicate(timeout=LONG)
        assert child.returncode == 0
        assert json.loads(out)["next"] == expected
        assert _offsets(got) == list(range(expected))
        assert _table(got).column("i").to_pylist() == list(range(expected))


def test_a_read_that_races_a_seal_in_another_process_is_retried_not_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader lists the commits, then the writer seals a head, commits and removes it,
    then the reader lists the heads: that state misses the sealed records. The tail must not
    serve the records after the hole; it reads again."""
    root = tmp_path / "log"
    with ta.open(root) as writer_log, ta.open(root) as reader_log:
        w = writer_log.create_stream("s")
        w.append([{"i": i} for i in range(5)])
        catalog = reader_log.catalog
        before, _ = catalog.live_state("s")  # generation 0: no segment yet
        w.flush()
        w.append([{"i": i} for i in range(5, 10)])
        _, heads_after = catalog.live_state("s")  # only the head starting at 5
        assert heads_after and heads_after[0][0] == 5
        # The tail of a stream another process writes reads the heads folder, then the
        # manifest, then chains them: make its first read see the old manifest and the new
        # head (a state with a hole at 0..4).
        real_manifest, real_chain = catalog.manifest, tail_module.chain
        calls: list[int] = []

        def racy_manifest(name: str, *, refresh: bool = True) -> Any:
            return before if not calls else real_manifest(name, refresh=refresh)

        def racy_chain(readers: Any, next_offset: int, fenced: int, position: int) -> Any:
            calls.append(next_offset)
            if len(calls) == 1:
                return heads_after
            return real_chain(readers, next_offset, fenced, position)

        tail = reader_log.stream("s").tail(0, timeout=0)
        monkeypatch.setattr(catalog, "manifest", racy_manifest)
        monkeypatch.setattr(tail_module, "chain", racy_chain)
        got = list(tail)
        assert len(calls) >= 2
        assert _offsets(got) == list(range(10))


def test_cross_process_tail_of_a_branch_started_before_the_writer(tmp_path: Path) -> None:
    """The branch's heads folder does not exist when the tail starts: the watch follows it
    into existence."""
    root = tmp_path / "log"
    with ta.open(root) as log:
        log.create_stream("s").append([{"i": i} for i in range(3)])
        log.branch("s/b", at="s@1")
    expected = 2 + sum(1 + c % 4 for c in range(20))
    with ta.open(root) as log:
        b = log.stream("s/b")
        assert not (log.local_dir / "streams" / "s%2Fb" / "heads").exists()
        collector = Collector(b, 0, expected)
        collector.start()
        time.sleep(0.2)
        child = _writer(root, "s/b", 20, 1000, 0.01)
        got = collector.result()
        child.communicate(timeout=LONG)
        assert _offsets(got) == list(range(expected))
        assert _table(got).column("_stream").to_pylist()[:2] == ["s", "s"]


def test_cross_process_tail_without_inotify_falls_back_to_polling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable() -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(tail_module, "_Inotify", unavailable)
    root = tmp_path / "log"
    with ta.open(root) as log:
        log.create_stream("s").append({"i": 0})
    expected = 1 + sum(1 + c % 4 for c in range(10))
    with ta.open(root) as log:
        collector = Collector(log.stream("s"), 0, expected)
        collector.start()
        child = _writer(root, "s", 10, 1000, 0.01)
        got = collector.result()
        child.communicate(timeout=LONG)
        assert _offsets(got) == list(range(expected))


def test_a_tail_sees_commits_of_a_writer_elsewhere_on_a_remote_store(tmp_path: Path) -> None:
    """A store without local files (here `memory://`, as S3) and a writer whose heads this log
    cannot see (another local dir: another machine): commits are found by polling."""
    uri = f"memory://tail-{os.getpid()}-{time.monotonic_ns()}"
    with ta.open(uri, local_dir=tmp_path / "a") as writer_log:
        w = writer_log.create_stream("s")
        w.append({"i": 0})
        w.flush()
        with ta.open(uri, local_dir=tmp_path / "b") as reader_log:
            collector = Collector(reader_log.stream("s"), 0, 6)
            collector.start()
            for i in range(1, 6):
                w.append({"i": i})
                if i % 2:
                    w.flush()
            w.flush()
            got = collector.result()
            assert _offsets(got) == list(range(6))


def test_a_tail_yields_only_records_durable_at_the_level_it_asks(tmp_path: Path) -> None:
    with ta.open(tmp_path / "log") as log:
        s = log.create_stream("s")
        s.append([{"i": i} for i in range(3)], durability="memory")

        def offsets(durability: Any) -> list[int]:
            return _offsets(list(Tail(log.catalog, "s", 0, timeout=0, durability=durability)))

        assert offsets("memory") == [0, 1, 2]
        assert offsets("local") == []
        s.append({"i": 3}, durability="local")  # its sync writes the records before it too
        s.append({"i": 4}, durability="memory")
        assert offsets("local") == [0, 1, 2, 3]
        assert offsets("tiered") == []
        s.flush()
        assert offsets("tiered") == [0, 1, 2, 3, 4]
        assert offsets("local") == [0, 1, 2, 3, 4]  # committed is durable too
        # A held-back tail yields the records once they are synced.
        s.append({"i": 5}, durability="memory")
        collector_tail = Tail(log.catalog, "s", 5, timeout=LONG, durability="local")
        got: list[pa.RecordBatch] = []
        thread = threading.Thread(target=lambda: got.append(next(collector_tail)))
        thread.start()
        s.append({"i": 6}, durability="local")
        thread.join(LONG)
        collector_tail.close()
        assert _offsets(got)[0] == 5
