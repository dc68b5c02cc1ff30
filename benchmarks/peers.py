"""transit-arrow beside the systems its users would pick instead, on the same five workloads.

Run: `python benchmarks/peers.py` (about 10 minutes on 2 cores; `--quick` for a 1-minute smoke
run, `--only transit_arrow ducklake` for a subset, `--setup` to create the peers' virtualenvs
first). Prints a Markdown table: one row per system, medians of `--reps` (default 3)
repetitions, then transit-arrow's ratio to the best peer and to the floor on each workload.

The workloads (`benchmarks/peers/common.py`, the team's harness, same seeded data for
everyone: 2,501,000 rows of `{model, task_id, score, latency_ms, payload(200 B)}`):

- W1 500 appends of 1,000 rows, one commit each (median and p99 per commit, first vs last 10);
- W2 one 2,000,000-row append;
- W3 branch at the head, append 1,000 rows to it, read it back (peers without branches: a
  time-travel read pinned at the head);
- W4 a fresh handle reads the table as of W1 commit #10;
- W5 a fresh handle runs `SELECT model, count(*), avg(score) ... GROUP BY model` in DuckDB.

Peers, each through its own documented API with defaults untouched (`benchmarks/peers/`):
plain Parquet + DuckDB (the floor), deltalake, pyiceberg (SQLite catalog), lance, DuckLake
(DuckDB 1.5 + the `duckdb-extension-ducklake` wheel loaded from its path, in its own
virtualenv). The peers run in `/tmp/peers-venv` and `/tmp/ducklake-venv` (`--setup` makes them
from PyPI with `benchmarks/peers/setup_venvs.sh`; `PEERS_PY` / `DUCKLAKE_PY` override);
transit-arrow runs in this interpreter. Each system runs in its own process, one after the
other, so they share the machine equally; compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent / "peers"
PEERS = ["parquet_duckdb", "deltalake", "pyiceberg", "lance", "ducklake", "transit_arrow"]
LABELS = {
    "parquet_duckdb": "Parquet + DuckDB (floor)",
    "deltalake": "deltalake",
    "pyiceberg": "pyiceberg (SQLite)",
    "lance": "lance",
    "ducklake": "DuckLake",
    "transit_arrow": "**transit-arrow**",
}
#: (column, key in the medians, scale, digits, higher is better)
COLUMNS = [
    ("W1 median ms", "w1_median_ms", 1.0, 1, False),
    ("W1 p99 ms", "w1_p99_ms", 1.0, 1, False),
    ("W1 first→last 10 ms", None, 1.0, 1, False),
    ("W2 M rows/s", "w2_rows_per_s", 1e-6, 2, True),
    ("W3 branch ms", "w3_branch_create_s", 1e3, 1, False),
    ("W3 read s", "w3_branch_read_s", 1.0, 2, False),
    ("W4 ms", "w4_s", 1e3, 1, False),
    ("W5 ms", "w5_s", 1e3, 1, False),
]


def interpreter(peer: str) -> str:
    if peer == "transit_arrow":
        return sys.executable
    if peer == "ducklake":
        return os.environ.get("DUCKLAKE_PY", "/tmp/ducklake-venv/bin/python")
    return os.environ.get("PEERS_PY", "/tmp/peers-venv/bin/python")


def run_peer(peer: str, out_dir: Path, args: list[str], env: dict[str, str]) -> dict:
    out = out_dir / f"{peer}.json"
    python = interpreter(peer)
    if not Path(python).exists():
        reason = f"no {python} (run `python benchmarks/peers.py --setup`)"
        print(f"== {peer}: SKIPPED, {reason}", flush=True)
        return {"peer": peer, "skipped": True, "reason": reason}
    command = [python, str(HERE / f"bench_{peer}.py"), *args, "--out", str(out)]
    done = subprocess.run(command, cwd=HERE, env=env, check=False)
    if done.returncode != 0 or not out.exists():
        return {"peer": peer, "skipped": True, "reason": f"failed (exit {done.returncode})"}
    result: dict = json.loads(out.read_text())
    return result


def cell(m: dict, key: str | None, scale: float, digits: int) -> str:
    if key is None:
        return f"{m['w1_first10_ms']:.1f}→{m['w1_last10_ms']:.1f}"
    value = m.get(key)
    if value is None:
        return "n/a"
    return f"{value * scale:,.{digits}f}"


def table(results: dict[str, dict]) -> str:
    ran = {p: r for p, r in results.items() if not r.get("skipped")}
    lines = []
    if ran:
        prm = next(iter(ran.values()))["params"]
        lines.append(
            f"Medians of {prm['reps']} repetitions; W1 = {prm['w1_commits']} commits of "
            f"{prm['w1_rows']:,} rows, W2 = {prm['bulk_rows']:,} rows. (tt) = no branches: a "
            "time-travel read pinned at the head instead."
        )
        lines.append("")
    header = ["system", *(c[0] for c in COLUMNS)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for peer in PEERS:
        r = results.get(peer)
        if r is None:
            continue
        if r.get("skipped"):
            lines.append(f"| {LABELS[peer]} | skipped: {r.get('reason', '')} |" + " |" * 7)
            continue
        m = r["median"]
        cells = [cell(m, key, scale, digits) for _, key, scale, digits, _ in COLUMNS]
        if m.get("w3_branch_create_s") is None:
            cells[5] += " (tt)"
        lines.append(f"| {LABELS[peer]} | " + " | ".join(cells) + " |")
    mine = ran.get("transit_arrow")
    peers = {p: r for p, r in ran.items() if p not in ("transit_arrow", "parquet_duckdb")}
    floor = ran.get("parquet_duckdb")
    if mine is not None and peers:
        best_row, floor_row = ["transit ÷ best peer"], ["transit ÷ floor"]
        for _, key, _, _, higher in COLUMNS:
            if key is None:
                best_row.append("")
                floor_row.append("")
                continue
            value = mine["median"].get(key)
            others = [r["median"].get(key) for r in peers.values()]
            others = [v for v in others if v]
            if not value or not others:
                best_row.append("n/a")
            else:
                best = max(others) if higher else min(others)
                ratio = best / value if higher else value / best
                best_row.append(f"{ratio:.2f}")
            base = floor["median"].get(key) if floor else None
            if not value or not base:
                floor_row.append("n/a")
            else:
                floor_row.append(f"{(base / value if higher else value / base):.2f}")
        lines.append("| " + " | ".join(best_row) + " |")
        lines.append("| " + " | ".join(floor_row) + " |")
        names = ", ".join(LABELS[p] for p in PEERS if p in peers)
        lines += [
            "",
            "Ratios are transit-arrow's time over the other's (for W2, the other's rate over "
            f"transit-arrow's): below 1 is ahead. Best peer = the fastest of {names} on that "
            "workload.",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 rep, 30 commits, 100 k bulk")
    parser.add_argument("--only", nargs="+", choices=PEERS, default=PEERS)
    parser.add_argument("--setup", action="store_true", help="create the peers' virtualenvs")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "transit-peers",
        help="results and scratch tables (default: $TMPDIR/transit-peers)",
    )
    a = parser.parse_args()
    if a.setup:
        subprocess.run(["bash", str(HERE / "setup_venvs.sh")], check=True)
    out_dir = a.out / "results" / ("quick" if a.quick else "full")
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "BENCH_OUT": str(a.out), "BENCH_WORKDIR": str(a.out / "tmp_data")}
    args = ["--quick"] if a.quick else ["--reps", str(a.reps)]
    results = {peer: run_peer(peer, out_dir, args, env) for peer in PEERS if peer in a.only}
    text = table(results)
    (out_dir / "summary.md").write_text(text + "\n")
    print()
    print(text)
    print(f"\n(results: {out_dir})")


if __name__ == "__main__":
    main()
