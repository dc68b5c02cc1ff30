"""Object-storage tier against a local moto S3 server, each measured side by side with a raw
s3fs/pyarrow baseline in one run.

Run: `python benchmarks/bench_s3.py [--segment-mib 64] [--records 1000000] [--runs 5]`. It
starts `moto.server` in a child process on a random loopback port (so the server does not
share the benchmark's GIL) and prints medians of `--runs` runs, alternating transit-arrow and
baseline runs, with the ratio of transit-arrow's throughput to the baseline's (higher is
better):

1. seal + upload + commit of one `--segment-mib` segment (`Stream.flush` of a head holding
   incompressible records: Parquet + BLAKE3 + segment upload, in parts for large segments, +
   commit PUT) vs a raw s3fs `pipe_file` of the very same segment bytes (target >= 0.8);
2. requests per seal, counted by wrapping the store (`tests/faulty_store.py` records every
   call) and, independently, from the server's request log (target 2: segment PUT + commit
   PUT);
3. cold read of a `--records`-record branch (inherited prefix + own records, several
   segments) from an empty local dir (segments fetched in parallel, verified, cached) vs
   s3fs `cat` of the same segment files in parallel + `pq.read_table` of each (target >= 0.8),
   and the requests one cold read makes (the store's count and the server's log).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import transit_arrow as ta
from transit_arrow.record import HEADERS_TYPE, TIMESTAMP_TYPE
from transit_arrow.segments.parquet import encode_segment
from transit_arrow.storage.s3 import S3Store, s3_options

MIB = 1024 * 1024
_REQUEST_RE = re.compile(r'"(GET|PUT|HEAD|POST|DELETE) (\S+) HTTP')


def _load_recording_store() -> ModuleType:
    """`tests/faulty_store.py`: without faults, `FaultyStore` just records every call."""
    path = Path(__file__).resolve().parents[1] / "tests" / "faulty_store.py"
    spec = importlib.util.spec_from_file_location("transit_faulty_store", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


# --- the server -----------------------------------------------------------------------------


class MotoServer:
    """`python -m moto.server` on 127.0.0.1 and a random port, with its request log parsed."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("moto.server did not start") from None
                time.sleep(0.1)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.storage_options = {
            "endpoint_url": self.endpoint,
            "key": "testing",
            "secret": "testing",
            "region": "us-east-1",
        }

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            match = _REQUEST_RE.search(line)
            if match:
                with self._lock:
                    self.requests.append((match[1], match[2].split("?")[0]))

    def mark(self) -> int:
        with self._lock:
            return len(self.requests)

    def since(self, mark: int) -> list[tuple[str, str]]:
        time.sleep(0.3)  # the server logs each request after answering it
        with self._lock:
            return self.requests[mark:]

    def create_bucket(self) -> str:
        import boto3

        name = f"bench-{uuid.uuid4().hex[:16]}"
        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        ).create_bucket(Bucket=name)
        return name

    def filesystem(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(**s3_options(self.storage_options))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


# --- helpers --------------------------------------------------------------------------------


def alternate(
    runs: int,
    ours: Callable[[], None],
    raw: Callable[[], None],
    setup_ours: Callable[[], None] | None = None,
    setup_raw: Callable[[], None] | None = None,
    cleanup: Callable[[str], None] | None = None,
) -> tuple[float, float]:
    """Median wall times of `ours` and `raw`, run alternately, ours first (setup and
    `cleanup("ours" | "raw")` excluded)."""
    times: dict[str, list[float]] = {"ours": [], "raw": []}
    for _ in range(runs):
        for name, fn, setup in (("ours", ours, setup_ours), ("raw", raw, setup_raw)):
            if setup is not None:
                setup()
            times[name].append(_time(fn))
            if cleanup is not None:
                cleanup(name)
    return statistics.median(times["ours"]), statistics.median(times["raw"])


def incompressible_table(nbytes: int, blob: int = 4096, seed: int = 1) -> pa.Table:
    """About `nbytes` of records whose `blob` column is random (Parquet+zstd cannot shrink it)."""
    n = max(1, nbytes // blob)
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=n * blob, dtype=np.uint8).tobytes()
    offsets = pa.array(np.arange(0, (n + 1) * blob, blob, dtype=np.int32))
    blobs = pa.BinaryArray.from_buffers(
        pa.binary(), n, [None, offsets.buffers()[1], pa.py_buffer(data)]
    )
    return pa.table({"i": pa.array(np.arange(n, dtype=np.int64)), "blob": blobs})


def records_table(n: int, first: int, seed: int) -> pa.Table:
    """`n` records of ~150 bytes with typed columns (vectorised: no Python loop per record)."""
    rng = np.random.default_rng(seed)
    seq = np.arange(first, first + n, dtype=np.int64)
    tools = pa.array(["search", "python", "browser", "sql", "shell"])
    words = pa.array([f"word{i:03d} " * 12 for i in range(512)])
    return pa.table(
        {
            "seq": seq,
            "task_id": pc.cast(seq // 100, pa.string()),
            "tool": tools.take(pa.array(rng.integers(0, 5, n))),
            "latency_ms": rng.random(n) * 1000,
            "tokens": rng.integers(10, 4000, n),
            "ok": rng.random(n) > 0.1,
            "text": words.take(pa.array(rng.integers(0, 512, n))),
        }
    )


# --- 1. seal + upload + commit --------------------------------------------------------------


def bench_seal(server: MotoServer, segment_mib: int, runs: int, work: Path) -> None:
    table = incompressible_table(segment_mib * MIB)
    bucket = server.create_bucket()
    fs = server.filesystem()
    state: dict[str, Any] = {}

    def setup_ours() -> None:
        prefix = f"{bucket}/seal-{uuid.uuid4().hex[:8]}"
        log = ta.open(
            f"s3://{prefix}",
            storage_options=server.storage_options,
            local_dir=work / prefix,
            durability="memory",
            segment_max_records=10**9,
            segment_max_bytes=1 << 40,
            segment_max_age=3600,
        )
        stream = log.create_stream("bench")
        stream.append(table)
        state.update(log=log, stream=stream, prefix=prefix)

    def ours() -> None:
        state["stream"].flush()

    def setup_raw() -> None:
        state["prefix"] = f"{bucket}/raw-{uuid.uuid4().hex[:8]}"

    def raw() -> None:
        fs.pipe_file(f"{state['prefix']}/segment.parquet", state["bytes"])

    def cleanup(name: str) -> None:
        if name == "ours":
            state.pop("log").close()
            if "bytes" not in state:  # the baseline uploads exactly the segment's bytes
                (segment,) = fs.ls(f"{state['prefix']}/streams/bench/segments", refresh=True)
                state["bytes"] = fs.cat_file(segment)
        fs.rm(state["prefix"], recursive=True)

    t_ours, t_raw = alternate(runs, ours, raw, setup_ours, setup_raw, cleanup)
    size = len(state["bytes"]) / MIB
    t_cpu = statistics.median(_time(lambda: _parquet_and_hash(table)) for _ in range(3))
    print(
        f"seal+upload+commit of a {size:.1f} MiB segment: raw s3fs pipe_file {size / t_raw:,.0f} "
        f"MiB/s ({t_raw:.2f} s), transit flush {size / t_ours:,.0f} MiB/s ({t_ours:.2f} s, of "
        f"which ~{t_cpu:.2f} s Parquet+BLAKE3), ratio {t_raw / t_ours:.2f} (target >= 0.8)"
    )


def _parquet_and_hash(table: pa.Table) -> None:
    """What a seal to S3 computes before its upload: the segment's Parquet bytes (`bytes`, as
    for an S3 store: not a pooled buffer) and BLAKE3."""
    n = table.num_rows
    head = table.add_column(0, "_offset", pa.array(np.arange(n, dtype=np.int64)))
    head = head.add_column(1, "_timestamp", pa.array(np.zeros(n, np.int64), TIMESTAMP_TYPE))
    head = head.add_column(2, "_headers", pa.nulls(n, HEADERS_TYPE))
    encode_segment(head, "bench", pooled=False)


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --- 2. requests per seal -------------------------------------------------------------------


def bench_requests(server: MotoServer, runs: int, work: Path) -> None:
    recording = _load_recording_store()
    uri = f"s3://{server.create_bucket()}/requests"
    store = recording.FaultyStore(S3Store(uri, server.storage_options))
    per_seal: list[list[str]] = []
    http: list[list[tuple[str, str]]] = []
    with ta.open(store, local_dir=work / "requests", segment_max_records=10**9) as log:
        stream = log.create_stream("bench")
        for k in range(runs):
            stream.append([{"seq": k * 10 + i, "v": "x" * 100} for i in range(10)])
            store.reset_log()
            mark = server.mark()
            stream.flush()
            per_seal.append([_describe(r.op, r.path) for r in store.reset_log()])
            http.append(server.since(mark))
    counts = [len(calls) for calls in per_seal]
    typical = Counter(tuple(calls) for calls in per_seal).most_common(1)[0][0]
    methods = Counter(tuple(_describe_http(m, p) for m, p in h) for h in http).most_common(1)[0][0]
    print(
        f"requests per seal (store calls, median of {runs} seals): {statistics.median(counts):.0f} "
        f"(target 2): {', '.join(typical)}; HTTP requests the server logged: "
        f"{statistics.median(len(h) for h in http):.0f}: {', '.join(methods)}"
    )


def _describe(op: str, path: str) -> str:
    kind = next((k for k in ("segments", "commits", "writer") if f"/{k}/" in path), path)
    return f"{op} {kind}"


def _describe_http(method: str, path: str) -> str:
    return _describe(method, path + ("/" if path.endswith("/commits") else ""))


# --- 3. cold read of a branch ---------------------------------------------------------------


def bench_cold_read(
    server: MotoServer, records: int, segment_records: int, runs: int, work: Path
) -> None:
    uri = f"s3://{server.create_bucket()}/cold"
    inherited = records * 6 // 10
    fork = inherited - 1
    main_records = records * 8 // 10
    options = server.storage_options
    with ta.open(
        uri,
        storage_options=options,
        local_dir=work / "writer",
        segment_max_records=10**9,
        segment_max_bytes=1 << 40,
    ) as log:
        main = log.create_stream("main")
        _append_segments(main, 0, main_records, segment_records, seed=1)
        branch = log.branch("b", at=f"main@{fork}")
        _append_segments(branch, inherited, records - inherited, segment_records, seed=2)
        expected = branch.read(columns=["seq"]).column("seq")
        assert len(expected) == records
    fs = server.filesystem()
    bucket_prefix = uri[len("s3://") :]
    needed = [
        f"{bucket_prefix}/streams/main/segments/{n}"
        for n in _names(fs, f"{bucket_prefix}/streams/main/segments")
        if int(n[:20]) <= fork
    ] + [
        f"{bucket_prefix}/streams/b/segments/{n}"
        for n in _names(fs, f"{bucket_prefix}/streams/b/segments")
    ]
    total_bytes = sum(fs.info(p)["size"] for p in needed)
    state: dict[str, Path] = {}

    def fresh() -> None:
        state["dir"] = work / f"cold-{uuid.uuid4().hex[:8]}"

    def ours() -> None:
        with ta.open(uri, storage_options=options, local_dir=state["dir"]) as log:
            table = log.stream("b").read()
        assert table.num_rows == records

    def raw() -> None:
        raw_fs = server.filesystem()
        blobs = raw_fs.cat(needed)  # one concurrent batch of GETs (s3fs gathers them)
        tables = []
        for path in needed:
            table = pq.read_table(pa.BufferReader(blobs[path]))
            if "/streams/main/" in path:
                table = table.filter(pc.less_equal(table["_offset"], fork))
            tables.append(table)
        assert pa.concat_tables(tables).num_rows == records

    def cleanup(_: str) -> None:
        shutil.rmtree(state["dir"], ignore_errors=True)

    t_ours, t_raw = alternate(runs, ours, raw, fresh, fresh, cleanup)
    print(
        f"cold read of a {records:,}-record branch ({len(needed)} segments, "
        f"{total_bytes / MIB:.0f} MiB): s3fs cat (parallel) + pq.read_table "
        f"{records / t_raw:,.0f} rec/s ({t_raw:.2f} s), transit open + read "
        f"{records / t_ours:,.0f} rec/s ({t_ours:.2f} s), ratio {t_raw / t_ours:.2f} "
        "(target >= 0.8)"
    )
    fresh()
    mark = server.mark()
    with ta.open(uri, storage_options=options, local_dir=state["dir"]) as log:
        assert log.stream("b").read().num_rows == records
        counted = log.store.inner.requests  # type: ignore[attr-defined]
    http = server.since(mark)
    cleanup("ours")
    print(
        f"requests per cold read (open + read of the branch, {len(needed)} segments): store "
        f"{sum(counted.values())} ({', '.join(f'{k} {v}' for k, v in sorted(counted.items()))}); "
        f"HTTP requests the server logged: {len(http)} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(Counter(m for m, _ in http).items()))})"
    )


def _append_segments(stream: ta.Stream, first: int, n: int, per_segment: int, seed: int) -> None:
    for start in range(first, first + n, per_segment):
        count = min(per_segment, first + n - start)
        stream.append(records_table(count, start, seed + start), durability="tiered")


def _names(fs: Any, folder: str) -> list[str]:
    return sorted(Path(p).name for p in fs.ls(folder, refresh=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--segment-mib", type=int, default=64)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--segment-records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="transit-bench-s3-"))
    server = MotoServer()
    print(f"moto.server at {server.endpoint} (child process), medians of {args.runs} runs")
    try:
        bench_seal(server, args.segment_mib, args.runs, work)
        bench_requests(server, args.runs, work)
        bench_cold_read(server, args.records, args.segment_records, args.runs, work)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
