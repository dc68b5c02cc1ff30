"""The Flight server (`transit serve`) against raw `pyarrow.flight`, side by side in one run.

Run: `python benchmarks/bench_server.py [--records 1000000] [--batch-rows 100 10000] [--runs 5]
[--only put get latency concurrent tail] [--segment-compression zstd]`.
Each server runs in its own process on 127.0.0.1; the client is this process. Prints medians
of `--runs` runs and the ratio of the server's throughput to the raw baseline's (higher is
better), with each server's median CPU seconds a run (on a busy machine the ratio follows the
CPU ratio rather than what overlaps):

1. DoPut of `--records` records in batches of `--batch-rows` rows (default: 10,000 batches of
   100, then 100 batches of 10,000) through `transit serve`, in `memory` and in `local`
   durability, vs the same DoPut (same client code, same batches) to a raw `FlightServerBase`
   that discards them; beside them the same server with its log sealing every head as soon
   as it fills (`DEFERRED_HEADS = 0`: what the upload pays when Parquet encoding competes
   with it, as before the server deferred seals during uploads), for scale `Stream.append`
   of the same batches in process, and for `local` its bound: the same records appended in
   process and made durable by one write and fdatasync. Before each timed DoPut every
   server is left to go idle (`settle`): what one still does after its run (sealing,
   background fsyncs) is not charged to the next run of another;
2. DoGet of a branch of `--records` records (its parent's records up to the fork, in
   segments of `--segment-compression`) vs a raw Flight DoGet of the same batches (same
   schema, same row-group-sized batches) held in the raw server's memory, both read by the
   same client code (`read_all`), with the client's CPU a run for each: `transit serve` with
   its defaults (a read cache: its first read decodes the segments, later ones find them
   decoded; the first is printed apart) and with `--read-cache-mb 0` (every read decodes);
3. latency of single calls through `connect()` (append `memory`/`local`, a 1-record read), and
   8 concurrent clients (threads, one connection each) appending single records in `local`
   durability: records/s, and per-append latency percentiles;
4. live-tail latency: from a client's `append` (one record every 20 ms) to the record arriving
   at another client's `tail()`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

import transit_arrow as ta
from transit_arrow.client import connect
from transit_arrow.server.flight import default_read_cache_bytes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_append import make_rows  # a sibling script

TOKEN = "bench-token"
HEADERS = [(b"authorization", f"Bearer {TOKEN}".encode())]


def make_table(n: int) -> pa.Table:
    """`n` records of about 300 bytes (the rows of bench_append.py, repeated)."""
    table = pa.Table.from_pylist(make_rows(min(n, 100_000)))
    return pa.concat_tables([table] * -(-n // table.num_rows)).slice(0, n).combine_chunks()


def median_time(
    fn: Callable[[], None], runs: int, after: Callable[[], None] | None = None
) -> float:
    """Median wall time of `fn` over `runs` runs (`after` runs untimed after each)."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if after is not None:
            after()
    return statistics.median(times)


# --- the raw baseline server (run in a child process) -----------------------------------------


class RawServer(flight.FlightServerBase):
    """Discards DoPut batches (acknowledging each upload once); serves a table on DoGet."""

    def __init__(self, location: str, table: pa.Table | None) -> None:
        super().__init__(location)
        self.table = table

    def do_put(self, context: Any, descriptor: Any, reader: Any, writer: Any) -> None:
        n = 0
        for chunk in reader:
            n += chunk.data.num_rows
        writer.write(pa.py_buffer(json.dumps({"records": n}).encode()))

    def do_get(self, context: Any, ticket: Any) -> Any:
        assert self.table is not None
        return flight.RecordBatchStream(self.table)


def serve_raw(data: str | None) -> None:
    table = pa.ipc.open_file(data).read_all() if data else None
    server = RawServer("grpc://127.0.0.1:0", table)
    print(f"serving grpc://127.0.0.1:{server.port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve()


class Child:
    """A server process; `address` is what it printed."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("serving "):
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r}")
        self.address = line.split()[1]

    def cpu(self) -> float:
        """CPU seconds the process has used so far (Linux; 0 elsewhere)."""
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


CLI = "from transit_arrow.cli import main; main()"
#: `transit serve` whose log seals every head as soon as it fills, even during an upload.
EAGER_CLI = f"import transit_arrow.engine.writer as w; w.DEFERRED_HEADS = 0; {CLI}"


def transit_server(
    root: Path, token_file: Path, *, eager_seal: bool = False, extra: tuple[str, ...] = ()
) -> Child:
    """`transit serve ROOT [EXTRA...]` in a child process; `eager_seal`: the same server,
    its log not deferring seals during uploads (`DEFERRED_HEADS = 0`)."""
    code = EAGER_CLI if eager_seal else CLI
    args = [sys.executable, "-c", code, "serve", str(root), "--token-file", str(token_file)]
    return Child([*args, *extra])


def settle(children: list[Child], most: float = 5.0) -> None:
    """Wait (at most `most` seconds) until no child used more than 10 ms of CPU in the last
    0.2 s: what one server still does after a run (its sealing, its background fsyncs and
    memory returns) is not charged to the next run of another."""
    deadline = time.monotonic() + most
    before = [c.cpu() for c in children]
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = [c.cpu() for c in children]
        if all(b - a <= 0.01 for a, b in zip(before, now, strict=True)):
            return
        before = now


def raw_server(data: Path | None = None) -> Child:
    args = [sys.executable, __file__, "--serve-raw"]
    return Child([*args, str(data)] if data else args)


# --- measurements ----------------------------------------------------------------------------


def put(address: str, descriptor: flight.FlightDescriptor, batches: list[pa.RecordBatch]) -> int:
    """Upload `batches` in one DoPut, then read every ack; returns the acks' record count."""
    client = flight.FlightClient(address)
    options = flight.FlightCallOptions(headers=HEADERS)
    writer, acks = client.do_put(descriptor, batches[0].schema, options)
    for batch in batches:
        writer.write_batch(batch)
    writer.done_writing()
    records = 0
    while True:
        buffer = acks.read()
        if buffer is None:
            break
        message = json.loads(buffer.to_pybytes())
        records += message.get("records", 0) or message["last_offset"] - message["first_offset"] + 1
    writer.close()
    client.close()
    return records


def _seconds(times: list[float]) -> str:
    return " ".join(f"{t:.2f}" for t in times) + " s"


def _cpu(raw: list[float], ours: list[float]) -> str:
    """The servers' median CPU seconds a run: on a busy machine the ratio follows these."""
    return (
        f"server CPU a run: raw {statistics.median(raw):.2f} s, "
        f"transit serve {statistics.median(ours):.2f} s"
    )


def bench_put(
    table: pa.Table, batch_rows: int, runs: int, work: Path, token_file: Path, engine: bool
) -> None:
    batches = table.to_batches(max_chunksize=batch_rows)
    n = table.num_rows
    raw_descriptor = flight.FlightDescriptor.for_path("x")
    for durability in ("memory", "local"):
        roots = [work / f"put-{durability}", work / f"put-{durability}-eager"]
        for root in roots:
            ta.open(root).close()
        raw = raw_server()
        servers = [transit_server(roots[0], token_file)]
        servers.append(transit_server(roots[1], token_file, eager_seal=True))
        t_raw: list[float] = []
        cpu_raw: list[float] = []
        t_ours: tuple[list[float], list[float]] = ([], [])
        cpu_ours: tuple[list[float], list[float]] = ([], [])
        try:
            for i in range(runs):  # interleaved, so that load changes hit all alike
                settle([raw, *servers])
                t0, c0 = time.perf_counter(), raw.cpu()
                put(raw.address, raw_descriptor, batches)
                t_raw.append(time.perf_counter() - t0)
                cpu_raw.append(raw.cpu() - c0)
                for server, times, cpus in zip(servers, t_ours, cpu_ours, strict=True):
                    name = f"s{i}"
                    command = {"stream": name, "durability": durability, "create": True}
                    descriptor = flight.FlightDescriptor.for_command(json.dumps(command).encode())
                    settle([raw, *servers])
                    t0, c0 = time.perf_counter(), server.cpu()
                    assert put(server.address, descriptor, batches) == n
                    times.append(time.perf_counter() - t0)
                    cpus.append(server.cpu() - c0)
                    # Untimed: the heads the upload left unsealed (or sealed in the background)
                    # are sealed before the next run, so that they do not slow it down.
                    with connect(server.address, token=TOKEN) as log:
                        log.stream(name).flush()
        finally:
            raw.stop()
            for server in servers:
                server.stop()
            for root in roots:
                shutil.rmtree(root, ignore_errors=True)
        raw_s = statistics.median(t_raw)
        ours_s, eager_s = (statistics.median(t) for t in t_ours)
        alone = (
            f"; the same server sealing each head as it fills, during the upload (not "
            f"deferring seals): ratio {raw_s / eager_s:.2f} (runs {_seconds(t_ours[1])}), "
            f"server CPU {statistics.median(cpu_ours[1]):.2f} s a run"
        )
        if engine:
            t_engine = engine_append(batches, durability, runs, work)
            alone += (
                f"; the engine alone, one append a batch, in process: {n / t_engine:,.0f} rec/s"
            )
        if durability == "local":
            t_bound = durable_bound(batches, runs, work)
            alone += (
                f"; bound: appending them in process in groups of up to {GROUP_RECORDS:,} "
                f"records and making them durable with one write and fdatasync takes "
                f"{t_bound:.2f} s (ratio bound raw/max(raw, that) "
                f"{raw_s / max(raw_s, t_bound):.2f})"
            )
        print(
            f"DoPut {n:,} records in {len(batches):,} batches of {batch_rows}, {durability}: "
            f"raw Flight {n / raw_s:,.0f} rec/s, transit serve {n / ours_s:,.0f} rec/s, "
            f"ratio {raw_s / ours_s:.2f} (target >= 0.7; runs: raw {_seconds(t_raw)}, "
            f"ours {_seconds(t_ours[0])}; {_cpu(cpu_raw, cpu_ours[0])}){alone}"
        )


def engine_append(batches: list[pa.RecordBatch], durability: Any, runs: int, work: Path) -> float:
    """Median time of appending `batches` one by one with `Stream.append`, no server."""
    logs: list[ta.Log] = []

    def run() -> None:
        root = work / f"engine-{len(logs)}"
        logs.append(ta.open(root))
        stream = logs[-1].create_stream("s")
        for batch in batches:
            stream.append(batch, durability=durability)

    def close() -> None:
        logs[-1].close()
        shutil.rmtree(work / f"engine-{len(logs) - 1}", ignore_errors=True)

    return median_time(run, runs, close)


#: The server folds small uploaded batches into engine appends of at most this many records.
GROUP_RECORDS = 1 << 16


def durable_bound(batches: list[pa.RecordBatch], runs: int, work: Path) -> float:
    """Median time of what a `local` DoPut of `batches` needs of the engine and the disk, with
    no Flight: the records appended in process at `memory` in groups of up to `GROUP_RECORDS`
    (folded untimed, as the server folds small batches) and made durable at the end by one
    group commit (the last group appended `local`: every head frame written, one
    fdatasync). A pipelined server cannot beat max(receiving the batches, this)."""
    table = pa.Table.from_batches(batches).combine_chunks()
    groups = [
        batch
        for part in batches_of(batches, GROUP_RECORDS)
        for batch in pa.Table.from_batches(part).combine_chunks().to_batches()
    ]
    assert sum(g.num_rows for g in groups) == table.num_rows
    logs: list[ta.Log] = []

    def run() -> None:
        root = work / f"bound-{len(logs)}"
        logs.append(ta.open(root))
        stream = logs[-1].create_stream("s")
        for group in groups[:-1]:
            stream.append(group, durability="memory")
        assert stream.append(groups[-1], durability="local").durability == "local"

    def close() -> None:
        logs[-1].close()
        shutil.rmtree(work / f"bound-{len(logs) - 1}", ignore_errors=True)

    return median_time(run, runs, close)


def batches_of(batches: list[pa.RecordBatch], records: int) -> list[list[pa.RecordBatch]]:
    """Consecutive runs of `batches` of at most `records` records each (a larger batch alone)."""
    parts: list[list[pa.RecordBatch]] = [[]]
    count = 0
    for batch in batches:
        if parts[-1] and count + batch.num_rows > records:
            parts.append([])
            count = 0
        parts[-1].append(batch)
        count += batch.num_rows
    return parts


def bench_get(
    table: pa.Table, runs: int, work: Path, token_file: Path, compression: str = "zstd"
) -> None:
    n = table.num_rows
    root = work / "get"
    with ta.open(root, segment_compression=compression) as log:
        parent = log.create_stream("parent")
        for batch in table.to_batches(max_chunksize=100_000):
            parent.append(batch, durability="memory")
        parent.append(table.slice(0, 1000), durability="memory")  # after the fork point
        parent.flush()
        branch = log.branch("parent/branch", at=f"parent@{n - 1}")
        expected = branch.read()
    data = work / "branch.arrow"
    with pa.OSFile(str(data), "wb") as sink, pa.ipc.new_file(sink, expected.schema) as writer:
        writer.write_table(expected)
    options = flight.FlightCallOptions(headers=HEADERS)

    def get(address: str, ticket: bytes) -> None:
        client = flight.FlightClient(address)
        got = client.do_get(flight.Ticket(ticket), options).read_all()
        assert got.num_rows == n, got.num_rows
        client.close()

    raw = raw_server(data)
    server = transit_server(root, token_file)  # defaults: a read cache (docs/flight.md)
    uncached = transit_server(root, token_file, extra=("--read-cache-mb", "0"))
    children = (raw, server, uncached)
    try:
        times: tuple[list[float], ...] = ([], [], [], [])
        cpus: tuple[list[float], ...] = ([], [], [])
        client_cpus: tuple[list[float], ...] = ([], [], [])
        # Raw and server runs interleaved, so that load changes hit all alike, with nothing
        # else between them (an in-process read between them left the client's allocator
        # faulting pages in again: 0.41-0.54 s of client CPU a raw run, 0.33-0.38 without).
        # The first round is each server's first read: the default server's cache is empty
        # then (cold); later rounds find the branch's row groups there (warm).
        for _ in range(runs + 1):
            for i, (ticket, child) in enumerate(
                ((b"x", raw), (b"parent/branch", server), (b"parent/branch", uncached))
            ):
                t0, c0, p0 = time.perf_counter(), child.cpu(), time.process_time()
                get(child.address, ticket)
                times[i].append(time.perf_counter() - t0)
                cpus[i].append(child.cpu() - c0)
                client_cpus[i].append(time.process_time() - p0)
        with ta.open(root) as log:  # the servers only read: this handle takes no lease
            branch = log.stream("parent/branch")
            times[3].append(median_time(lambda: sum(b.num_rows for b in branch.reader()), runs))
        # The first round warms the raw and uncached servers up and fills the cache.
        t_raw, t_warm, t_decoding = (statistics.median(t[1:]) for t in times[:3])
        t_cold, t_decode = times[1][0], times[3][0]
    finally:
        for child in children:
            child.stop()
    cpus = tuple(c[1:] for c in cpus)
    client_cpus = tuple(c[1:] for c in client_cpus)
    print(
        f"DoGet of a {n:,}-record branch ({compression} segments): raw Flight "
        f"{n / t_raw:,.0f} rec/s, `transit serve` (defaults: a read cache of "
        f"{default_read_cache_bytes() / 1e6:,.0f} MB here) {n / t_warm:,.0f} rec/s, ratio "
        f"{t_raw / t_warm:.2f} (target >= 0.7; runs: raw {_seconds(times[0][1:])}, ours "
        f"{_seconds(times[1][1:])}; {_cpu(cpus[0], cpus[1])}; client CPU a run (the same "
        f"consumption, read_all): raw {statistics.median(client_cpus[0]):.2f} s, transit "
        f"serve {statistics.median(client_cpus[1]):.2f} s); its first read, cold (the cache "
        f"empty, the process fresh): {t_cold:.2f} s, ratio {t_raw / t_cold:.2f}"
    )
    print(
        f"The same DoGet from `transit serve --read-cache-mb 0` (every read decodes the "
        f"segments): {n / t_decoding:,.0f} rec/s, ratio {t_raw / t_decoding:.2f} (runs "
        f"{_seconds(times[2][1:])}; server CPU {statistics.median(cpus[2]):.2f} s a run); "
        f"reading the branch's verified Parquet segments in process, no server: "
        f"{n / t_decode:,.0f} rec/s (ratio bound raw/decode {t_raw / t_decode:.2f})"
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_latency(work: Path, token_file: Path, calls: int = 300) -> None:
    """One client, one record per call: the round trip of `append` and of a small `read`."""
    root = work / "latency"
    ta.open(root).close()
    server = transit_server(root, token_file)
    try:
        with connect(server.address, token=TOKEN) as log:
            stream = log.create_stream("rtt")
            figures = []
            for what, call in (
                ("append memory", lambda k: stream.append({"k": k}, durability="memory")),
                ("append local", lambda k: stream.append({"k": k}, durability="local")),
                ("read 1 record", lambda k: stream.read(start=k, end=k + 1)),
            ):
                times = []
                for k in range(calls):
                    t0 = time.perf_counter()
                    call(k)
                    times.append((time.perf_counter() - t0) * 1000)
                figures.append(f"{what} p50 {percentile(times, 0.5):.2f} ms")
    finally:
        server.stop()
    print("one client, sequential calls: " + ", ".join(figures))


def concurrent_appends(
    address: str, durability: Any, per_client: int, clients: int, stream: str
) -> tuple[float, list[float], float]:
    """`clients` threads, one connection each, appending `per_client` single records to
    `stream` at `durability`: records/s, each append's latency (ms), the server's CPU."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    logs = [connect(address, token=TOKEN) for _ in range(clients)]
    try:
        logs[0].create_stream(stream)
        barrier = threading.Barrier(clients + 1)

        def client(i: int) -> None:
            handle = logs[i].stream(stream)
            barrier.wait()
            for k in range(per_client):
                t0 = time.perf_counter()
                handle.append({"client": i, "k": k}, durability=durability)
                latencies[i].append((time.perf_counter() - t0) * 1000)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        assert logs[0].stream(stream).next_offset == clients * per_client
    finally:
        for log in logs:
            log.close()
    return clients * per_client / elapsed, [x for lat in latencies for x in lat], elapsed


def bench_concurrent(work: Path, token_file: Path, per_client: int, clients: int = 8) -> None:
    """The issue's figure: `clients` clients appending single records `local`; beside it the
    same at `memory` (no fdatasync: what the calls themselves cost on this machine)."""
    root = work / "concurrent"
    ta.open(root).close()
    server = transit_server(root, token_file)
    figures = {}
    try:
        for durability in ("local", "memory"):
            c0 = server.cpu()
            rate, flat, _ = concurrent_appends(
                server.address, durability, per_client, clients, f"shared-{durability}"
            )
            figures[durability] = (rate, flat, server.cpu() - c0)
    finally:
        server.stop()
    (rate, flat, cpu), (mem_rate, mem_flat, mem_cpu) = figures["local"], figures["memory"]
    print(
        f"{clients} clients appending single records, local: {rate:,.0f} rec/s; "
        f"append latency p50 {percentile(flat, 0.5):.2f} ms, p99 {percentile(flat, 0.99):.2f} ms; "
        f"server CPU {cpu / len(flat) * 1e6:.0f} us a record. The same at memory: "
        f"{mem_rate:,.0f} rec/s, p50 {percentile(mem_flat, 0.5):.2f} ms, "
        f"p99 {percentile(mem_flat, 0.99):.2f} ms, server CPU "
        f"{mem_cpu / len(mem_flat) * 1e6:.0f} us a record (local/memory {rate / mem_rate:.2f})"
    )


def bench_tail(work: Path, token_file: Path, records: int = 100) -> None:
    root = work / "tail"
    ta.open(root).close()
    server = transit_server(root, token_file)
    arrivals: dict[int, float] = {}
    sent: dict[int, float] = {}
    try:
        with (
            connect(server.address, token=TOKEN) as writer_log,
            connect(server.address, token=TOKEN) as reader_log,
        ):
            stream = writer_log.create_stream("live")
            ready = threading.Event()

            def follow() -> None:
                tail = reader_log.stream("live").tail(0, timeout=5.0, durability="memory")
                ready.set()
                for batch in tail:
                    now = time.perf_counter()
                    for offset in batch.column("_offset").to_pylist():
                        arrivals[offset] = now
                    if len(arrivals) >= records:
                        return

            thread = threading.Thread(target=follow)
            thread.start()
            ready.wait()
            time.sleep(0.5)
            for k in range(records):
                sent[k] = time.perf_counter()
                stream.append({"k": k}, durability="memory")
                time.sleep(0.02)
            thread.join(30)
    finally:
        server.stop()
    lat = [(arrivals[k] - sent[k]) * 1000 for k in sent if k in arrivals]
    print(
        "live tail, one record every 20 ms: append-to-delivery latency "
        f"p50 {percentile(lat, 0.5):.1f} ms, p99 {percentile(lat, 0.99):.1f} ms "
        f"({len(lat)}/{records} delivered)"
    )


PARTS = ("put", "get", "latency", "concurrent", "tail")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, nargs="+", default=[100, 10_000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--per-client", type=int, default=500)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="run only these parts (default: all)",
    )
    parser.add_argument(
        "--skip-engine", action="store_true", help="skip the in-process append figures"
    )
    parser.add_argument(
        "--segment-compression",
        default="zstd",
        help="the codec of the branch's segments in the DoGet part (the log's default: zstd)",
    )
    parser.add_argument("--serve-raw", nargs="?", const="", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_raw is not None:
        serve_raw(args.serve_raw or None)
        return
    work = Path(tempfile.mkdtemp(prefix="transit-bench-server-"))
    token_file = work / "token"
    token_file.write_text(TOKEN)
    try:
        table = make_table(args.records)
        print(
            f"{table.num_rows:,} records, {table.nbytes / 1e6:.0f} MB in Arrow; "
            f"{args.runs} runs each; {os.cpu_count()} cores"
        )
        if "put" in args.only:
            for rows in args.batch_rows:
                bench_put(table, rows, args.runs, work, token_file, not args.skip_engine)
        if "get" in args.only:
            bench_get(table, args.runs, work, token_file, args.segment_compression)
        if "latency" in args.only:
            bench_latency(work, token_file)
        if "concurrent" in args.only:
            bench_concurrent(work, token_file, args.per_client)
        if "tail" in args.only:
            bench_tail(work, token_file)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
