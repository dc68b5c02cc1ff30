"""`s3://bucket/prefix` backend through s3fs; commits use `If-None-Match: *` (put-if-absent).

Objects of at least `MULTIPART_BYTES` (large segments) are uploaded as a multipart upload of
`PART_BYTES` parts sent `PART_CONCURRENCY` at a time; smaller ones with one PUT. The store
counts the S3 requests it makes (`requests`), so benchmarks and tests can check how many a
seal or a cold read costs.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from ..errors import MissingExtraError
from .base import Bytes, ObjectInfo, ObjectStore

__all__ = ["MULTIPART_BYTES", "PART_BYTES", "PART_CONCURRENCY", "S3Store", "s3_options"]

#: Objects at least this large are uploaded in parts. Below it one PUT is faster: a multipart
#: upload costs two more requests, and S3-compatible servers such as moto assemble parts slowly
#: (a 64 MiB segment in 8 MiB parts took 3-4x as long as one PUT there, `bench_s3.py`).
MULTIPART_BYTES = 128 * 1024 * 1024
#: The size of each part (S3 needs at least 5 MiB for all but the last).
PART_BYTES = 32 * 1024 * 1024
#: Parts in flight at once.
PART_CONCURRENCY = 4

# Accepted spellings of storage options (deltalake/object_store style and s3fs style).
_ALIASES = {
    "endpoint_url": "endpoint_url",
    "endpoint": "endpoint_url",
    "aws_endpoint_url": "endpoint_url",
    "aws_endpoint": "endpoint_url",
    "key": "key",
    "access_key_id": "key",
    "aws_access_key_id": "key",
    "secret": "secret",
    "secret_access_key": "secret",
    "aws_secret_access_key": "secret",
    "token": "token",
    "session_token": "token",
    "aws_session_token": "token",
    "region": "region",
    "region_name": "region",
    "aws_region": "region",
    "anon": "anon",
    "allow_http": None,  # implied by an http:// endpoint
    "aws_allow_http": None,
}


def s3_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """Translate storage options into s3fs.S3FileSystem keyword arguments."""
    out: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
    client: dict[str, Any] = {}
    for raw_key, value in (options or {}).items():
        key = str(raw_key).lower()
        if key not in _ALIASES:
            known = ", ".join(sorted(k for k, v in _ALIASES.items() if v and k == v))
            raise ValueError(f"unknown S3 storage option {raw_key!r}; known options: {known}")
        target = _ALIASES[key]
        if target is None:
            continue
        if target == "region":
            client["region_name"] = value
        elif target == "anon":
            out["anon"] = (
                str(value).lower() in ("1", "true", "yes")
                if isinstance(value, str)
                else bool(value)
            )
        else:
            out[target] = value
    if client:
        out["client_kwargs"] = client
    return out


def _as_bytes(data: Bytes) -> bytes | bytearray:
    """`data` as a body botocore takes (`bytes` or `bytearray`), copied only if it is neither
    (a `memoryview`): a segment of 64 MiB costs a tenth of its upload time to copy."""
    return data if isinstance(data, bytes | bytearray) else bytes(data)


class S3Store(ObjectStore):
    """Objects under `s3://bucket/prefix`."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None) -> None:
        try:
            import s3fs
        except ImportError as e:  # pragma: no cover - depends on the install
            raise MissingExtraError('s3:// logs need s3fs: pip install "transit-arrow[s3]"') from e
        rest = uri[len("s3://") :].strip("/")
        if not rest:
            raise ValueError(f"{uri!r} names no bucket; use s3://bucket/prefix")
        self.uri = f"s3://{rest}"
        self.base = rest
        self.fs = s3fs.S3FileSystem(**s3_options(storage_options))
        #: S3 API calls made so far, by operation (`GetObject`, `PutObject`, ...); looking up
        #: a missing key may cost s3fs one more listing request.
        self.requests: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Picklable (Dask and Ray ship the store to their workers); the lock is not.
        state = dict(self.__dict__)
        del state["_count_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._count_lock = threading.Lock()

    def _count(self, operation: str, n: int = 1) -> None:
        with self._count_lock:
            self.requests[operation] += n

    def _full(self, path: str) -> str:
        path = path.strip("/")
        return f"{self.base}/{path}" if path else self.base

    def get(self, path: str) -> bytes:
        self._count("GetObject")
        # One GET: s3fs would first HEAD the object to decide whether to split the download.
        data: bytes = self.fs.cat_file(self._full(path), max_concurrency=1)
        return data

    def get_range(self, path: str, start: int, end: int) -> bytes:
        size = self.head(path).size
        end = min(end, size)
        if end <= start:
            return b""  # S3 answers 416 for ranges past the end; the contract says empty
        self._count("GetObject")
        data: bytes = self.fs.cat_file(self._full(path), start=start, end=end)
        return data

    def put(self, path: str, data: Bytes) -> None:
        body = _as_bytes(data)
        size = len(body)
        if size < MULTIPART_BYTES:
            self._count("PutObject")
            self.fs.pipe_file(self._full(path), body)
            return
        # s3fs sends parts of `chunksize` (only the last may be smaller, as S3 allows),
        # `max_concurrency` at a time, and aborts the upload on failure (no object appears).
        parts = -(-size // PART_BYTES)
        self._count("CreateMultipartUpload")
        self._count("UploadPart", parts)
        self._count("CompleteMultipartUpload")
        self.fs.pipe_file(
            self._full(path),
            body,
            chunksize=PART_BYTES,
            max_concurrency=PART_CONCURRENCY,
        )

    def put_if_absent(self, path: str, data: Bytes) -> None:
        # s3fs sends If-None-Match: * and raises FileExistsError on 412 Precondition Failed.
        self._count("PutObject")
        self.fs.pipe_file(self._full(path), _as_bytes(data), mode="create")

    def list(self, prefix: str) -> list[str]:
        folder = self._full(prefix)
        self._count("ListObjectsV2")
        try:
            entries = self.fs.ls(folder, detail=True, refresh=True)
        except FileNotFoundError:
            return []
        out = []
        for entry in entries:
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            if entry["name"].rstrip("/") == folder:
                continue
            out.append(name + "/" if entry["type"] == "directory" else name)
        return sorted(set(out))

    def head(self, path: str) -> ObjectInfo:
        self._count("HeadObject")
        info = self.fs.info(self._full(path), refresh=True)
        if info.get("type") == "directory":
            raise FileNotFoundError(path)
        modified = info.get("LastModified")
        stamp = modified.timestamp() if hasattr(modified, "timestamp") else None
        return ObjectInfo(path, int(info["size"]), stamp)

    def delete(self, path: str) -> None:
        self.head(path)  # S3 deletes of missing keys succeed; the contract says they fail
        self._count("DeleteObject")
        self.fs.rm_file(self._full(path))
