"""The abstract `store` fixture that the conformance suite runs against every backend (STYLE 9).

Adding a backend takes one entry in `BACKENDS`: a factory that builds a fresh, empty store for
one test, plus the marks its tests carry. S3 runs against the session-wide moto server
(`s3_endpoint` in tests/conftest.py: real HTTP on 127.0.0.1), one bucket per test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from transit_arrow.storage import LocalStore, MemoryStore, ObjectStore
from transit_arrow.storage.s3 import S3Store

StoreFactory = Callable[[pytest.FixtureRequest], ObjectStore]
"""Builds one fresh, empty store for the requesting test (cleanup via `request.addfinalizer`)."""


@dataclass(frozen=True)
class Backend:
    """How to build a store of one backend, and the pytest marks its tests carry."""

    factory: StoreFactory
    marks: tuple[pytest.MarkDecorator, ...] = ()


def _memory_store(request: pytest.FixtureRequest) -> ObjectStore:
    # A private instance, not `MemoryStore.named`, so tests never share state.
    return MemoryStore(f"memory://{request.node.nodeid}")


def _file_store(request: pytest.FixtureRequest) -> ObjectStore:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    return LocalStore(tmp_path / "store")


def _s3_store(request: pytest.FixtureRequest) -> ObjectStore:
    endpoint = request.getfixturevalue("s3_endpoint")
    return S3Store(f"s3://{endpoint.create_bucket()}/store", endpoint.storage_options)


BACKENDS: dict[str, Backend] = {
    "memory": Backend(_memory_store),
    "file": Backend(_file_store),
    "s3": Backend(_s3_store, marks=(pytest.mark.s3,)),
}


@pytest.fixture(params=[pytest.param(name, marks=b.marks) for name, b in BACKENDS.items()])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """A fresh, empty object store of each registered backend."""
    store = BACKENDS[request.param].factory(request)
    assert store.is_empty(), f"the {request.param!r} factory returned a non-empty store"
    return store
