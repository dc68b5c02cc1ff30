"""Distributed engines over scan plans: a Dask DataFrame or a Ray Dataset of a replay.

Both are built from a `ScanPlan` (or a whole-log `LogScanPlan`), one partition (Dask) or read
task (Ray) per file span, so the engine reads each segment once, in parallel, on its workers.
A partition fetches its file from the log's store (a local folder, or S3 with the log's
credentials), verifies it against the plan's BLAKE3, reads only the stored offsets of its span
(and the row groups a filter can match), and shapes it exactly as `stream.read()` does
(`scanplan.read_file_span`). So `to_dask(...).compute()` and `to_ray(...)` hold the rows of
`stream.read()`; like a SQL view, they come in no guaranteed order: sort by `_offset` (and
`_branch`) for replay order.

Dask and Ray are extras (`pip install "transit-arrow[dask]"`, `"transit-arrow[ray]"`).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from ..engine.catalog import Catalog
from ..errors import InvalidInputError, MissingExtraError
from ..record import empty_table
from ..scanplan import (
    FileSpan,
    Filters,
    LogScanPlan,
    ScanPlan,
    fetcher,
    log_scan_plan,
    output_schema,
    prune,
    read_file_span,
)
from ..storage.memory import MemoryStore
from .snapshot import At, records_schema, take_snapshot

if TYPE_CHECKING:
    import dask.dataframe as dd
    import ray.data

__all__ = ["log_plan", "plan_filesystem", "to_dask", "to_ray"]

DtypeBackend = Literal["pyarrow", "numpy"]


def log_plan(catalog: Catalog, *, at: At = None) -> LogScanPlan:
    """Every readable stream's scan plan, with the schema of `transit_records` (this is
    `Log.scan_plan`); streams whose history cannot be read are listed in `errors`."""
    plans, broken = take_snapshot(catalog, at)
    return log_scan_plan(
        catalog.uri, plans, records_schema(plans), {n: str(e) for n, e in broken.items()}
    )


def plan_filesystem(catalog: Catalog) -> Any:
    """What partitions fetch files from: the log's store (picklable, so workers in other
    processes get it with its settings), or None for `memory://` logs, which only the process
    holding them can read (their URLs resolve there)."""
    store = catalog.store
    inner = getattr(store, "inner", store)
    return None if isinstance(inner, MemoryStore) else store


def _spans(
    plan: ScanPlan | LogScanPlan, filters: Filters | None
) -> list[tuple[FileSpan, str | None]]:
    """(span, branch) pairs to read, pruned by `filters`; branch is None for a stream plan."""
    if isinstance(plan, LogScanPlan):
        return [(s, p.stream) for p in plan.streams for s in prune(p.files, filters, p.stream)]
    return [(s, None) for s in prune(plan.files, filters)]


def _pandas(table: pa.Table, dtype_backend: DtypeBackend) -> Any:  # a pandas.DataFrame
    if dtype_backend == "pyarrow":
        pd = importlib.import_module("pandas")  # a dependency of dask.dataframe
        return table.to_pandas(types_mapper=pd.ArrowDtype)
    return table.to_pandas()


def dask_partition(
    span: FileSpan,
    branch: str | None,
    *,
    schema: pa.Schema,
    filesystem: Any,
    storage_options: dict[str, Any] | None,
    filters: Filters | None,
    dtype_backend: DtypeBackend,
    columns: list[str] | None = None,
) -> Any:
    """One Dask partition: a file span read, verified and shaped (runs on a worker)."""
    fetch = fetcher(filesystem, storage_options=storage_options)
    table = read_file_span(span, schema, fetch, columns=columns, filters=filters, branch=branch)
    return _pandas(table, dtype_backend)


def to_dask(
    plan: ScanPlan | LogScanPlan,
    *,
    filesystem: Any = None,
    storage_options: dict[str, Any] | None = None,
    columns: Sequence[str] | None = None,
    filters: Filters | None = None,
    dtype_backend: DtypeBackend = "pyarrow",
) -> dd.DataFrame:
    """A Dask DataFrame over a scan plan: one partition per file span.

    Args:
        plan: a stream's or the whole log's scan plan.
        filesystem: where partitions fetch files (see `scanplan.fetcher`); `Stream.to_dask`
            passes the log's store.
        storage_options: for `s3://` URLs when `filesystem` is None.
        columns: read only these columns (selecting columns of the result later is pushed
            into the partitions too).
        filters: DNF row filters (`[("x", ">", 3), ...]`): spans that cannot match are not
            scheduled, the rest push them into the Parquet scan, and the exact filter is
            applied after shaping.
        dtype_backend: "pyarrow" (default) keeps Arrow types exactly (`pd.ArrowDtype`, so
            `pa.Table.from_pandas` gives back the read schema); "numpy" is pandas' default
            conversion.

    Raises:
        MissingExtraError: dask is not installed.
        InvalidInputError: an unknown column or a malformed filter.
    """
    try:
        import dask.dataframe as dd
    except ImportError as e:
        raise MissingExtraError('to_dask needs dask: pip install "transit-arrow[dask]"') from e
    if dtype_backend not in ("pyarrow", "numpy"):
        raise InvalidInputError(
            f"dtype_backend must be 'pyarrow' or 'numpy', not {dtype_backend!r}"
        )
    out_schema = output_schema(plan.schema, columns, filters)
    selected = None if columns is None else list(columns)
    meta = _pandas(empty_table(out_schema), dtype_backend)
    pairs = _spans(plan, filters)
    if not pairs:
        empty: dd.DataFrame = dd.from_pandas(meta, npartitions=1)  # type: ignore[no-untyped-call]
        return empty
    kwargs = {
        "schema": plan.schema,
        "filesystem": filesystem,
        "storage_options": storage_options,
        "filters": filters,
        "dtype_backend": dtype_backend,
    }
    if selected is not None:
        kwargs["columns"] = selected
    frame: dd.DataFrame = dd.from_map(  # type: ignore[no-untyped-call]
        dask_partition,
        [s for s, _ in pairs],
        [b for _, b in pairs],
        meta=meta,
        label="transit-scan",
        enforce_metadata=False,
        **kwargs,
    )
    return frame


def to_ray(
    plan: ScanPlan | LogScanPlan,
    *,
    filesystem: Any = None,
    storage_options: dict[str, Any] | None = None,
    columns: Sequence[str] | None = None,
    filters: Filters | None = None,
) -> ray.data.Dataset:
    """A Ray Dataset over a scan plan: one read task (and block) per file span, run lazily on
    the cluster `ray.init()` connected to. Arguments as in `to_dask`.

    Raises:
        MissingExtraError: ray[data] is not installed.
    """
    try:
        import ray.data
        from ray.data.block import BlockMetadata
        from ray.data.datasource import Datasource, ReadTask
    except ImportError as e:
        raise MissingExtraError('to_ray needs ray[data]: pip install "transit-arrow[ray]"') from e
    schema = plan.schema
    out_schema = output_schema(schema, columns, filters)
    selected = None if columns is None else list(columns)
    pairs = _spans(plan, filters)

    def task(span: FileSpan, branch: str | None) -> Any:
        def read() -> list[pa.Table]:
            fetch = fetcher(filesystem, storage_options=storage_options)
            return [
                read_file_span(
                    span, schema, fetch, columns=selected, filters=filters, branch=branch
                )
            ]

        rows = span.read_last - span.read_first + 1
        meta = BlockMetadata(
            num_rows=None if filters else rows,
            size_bytes=span.bytes,
            exec_stats=None,
            input_files=(span.url,) if span.url else None,
        )
        return ReadTask(read, meta, schema=out_schema)

    class ScanPlanDatasource(Datasource):
        """The file spans of a scan plan as Ray read tasks."""

        def estimate_inmemory_data_size(self) -> int:
            return sum(s.bytes for s, _ in pairs)

        def get_read_tasks(
            self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
        ) -> list[ReadTask]:
            if not pairs:
                return [ReadTask(lambda: [empty_table(out_schema)], BlockMetadata(0, 0, None))]
            return [task(s, b) for s, b in pairs]

    dataset: ray.data.Dataset = ray.data.read_datasource(
        ScanPlanDatasource()  # type: ignore[no-untyped-call]
    )
    return dataset
