# Adapted from shared/peers-bench/bench_pyiceberg.py, the team's peers harness: the same calls,
# reformatted for this repository's lint rules (vendored: left as written otherwise).
# ruff: noqa: RUF012, SIM105
"""Apache Iceberg through pyiceberg, SqlCatalog on SQLite + local file warehouse.

Table created empty (untimed); one `tbl.append(batch)` per commit (one snapshot each,
pyiceberg's default fast append: a new manifest + manifest list + metadata.json per commit).
W3: `manage_snapshots().create_branch(...)`, `tbl.append(batch, branch="b")`,
`tbl.scan().use_ref("b").to_arrow()`. Reads use a fresh `catalog.load_table`.
Query: `scan(selected_fields=("model", "score")).to_arrow()` then DuckDB on the Arrow table
(pyiceberg exposes no lazy dataset DuckDB could push a projection into, so the
projection is given to the scan by hand).
"""

import sys
import warnings
from pathlib import Path

import duckdb
import pyarrow as pa
import pyiceberg
from common import SCHEMA, Peer, main
from pyiceberg.catalog.sql import SqlCatalog

warnings.filterwarnings("ignore")


class Iceberg(Peer):
    name = "pyiceberg"
    has_branches = True
    notes = [
        "SqlCatalog on SQLite + file:// warehouse; format-version 2 (pyiceberg default); "
        "default fast-append (one manifest per commit); pyiceberg default Parquet codec (zstd)",
        "W5 scans only (model, score) via selected_fields, then DuckDB over the Arrow table",
    ]

    def versions(self):
        import sqlalchemy

        return {
            "pyiceberg": pyiceberg.__version__,
            "sqlalchemy": sqlalchemy.__version__,
            "duckdb": duckdb.__version__,
        }

    def _catalog(self):
        return SqlCatalog(
            "bench",
            uri=f"sqlite:///{self.root}/catalog.db",
            warehouse=f"file://{self.root}/warehouse",
        )

    def setup(self, root: Path):
        self.root = root
        (root / "warehouse").mkdir()
        self.cat = self._catalog()
        self.cat.create_namespace("ns")
        self.tbl = self.cat.create_table("ns.t", schema=SCHEMA)
        self.marks = {}

    def commit(self, tbl: pa.Table):
        self.tbl.append(tbl)

    def mark_version(self, label):
        self.marks[label] = self.tbl.current_snapshot().snapshot_id

    def create_branch(self, name):
        self.tbl.manage_snapshots().create_branch(
            snapshot_id=self.tbl.current_snapshot().snapshot_id, branch_name=name
        ).commit()

    def branch_append(self, name, tbl):
        self.tbl.append(tbl, branch=name)

    def branch_read(self, name):
        return self._catalog().load_table("ns.t").scan().use_ref(name).to_arrow()

    def read_version(self, label):
        t = self._catalog().load_table("ns.t")
        return t.scan(snapshot_id=self.marks[label]).to_arrow()

    def query(self, sql):
        t = self._catalog().load_table("ns.t")
        arrow = t.scan(selected_fields=("model", "score")).to_arrow()
        con = duckdb.connect()
        con.register("t", arrow)
        return con.execute(sql.format(src="t")).fetchall()

    def close(self):
        try:
            self.cat.engine.dispose()
        except Exception:
            pass


if __name__ == "__main__":
    sys.exit(main(Iceberg))
