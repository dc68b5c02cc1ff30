"""Close means closed: a closed Stream or Log refuses every call with `LogClosedError`, and
closing releases leases, locks, DuckDB connections and their threads at once."""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

import pytest

import transit_arrow as ta
from transit_arrow.engine.read import READ_WORKERS

#: The process-wide thread pools (prefix -> most threads): they start threads on demand, up
#: to their bound, and keep them for the process's life, whatever log handles come and go.
POOLS = {"transit-fsync": 4, "transit-read": READ_WORKERS}


def pool_threads() -> dict[str, int]:
    """Threads of each process-wide pool."""
    names = [t.name for t in threading.enumerate()]
    return {prefix: sum(n.startswith(prefix + "_") for n in names) for prefix in POOLS}


def os_threads() -> int:
    """The process's OS threads, those of the process-wide pools left out (a pool that grows
    towards its bound during a test is not a leak: `test_no_threads_or_descriptors_leak`
    checks the bounds)."""
    return len(os.listdir(f"/proc/{os.getpid()}/task")) - sum(pool_threads().values())


def open_fds() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


def test_closed_stream_refuses_every_call(log: ta.Log) -> None:
    """After `Stream.close()` every method of the handle raises LogClosedError (no new lease
    is taken); `log.stream(name)` hands out a new, working handle."""
    s = log.create_stream("s")
    s.append({"x": 1})
    s.close()
    s.close()  # twice is fine
    writer_folder = Path(log.catalog.store.local_path("streams/s/writer") or "")
    leases = sorted(os.listdir(writer_folder))
    assert leases  # the lease taken by the first append, and its release
    calls = [
        lambda: s.append({"x": 2}),
        s.read,
        s.reader,
        s.scan,
        s.flush,
        s.commits,
        s.checkpoint,
        s.ancestry,
        s.to_duckdb,
        lambda: s.branch("b"),
        lambda: s.at(generation=0),
        lambda: s.as_of("2030-01-01T00:00:00Z"),
        lambda: s.next_offset,
        lambda: s.schema,
        lambda: s.tail(0, timeout=0),
    ]
    for call in calls:
        with pytest.raises(ta.LogClosedError, match="closed"):
            call()
    assert not log.catalog.has_writer("s")
    assert sorted(os.listdir(writer_folder)) == leases  # no new lease was taken
    fresh = log.stream("s")
    assert fresh is not s
    assert fresh.append({"x": 3}).first_offset == 1


def test_closed_log_refuses_every_call(tmp_path: Path) -> None:
    """After `Log.close()` every method of the log, of its streams, views and
    materializations raises LogClosedError."""
    log = ta.open(tmp_path / "log")
    s = log.create_stream("s")
    s.append({"x": 1})
    view = s.at(generation=0)
    mv = log.materialize("m", "s", query="SELECT count(*) AS n FROM records")
    cp = s.checkpoint()
    log.close()
    log.close()
    calls = [
        lambda: log.create_stream("t"),
        lambda: log.stream("s"),
        log.streams,
        lambda: log.branch("b", at="s@0"),
        lambda: log.merge("m2", ["s", "s"]),
        log.lineage,
        lambda: log.children("s"),
        log.gc,
        log.hydrate,
        lambda: log.materialize("m", "s", query="SELECT 1 AS a FROM records"),
        lambda: log.materialization("m"),
        log.materializations,
        log.duckdb,
        lambda: log.sql("SELECT 1"),
        log.scan_all,
        log.checkpoints,
        lambda: log.verify("s"),
        lambda: log.verify(cp),
        log.__enter__,
        lambda: s.append({"x": 2}),
        s.read,
        view.read,
        mv.refresh,
        mv.read,
    ]
    for call in calls:
        with pytest.raises(ta.LogClosedError):
            call()


@pytest.mark.parametrize(
    "cycles", [pytest.param(30, id="30"), pytest.param(300, id="300", marks=pytest.mark.slow)]
)
def test_no_threads_or_descriptors_leak(tmp_path: Path, cycles: int) -> None:
    """open / append / sql / close, repeated: the OS threads and open file descriptors of the
    process come back to where they were after each close (counted without waiting for the
    garbage collector)."""
    with ta.open(tmp_path / "log") as log:
        log.create_stream("s").append({"x": -1})
        log.sql("SELECT count(*) FROM s").fetchall()  # DuckDB's process-wide state, once
    gc.collect()
    threads, fds = os_threads(), open_fds()
    peak_threads, peak_fds = threads, fds
    for i in range(cycles):
        log = ta.open(tmp_path / "log")
        log.stream("s").append({"x": i})
        assert log.sql("SELECT count(*) FROM s").fetchall() == [(i + 2,)]
        log.close()
        peak_threads = max(peak_threads, os_threads())
        peak_fds = max(peak_fds, open_fds())
    assert os_threads() <= threads, (threads, os_threads(), threading.enumerate())
    assert all(pool_threads()[prefix] <= most for prefix, most in POOLS.items())
    assert open_fds() <= fds, (fds, open_fds())
    assert peak_threads <= threads + 1 and peak_fds <= fds + 1
