"""transit-arrow on the peers' workloads (W1-W5 of `common.py`), through its public API.

Derived from the hook of the team's harness (shared/peers-bench/bench_transit_arrow.py); the
calls, all documented in the README:

    log = ta.open(dir)                                  # defaults: durability "local", ...
    s = log.create_stream("t")
    s.append(batch, durability="tiered")               # W1/W2: one append = one commit, acked
                                                        # once its segment is committed
    log.branch("b", at=f"t@{n - 1}")                    # W3: fork at the head, O(1)
    log.stream("b").append(extra, durability="tiered")
    log.stream("b").read()                              #     full read of the branch
    ta.open(dir).stream("t").at(generation=g).read()    # W4: fresh handle, time travel
    ta.open(dir).sql(QUERY)                             # W5: fresh handle, DuckDB

`durability="tiered"` is what a peer's commit is: the call returns once the records are in a
sealed, committed segment (peers acknowledge a commit the same way). No option of `ta.open` is
changed from its default.
"""

import sys
from pathlib import Path

import pyarrow as pa
from common import Peer, Skip, main


class TransitArrow(Peer):
    name = "transit_arrow"
    has_branches = True
    notes = [  # noqa: RUF012 - the harness reads it as a class attribute
        "public API, ta.open defaults; each commit is append(batch, durability='tiered') "
        "(acknowledged once its Parquet segment is committed)",
        "W3 = log.branch at the head + tiered append + read(); W4 and W5 open a fresh Log "
        "(inside the timing), like the peers' fresh handles",
    ]

    def __init__(self):
        try:
            import transit_arrow as ta
        except ImportError as e:
            raise Skip(f"transit_arrow is not importable ({e})") from None
        self.ta = ta

    def versions(self):
        from importlib.metadata import version

        import duckdb

        return {"transit_arrow": version("transit-arrow"), "duckdb": duckdb.__version__}

    def setup(self, root: Path):
        self.root = root
        self.log = self.ta.open(str(root / "log"))
        self.s = self.log.create_stream("t")
        self.n = 0
        self.marks = {}

    def commit(self, tbl: pa.Table):
        ack = self.s.append(tbl, durability="tiered")
        self.n = ack.last_offset + 1

    def mark_version(self, label):
        self.marks[label] = self.s.commits().column("generation")[-1].as_py()

    def create_branch(self, name):
        self.log.branch(name, at=f"t@{self.n - 1}")

    def branch_append(self, name, tbl):
        self.log.stream(name).append(tbl, durability="tiered")

    def branch_read(self, name):
        return self.log.stream(name).read()

    def read_version(self, label):
        with self.ta.open(str(self.root / "log")) as fresh:
            return fresh.stream("t").at(generation=self.marks[label]).read()

    def query(self, sql):
        with self.ta.open(str(self.root / "log")) as fresh:
            return fresh.sql(sql.format(src='"t"')).fetchall()

    def close(self):
        log = getattr(self, "log", None)
        if log is not None:
            log.close()
            self.log = None


if __name__ == "__main__":
    sys.exit(main(TransitArrow))
