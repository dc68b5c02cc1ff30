"""The public API is exactly what `transit_arrow.__all__` lists (STYLE 2)."""

from __future__ import annotations

import transit_arrow as ta


def test_public_names_are_pinned() -> None:
    assert ta.__all__ == sorted(ta.__all__)
    assert ta.__all__ == [
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


def test_every_error_derives_from_transit_error() -> None:
    for name in ta.__all__:
        obj = getattr(ta, name)
        if name.endswith("Error"):
            assert issubclass(obj, ta.TransitError), name
    assert issubclass(ta.StreamNotFoundError, LookupError)


def test_public_names_have_docstrings() -> None:
    for name in ta.__all__:
        assert getattr(ta, name).__doc__, name
