"""Remote roots (DESIGN §3-5, docs/format.md "Local cache"), and the engine's main scenarios on
every backend.

The scenarios (append/flush/reopen, branches, a concat merge, deep verification) run on
`memory://`, a local folder and `s3://` on the moto server. The S3 tests check, with a
separate boto3 client, that a `tiered` ack means the commit is in the bucket; that a machine
with an empty local dir reads every stream and branch, fetching only the segments a read needs
and verifying each (an overwritten object raises `IntegrityError` and is never cached); that
`hydrate()` fetches everything eagerly; and that a tiny cache budget still serves reads while
the cache folder stays within the budget plus one file.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import transit_arrow as ta

Opener = Callable[..., ta.Log]


def rows(seqs: range, tag: str = "r") -> list[dict[str, Any]]:
    """Records with a `seq` and a payload derived from it."""
    return [{"seq": i, "v": f"{tag}{i}" * 20} for i in seqs]


def triples(table: pa.Table) -> list[tuple[str, int, int]]:
    """(origin stream, offset, seq) per record; merged records count their `_origin_stream`."""
    origin = table.column("_stream").to_pylist()
    if "_origin_stream" in table.column_names:
        merged = table.column("_origin_stream").to_pylist()
        origin = [m if m is not None else s for m, s in zip(merged, origin, strict=True)]
    offsets = table.column("_offset").to_pylist()
    return list(zip(origin, offsets, table.column("seq").to_pylist(), strict=True))


def everything(log: ta.Log) -> dict[str, list[tuple[str, int, int]]]:
    """Every stream's replay."""
    return {n: triples(log.stream(n).read()) for n in log.streams().column("name").to_pylist()}


def cache_files(log: ta.Log) -> dict[str, int]:
    """Files in the log's local segment cache, with their sizes."""
    folder = log.local_dir / "cache"
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(params=["memory", "file", pytest.param("s3", marks=pytest.mark.s3)])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens one fresh root of each backend: `opener(local_dir_name, **options)`."""
    if request.param == "memory":
        uri, storage = f"memory://s3-tests-{uuid.uuid4().hex}", None
    elif request.param == "file":
        uri, storage = str(tmp_path / "root"), None
    else:
        uri, storage = request.getfixturevalue("s3_uri"), None
        storage = request.getfixturevalue("s3_endpoint").storage_options

    def open_log(local: str, **options: Any) -> ta.Log:
        return ta.open(uri, storage_options=storage, local_dir=tmp_path / local, **options)

    return open_log


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


def _bucket_key(uri: str, path: str) -> tuple[str, str]:
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    return bucket, f"{prefix}/{path}"


# --- the engine's scenarios on every backend ------------------------------------------------


def test_append_flush_reopen_read(opener: Opener) -> None:
    """Records appended in every durability, sealed by flush, limits and close, read back the
    same after reopening with the same local dir and with an empty one."""
    with opener("a", segment_max_records=25) as log:
        s = log.create_stream("main")
        assert s.append(rows(range(0, 10))) == ta.Ack(0, 9, "local")
        s.flush()
        s.append(pa.Table.from_pylist(rows(range(10, 60))), durability="memory")
        assert s.append(rows(range(60, 62)), durability="tiered") == ta.Ack(60, 61, "tiered")
        s.append(rows(range(62, 70)))  # left in the head until close
        written = s.read()
        assert written.column("seq").to_pylist() == list(range(70))
    with opener("a") as log:
        again = log.stream("main").read()
        assert again.equals(written)
        assert log.stream("main").read(start=20, end=30).column("seq").to_pylist() == list(
            range(20, 30)
        )
    with opener("fresh") as log:
        assert log.stream("main").read().equals(written)
        report = log.verify("main", deep=True)
        assert report.ok, str(report)
        assert sum(e.check == "segment" for e in report.entries) >= 3


def test_branches_and_concat_merge(opener: Opener) -> None:
    """A branch replays its parent's prefix then its own records; a concat merge of the parent
    and the branch renumbers densely; all of it reads the same from an empty local dir, and
    every stream verifies deep."""
    with opener("a", segment_max_records=10) as log:
        main = log.create_stream("main")
        main.append(rows(range(0, 20)))
        b = log.branch("b", at="main@9", reason="retry")
        b.append(rows(range(100, 105), "b"))
        c = b.branch("b/c", at=11)
        c.append(rows(range(200, 203), "c"))
        log.merge("m", parents=["main", "b"], policy="concat")
        expected = everything(log)
    assert expected["b"] == [
        *(("main", i, i) for i in range(10)),
        *(("b", 10 + i, 100 + i) for i in range(5)),
    ]
    assert [seq for _, _, seq in expected["b/c"]] == [*range(10), 100, 101, 200, 201, 202]
    assert expected["m"] == [
        *(("main", i, i) for i in range(20)),
        *(("b", 20 + i, 100 + i) for i in range(5)),
    ]
    for local in ("a", "fresh"):
        with opener(local) as log:
            assert everything(log) == expected
            for name in expected:
                report = log.verify(name, deep=True)
                assert report.ok, str(report)
            lineage = {r["name"]: r for r in log.lineage().to_pylist()}
            assert lineage["b"]["kind"] == "branch" and lineage["m"]["kind"] == "merge"


# --- S3 -------------------------------------------------------------------------------------


@pytest.mark.s3
def test_tiered_ack_means_the_commit_is_in_the_bucket(
    s3_uri: str, s3_endpoint: Any, s3_client: Any, tmp_path: Path
) -> None:
    """Right after each `tiered` ack, another client sees the commit object and the segment it
    adds, holding exactly the acknowledged offsets."""
    with ta.open(s3_uri, storage_options=s3_endpoint.storage_options, local_dir=tmp_path) as log:
        s = log.create_stream("main")
        for k in range(3):
            ack = s.append(rows(range(10 * k, 10 * k + 10)), durability="tiered")
            assert ack.durability == "tiered"
            bucket, key = _bucket_key(s3_uri, f"streams/main/commits/{k + 1:020d}.json")
            commit = json.loads(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
            (seg,) = [a for a in commit["actions"] if a["type"] == "add_segment"]
            assert (seg["first_offset"], seg["last_offset"]) == (ack.first_offset, ack.last_offset)
            head = s3_client.head_object(Bucket=bucket, Key=_bucket_key(s3_uri, seg["path"])[1])
            assert head["ContentLength"] == seg["bytes"]


def _write_history(uri: str, options: dict[str, Any], local: Path) -> dict[str, Any]:
    """main: 3 segments of 10; b at main@14 with one segment of its own; a concat merge."""
    with ta.open(uri, storage_options=options, local_dir=local, segment_max_records=10) as log:
        main = log.create_stream("main")
        for k in range(3):
            main.append(rows(range(10 * k, 10 * k + 10)))
        log.branch("b", at="main@14").append(rows(range(100, 105), "b"), durability="tiered")
        log.merge("m", parents=["main", "b"], policy="concat")
        return everything(log)


@pytest.mark.s3
def test_cold_restore_reads_every_stream_fetching_lazily(
    s3_uri: str, s3_endpoint: Any, tmp_path: Path
) -> None:
    """A machine with an empty local dir lists and reads every stream and branch; opening
    fetches no segment, and reading the branch fetches only the segments its replay needs."""
    expected = _write_history(s3_uri, s3_endpoint.storage_options, tmp_path / "writer")
    with ta.open(
        s3_uri, storage_options=s3_endpoint.storage_options, local_dir=tmp_path / "cold"
    ) as log:
        assert log.streams().column("name").to_pylist() == ["b", "m", "main"]
        assert log.catalog.cache.fetches == 0 and cache_files(log) == {}
        assert triples(log.stream("b").read()) == expected["b"]
        # main@0-9 and main@10-19 (the fork is at 14), then b's own segment; not main@20-29.
        assert sorted(Path(p).name[:41] for p in cache_files(log)) == [
            f"{0:020d}-{9:020d}",
            f"{10:020d}-{19:020d}",
            f"{15:020d}-{19:020d}",
        ]
        assert log.catalog.cache.fetches == 3
        assert everything(log) == expected
        assert log.catalog.cache.fetches == 4  # main's last segment; the merge copied nothing
        for name in expected:
            assert log.verify(name, deep=True).ok


@pytest.mark.s3
def test_hydrate_fetches_everything_eagerly(s3_uri: str, s3_endpoint: Any, tmp_path: Path) -> None:
    """`hydrate()` fetches and verifies every segment every stream needs, once; reads then
    fetch nothing more."""
    expected = _write_history(s3_uri, s3_endpoint.storage_options, tmp_path / "writer")
    with ta.open(
        s3_uri, storage_options=s3_endpoint.storage_options, local_dir=tmp_path / "cold"
    ) as log:
        report = log.hydrate()
        assert (report.streams, report.segments, report.fetched) == (3, 4, 4)
        assert report.fetched_bytes == sum(cache_files(log).values())
        assert log.hydrate().fetched == 0
        assert everything(log) == expected
        assert log.catalog.cache.fetches == 4


@pytest.mark.s3
@pytest.mark.parametrize("same_size", [True, False])
def test_overwritten_segment_is_an_integrity_error(
    same_size: bool, s3_uri: str, s3_endpoint: Any, s3_client: Any, tmp_path: Path
) -> None:
    """A segment object overwritten in the bucket (same size or not) is detected on fetch:
    reads and hydrate raise `IntegrityError` naming the object and both hashes, nothing is
    cached or served, and `verify(deep=True)` reports the file."""
    options = s3_endpoint.storage_options
    _write_history(s3_uri, options, tmp_path / "writer")
    with ta.open(s3_uri, storage_options=options, local_dir=tmp_path / "check") as log:
        log.stream("main").read(start=0, end=1)
        path = next(p for p in cache_files(log) if p.endswith(".parquet") and "/main/" in p)
        bucket, key = _bucket_key(s3_uri, path)
        original = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    tampered = bytearray(original)
    if same_size:
        tampered[len(tampered) // 2] ^= 0xFF
    else:
        tampered += b"\0"
    s3_client.put_object(Bucket=bucket, Key=key, Body=bytes(tampered))
    with ta.open(s3_uri, storage_options=options, local_dir=tmp_path / "cold") as log:
        for _ in range(2):  # not cached the first time, so detected again
            with pytest.raises(ta.IntegrityError) as info:
                log.stream("b").read()
            message = str(info.value)
            assert path in message and "expected BLAKE3" in message and "found" in message
            assert path not in cache_files(log)
        with pytest.raises(ta.IntegrityError):
            log.hydrate()
        assert path not in cache_files(log)
        report = log.verify("main", deep=True)
        assert not report.ok
        (failure,) = report.failures
        assert failure.object == path and failure.expected != failure.found


@pytest.mark.s3
def test_tiny_cache_budget_still_serves_reads(
    s3_uri: str, s3_endpoint: Any, tmp_path: Path
) -> None:
    """With a cache budget smaller than one segment, every read still works, and the cache
    folder never holds more than the budget plus one file."""
    expected = _write_history(s3_uri, s3_endpoint.storage_options, tmp_path / "writer")
    budget = 1000
    with ta.open(
        s3_uri,
        storage_options=s3_endpoint.storage_options,
        local_dir=tmp_path / "cold",
        cache_max_bytes=budget,
    ) as log:
        largest = 0
        for _ in range(2):
            for name in ("main", "b", "m", "b", "main"):
                assert triples(log.stream(name).read()) == expected[name]
                files = cache_files(log)
                largest = max(largest, *files.values())
                assert sum(files.values()) <= budget + largest, files
        assert largest > budget  # so the bound was really tested
        assert log.catalog.cache.fetches > 4  # evicted segments were fetched again
