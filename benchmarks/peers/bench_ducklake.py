# Adapted from shared/peers-bench/bench_ducklake.py, the team's peers harness: the same calls,
# reformatted for this repository's lint rules (vendored: left as written otherwise).
# ruff: noqa: B904
"""DuckLake on DuckDB 1.5.x, extension loaded offline from the PyPI wheel
`duckdb-extension-ducklake` (it ships ducklake.duckdb_extension under
duckdb_extension_ducklake/extensions/v<duckdb version>/; we `LOAD '<that path>'`, no
INSTALL / network needed). Catalog: a DuckDB database file (`ducklake:<root>/meta.ducklake`),
data: Parquet under <root>/data/.

Table created empty (untimed); one autocommitted `INSERT INTO lake.t SELECT * FROM batch`
per commit (batch = the Arrow table registered with DuckDB) -> one snapshot each.
No branches in DuckLake: W3 = time-travel read `AT (VERSION => head_snapshot)`.
"Fresh handle" for reads = DETACH + ATTACH of the lake (timed), then SQL.
DuckDB 2.x has no DuckLake extension on PyPI and extensions can't be downloaded here,
hence DuckDB 1.5 in its own venv.
"""

import sys
from pathlib import Path

import duckdb
import pyarrow as pa
from common import Peer, Skip, main


def extension_path():
    try:
        import duckdb_extension_ducklake as d
    except ImportError as e:
        raise Skip(f"duckdb-extension-ducklake not installed ({e})")
    p = (
        Path(d.__file__).parent
        / "extensions"
        / f"v{duckdb.__version__}"
        / "ducklake.duckdb_extension"
    )
    if not p.exists():
        raise Skip(f"no ducklake extension for duckdb {duckdb.__version__} in {p.parent.parent}")
    return p


def to_arrow(rel):
    return rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.fetch_arrow_table()


class DuckLake(Peer):
    name = "ducklake"
    has_branches = False

    def __init__(self):
        self.ext = extension_path()
        con = duckdb.connect()
        try:
            con.execute(f"LOAD '{self.ext}'")
            self.ext_version = con.execute(
                "SELECT extension_version FROM duckdb_extensions() WHERE extension_name='ducklake'"
            ).fetchone()[0]
        except Exception as e:
            raise Skip(f"cannot LOAD {self.ext}: {e}")
        finally:
            con.close()
        self.con = None
        self.notes = [
            f"DuckDB {duckdb.__version__} + ducklake extension {self.ext_version} LOADed from "
            "the duckdb-extension-ducklake wheel (offline); catalog = DuckDB file, data = Parquet",
            "no branches in DuckLake: W3 = read pinned AT (VERSION => head snapshot); "
            "data inlining default (<=10 rows) does not trigger for 1,000-row commits",
            "reads/query include DETACH+ATTACH of the lake (fresh handle)",
        ]

    def versions(self):
        import duckdb_extension_ducklake  # noqa
        from importlib.metadata import version

        return {
            "duckdb": duckdb.__version__,
            "duckdb-extension-ducklake": version("duckdb-extension-ducklake"),
            "ducklake_extension_build": self.ext_version,
        }

    def _attach(self):
        self.con.execute(
            f"ATTACH 'ducklake:{self.root}/meta.ducklake' AS lake (DATA_PATH '{self.root}/data/')"
        )

    def _reattach(self):
        self.con.execute("USE memory")
        self.con.execute("DETACH lake")
        self._attach()

    def setup(self, root: Path):
        self.root = root
        self.con = duckdb.connect()
        self.con.execute(f"LOAD '{self.ext}'")
        self._attach()
        self.con.execute(
            "CREATE TABLE lake.t (model VARCHAR, task_id BIGINT, score DOUBLE, "
            "latency_ms INTEGER, payload VARCHAR)"
        )
        self.marks = {}

    def commit(self, tbl: pa.Table):
        self.con.register("batch", tbl)
        self.con.execute("INSERT INTO lake.t SELECT * FROM batch")
        self.con.unregister("batch")

    def mark_version(self, label):
        self.marks[label] = self.con.execute("SELECT id FROM lake.current_snapshot()").fetchone()[0]

    def read_version(self, label):
        self._reattach()
        return to_arrow(self.con.sql(f"SELECT * FROM lake.t AT (VERSION => {self.marks[label]})"))

    def query(self, sql):
        self._reattach()
        return self.con.execute(sql.format(src="lake.t")).fetchall()

    def close(self):
        if self.con is not None:
            self.con.close()
            self.con = None


if __name__ == "__main__":
    sys.exit(main(DuckLake))
