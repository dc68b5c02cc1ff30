# Adapted from shared/peers-bench/bench_deltalake.py, the team's peers harness: the same calls,
# reformatted for this repository's lint rules (vendored: left as written otherwise).
# ruff: noqa: RUF012
"""Delta Lake through delta-rs (`deltalake` Python package), local filesystem.

Table created empty (untimed), then one `write_deltalake(dt, batch, mode="append")` per
commit, reusing one DeltaTable handle (delta-rs updates it in place after each write).
Delta has no branches: W3 reports a time-travel read pinned at the head version.
Reads: `DeltaTable(path, version=v).to_pyarrow_table()`; query: DuckDB over
`DeltaTable(path).to_pyarrow_dataset()` (projection pushed down by DuckDB).
"""

import sys
from pathlib import Path

import deltalake
import duckdb
import pyarrow as pa
from common import SCHEMA, Peer, count_files, main
from deltalake import DeltaTable, write_deltalake


class Delta(Peer):
    name = "deltalake"
    has_branches = False
    notes = [
        "no branches in Delta / delta-rs: W3 = read pinned at the head version "
        "(DeltaTable(path, version=v)); defaults kept (checkpoint every 100 commits, "
        "delta-rs default Parquet writer settings)"
    ]

    def versions(self):
        return {"deltalake": deltalake.__version__, "duckdb": duckdb.__version__}

    def setup(self, root: Path):
        self.root = root
        self.path = str(root / "t")
        DeltaTable.create(self.path, schema=SCHEMA)
        self.dt = DeltaTable(self.path)
        self.marks = {}

    def commit(self, tbl: pa.Table):
        write_deltalake(self.dt, tbl, mode="append")

    def mark_version(self, label):
        self.marks[label] = self.dt.version()

    def read_version(self, label):
        return DeltaTable(self.path, version=self.marks[label]).to_pyarrow_table()

    def query(self, sql):
        ds = DeltaTable(self.path).to_pyarrow_dataset()
        con = duckdb.connect()
        con.register("t", ds)
        return con.execute(sql.format(src="t")).fetchall()

    def count_files(self):
        return count_files(
            self.root, lambda d, fn: fn.endswith(".parquet") and "_delta_log" not in d
        )


if __name__ == "__main__":
    sys.exit(main(Delta))
