# Adapted from shared/peers-bench/common.py, the team's peers harness: the same calls,
# reformatted for this repository's lint rules (vendored: left as written otherwise).
# ruff: noqa: RUF012
"""Shared data, workloads and timing for the peers benchmark.

Every peer script defines a subclass of `Peer` and calls `main(PeerClass)`.
The workloads (same data for every peer) run in this order on one table, in a
fresh directory, `--reps` times (default 3); each number reported is the median
over the repetitions:

  W1 small commits : --w1-commits appends of --w1-rows rows, one commit/version each
                     (total s, median and p99 per-commit latency, files on disk after W1)
  W2 bulk          : one append of --bulk-rows rows (s, rows/s)
  W3 branch        : at 2M+500k rows create branch "b" at the head (s), append
                     --branch-rows rows to it (s), read the branch back fully (s).
                     Peers without branches: create/append are n/a and the read is a
                     time-travel read pinned at the head version (same role: a reader
                     of a frozen point of history).
  W4 time travel   : read the table as of the version after W1 commit #10 (10k rows),
                     fresh handle, full read into Arrow (s)
  W5 query         : fresh handle on the latest version, DuckDB
                     `SELECT model, count(*), avg(score) ... GROUP BY model` (s)

Row counts are checked at every step; a mismatch aborts the run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

HERE = Path(__file__).resolve().parent
# Results and scratch tables go outside this folder (it may be read-only where it is shared).
_OUT = Path(os.environ.get("BENCH_OUT", Path(os.environ.get("TMPDIR", "/tmp")) / "peers-bench"))
RESULTS = _OUT / "results"
DEFAULT_WORKDIR = Path(os.environ.get("BENCH_WORKDIR", _OUT / "tmp_data"))

SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("task_id", pa.int64()),
        ("score", pa.float64()),
        ("latency_ms", pa.int32()),
        ("payload", pa.string()),
    ]
)
MODELS = [
    "gpt-4o",
    "claude-3-5-sonnet",
    "llama-3-70b",
    "mistral-large",
    "gemini-1.5-pro",
    "qwen2-72b",
    "phi-3-medium",
    "command-r-plus",
]
PROMPTS = [
    f"prompt template {i}: summarise the retrieved passages and answer the question"
    for i in range(64)
]
PAYLOAD_LEN = 200
DATA_VERSION = 1

QUERY = (
    "SELECT model, count(*) AS n, avg(score) AS avg_score FROM {src} GROUP BY model ORDER BY model"
)


# ----------------------------------------------------------------------------- data


def _generate(n: int, seed: int = 20260101) -> pa.Table:
    rng = np.random.default_rng(seed)
    model_idx = rng.integers(0, len(MODELS), n)
    task_id = np.arange(n, dtype=np.int64)
    score = rng.random(n)
    latency = rng.integers(20, 5000, n, dtype=np.int32)
    runs = rng.integers(0, 2**63 - 1, n, dtype=np.int64)
    toks = rng.integers(10, 4000, n)
    pidx = rng.integers(0, len(PROMPTS), n)
    payload = []
    for i in range(n):
        s = (
            f'{{"task":{i},"model":"{MODELS[model_idx[i]]}","run":"{runs[i]:016x}",'
            f'"tokens":{toks[i]},"prompt":"{PROMPTS[pidx[i]]}","note":"'
        )
        payload.append(s[: PAYLOAD_LEN - 2].ljust(PAYLOAD_LEN - 2, ".") + '"}')
    models = pa.DictionaryArray.from_arrays(pa.array(model_idx, pa.int32()), pa.array(MODELS)).cast(
        pa.string()
    )
    return pa.table(
        [
            models,
            pa.array(task_id),
            pa.array(score),
            pa.array(latency),
            pa.array(payload, pa.string()),
        ],
        schema=SCHEMA,
    )


def load_data(total_rows: int, workdir: Path) -> pa.Table:
    """Deterministic data set, generated once and cached as an Arrow IPC file so that
    every peer (in every venv) appends byte-identical records."""
    cache = workdir / "cache" / f"data_v{DATA_VERSION}_{total_rows}.arrow"
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        tbl = _generate(total_rows)
        tmp = cache.with_suffix(".tmp")
        with pa.OSFile(str(tmp), "wb") as f, pa.ipc.new_file(f, SCHEMA) as w:
            w.write_table(tbl, max_chunksize=100_000)
        os.replace(tmp, cache)
        print(
            f"  generated {total_rows:,} rows -> {cache} in {time.perf_counter() - t0:.1f}s",
            flush=True,
        )
    with pa.OSFile(str(cache), "rb") as f:
        tbl = pa.ipc.open_file(f).read_all()
    return tbl.combine_chunks()


# ----------------------------------------------------------------------------- peer API


class Skip(Exception):
    """Raised by a peer whose package cannot be used here."""


class Peer:
    """One system under test. `root` is a fresh, empty directory per repetition."""

    name = "peer"
    has_branches = False
    notes: list[str] = []

    def versions(self) -> dict:  # package versions, for the report
        return {}

    def setup(self, root: Path) -> None:  # create an empty table (untimed)
        raise NotImplementedError

    def commit(self, tbl: pa.Table) -> None:  # one append == one commit / version
        raise NotImplementedError

    def bulk(self, tbl: pa.Table) -> None:
        self.commit(tbl)

    def mark_version(self, label: str) -> None:
        """Remember the current head version under `label` (called untimed)."""
        raise NotImplementedError

    # W3 (peers with branches)
    def create_branch(self, name: str) -> None:
        raise NotImplementedError

    def branch_append(self, name: str, tbl: pa.Table) -> None:
        raise NotImplementedError

    def branch_read(self, name: str) -> pa.Table:
        raise NotImplementedError

    # W3 stand-in / W4
    def read_version(self, label: str) -> pa.Table:
        """Fresh handle, full read of the version remembered under `label`."""
        raise NotImplementedError

    # W5
    def query(self, sql: str) -> list:
        """Fresh handle on the latest version; `sql` has `{src}` for the table."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def count_files(self) -> dict:
        return count_files(self.root)


def count_files(root: Path, is_data=None) -> dict:
    """Files and bytes under root; `is_data(dirpath, filename)` tells data files from
    metadata (default: *.parquet / *.lance)."""
    is_data = is_data or (lambda d, fn: fn.endswith((".parquet", ".lance")))
    total = data = nbytes = dbytes = 0
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            sz = os.path.getsize(os.path.join(dirpath, fn))
            total += 1
            nbytes += sz
            if is_data(dirpath, fn):
                data += 1
                dbytes += sz
    return {"files_total": total, "data_files": data, "bytes": nbytes, "data_bytes": dbytes}


# ----------------------------------------------------------------------------- runner


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def _timed(fn, *a):
    gc.collect()
    t0 = time.perf_counter()
    r = fn(*a)
    return time.perf_counter() - t0, r


def _check(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {got} rows, want {want}")


def run_rep(peer: Peer, root: Path, data: pa.Table, a) -> dict:
    n1, r1 = a.w1_commits, a.w1_rows
    w1_total = n1 * r1
    r = {}
    peer.setup(root)

    # W1 -------------------------------------------------------------
    lat = []
    t_start = time.perf_counter()
    for k in range(n1):
        batch = data.slice(k * r1, r1)
        t0 = time.perf_counter()
        peer.commit(batch)
        lat.append(time.perf_counter() - t0)
        if k + 1 == a.tt_version:
            peer.mark_version("tt")  # untimed, outside the per-commit clock
    r["w1_total_s"] = time.perf_counter() - t_start
    r["w1_commit_s_sum"] = sum(lat)
    r["w1_median_ms"] = statistics.median(lat) * 1e3
    r["w1_p99_ms"] = pct(lat, 0.99) * 1e3
    r["w1_first10_ms"] = statistics.median(lat[:10]) * 1e3
    r["w1_last10_ms"] = statistics.median(lat[-10:]) * 1e3
    r["w1_latencies_ms"] = [round(x * 1e3, 3) for x in lat]  # per-commit curve, for plots
    fc = peer.count_files()
    r["w1_files_total"], r["w1_data_files"], r["w1_bytes"] = (
        fc["files_total"],
        fc["data_files"],
        fc["bytes"],
    )
    r["w1_meta_bytes"] = fc["bytes"] - fc["data_bytes"]
    print(
        f"    W1 {n1}x{r1}: {r['w1_total_s']:.2f}s  median {r['w1_median_ms']:.1f}ms  "
        f"p99 {r['w1_p99_ms']:.1f}ms  files {fc['files_total']} (data {fc['data_files']})",
        flush=True,
    )

    # W2 -------------------------------------------------------------
    bulk = data.slice(w1_total, a.bulk_rows)
    s, _ = _timed(peer.bulk, bulk)
    r["w2_s"] = s
    r["w2_rows_per_s"] = a.bulk_rows / s
    peer.mark_version("head")
    head_rows = w1_total + a.bulk_rows
    print(f"    W2 {a.bulk_rows:,} rows: {s:.2f}s  {a.bulk_rows / s:,.0f} rows/s", flush=True)

    # W3 -------------------------------------------------------------
    extra = data.slice(w1_total + a.bulk_rows, a.branch_rows)
    if peer.has_branches:
        s, _ = _timed(peer.create_branch, "b")
        r["w3_branch_create_s"] = s
        s, _ = _timed(peer.branch_append, "b", extra)
        r["w3_branch_append_s"] = s
        s, t = _timed(peer.branch_read, "b")
        _check("W3 branch read", t.num_rows, head_rows + a.branch_rows)
        r["w3_branch_read_s"] = s
        r["w3_mode"] = "branch"
        print(
            f"    W3 branch: create {r['w3_branch_create_s'] * 1e3:.1f}ms  append "
            f"{r['w3_branch_append_s'] * 1e3:.1f}ms  read {r['w3_branch_read_s']:.2f}s",
            flush=True,
        )
    else:
        r["w3_branch_create_s"] = r["w3_branch_append_s"] = None
        s, t = _timed(peer.read_version, "head")
        _check("W3 pinned read", t.num_rows, head_rows)
        r["w3_branch_read_s"] = s
        r["w3_mode"] = "time-travel (no branches)"
        print(f"    W3 no branches; pinned-version read {s:.2f}s", flush=True)
    del t

    # W4 -------------------------------------------------------------
    s, t = _timed(peer.read_version, "tt")
    _check("W4 time travel", t.num_rows, a.tt_version * r1)
    r["w4_s"] = s
    del t
    print(f"    W4 read as of commit #{a.tt_version}: {s * 1e3:.1f}ms", flush=True)

    # W5 -------------------------------------------------------------
    s, rows = _timed(peer.query, QUERY)
    _check("W5 query", sum(int(x[1]) for x in rows), head_rows)
    r["w5_s"] = s
    print(f"    W5 group-by: {s * 1e3:.1f}ms", flush=True)

    fc = peer.count_files()
    r["end_files_total"], r["end_data_files"], r["end_bytes"] = (
        fc["files_total"],
        fc["data_files"],
        fc["bytes"],
    )
    r["end_meta_bytes"] = fc["bytes"] - fc["data_bytes"]
    return r


def parse_args(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=int(os.environ.get("BENCH_REPS", 3)))
    p.add_argument(
        "--w1-commits",
        type=int,
        default=None,
        help="default 500 (a peer may lower its own default; it says so in notes)",
    )
    p.add_argument("--w1-rows", type=int, default=1000)
    p.add_argument("--bulk-rows", type=int, default=2_000_000)
    p.add_argument("--branch-rows", type=int, default=1000)
    p.add_argument("--tt-version", type=int, default=10)
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    p.add_argument(
        "--out", type=Path, default=None, help="result JSON (default <out-dir>/<peer>.json)"
    )
    p.add_argument(
        "--out-dir", type=Path, default=None, help="default results/ (results/quick/ with --quick)"
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 1 rep, 30 commits, 100k bulk")
    return p.parse_args(argv)


def main(peer_cls, default_w1_commits: int = 500, argv=None):
    a = parse_args(argv)
    if a.quick:
        a.reps, a.w1_commits, a.bulk_rows = 1, a.w1_commits or 30, 100_000
    if a.w1_commits is None:
        a.w1_commits = int(os.environ.get("BENCH_W1_COMMITS", default_w1_commits))
    out_dir = a.out_dir or (RESULTS / "quick" if a.quick else RESULTS)
    out = a.out or out_dir / f"{peer_cls.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"== {peer_cls.name}", flush=True)
    try:
        peer = peer_cls()
    except Skip as e:
        print(f"  SKIPPED: {e}", flush=True)
        out.write_text(
            json.dumps({"peer": peer_cls.name, "skipped": True, "reason": str(e)}, indent=2)
        )
        return 0
    # full data: W1 + bulk + branch rows (cached once, shared by all peers)
    need = 500 * a.w1_rows + 2_000_000 + a.branch_rows
    need = max(need, a.w1_commits * a.w1_rows + a.bulk_rows + a.branch_rows)
    data = load_data(need, a.workdir)
    reps = []
    for i in range(a.reps):
        root = a.workdir / f"{peer_cls.name}_rep{i}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        print(f"  rep {i + 1}/{a.reps} in {root}", flush=True)
        try:
            reps.append(run_rep(peer, root, data, a))
        finally:
            peer.close()
            shutil.rmtree(root, ignore_errors=True)
            gc.collect()
    keys = [k for k in reps[0] if isinstance(reps[0][k], (int, float)) or reps[0][k] is None]
    med = {}
    for k in keys:
        vals = [r[k] for r in reps if r.get(k) is not None]
        med[k] = statistics.median(vals) if vals else None
    med["w3_mode"] = reps[0]["w3_mode"]
    res = {
        "peer": peer_cls.name,
        "skipped": False,
        "versions": {
            "python": platform.python_version(),
            "pyarrow": pa.__version__,
            **peer.versions(),
        },
        "params": {
            "reps": a.reps,
            "w1_commits": a.w1_commits,
            "w1_rows": a.w1_rows,
            "bulk_rows": a.bulk_rows,
            "branch_rows": a.branch_rows,
            "tt_version": a.tt_version,
            "quick": a.quick,
        },
        "notes": list(peer.notes),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "median": med,
        "reps": reps,
    }
    out.write_text(json.dumps(res, indent=2))
    print(f"  wrote {out}", flush=True)
    return 0


def duck_rows(con, sql):
    return con.execute(sql).fetchall()
