"""The transit-arrow error tree: every error the library raises derives from `TransitError`."""

from __future__ import annotations

__all__ = [
    "AlreadyExistsError",
    "CommitConflictError",
    "FencedError",
    "IntegrityError",
    "InvalidInputError",
    "LogClosedError",
    "MergeConflictError",
    "MissingExtraError",
    "NotALogError",
    "NotFoundError",
    "SchemaMismatchError",
    "StorageError",
    "StreamNotFoundError",
    "TransitError",
    "WriterBusyError",
]


class TransitError(Exception):
    """Base class of every error raised by transit-arrow."""


class InvalidInputError(TransitError, ValueError):
    """An argument or a record is not acceptable (bad name, reserved column, unknown type)."""


class NotFoundError(TransitError, LookupError):
    """Something that was asked for does not exist."""


class StreamNotFoundError(NotFoundError):
    """The named stream does not exist in the log."""


class NotALogError(NotFoundError):
    """The URI points at something that is not a transit-arrow log."""


class AlreadyExistsError(TransitError):
    """An object that must be new already exists (a stream name, for instance)."""


class CommitConflictError(TransitError):
    """Another writer created the commit this writer tried to create."""


class FencedError(TransitError):
    """This writer lost its lease to another writer; its local head is kept on disk."""


class WriterBusyError(TransitError):
    """Another live writer holds the stream's writer lease."""


class MergeConflictError(TransitError):
    """A merge cannot be made as asked (the message says why)."""


class SchemaMismatchError(TransitError):
    """Appended data is not compatible with the stream's schema; nothing was changed."""


class IntegrityError(TransitError):
    """Verification failed: a file's content does not match the hash that commits record."""


class StorageError(TransitError, OSError):
    """The object store (or a local file) failed; the backend's exception is the `__cause__`.

    It is also an `OSError`, so code that handles I/O failures generically handles it too.
    """


class LogClosedError(TransitError):
    """The log or stream handle was closed."""


class MissingExtraError(TransitError, ImportError):
    """An optional integration is used without its extra installed; the message names the
    `pip install "transit-arrow[extra]"` command."""
