# Adapted from shared/peers-bench/bench_lance.py, the team's peers harness: the same calls,
# reformatted for this repository's lint rules (vendored: left as written otherwise).
# ruff: noqa: RUF012
"""Lance through pylance, local filesystem.

Dataset created empty (untimed); one `lance.write_dataset(batch, ds, mode="append")` per
commit (one version each). W3 uses Lance branches (`ds.create_branch(name)` - a new
manifest under tree/<name>/ that references the parent's data files, no copy), append
with `write_dataset(..., branch_ds, mode="append")`, read with
`lance.dataset(uri).checkout_version((name, None)).to_table()`.
Query: DuckDB over the LanceDataset (a pyarrow Dataset; DuckDB pushes the projection).
"""

import sys
from pathlib import Path

import duckdb
import lance
import pyarrow as pa
from common import SCHEMA, Peer, main


class Lance(Peer):
    name = "lance"
    has_branches = True
    notes = [
        "Lance file format (pylance default data_storage_version), max_rows_per_file=1,048,576 "
        "default (the 2M bulk append writes 2 files)",
        "W3 uses native Lance branches (create_branch), not shallow_clone",
    ]

    def versions(self):
        return {"pylance": lance.__version__, "duckdb": duckdb.__version__}

    def setup(self, root: Path):
        self.root = root
        self.uri = str(root / "t.lance")
        self.ds = lance.write_dataset(SCHEMA.empty_table(), self.uri)
        self.marks = {}
        self.branches = {}

    def commit(self, tbl: pa.Table):
        self.ds = lance.write_dataset(tbl, self.ds, mode="append")

    def mark_version(self, label):
        self.marks[label] = self.ds.version

    def create_branch(self, name):
        self.branches[name] = self.ds.create_branch(name)

    def branch_append(self, name, tbl):
        self.branches[name] = lance.write_dataset(tbl, self.branches[name], mode="append")

    def branch_read(self, name):
        return lance.dataset(self.uri).checkout_version((name, None)).to_table()

    def read_version(self, label):
        return lance.dataset(self.uri, version=self.marks[label]).to_table()

    def query(self, sql):
        ds = lance.dataset(self.uri)
        con = duckdb.connect()
        con.register("t", ds)
        return con.execute(sql.format(src="t")).fetchall()


if __name__ == "__main__":
    sys.exit(main(Lance))
