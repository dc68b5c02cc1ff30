"""transit-arrow: a branchable, append-only, columnar log for analytics.

Open a log with `transit_arrow.open(uri)`; see README.md for a tour.
"""

from __future__ import annotations

import os
import sys

import pyarrow as pa

from .client import connect
from .errors import (
    AlreadyExistsError,
    CommitConflictError,
    FencedError,
    IntegrityError,
    InvalidInputError,
    LogClosedError,
    MergeConflictError,
    NotALogError,
    NotFoundError,
    SchemaMismatchError,
    StorageError,
    StreamNotFoundError,
    TransitError,
    WriterBusyError,
)
from .integrity import Checkpoint, VerifyEntry, VerifyReport
from .log import Log, open
from .materialize import Materialization, RefreshReport
from .merge import MergeResolver, register_merge_resolver
from .query import QueryError
from .report import register_ipython_formatters
from .report.display import checkpoint_html, materialization_html, refresh_html, verify_html
from .stream import Ack, Stream
from .view import StreamView

__all__ = [
    "Ack",
    "AlreadyExistsError",
    "Checkpoint",
    "CommitConflictError",
    "FencedError",
    "IntegrityError",
    "InvalidInputError",
    "Log",
    "LogClosedError",
    "Materialization",
    "MergeConflictError",
    "MergeResolver",
    "NotALogError",
    "NotFoundError",
    "QueryError",
    "RefreshReport",
    "SchemaMismatchError",
    "StorageError",
    "Stream",
    "StreamNotFoundError",
    "StreamView",
    "TransitError",
    "VerifyEntry",
    "VerifyReport",
    "WriterBusyError",
    "connect",
    "open",
    "register_merge_resolver",
]

__version__ = "0.1.0"

# In IPython/Jupyter: lineage tables as pictures, and these lower-layer objects as HTML cards
# (outside IPython this does nothing).
register_ipython_formatters(
    renderers={
        VerifyReport: verify_html,
        Checkpoint: checkpoint_html,
        Materialization: materialization_html,
        RefreshReport: refresh_html,
    }
)


def _use_a_memory_pool_without_huge_page_churn() -> None:
    """Make jemalloc (else the system allocator) pyarrow's default pool on Linux.

    pyarrow's default there, mimalloc, returns freed memory to the kernel and faults it back
    in transparent huge pages, which the kernel zeroes 2 MiB at a time: reading a 2.5 M-record
    branch in a process that had just written it spent 7 s of kernel time zeroing pages
    (`perf`: `clear_page_erms` under `do_huge_pmd_anonymous_page`), against 1.2 s in all with
    jemalloc or the system allocator. When `ARROW_DEFAULT_MEMORY_POOL` (pyarrow's own
    setting, e.g. `mimalloc`) is set, it decides and nothing is changed.
    """
    if sys.platform != "linux" or os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    if pa.default_memory_pool().backend_name != "mimalloc":
        return
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without jemalloc
        pool = pa.system_memory_pool()
    pa.set_memory_pool(pool)


_use_a_memory_pool_without_huge_page_churn()
