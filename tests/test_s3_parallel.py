"""Parallel object storage: cold reads and `hydrate` fetch segments with a bounded pool,
each segment once and verified; large segments upload in parts; the S3 store counts its
requests (2 per seal, one GET per segment on a cold read).

The store under test is the real S3 store on the moto server, wrapped by `InFlight`, which
forwards every call and records how many segment fetches run at once (a short pause in each
fetch makes overlap observable on a loaded machine).
"""

from __future__ import annotations

import pickle
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import pyarrow as pa
import pytest

import transit_arrow as ta
import transit_arrow.storage.s3 as s3_module
from transit_arrow.errors import IntegrityError
from transit_arrow.segments.prefetch import DEFAULT_WORKERS
from transit_arrow.storage import LocalStore, MemoryStore, ObjectInfo, ObjectStore, S3Store
from transit_arrow.storage.base import Bytes
from transit_arrow.storage.guarded import guarded

pytestmark = pytest.mark.s3


@pytest.fixture
def s3_client(s3_endpoint: Any) -> Any:
    """A boto3 client of the moto server, independent of the engine's s3fs."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


class InFlight(ObjectStore):
    """Forwards to `inner`; counts GETs of `kind` (segments) per path and the most running at
    once."""

    def __init__(self, inner: ObjectStore, pause: float = 0.05, kind: str = "/segments/") -> None:
        self.inner = inner
        self.kind = kind
        self.uri = inner.uri
        self.pause = pause
        self.gets: dict[str, int] = {}
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def get(self, path: str) -> bytes:
        if self.kind not in path:
            return self.inner.get(path)
        with self.lock:
            self.gets[path] = self.gets.get(path, 0) + 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.pause)
            return self.inner.get(path)
        finally:
            with self.lock:
                self.running -= 1

    def get_range(self, path: str, start: int, end: int) -> bytes:
        return self.inner.get_range(path, start, end)

    def put(self, path: str, data: Bytes) -> None:
        self.inner.put(path, data)

    def put_if_absent(self, path: str, data: Bytes) -> None:
        self.inner.put_if_absent(path, data)

    def list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)

    def head(self, path: str) -> ObjectInfo:
        return self.inner.head(path)

    def delete(self, path: str) -> None:
        self.inner.delete(path)


def rows(start: int, n: int) -> list[dict[str, Any]]:
    return [{"seq": i, "v": f"r{i}" * 10} for i in range(start, start + n)]


def write_branchy(uri: str, options: dict[str, Any], local: Path) -> int:
    """`main` (12 segments of 10) and `b`, a branch at main@54 with 3 segments of its own.
    Returns the number of segments b's replay reads."""
    with ta.open(uri, storage_options=options, local_dir=local) as log:
        main = log.create_stream("main")
        for k in range(12):
            main.append(rows(10 * k, 10))
            main.flush()
        b = log.branch("b", at="main@54")
        for k in range(3):
            b.append(rows(1000 + 10 * k, 10))
            b.flush()
    return 6 + 3


def test_cold_read_fetches_segments_in_parallel_once_each(
    s3_uri: str, s3_endpoint: Any, tmp_path: Path
) -> None:
    options = s3_endpoint.storage_options
    needed = write_branchy(s3_uri, options, tmp_path / "writer")
    with ta.open(s3_uri, storage_options=options, local_dir=tmp_path / "w2") as log:
        expected = log.stream("b").read()
    probe = InFlight(S3Store(s3_uri, options))
    with ta.open(probe, local_dir=tmp_path / "cold") as log:
        got = log.stream("b").read()
    assert got.equals(expected)
    assert len(probe.gets) == needed and set(probe.gets.values()) == {1}
    assert 2 <= probe.most <= DEFAULT_WORKERS + 1  # the pool, and the reader itself


def test_a_point_read_fetches_only_its_segment(
    s3_uri: str, s3_endpoint: Any, tmp_path: Path
) -> None:
    options = s3_endpoint.storage_options
    write_branchy(s3_uri, options, tmp_path / "writer")
    probe = InFlight(S3Store(s3_uri, options))
    with ta.open(probe, local_dir=tmp_path / "cold") as log:
        table = log.stream("b").read(start=23, end=25)
    assert table["seq"].to_pylist() == [23, 24]
    assert list(probe.gets) == [p for p in probe.gets if "00000000000000000020-" in p]


def test_hydrate_uses_a_bounded_pool_and_shows_progress(
    s3_uri: str, s3_endpoint: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = s3_endpoint.storage_options
    write_branchy(s3_uri, options, tmp_path / "writer")
    probe = InFlight(S3Store(s3_uri, options))
    with ta.open(probe, local_dir=tmp_path / "cold") as log:
        report = log.hydrate(progress=True)
        assert report.segments == report.fetched == 15  # main's 12 and b's 3
        assert 2 <= probe.most <= DEFAULT_WORKERS
        assert set(probe.gets.values()) == {1}
        again = log.hydrate()
        assert again.fetched == 0
        before = dict(probe.gets)
        log.stream("b").read()  # served from the cache: no fetch
        assert probe.gets == before
    assert "hydrate" in capsys.readouterr().err


def test_a_corrupt_segment_fails_the_cold_read_and_is_not_cached(
    s3_uri: str, s3_endpoint: Any, s3_client: Any, tmp_path: Path
) -> None:
    options = s3_endpoint.storage_options
    write_branchy(s3_uri, options, tmp_path / "writer")
    bucket, prefix = s3_uri[len("s3://") :].split("/", 1)
    listing = s3_client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/streams/main/segments/")
    victim = sorted(o["Key"] for o in listing["Contents"])[3]
    s3_client.put_object(Bucket=bucket, Key=victim, Body=b"not the segment")
    with (
        ta.open(s3_uri, storage_options=options, local_dir=tmp_path / "cold") as log,
        pytest.raises(IntegrityError, match="does not match its commit"),
    ):
        log.stream("b").read()
    cached = [p.name for p in (tmp_path / "cold" / "cache").rglob("*.parquet")]
    assert victim.rsplit("/", 1)[-1] not in cached


def test_a_small_cache_budget_still_serves_a_parallel_cold_read(
    s3_uri: str, s3_endpoint: Any, tmp_path: Path
) -> None:
    options = s3_endpoint.storage_options
    write_branchy(s3_uri, options, tmp_path / "writer")
    with ta.open(s3_uri, storage_options=options, local_dir=tmp_path / "w2") as log:
        expected = log.stream("b").read()
        one = max(s.bytes for s in log.stream("b").scan_plan().files)
    with ta.open(
        s3_uri, storage_options=options, local_dir=tmp_path / "cold", cache_max_bytes=3 * one
    ) as log:
        assert log.stream("b").read().equals(expected)
        cached = sum(p.stat().st_size for p in (tmp_path / "cold" / "cache").rglob("*.parquet"))
        assert cached <= 4 * one


def without_lease_checks(counts: Counter[str]) -> Counter[str]:
    """The requests of a seal, without the listing of the lease folder that the writer's
    background check makes at most once a second (DESIGN §5), whenever it falls."""
    return Counter({k: v for k, v in counts.items() if k != "ListObjectsV2"})


def incompressible(nbytes: int) -> pa.Table:
    rng = np.random.default_rng(7)
    blobs = [rng.bytes(4096) for _ in range(nbytes // 4096)]
    return pa.table({"i": pa.array(range(len(blobs)), pa.int64()), "blob": blobs})


def test_large_segments_upload_in_parts(
    s3_uri: str, s3_endpoint: Any, s3_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_module, "MULTIPART_BYTES", 8 * 1024 * 1024)
    monkeypatch.setattr(s3_module, "PART_BYTES", 5 * 1024 * 1024)
    options = s3_endpoint.storage_options
    table = incompressible(12 * 1024 * 1024)
    with ta.open(s3_uri, storage_options=options, local_dir=tmp_path / "w") as log:
        stream = log.create_stream("big")
        stream.append(table)
        store = log.store.inner  # type: ignore[attr-defined]
        before = store.requests.copy()
        stream.flush()
        made = without_lease_checks(store.requests - before)
        (seg,) = log.catalog.manifest("big").segments
    assert seg.bytes > 10 * 1024 * 1024
    parts = -(-seg.bytes // (5 * 1024 * 1024))
    assert made == {
        "CreateMultipartUpload": 1,
        "UploadPart": parts,
        "CompleteMultipartUpload": 1,
        "PutObject": 1,  # the commit
    }
    bucket, prefix = s3_uri[len("s3://") :].split("/", 1)
    body = s3_client.get_object(Bucket=bucket, Key=f"{prefix}/{seg.path}")["Body"].read()
    assert blake3.blake3(body).hexdigest() == seg.blake3
    with ta.open(s3_uri, storage_options=options, local_dir=tmp_path / "cold") as log:
        got = log.stream("big").read(columns=["i", "blob"])
    assert got.equals(table)


def test_a_seal_costs_two_requests_and_a_cold_read_one_get_per_segment(
    s3_uri: str, s3_endpoint: Any, tmp_path: Path
) -> None:
    options = s3_endpoint.storage_options
    with ta.open(s3_uri, storage_options=options, local_dir=tmp_path / "w") as log:
        stream = log.create_stream("s")
        stream.append(rows(0, 10))
        stream.flush()
        store = log.store.inner  # type: ignore[attr-defined]
        for k in range(1, 4):
            stream.append(rows(10 * k, 10))
            before = store.requests.copy()
            stream.flush()
            made = without_lease_checks(store.requests - before)
            assert made == {"PutObject": 2}  # segment + commit
    with ta.open(s3_uri, storage_options=options, local_dir=tmp_path / "cold") as log:
        store = log.store.inner  # type: ignore[attr-defined]
        opened = store.requests.copy()
        stream = log.stream("s")
        listed = store.requests.copy()
        assert stream.read().num_rows == 40
        read = store.requests - listed
    # The four segments, one GET each (no HEAD before a GET); besides them only a look at the
    # commit log (is there a newer generation? a GET of the next commit, which is missing).
    assert read == {"GetObject": 5}, read
    assert opened["GetObject"] >= 1  # the format marker


def test_the_s3_store_pickles_for_workers(s3_uri: str, s3_endpoint: Any) -> None:
    store = S3Store(s3_uri, s3_endpoint.storage_options)
    store.put("a/b", b"hello")
    again = pickle.loads(pickle.dumps(store))
    assert again.get("a/b") == b"hello"
    assert again.requests["PutObject"] == 1 and again.requests["GetObject"] == 1


def test_a_cold_open_fetches_a_parents_commits_at_once_and_still_checks_them(
    s3_uri: str, s3_endpoint: Any, s3_client: Any, tmp_path: Path
) -> None:
    options = s3_endpoint.storage_options
    write_branchy(s3_uri, options, tmp_path / "writer")
    with ta.open(s3_uri, storage_options=options, local_dir=tmp_path / "w2") as log:
        expected = log.stream("b").read()
    probe = InFlight(S3Store(s3_uri, options), kind="/commits/")
    with ta.open(probe, local_dir=tmp_path / "cold") as log:
        assert log.stream("b").read().equals(expected)
    main_commits = [p for p in probe.gets if p.startswith("streams/main/")]
    assert len(main_commits) >= 6  # b's parent, folded through main@54's generation
    assert all(n == 1 for p, n in probe.gets.items() if p in main_commits)
    assert probe.most >= 2  # fetched at once, not one after another
    # A prefetched commit is checked as a fetched one is: damage is found and named.
    bucket, prefix = s3_uri[len("s3://") :].split("/", 1)
    key = f"{prefix}/{sorted(main_commits)[2]}"
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    at = body.index(b'"time":"') + len(b'"time":"')  # a year of the commit's time, changed
    s3_client.put_object(Bucket=bucket, Key=key, Body=body[:at] + b"1" + body[at + 1 :])
    with (
        ta.open(probe, local_dir=tmp_path / "cold2") as log,
        pytest.raises(IntegrityError, match="00000000000000000002"),
    ):
        log.stream("b").read()


def test_only_remote_stores_fetch_commits_at_once(tmp_path: Path) -> None:
    assert not LocalStore(tmp_path).remote and not MemoryStore().remote
    assert not guarded(MemoryStore()).remote
    assert InFlight(MemoryStore()).remote  # a store this package does not know: remote


def test_a_request_body_reads_its_buffer_in_place() -> None:
    data = bytearray(range(256)) * 16
    body = s3_module.RequestBody(data)
    assert len(body) == 4096 and body.tell() == 0
    assert body.read(10) == bytes(range(10)) and body.tell() == 10
    with body.getbuffer() as view:  # aiohttp learns the size this way, then releases it
        assert view.nbytes == 4096
    target = bytearray(6)
    assert body.readinto(target) == 6 and bytes(target) == bytes(range(10, 16))
    assert body.seek(-4, 2) == 4092 and body.read() == bytes(range(252, 256))
    assert body.read(5) == b""
    assert body.seek(0) == 0 and body.read() == bytes(data)
    with pytest.raises(ValueError, match="negative"):
        body.seek(-1)
    with pytest.raises(OSError, match="read-only"):
        body.write(b"x")
    assert body.getvalue() == bytes(data)


def test_each_request_gets_a_new_body_from_the_first_byte() -> None:
    # The botocore hook runs once per API call, on the caller's parameters: a call s3fs
    # retries starts again from a new body at offset 0, whatever the failed one had read.
    payload = bytes(2 * s3_module.ZERO_COPY_BYTES)
    params: dict[str, Any] = {"Body": payload}
    s3_module._read_in_place(params)
    first = params["Body"]
    assert isinstance(first, s3_module.RequestBody)
    first.read(1000)
    again: dict[str, Any] = {"Body": payload}
    s3_module._read_in_place(again)
    assert again["Body"] is not first and again["Body"].tell() == 0
    small: dict[str, Any] = {"Body": b"tiny"}
    s3_module._read_in_place(small)
    assert small["Body"] == b"tiny"  # below ZERO_COPY_BYTES botocore's own path is as fast


def test_large_puts_are_sent_in_place_and_arrive_whole(
    s3_uri: str, s3_endpoint: Any, s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies: list[type] = []
    original = s3_module._read_in_place

    def spy(params: dict[str, Any], **kwargs: Any) -> None:
        original(params, **kwargs)
        bodies.append(type(params["Body"]))

    monkeypatch.setattr(s3_module, "_read_in_place", spy)
    store = S3Store(s3_uri, s3_endpoint.storage_options)
    rng = np.random.default_rng(3)
    big = rng.bytes(3 * 1024 * 1024 + 17)
    bucket, prefix = s3_uri[len("s3://") :].split("/", 1)
    for name, data in (("bytes", big), ("bytearray", bytearray(big))):
        store.put(f"in-place/{name}", data)
        sent = s3_client.get_object(Bucket=bucket, Key=f"{prefix}/in-place/{name}")
        assert sent["Body"].read() == big
    store.put_if_absent("in-place/once", big)
    with pytest.raises(FileExistsError):
        store.put_if_absent("in-place/once", big)
    assert store.get("in-place/once") == big
    assert bodies.count(s3_module.RequestBody) == 4
    assert store.requests["PutObject"] == 4
    assert "CreateMultipartUpload" not in store.requests


def test_large_s3_seals_are_encoded_into_a_reused_buffer(
    s3_uri: str, s3_endpoint: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The upload reads the pooled buffer in place, so an S3 seal saves faulting in a new one;
    # the buffer is lent again only after the upload let go of it.
    from transit_arrow.segments import arena

    pool = arena.ArenaPool()
    monkeypatch.setattr(arena, "pool", pool)
    options = s3_endpoint.storage_options
    first, second = incompressible(20 * 1024 * 1024), incompressible(18 * 1024 * 1024)
    with ta.open(s3_uri, storage_options=options, local_dir=tmp_path / "w") as log:
        stream = log.create_stream("big")
        for table in (first, second):
            stream.append(table)
            stream.flush()
            assert len(pool) == 1  # the second seal reused the first one's buffer
        segments = log.catalog.manifest("big").segments
    assert len(segments) == 2
    with ta.open(s3_uri, storage_options=options, local_dir=tmp_path / "cold") as log:
        got = log.stream("big").read(columns=["i", "blob"])
        assert log.verify("big", deep=True).ok
    assert got.equals(pa.concat_tables([first, second]))
