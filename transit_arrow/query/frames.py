"""Polars over a whole log: every stream's replay in one LazyFrame (DESIGN §8)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..engine.catalog import Catalog
from ..engine.read import align_frame
from ..engine.replay import own_start
from ..record import empty_table
from .snapshot import At, records_schema, take_snapshot

if TYPE_CHECKING:
    import polars as pl

__all__ = ["scan_all"]


def scan_all(catalog: Catalog, *, at: At = None) -> pl.LazyFrame:
    """Every stream's replay in one LazyFrame with a `_branch` column (this is `Log.scan_all`).

    The frame has the columns of the SQL view `transit_records`: `_branch` (the stream whose
    replay a row belongs to), the system columns, then every stream's user columns (null where
    a stream lacks one). Each stream is `Stream.scan()`, so filters and projections still
    reach the Parquet files.

    Args:
        catalog: the log to scan.
        at: scan every stream as of this time (see `connect`).
    """
    import polars as pl

    plans, _ = take_snapshot(catalog, at)
    schema = records_schema(plans)
    target = pl.from_arrow(empty_table(schema))
    assert isinstance(target, pl.DataFrame)
    frames = [
        align_frame(
            p.scan().with_columns(
                pl.lit(p.name, pl.String).alias("_branch"),
                (pl.col("_offset") >= own_start(p.manifest)).alias("_own"),
            ),
            target,
        )
        for p in plans
    ]
    if not frames:
        return target.lazy()
    return pl.concat(frames, how="vertical")
