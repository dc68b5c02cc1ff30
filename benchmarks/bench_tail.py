"""Live tail latency and idle cost (DESIGN §8), each measured side by side with a baseline.

Run: `python benchmarks/bench_tail.py [--runs 5] [--records 400] [--idle 3]`.

Prints medians over `--runs` runs (at least 5):

1. **in-process append -> yield**: a thread tails a stream while the main thread appends
   single records (`local`, one every millisecond); latency is from just before `append` to
   the tail yielding the record (p50 and p99 per run). Baseline, measured in the same run: the
   same timestamps handed to a waiting thread through a `queue.SimpleQueue` (the floor of a
   thread wake-up here). Target: p50 < 1 ms.
2. **cross-process append -> yield**: a child process appends single records (`local`, one
   every 2 ms); this process tails the stream (inotify on the heads folder). Latency uses
   wall-clock stamps. Baseline, same run: the child writes each stamp to a file, fdatasyncs
   it, then writes it to a pipe this process blocks on (a durable write plus a process
   wake-up). Target: p50 < 10 ms. Also printed: p50 over the first and the last tenth of each
   run's records, since a cross-process read re-reads the unsealed head (it grows by one
   Arrow IPC message per append).
3. **idle tailers**: 10 tails (5 waiting on streams this process writes, 5 on streams only
   another process could write: inotify) idle for `--idle` seconds; CPU seconds used by the
   whole process / wall seconds. Baseline: the same process idle without tailers. Target:
   < 1 % of one core.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

import transit_arrow as ta


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stamps(batch: pa.RecordBatch) -> list[float]:
    """The append times the records carry."""
    return [float(t) for t in batch.column("t").to_numpy()]


def side_by_side(
    measure: Callable[[], list[float]], baseline: Callable[[], list[float]], runs: int, tenth: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Medians over `runs` alternating runs of each one's p50, p99, and p50 of its first and
    last `tenth` samples."""
    stats: tuple[dict[str, list[float]], dict[str, list[float]]] = ({}, {})
    for _ in range(runs):
        for out, run in zip(stats, (measure, baseline), strict=True):
            samples = run()
            for key, value in (
                ("p50", percentile(samples, 0.5)),
                ("p99", percentile(samples, 0.99)),
                ("early", percentile(samples[:tenth], 0.5)),
                ("late", percentile(samples[-tenth:], 0.5)),
            ):
                out.setdefault(key, []).append(value)
    mine, base = ({k: statistics.median(v) for k, v in d.items()} for d in stats)
    return mine, base


# --- 1. in-process --------------------------------------------------------------------------


def in_process_tail(root: Path, records: int) -> list[float]:
    latencies: list[float] = []
    with ta.open(root) as log:
        s = log.create_stream(f"s{time.monotonic_ns()}")
        s.append({"i": -1, "t": 0.0})
        tail = s.tail(1)

        def consume() -> None:
            for batch in tail:
                now = time.perf_counter()
                latencies.extend(now - t for t in stamps(batch))
                if len(latencies) >= records:
                    return

        thread = threading.Thread(target=consume)
        thread.start()
        time.sleep(0.05)
        for i in range(records):
            s.append({"i": i, "t": time.perf_counter()})
            time.sleep(0.001)
        thread.join(60)
        tail.close()
    return latencies


def in_process_queue(records: int) -> list[float]:
    handoff: queue.SimpleQueue[float] = queue.SimpleQueue()
    latencies: list[float] = []

    def consume() -> None:
        for _ in range(records):
            t = handoff.get()
            latencies.append(time.perf_counter() - t)

    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(0.05)
    for _ in range(records):
        handoff.put(time.perf_counter())
        time.sleep(0.001)
    thread.join(60)
    return latencies


# --- 2. across processes --------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import os, sys, time
    import transit_arrow as ta
    root, stream, records = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with ta.open(root) as log:
        s = log.stream(stream)
        os.write(1, b"ready\\n")
        sys.stdin.readline()
        for i in range(records):
            s.append({"i": i, "t": time.time()})
            time.sleep(0.002)
    """
)

PIPE_WRITER = textwrap.dedent(
    """
    import os, sys, time
    path, records = sys.argv[1], int(sys.argv[2])
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(1, b"ready\\n")
    sys.stdin.readline()
    for i in range(records):
        stamp = repr(time.time()).encode() + b"\\n"
        os.write(fd, stamp)
        os.fdatasync(fd)
        os.write(1, stamp)
        time.sleep(0.002)
    """
)


def started(script: str, *args: str) -> subprocess.Popen[bytes]:
    """A child running `script`, past its imports and set-up ("ready") and told to go."""
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None
    child.stdout.readline()
    child.stdin.write(b"go\n")
    child.stdin.flush()
    return child


def cross_process_tail(root: Path, records: int) -> list[float]:
    name = f"x{time.monotonic_ns()}"
    with ta.open(root) as log:
        log.create_stream(name).append({"i": -1, "t": 0.0})
    latencies: list[float] = []
    with ta.open(root) as log:
        tail = log.stream(name).tail(1, timeout=30)
        child = started(WRITER, str(root), name, str(records))
        for batch in tail:
            now = time.time()
            latencies.extend(now - t for t in stamps(batch))
            if len(latencies) >= records:
                break
        tail.close()
        child.communicate(timeout=60)
    return latencies


def cross_process_pipe(folder: Path, records: int) -> list[float]:
    child = started(PIPE_WRITER, str(folder / f"p{time.monotonic_ns()}"), str(records))
    assert child.stdout is not None
    latencies = []
    for _ in range(records):
        line = child.stdout.readline()
        latencies.append(time.time() - float(line))
    child.communicate(timeout=60)
    return latencies


# --- 3. idle --------------------------------------------------------------------------------


def idle_cpu(root: Path, seconds: float, tailers: bool) -> float:
    with ta.open(root) as log:
        tails = []
        if tailers:
            for k in range(10):
                s = log.create_stream(f"idle{time.monotonic_ns()}-{k}")
                if k < 5:
                    s.append({"i": 0})  # this process writes it: the catalog's condition
                tails.append(s.tail(s.next_offset))
        threads = [threading.Thread(target=list, args=(t,), daemon=True) for t in tails]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        cpu0, wall0 = time.process_time(), time.monotonic()
        time.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        for t in tails:
            t.close()
        for thread in threads:
            thread.join(10)
    return cpu / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--idle", type=float, default=3.0)
    args = parser.parse_args()
    runs = max(5, args.runs)
    ms = 1e3
    with tempfile.TemporaryDirectory(prefix="bench-tail-") as tmp:
        folder = Path(tmp)
        root = folder / "log"

        tenth = max(1, args.records // 10)
        mine, base = side_by_side(
            lambda: in_process_tail(root, args.records),
            lambda: in_process_queue(args.records),
            runs,
            tenth,
        )
        print(
            f"in-process append->yield ({args.records} records x {runs} runs, local): "
            f"p50 {mine['p50'] * ms:.3f} ms, p99 {mine['p99'] * ms:.3f} ms | "
            f"queue handoff p50 {base['p50'] * ms:.3f} ms, p99 {base['p99'] * ms:.3f} ms | "
            f"p50 ratio {mine['p50'] / base['p50']:.1f}x | target p50 < 1 ms: "
            f"{'met' if mine['p50'] < 1e-3 else 'NOT met'}"
        )
        mine, base = side_by_side(
            lambda: cross_process_tail(root, args.records),
            lambda: cross_process_pipe(folder, args.records),
            runs,
            tenth,
        )
        print(
            f"cross-process append->yield ({args.records} records x {runs} runs, local): "
            f"p50 {mine['p50'] * ms:.2f} ms, p99 {mine['p99'] * ms:.2f} ms (first tenth p50 "
            f"{mine['early'] * ms:.2f} ms, last tenth {mine['late'] * ms:.2f} ms) | fdatasync + "
            f"pipe p50 {base['p50'] * ms:.2f} ms, p99 {base['p99'] * ms:.2f} ms | p50 ratio "
            f"{mine['p50'] / base['p50']:.1f}x | target p50 < 10 ms: "
            f"{'met' if mine['p50'] < 10e-3 else 'NOT met'}"
        )

        busy, quiet = [], []
        for _ in range(runs):
            busy.append(idle_cpu(root, args.idle, True))
            quiet.append(idle_cpu(root, args.idle, False))
        cpu, floor = statistics.median(busy), statistics.median(quiet)
        print(
            f"idle: 10 tailers use {cpu * 100:.2f} % of a core (process idle without them: "
            f"{floor * 100:.2f} %; {runs} runs of {args.idle:.0f} s) | target < 1 %: "
            f"{'met' if cpu < 0.01 else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
