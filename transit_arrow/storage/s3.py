"""`s3://bucket/prefix` backend through s3fs; commits use `If-None-Match: *` (put-if-absent).

Objects of at least `MULTIPART_BYTES` (large segments) are uploaded as a multipart upload of
`PART_BYTES` parts sent `PART_CONCURRENCY` at a time; smaller ones with one PUT. Bodies of
`ZERO_COPY_BYTES` or more are sent from the caller's buffer in place (`RequestBody`). The store
counts the S3 requests it makes (`requests`), so benchmarks and tests can check how many a
seal or a cold read costs.
"""

from __future__ import annotations

import io
import threading
from collections import Counter
from typing import Any

from ..errors import MissingExtraError
from .base import Bytes, ObjectInfo, ObjectStore

__all__ = [
    "MULTIPART_BYTES",
    "PART_BYTES",
    "PART_CONCURRENCY",
    "ZERO_COPY_BYTES",
    "RequestBody",
    "S3Store",
    "s3_options",
]

#: Objects at least this large are uploaded in parts. Below it one PUT is faster: a multipart
#: upload costs two more requests, and S3-compatible servers such as moto assemble parts slowly
#: (a 64 MiB segment in 8 MiB parts took 3-4x as long as one PUT there, `bench_s3.py`).
MULTIPART_BYTES = 128 * 1024 * 1024
#: The size of each part (S3 needs at least 5 MiB for all but the last).
PART_BYTES = 32 * 1024 * 1024
#: Parts in flight at once.
PART_CONCURRENCY = 4
#: PUT and part bodies at least this large are read in place (`RequestBody`), not copied.
ZERO_COPY_BYTES = 1024 * 1024

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


class RequestBody(io.BytesIO):
    """A request body that reads `data` (bytes, a bytearray, a memoryview) in place.

    botocore wraps a `bytes` body in an `io.BytesIO`, which shares the bytes until aiohttp asks
    for its buffer to learn its size: that un-shares it, a copy of the whole body into fresh
    memory (44 ms of copying and page faults for 64 MiB on this project's machines, a tenth of
    the upload to a local S3 server); a `bytearray` body is copied twice by aiohttp and asyncio.
    This object gives aiohttp its size and botocore and aiohttp their chunks straight from
    `data`. A new one is made for every request (`_read_in_place`, a botocore hook), so a
    request retried by s3fs starts from the first byte again. Read-only.
    """

    def __init__(self, data: Bytes) -> None:
        super().__init__()
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def __len__(self) -> int:
        return self._view.nbytes

    def getbuffer(self) -> memoryview:
        # A view of its own: callers release what they get (`with body.getbuffer() as b:`).
        return self._view[:]

    def getvalue(self) -> bytes:
        return self._view.tobytes()

    def read(self, size: int | None = -1, /) -> bytes:
        end = self._view.nbytes if size is None or size < 0 else self._pos + size
        chunk = self._view[self._pos : end].tobytes()
        self._pos += len(chunk)
        return chunk

    read1 = read

    def readinto(self, buffer: Any, /) -> int:
        target = memoryview(buffer).cast("B")
        n = min(target.nbytes, self._view.nbytes - self._pos)
        target[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n

    readinto1 = readinto

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._view.nbytes}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def write(self, data: Any, /) -> int:
        raise io.UnsupportedOperation("a request body is read-only")

    def truncate(self, size: int | None = None, /) -> int:
        raise io.UnsupportedOperation("a request body is read-only")


def _read_in_place(params: dict[str, Any], **_: Any) -> None:
    """botocore `before-parameter-build` hook of PutObject and UploadPart: a large `bytes` or
    `bytearray` body becomes a `RequestBody` over it (runs before botocore's own conversion
    of `bytes` into a copying `io.BytesIO`, which then leaves it alone)."""
    body = params.get("Body")
    if isinstance(body, bytes | bytearray | memoryview) and len(body) >= ZERO_COPY_BYTES:
        params["Body"] = RequestBody(body)


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

    def _client(self) -> None:
        """Make sure this store's botocore client reads large bodies in place (once per
        client: s3fs may make a new one)."""
        events = self.fs.s3.meta.events
        for operation in ("PutObject", "UploadPart"):
            events.register(
                f"before-parameter-build.s3.{operation}",
                _read_in_place,
                unique_id=f"transit-arrow-read-in-place-{operation}",
            )

    def put(self, path: str, data: Bytes) -> None:
        body = _as_bytes(data)
        size = len(body)
        self._client()
        if size < MULTIPART_BYTES:
            self._count("PutObject")
            # One PUT below MULTIPART_BYTES (s3fs would split anything of 2 chunks or more).
            self.fs.pipe_file(self._full(path), body, chunksize=MULTIPART_BYTES)
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
        self._client()
        self.fs.pipe_file(
            self._full(path), _as_bytes(data), mode="create", chunksize=MULTIPART_BYTES
        )

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
