# Adapted from shared/peers-bench/bench_parquet_duckdb.py, the team's peers harness: the same calls,
# reformatted for this repository's lint rules (vendored: left as written otherwise).
# ruff: noqa: RUF012, E501
"""Baseline: plain Parquet files (one file per commit, written by pyarrow) + DuckDB 2.x.

A "version" is a prefix of the zero-padded file sequence; there is no manifest, no
atomic multi-file commit, no branches. Reads and the query go through DuckDB
(`read_parquet` over an explicit file list / a glob).
"""

import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from common import Peer, main


class ParquetDuckDB(Peer):
    name = "parquet_duckdb"
    has_branches = False
    notes = [
        "baseline: pyarrow.parquet.write_table, one file per commit (defaults: snappy, "
        "1 row group per 1,000-row commit); reads via DuckDB read_parquet(file list); no atomic commit, no manifest, "
        "no branches (W3 = read pinned to the file prefix of the head version)"
    ]

    def versions(self):
        return {"duckdb": duckdb.__version__}

    def setup(self, root: Path):
        self.root = root
        self.dir = root / "t"
        self.dir.mkdir()
        self.seq = 0
        self.marks = {}

    def commit(self, tbl: pa.Table):
        pq.write_table(tbl, self.dir / f"part-{self.seq:06d}.parquet")
        self.seq += 1

    def mark_version(self, label):
        self.marks[label] = self.seq

    def _files(self, n):
        return [str(self.dir / f"part-{i:06d}.parquet") for i in range(n)]

    def read_version(self, label):
        con = duckdb.connect()
        return con.sql(
            "SELECT * FROM read_parquet($files)", params={"files": self._files(self.marks[label])}
        ).to_arrow_table()

    def query(self, sql):
        con = duckdb.connect()
        return con.execute(sql.format(src=f"read_parquet('{self.dir}/*.parquet')")).fetchall()


if __name__ == "__main__":
    sys.exit(main(ParquetDuckDB))
