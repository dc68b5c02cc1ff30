"""Reading a stream's replay: the API shared by live streams and time-travel views (DESIGN §8).

The facade over `engine.read.ReplayPlan`: each read method plans the replay (a live stream
now, a view at its generation) and delegates.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

import pyarrow as pa

from .engine.catalog import Catalog
from .engine.read import ReplayPlan, plan_at
from .manifest import Manifest
from .query import distributed
from .query.connection import to_duckdb
from .report.display import stream_html, summary_repr
from .scanplan import Filters, Heads, ScanPlan, scan_plan

if TYPE_CHECKING:
    import dask.dataframe as dd
    import polars as pl
    import ray.data
    from duckdb import DuckDBPyConnection, DuckDBPyRelation

__all__ = ["Readable", "StreamView"]


class Readable(abc.ABC):
    """Read methods over a stream's replay (plus unsealed heads, for live streams)."""

    catalog: Catalog
    name: str
    _past = False

    @abc.abstractmethod
    def _replay(self) -> ReplayPlan:
        """The replay plan as of now."""

    def _repr_html_(self) -> str:
        return stream_html(self)

    def _summary(self, kind: str) -> str:
        plan = self._replay()
        return summary_repr(
            kind,
            [
                ("name", self.name),
                ("next_offset", plan.next_offset),
                ("generation", plan.manifest.generation),
                ("root", plan.manifest.root),
            ],
        )

    @property
    def next_offset(self) -> int:
        """The offset after the last record (the next append's offset, for a live stream)."""
        return self._replay().next_offset

    @property
    def generation(self) -> int:
        """The generation this reads (the latest committed one, for a live stream)."""
        return self._replay().manifest.generation

    @property
    def root(self) -> str:
        """The commit root of `generation`."""
        return self._replay().manifest.root

    @property
    def schema(self) -> pa.Schema:
        """The schema of read results: system columns, then the user columns."""
        return self._replay().schema

    def commits(self) -> pa.Table:
        """The commit log through this generation, as an Arrow table (one row per commit)."""
        return self._replay().commits()

    def read(
        self, start: int | None = None, end: int | None = None, columns: list[str] | None = None
    ) -> pa.Table:
        """Read the replay's records with `start <= _offset < end` as one Arrow table.

        Reading past the end returns an empty table (with the stream's schema), not an error.
        """
        return self._replay().read(start, end, columns)

    def reader(
        self, start: int | None = None, end: int | None = None, columns: list[str] | None = None
    ) -> pa.RecordBatchReader:
        """Like `read`, as a `RecordBatchReader` holding about one row group in memory."""
        return self._replay().reader(start, end, columns)

    def to_duckdb(self, con: DuckDBPyConnection | None = None) -> DuckDBPyRelation:
        """This replay as a DuckDB relation (on `con`, or on the log's own connection)."""
        return to_duckdb(self._replay(), con, past=self._past)

    def scan(self) -> pl.LazyFrame:
        """The replay as a polars LazyFrame; filters and projections reach the Parquet files."""
        return self._replay().scan()

    # --- the replay as data (docs/scan_plan.md) --------------------------------------------

    def scan_plan(self, *, heads: Heads = "inline") -> ScanPlan:
        """The replay as data: its files, offset ranges, shifts and schema (`to_arrow()`,
        `to_json()`), for any engine to read exactly what `read()` returns.

        Args:
            heads: "inline" (default) carries unsealed records as Arrow IPC bytes in the plan;
                "exclude" plans committed records only; "seal" seals this process's unsealed
                records first, so the plan names segment files only.
        """
        if heads == "seal" and not self._past:
            self.catalog.flush(self.name)
        return scan_plan(self._replay(), heads=heads)

    def to_dask(
        self,
        *,
        columns: list[str] | None = None,
        filters: Filters | None = None,
        heads: Heads = "inline",
        dtype_backend: distributed.DtypeBackend = "pyarrow",
    ) -> dd.DataFrame:
        """The replay as a Dask DataFrame, one partition per file span of `scan_plan()`
        (`pip install "transit-arrow[dask]"`). Column selections and DNF `filters`
        (`[("x", ">", 3)]`) are pushed into the partitions; rows come in no set order (sort
        by `_offset`). Workers fetch segments from the log's store and verify each."""
        plan = self.scan_plan(heads=heads)
        return distributed.to_dask(
            plan,
            filesystem=distributed.plan_filesystem(self.catalog),
            columns=columns,
            filters=filters,
            dtype_backend=dtype_backend,
        )

    def to_ray(
        self,
        *,
        columns: list[str] | None = None,
        filters: Filters | None = None,
        heads: Heads = "inline",
    ) -> ray.data.Dataset:
        """The replay as a Ray Dataset, one read task per file span of `scan_plan()`
        (`pip install "transit-arrow[ray]"`); arguments as in `to_dask`."""
        plan = self.scan_plan(heads=heads)
        return distributed.to_ray(
            plan,
            filesystem=distributed.plan_filesystem(self.catalog),
            columns=columns,
            filters=filters,
        )


class StreamView(Readable):
    """A read-only view of a stream at one generation (from `Stream.at` / `Stream.as_of`).

    It has the read API of `Stream` (`read`, `reader`, `scan`, `commits`, `next_offset`,
    `schema`) and never changes, whatever is appended later.
    """

    _past = True

    def __init__(self, catalog: Catalog, name: str, manifest: Manifest) -> None:
        self.catalog = catalog
        self.name = name
        self.manifest = manifest

    def __repr__(self) -> str:
        return self._summary("StreamView")

    def _replay(self) -> ReplayPlan:
        return plan_at(self.catalog, self.name, self.manifest)
