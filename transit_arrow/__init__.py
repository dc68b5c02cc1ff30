"""transit-arrow: a branchable, append-only, columnar log for analytics.

Open a log with `transit_arrow.open(uri)`; see README.md for a tour.
"""

from __future__ import annotations

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
