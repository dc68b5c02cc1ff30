"""The segment encoding trade-off: codec and row group size vs encoding time, bytes per record
and DuckDB's scan time, against the floor (`pq.write_table` defaults: snappy, dictionaries,
1 Mi-row groups, user columns only).

Run: `python benchmarks/bench_encode.py [--records 500000] [--runs 7]`. For each encoding it
prints the median CPU seconds (all threads, so a busy machine skews them less than wall time)
of `encode_segment` on a head of `--records` records shaped like the peers benchmark's (model,
task id, score, latency, a 200-byte JSON payload), the bytes per record of the file, the CPU
seconds of DuckDB's `SELECT model, count(*), avg(score) ... GROUP BY model` over 4 such files
(a fresh connection each time), and the encoding time of a 64 MiB head of incompressible
4 KiB blobs (the S3 seal benchmark's). "before" is the encoding of earlier releases (zstd,
a dictionary tried on every column). docs/format.md ("Segment encoding") quotes a run.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_append import make_bulk_table
from bench_s3 import MIB, incompressible_table

from transit_arrow.record import HEADERS_TYPE, TIMESTAMP_TYPE
from transit_arrow.segments.parquet import encode_segment

QUERY = "SELECT model, count(*), avg(score) FROM read_parquet({files}) GROUP BY model"
DELTA = ("_offset", "_timestamp")


def head_table(user: pa.Table) -> pa.Table:
    """`user` with the head's system columns in front (as a seal sees it)."""
    n = user.num_rows
    stamps = np.arange(n, dtype=np.int64) + 1_700_000_000_000_000
    return pa.Table.from_arrays(
        [
            pa.array(np.arange(n, dtype=np.int64)),
            pa.array(stamps, TIMESTAMP_TYPE),
            pa.nulls(n, HEADERS_TYPE),
            *user.columns,
        ],
        names=["_offset", "_timestamp", "_headers", *user.column_names],
    )


def before(head: pa.Table) -> bytes:
    """Earlier releases' encoding: zstd, a dictionary tried on every column but the deltas."""
    n = head.num_rows
    stream = pa.DictionaryArray.from_arrays(np.zeros(n, dtype=np.int32), pa.array(["s"]))
    full = head.add_column(0, "_stream", stream)
    sink = io.BytesIO()
    pq.write_table(
        full,
        sink,
        compression="zstd",
        row_group_size=65536,
        store_schema=True,
        use_dictionary=[c for c in full.column_names if c not in DELTA],  # type: ignore[arg-type]
        column_encoding=dict.fromkeys(DELTA, "DELTA_BINARY_PACKED"),
    )
    return sink.getvalue()


def floor(user: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(user, sink)
    return sink.getvalue()


def cpu(fn: Callable[[], object], runs: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        c0 = time.process_time()
        out = fn()
        times.append(time.process_time() - c0)
    return statistics.median(times), out


def scan_cpu(data: bytes, runs: int, work: Path, name: str) -> float:
    """CPU seconds of the group-by over 4 copies of the file (4 segments of a 4x larger log)."""
    files = []
    for i in range(4):
        path = work / f"{name}-{i}.parquet"
        path.write_bytes(data)
        files.append(f"'{path}'")
    query = QUERY.format(files=f"[{', '.join(files)}]")

    def run() -> None:
        con = duckdb.connect()
        con.sql(query).fetchall()
        con.close()

    run()
    return cpu(run, runs)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    user = make_bulk_table(args.records)
    head = head_table(user)
    blobs = head_table(incompressible_table(64 * MIB))
    n = args.records
    variants: dict[str, tuple[Callable[[], bytes], Callable[[], object] | None]] = {
        "floor: pq.write_table defaults, user columns": (lambda: floor(user), None),
        "before: zstd, dictionary everywhere, 64 Ki rows": (
            lambda: before(head),
            lambda: before(blobs),
        ),
    }
    for codec in ("snappy", "zstd", "lz4_raw", "none"):
        for rows in (65536, 1 << 20):
            label = f"{codec}, sampled dictionaries, {rows // 1024} Ki rows"
            variants[label] = (
                lambda c=codec, r=rows: encode_segment(head, "s", r, c)[0],
                lambda c=codec, r=rows: encode_segment(blobs, "s", r, c),
            )
    print(f"{n:,} records of the peers' shape; medians of {args.runs} runs, CPU seconds")
    print("| encoding | encode s | B/record | DuckDB group-by s | 64 MiB blobs s |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, (encode, blob)) in enumerate(variants.items()):
            t_encode, data = cpu(encode, args.runs)
            assert isinstance(data, (bytes, bytearray))
            t_scan = scan_cpu(data, args.runs, Path(tmp), f"v{i}")
            t_blob = f"{cpu(blob, 3)[0]:.3f}" if blob is not None else "-"
            print(f"| {label} | {t_encode:.3f} | {len(data) / n:.1f} | {t_scan:.3f} | {t_blob} |")


if __name__ == "__main__":
    main()
