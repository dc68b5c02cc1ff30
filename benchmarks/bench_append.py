"""Write-path throughput and latency, each measured side by side with a raw baseline in one run.

Run: `python benchmarks/bench_append.py [--runs 5] [--only NAME ...]`. Prints medians of
`--runs` runs (at least 5) and the ratio to the baseline measured right before it (higher is
better for throughputs, lower for latencies):

1. `batch`: batch append in `local` mode (one ack per batch) vs writing the same batches as
   a raw Arrow IPC stream with one fdatasync per batch;
2. `seal`: sealing a head (Parquet + BLAKE3 + store put + commit) vs `pq.write_table` of the
   same rows + BLAKE3 of the file;
3. `dict`: per-record `append(dict)` in `memory` mode vs a bare Python loop that fills column
   lists and builds Arrow batches;
4. `threads`: 8 threads each appending single records `local` vs the physical bound of 8
   synchronous writers, 8 / (one fdatasync, measured on the same disk in the same run); for
   reference, what 8 Python threads reach that each write + fdatasync a file of their own,
   and what the least a group commit can do in Python reaches: 8 threads appending 300 B
   records to one file, a leader writing and syncing all pending records at once (no Arrow,
   no checksum, no head);
5. `w1`: the W1 workload, 500 x (append 1,000 records + flush) on one stream, vs
   `pq.write_table` of the same rows + fsync; median and p99 latency, and the medians of the
   first and the last 50 commits (flat: no growth with history);
6. `w2`: the W2 workload (issue 16), one 2,000,000-record `append(table, durability="tiered")`
   into a fresh log (written straight to Parquet segments, one commit), vs `pq.write_table`
   of the same table (defaults) + fsync of the file.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import blake3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import transit_arrow as ta

TOOLS = ["search", "python", "browser", "sql", "shell"]


def make_rows(n: int, seed: int = 7) -> list[dict[str, object]]:
    """`n` records of about 300 bytes with a few typed columns."""
    rng = random.Random(seed)
    words = [f"{w}{i}" for i, w in enumerate(["alpha", "beta", "gamma", "delta"] * 64)]
    return [
        {
            "task_id": f"task-{i // 100:06d}",
            "step": i % 100,
            "tool": TOOLS[i % len(TOOLS)],
            "latency_ms": rng.random() * 1000,
            "tokens": rng.randrange(10, 4000),
            "ok": rng.random() > 0.1,
            "text": " ".join(rng.choices(words, k=30))[:220],
        }
        for i in range(n)
    ]


def median_time(
    fn: Callable[[], None], runs: int, setup: Callable[[], None] | None = None
) -> float:
    """Median wall time of `fn` over `runs` runs (setup excluded)."""
    times = []
    for _ in range(runs):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Workdir:
    """A scratch folder recreated before each run."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="transit-bench-", dir=os.environ.get("BENCH_DIR")))

    def fresh(self, name: str) -> Path:
        path = self.root / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _alternate(
    baseline: Callable[[], float], ours: Callable[[], float], runs: int
) -> tuple[float, float]:
    """Medians of `runs` alternating runs of each (each returns its own measured time), so
    both see the same machine load."""
    base, mine = [], []
    for _ in range(runs):
        base.append(baseline())
        mine.append(ours())
    return statistics.median(base), statistics.median(mine)


def bench_batch_append(table: pa.Table, batch_rows: int, runs: int, work: Workdir) -> None:
    batches = table.to_batches(max_chunksize=batch_rows)

    def raw() -> float:
        path = work.fresh("raw") / "raw.arrow"
        t0 = time.perf_counter()
        with open(path, "wb") as f:
            writer = pa.ipc.new_stream(f, table.schema)
            for b in batches:
                writer.write_batch(b)
                f.flush()
                os.fdatasync(f.fileno())
        return time.perf_counter() - t0

    def ours() -> float:
        log = ta.open(
            work.fresh("ours") / "log", segment_max_records=10**9, segment_max_bytes=1 << 40
        )
        stream = log.create_stream("bench")
        t0 = time.perf_counter()
        for b in batches:
            stream.append(b, durability="local")
        elapsed = time.perf_counter() - t0
        log.close()
        return elapsed

    t_raw, t_ours = _alternate(raw, ours, runs)
    n = table.num_rows
    print(
        f"batch append local ({len(batches)} batches of {batch_rows:,}): raw IPC + one "
        f"fdatasync per batch {n / t_raw:,.0f} rec/s, transit {n / t_ours:,.0f} rec/s, "
        f"ratio {t_raw / t_ours:.2f} (target >= 0.7)"
    )


def bench_seal(table: pa.Table, runs: int, work: Workdir) -> None:
    def raw() -> float:
        path = work.fresh("raw") / "raw.parquet"
        t0 = time.perf_counter()
        pq.write_table(table, path, compression="zstd", row_group_size=65536)
        blake3.blake3(path.read_bytes(), max_threads=blake3.blake3.AUTO).hexdigest()
        return time.perf_counter() - t0

    def ours() -> float:
        log = ta.open(
            work.fresh("ours") / "log",
            segment_max_records=10**9,
            segment_max_bytes=1 << 40,
            durability="memory",
        )
        stream = log.create_stream("bench")
        stream.append(table)
        t0 = time.perf_counter()
        stream.flush()
        elapsed = time.perf_counter() - t0
        log.close()
        return elapsed

    t_raw, t_ours = _alternate(raw, ours, runs)
    n = table.num_rows
    print(
        f"sealing {n:,} records: raw write_table + BLAKE3 {n / t_raw:,.0f} rec/s, "
        f"transit seal + commit {n / t_ours:,.0f} rec/s, ratio {t_raw / t_ours:.2f} "
        "(target >= 0.8)"
    )


def bench_dict_append(rows: list[dict[str, object]], runs: int) -> None:
    names = list(rows[0])
    schema = pa.Table.from_pylist(rows[:1]).schema

    def raw() -> float:
        t0 = time.perf_counter()
        cols: dict[str, list[object]] = {k: [] for k in names}
        out = []
        for row in rows:
            for k in names:
                cols[k].append(row[k])
            if len(cols[names[0]]) == 65536:
                out.append(pa.record_batch([pa.array(cols[k]) for k in names], schema=schema))
                cols = {k: [] for k in names}
        out.append(pa.record_batch([pa.array(cols[k]) for k in names], schema=schema))
        return time.perf_counter() - t0

    def ours() -> float:
        log = ta.open(f"memory://bench-dict-{time.time_ns()}", durability="memory")
        append = log.create_stream("bench").append
        t0 = time.perf_counter()
        for row in rows:
            append(row)
        elapsed = time.perf_counter() - t0
        log.close()
        return elapsed

    t_raw, t_ours = _alternate(raw, ours, runs)
    n = len(rows)
    print(
        f"per-record append(dict) memory: bare loop {n / t_raw:,.0f} rec/s, "
        f"transit {n / t_ours:,.0f} rec/s, ratio {t_raw / t_ours:.2f} (target >= 0.5)"
    )


def measure_fsync_s(work: Workdir, n: int = 200) -> float:
    """Median latency of write(300 B) + fdatasync on the benchmark's disk, in seconds."""
    path = work.fresh("fsync") / "probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    times = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, b"x" * 300)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
    return statistics.median(times)


def bench_threads(rows: list[dict[str, object]], seconds: float, runs: int, work: Workdir) -> None:
    def ours() -> float:
        log = ta.open(work.fresh("threads") / "log")
        stream = log.create_stream("bench")
        stream.append(rows[0])
        stop = time.perf_counter() + seconds
        counts = [0] * 8
        t0 = time.perf_counter()
        threads = [
            threading.Thread(target=_append_until, args=(stream, rows, i, stop, counts))
            for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rate = sum(counts) / (time.perf_counter() - t0)
        log.close()
        return rate

    bounds, rates, refs, groups = [], [], [], []
    for _ in range(runs):
        bounds.append(8 / measure_fsync_s(work))
        rates.append(ours())
        refs.append(raw_writers(work, seconds))
        groups.append(bare_group_commit(work, seconds))
    bound, rate = statistics.median(bounds), statistics.median(rates)
    ref, group = statistics.median(refs), statistics.median(groups)
    print(
        f"8 threads single-record append local: {rate:,.0f} rec/s; physical bound 8 / "
        f"fdatasync ({8e6 / bound:.0f} us) = {bound:,.0f} rec/s; ratio {rate / bound:.2f} "
        f"(target >= 0.7); references: 8 Python threads each doing write(300 B) + fdatasync on "
        f"a file of its own {ref:,.0f} rec/s, ratio {ref / bound:.2f}; a bare group commit "
        f"of 300 B records in Python (leader writes + syncs what is pending) {group:,.0f} "
        f"rec/s, ratio {group / bound:.2f}; ours / bare group commit {rate / group:.2f}"
    )


def bare_group_commit(work: Workdir, seconds: float) -> float:
    """Records per second of 8 threads appending 300 B records to one file by the least a
    group commit in Python does: under one lock, a record joins the pending ones; the first
    appender to find no sync running becomes the leader, writes everything pending and
    fdatasyncs it outside the lock, while the others wait on a condition until a sync covers
    their record. No Arrow, no checksum, no head: the bound a Python writer can approach."""
    fd = os.open(work.fresh("group-commit") / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    lock = threading.Lock()
    cond = threading.Condition(lock)
    pending: list[bytes] = []
    state = {"appended": 0, "durable": 0, "syncing": False}
    counts = [0] * 8
    stop = time.perf_counter() + seconds

    def append(record: bytes) -> None:
        with lock:
            pending.append(record)
            state["appended"] += 1
            mine = state["appended"]
            while state["durable"] < mine:
                if state["syncing"]:
                    cond.wait()
                    continue
                state["syncing"] = True
                data, upto = b"".join(pending), state["appended"]
                pending.clear()
                lock.release()
                try:
                    os.write(fd, data)
                    os.fdatasync(fd)
                finally:
                    lock.acquire()
                state["syncing"] = False
                state["durable"] = upto
                cond.notify_all()

    def loop(i: int) -> None:
        record = bytes([65 + i]) * 300
        while time.perf_counter() < stop:
            append(record)
            counts[i] += 1

    rate = _run_threads(loop, counts)
    os.close(fd)
    return rate


def _run_threads(loop: Callable[[int], None], counts: list[int]) -> float:
    """Run `loop(i)` on 8 threads at once; records per second of all of them (`counts`)."""
    t0 = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def raw_writers(work: Workdir, seconds: float) -> float:
    """Records per second of 8 threads, each writing 300 B + fdatasync to a file of its own in
    a loop (no group commit, no Arrow, no checksum): what Python threads reach on this disk."""
    folder = work.fresh("raw-writers")
    fds = [os.open(folder / f"{i}", os.O_WRONLY | os.O_CREAT) for i in range(8)]
    counts = [0] * 8
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            os.write(fds[i], b"x" * 300)
            os.fdatasync(fds[i])
            counts[i] += 1

    rate = _run_threads(loop, counts)
    for fd in fds:
        os.close(fd)
    return rate


def _append_until(
    stream: ta.Stream, rows: list[dict[str, object]], i: int, stop: float, counts: list[int]
) -> None:
    k = 0
    while time.perf_counter() < stop:
        stream.append(rows[(i * 7919 + k) % len(rows)], durability="local")
        k += 1
    counts[i] = k


def bench_w1(rows: list[dict[str, object]], commits: int, batch: int, work: Workdir) -> None:
    table = pa.Table.from_pylist(rows[: commits * batch])
    chunks = [table.slice(i * batch, batch) for i in range(commits)]

    def raw_once(chunk: pa.Table, folder: Path, i: int) -> float:
        path = folder / f"{i}.parquet"
        t0 = time.perf_counter()
        pq.write_table(chunk, path, compression="zstd")
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
        return time.perf_counter() - t0

    folder = work.fresh("w1-raw")
    log = ta.open(work.fresh("w1") / "log")
    stream = log.create_stream("w1")
    raw_times, ours_times, ours_cpu = [], [], []
    for i, chunk in enumerate(chunks):  # alternate, so both see the same load
        raw_times.append(raw_once(chunk, folder, i))
        t0, c0 = time.perf_counter(), time.process_time()
        stream.append(chunk)
        stream.flush()
        ours_times.append(time.perf_counter() - t0)
        ours_cpu.append(time.process_time() - c0)
    log.close()

    def p99(xs: list[float]) -> float:
        return sorted(xs)[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))]

    med_raw, med_ours = statistics.median(raw_times), statistics.median(ours_times)
    # Flat: the first and the last 50 commits, each against the baseline of the same window
    # (the machine's load drifts over the run; a growth with history would not).
    first = statistics.median(ours_times[:50]) / statistics.median(raw_times[:50])
    last = statistics.median(ours_times[-50:]) / statistics.median(raw_times[-50:])
    print(
        f"W1 ({commits} x append {batch:,} records + flush): median {med_ours * 1e3:.2f} ms vs "
        f"write_table + fsync {med_raw * 1e3:.2f} ms, ratio {med_ours / med_raw:.2f} "
        f"(target <= 3); p99 {p99(ours_times) * 1e3:.2f} ms vs {p99(raw_times) * 1e3:.2f} ms, "
        f"ratio {p99(ours_times) / p99(raw_times):.2f} (target <= 5); first 50 commits ratio "
        f"{first:.2f}, last 50 {last:.2f} (flat: {last / first:.2f}, target ~1); CPU time per "
        f"commit, first 50 {statistics.median(ours_cpu[:50]) * 1e3:.2f} ms, last 50 "
        f"{statistics.median(ours_cpu[-50:]) * 1e3:.2f} ms"
    )


def make_bulk_table(n: int, seed: int = 11) -> pa.Table:
    """`n` records shaped like the peers benchmark's (model, task id, score, latency and a
    200-character JSON payload), built column-wise."""
    rng = np.random.default_rng(seed)
    models = np.array(["gpt-4o", "claude-3-5-sonnet", "llama-3-70b", "mistral-large"])
    runs = rng.integers(0, 2**63 - 1, n, dtype=np.int64)
    payload = [f'{{"task":{i},"run":"{r:016x}","note":"'.ljust(198, ".") + '"}' for i, r in
               enumerate(runs.tolist())]  # fmt: skip
    return pa.table(
        {
            "model": pa.array(models[rng.integers(0, len(models), n)]),
            "task_id": pa.array(np.arange(n, dtype=np.int64)),
            "score": pa.array(rng.random(n)),
            "latency_ms": pa.array(rng.integers(20, 5000, n, dtype=np.int32)),
            "payload": pa.array(payload, pa.string()),
        }
    )


def bench_w2(table: pa.Table, runs: int, work: Workdir) -> None:
    cpu: dict[str, list[float]] = {"raw": [], "ours": []}

    def raw() -> float:
        path = work.fresh("w2-raw") / "bulk.parquet"
        t0, c0 = time.perf_counter(), time.process_time()
        pq.write_table(table, path)
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
        cpu["raw"].append(time.process_time() - c0)
        return time.perf_counter() - t0

    def ours() -> float:
        log = ta.open(work.fresh("w2") / "log")
        stream = log.create_stream("bulk")
        t0, c0 = time.perf_counter(), time.process_time()
        stream.append(table, durability="tiered")
        elapsed = time.perf_counter() - t0
        cpu["ours"].append(time.process_time() - c0)
        log.close()
        return elapsed

    t_raw, t_ours = _alternate(raw, ours, runs)
    c_raw, c_ours = statistics.median(cpu["raw"]), statistics.median(cpu["ours"])
    n = table.num_rows
    print(
        f"W2 (one append of {n:,} records, tiered): write_table + fsync {n / t_raw / 1e6:.2f} M "
        f"rec/s ({t_raw:.2f} s), transit {n / t_ours / 1e6:.2f} M rec/s ({t_ours:.2f} s), "
        f"ratio {t_raw / t_ours:.2f} (target >= 0.6); CPU seconds (all threads) {c_raw:.2f} "
        f"vs {c_ours:.2f}"
    )


BENCHES = ("batch", "seal", "dict", "threads", "w1", "w2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--dict-records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bulk-records", type=int, default=2_000_000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--only", nargs="*", choices=BENCHES, default=list(BENCHES))
    args = parser.parse_args()
    runs = max(5, args.runs)
    rows: list[dict[str, object]] = []
    table = pa.table({})
    if set(args.only) - {"w2"}:
        rows = make_rows(max(args.records, args.dict_records, 500_000))
        table = pa.Table.from_pylist(rows[: args.records])
        print(
            f"data: {table.num_rows:,} records, {table.nbytes / table.num_rows:.0f} B/record in "
            f"Arrow, medians of {runs} runs"
        )
    work = Workdir()
    try:
        if "batch" in args.only:
            bench_batch_append(table, args.batch, runs, work)
        if "seal" in args.only:
            bench_seal(table, runs, work)
        if "dict" in args.only:
            bench_dict_append(rows[: args.dict_records], runs)
        if "threads" in args.only:
            bench_threads(rows, args.seconds, runs, work)
        if "w1" in args.only:
            bench_w1(rows, 500, 1_000, work)
        if "w2" in args.only:
            bench_w2(make_bulk_table(args.bulk_records), runs, work)
    finally:
        work.cleanup()


if __name__ == "__main__":
    main()
