"""Object storage behind one narrow contract, with backends chosen by URI scheme."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from .base import ObjectInfo, ObjectStore
from .local import LocalStore
from .memory import MemoryStore
from .s3 import S3Store

__all__ = [
    "LocalStore",
    "MemoryStore",
    "ObjectInfo",
    "ObjectStore",
    "S3Store",
    "store_from_uri",
]


def store_from_uri(
    uri: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> ObjectStore:
    """Return the backend for `uri`: a path or `file://` URI, `memory://name`, or `s3://...`.

    `storage_options` configure remote backends (for S3: endpoint, key, secret, region, ...).
    """
    text = os.fspath(uri)
    if text.startswith("s3://"):
        return S3Store(text, storage_options)
    if storage_options:
        raise ValueError(f"storage_options are only used by s3:// URIs, not {text!r}")
    if text.startswith("memory://"):
        return MemoryStore.named(text[len("memory://") :].strip("/"))
    if text.startswith("file://"):
        return LocalStore(Path(unquote(urlparse(text).path)))
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise ValueError(
            f"unsupported URI scheme {scheme!r} in {text!r}; use a path, file://, memory:// "
            "or s3://"
        )
    return LocalStore(Path(text))
