"""transit-arrow: a branchable, append-only, columnar log for analytics.

Open a log with `transit_arrow.open(uri)`; see README.md for a tour.
"""

from __future__ import annotations

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
    "open",
    "register_merge_resolver",
]

__version__ = "0.1.0"
