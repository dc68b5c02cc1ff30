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
from .log import Log, open
from .stream import Ack, Stream

__all__ = [
    "Ack",
    "AlreadyExistsError",
    "CommitConflictError",
    "FencedError",
    "IntegrityError",
    "InvalidInputError",
    "Log",
    "LogClosedError",
    "MergeConflictError",
    "NotALogError",
    "NotFoundError",
    "SchemaMismatchError",
    "StorageError",
    "Stream",
    "StreamNotFoundError",
    "TransitError",
    "WriterBusyError",
    "open",
]

__version__ = "0.1.0"
