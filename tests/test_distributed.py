"""Dask and Ray over scan plans, on real clusters: a `dask.distributed.LocalCluster` with two
worker processes (over a local folder and over S3 on the moto server) and a local Ray
instance (marked slow: it takes 20-30 s to start). Every result must equal `stream.read()`
(sorted by `_offset`: engines give no order) for roots, branches, branches of branches and
every merge policy, unsealed records included.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from replay_kinds import STREAMS, open_branchy, rows

import transit_arrow as ta
from tests.test_materialize import recompute
from transit_arrow.errors import IntegrityError, InvalidInputError

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def branchy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ta.Log]:
    yield from open_branchy(tmp_path_factory)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A real cluster: a scheduler and two single-threaded worker processes."""
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    with distributed.Client(cluster) as c:
        assert len(c.scheduler_info()["workers"]) == 2
        yield c
    cluster.close()


def as_table(frame: Any, schema: pa.Schema) -> pa.Table:
    """A computed pandas frame back as Arrow in replay order, with the read schema's types."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    assert [(f.name, f.type) for f in table.schema] == [(f.name, f.type) for f in schema]
    return table.cast(schema).sort_by([("_offset", "ascending")])


@pytest.mark.parametrize("name", STREAMS)
def test_dask_on_a_local_cluster_equals_read(client: Any, branchy: ta.Log, name: str) -> None:
    stream = branchy.stream(name)
    expected = stream.read()
    frame = stream.to_dask()
    plan = stream.scan_plan()
    assert frame.npartitions == len(plan.files)  # one partition per file span
    got = as_table(client.compute(frame).result(), expected.schema)
    assert got.equals(expected), name


def test_dask_pushes_columns_and_filters(client: Any, branchy: ta.Log) -> None:
    stream = branchy.stream("m/concat")
    full = stream.read()
    everything = stream.to_dask()
    frame = stream.to_dask(columns=["_offset", "x"], filters=[("_offset", ">=", 14)])
    assert frame.npartitions < everything.npartitions  # spans below offset 14 are not read
    got = client.compute(frame).result().sort_values("_offset")
    assert got["_offset"].tolist() == [o for o in full["_offset"].to_pylist() if o >= 14]
    assert got["x"].tolist() == full["x"].to_pylist()[14:]
    projected = client.compute(everything[["_offset", "who"]]).result()
    assert sorted(projected["_offset"].tolist()) == full["_offset"].to_pylist()
    origin = stream.to_dask(filters=[("_origin_stream", "==", "critique")])
    kept = client.compute(origin).result()
    assert len(kept) == full["_origin_stream"].to_pylist().count("critique")
    with pytest.raises(InvalidInputError, match="no column"):
        stream.to_dask(columns=["nope"])


def test_dask_over_the_whole_log_equals_scan_all(client: Any, branchy: ta.Log) -> None:
    frame = branchy.to_dask()
    expected = branchy.scan_all().collect().to_arrow()
    got = pa.Table.from_pandas(client.compute(frame).result(), preserve_index=False)
    key = [("_branch", "ascending"), ("_offset", "ascending")]
    assert got.schema.names == expected.schema.names
    assert got.cast(expected.schema).sort_by(key).equals(expected.sort_by(key))


def test_dask_refuses_a_tampered_segment(client: Any, tmp_path: Path) -> None:
    with ta.open(tmp_path / "log") as log:
        s = log.create_stream("s")
        s.append(rows(10, 0, "a"))
        s.flush()
        frame = s.to_dask()
        url = s.scan_plan().files[0].url
    path = Path((url or "").removeprefix("file://"))
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match the scan plan"):
        client.compute(frame).result()


def small_log(log: ta.Log) -> list[str]:
    """A branch forked inside a segment, a concat and an interleave merge, unsealed records."""
    main = log.create_stream("main")
    for k in range(3):
        main.append(rows(20, 20 * k, "main"))
        main.flush()
    retry = log.branch("retry", at="main@25")
    retry.append(rows(10, 100, "retry"))
    retry.flush()
    log.merge("both", ["main", "retry"], policy="concat")
    log.merge("woven", ["main", "retry"], policy="interleave")
    retry.append(rows(3, 200, "unsealed"))
    return ["retry", "both", "woven"]


@pytest.mark.s3
def test_dask_reads_a_branch_from_s3(client: Any, s3_endpoint: Any, tmp_path: Path) -> None:
    uri = f"s3://{s3_endpoint.create_bucket()}/log"
    options = s3_endpoint.storage_options
    with ta.open(uri, storage_options=options, local_dir=tmp_path / "w") as writer:
        names = small_log(writer)
        expected = {n: writer.stream(n).read() for n in names}
        heads = writer.stream("retry").scan_plan().files[-1]
        assert heads.kind == "inline"  # unsealed records travel in the plan
        unsealed = writer.stream("retry").to_dask()
        assert as_table(client.compute(unsealed).result(), expected["retry"].schema).equals(
            expected["retry"]
        )
    # A fresh machine: an empty local dir. Workers fetch from S3 themselves and verify.
    with ta.open(uri, storage_options=options, local_dir=tmp_path / "fresh") as log:
        results = {n: client.compute(log.stream(n).to_dask()).result() for n in names}
        assert not list((tmp_path / "fresh").rglob("*.parquet"))  # nothing fetched here
        for name, got in results.items():
            want = log.stream(name).read()
            assert as_table(got, want.schema).equals(want), name
        assert len(expected["retry"]) == len(log.stream("retry").read())  # sealed on close


# --- Ray --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def ray_table(ray: Any, dataset: Any, schema: pa.Schema) -> pa.Table:
    tables = ray.get(dataset.to_arrow_refs())
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return table.cast(schema).sort_by([("_offset", "ascending")])


# Slow: starting a Ray instance and its workers takes 20-30 s on a 2-core machine.
@pytest.mark.slow
# Ray Data's DataContext sets deprecated options of its own when it starts (ray 2.60).
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")
def test_ray_on_a_local_cluster_equals_read(ray_cluster: Any, branchy: ta.Log) -> None:
    for name in ("retry/deeper", "m/concat", "m/interleave", "m/custom", "m/concat-of-merges"):
        stream = branchy.stream(name)
        expected = stream.read()
        dataset = stream.to_ray()
        assert ray_table(ray_cluster, dataset, expected.schema).equals(expected), name
    stream = branchy.stream("m/concat")
    expected = stream.read()
    filtered = stream.to_ray(columns=["_offset", "x"], filters=[("x", ">=", 100)])
    schema = pa.schema([expected.schema.field(c) for c in ("_offset", "x")])
    got = ray_table(ray_cluster, filtered, schema)
    assert got["x"].to_pylist() == [x for x in expected["x"].to_pylist() if x >= 100]


def test_memory_logs_need_an_in_process_scheduler() -> None:
    with ta.open(f"memory://dist-{uuid.uuid4().hex}") as log:
        s = log.create_stream("s")
        s.append(rows(6, 0, "a"))
        s.flush()
        got = s.to_dask().compute(scheduler="sync")
        assert as_table(got, s.schema).equals(s.read())


# --- materializations refreshed with Dask partials ---------------------------------------------

#: An aggregate view of the forms eval users write, and a filter view.
MV_QUERIES = {
    "agg": (
        "SELECT key, count(*) AS n, count(*) FILTER (WHERE x % 2 = 0) AS even, sum(x) AS sx, "
        "avg(CASE WHEN who = 'main' THEN 1.0 ELSE 0.0 END) AS main_share, stddev(x) AS sd, "
        "min(x) AS lo, arg_max(who, _offset) AS last_who FROM records GROUP BY key"
    ),
    "filter": "SELECT _offset, key, x, who FROM records WHERE x % 3 = 0",
}


def same_rows(got: pa.Table, want: pa.Table) -> None:
    """Same columns and rows in any order (floats to 1e-9)."""
    assert got.column_names == want.column_names
    rows_of = [sorted(t.to_pylist(), key=lambda r: str(sorted(r.items()))) for t in (got, want)]
    assert len(rows_of[0]) == len(rows_of[1])
    for g, w in zip(*rows_of, strict=True):
        for k in w:
            if isinstance(w[k], float):
                assert g[k] == pytest.approx(w[k], rel=1e-9, abs=1e-9), (k, g, w)
            else:
                assert g[k] == w[k], (k, g, w)


def test_refresh_with_dask_partials_equals_local_and_recompute(client: Any, tmp_path: Path) -> None:
    """Views refreshed with `dask=client` (per-segment partials on two worker processes, the
    combine here) equal the same views refreshed locally and DuckDB over the whole replay, on
    a root, a branch, both merge policies and after a compaction put a checkpoint inside a
    segment; later refreshes resume from the checkpoint and read only new records."""
    with ta.open(tmp_path / "log") as log:
        main = log.create_stream("main")
        main.append(rows(20, 0, "main"))
        main.flush()
        views = {
            kind: (
                log.materialize(f"{kind}-dask", "main", query=q),
                log.materialize(f"{kind}-local", "main", query=q),
            )
            for kind, q in MV_QUERIES.items()
        }
        for on_dask, local in views.values():
            report = on_dask.refresh(dask=client)
            assert report.records_processed == 20 and "Dask" in report.reason
            local.refresh()
        main.append(rows(20, 20, "main"))
        main.flush()
        main.compact(min_segments=2)  # one segment 0..39: the checkpoint at 19 is inside it
        assert [f.replay_first for f in main.scan_plan().files] == [0]
        names = ["main", *small_log_after(log)]
        for kind, (on_dask, local) in views.items():
            for name in names:
                report = on_dask.refresh(name, dask=client)
                local.refresh(name)
                want = recompute(log, name, MV_QUERIES[kind])
                same_rows(on_dask.read(name), local.read(name))
                same_rows(on_dask.read(name), want)
            assert report.to_offset == log.stream(names[-1]).next_offset - 1
        main.append(rows(7, 500, "late"))
        for on_dask, _ in views.values():
            report = on_dask.refresh(dask=client)
            assert report.records_processed == 7
            assert report.reused_checkpoint is not None
            assert report.reused_checkpoint.startswith("main@")
        for kind, (on_dask, _) in views.items():
            same_rows(on_dask.read(), recompute(log, "main", MV_QUERIES[kind]))


def small_log_after(log: ta.Log) -> list[str]:
    """A branch forked inside main's compacted segment, its own records, and merges of both
    policies (the source stream `main` exists already)."""
    retry = log.branch("retry", at="main@25")
    retry.append(rows(10, 100, "retry"))
    retry.flush()
    log.merge("both", ["main", "retry"], policy="concat")
    log.merge("woven", ["main", "retry"], policy="interleave")
    retry.append(rows(3, 200, "unsealed"))  # sealed by the refresh
    return ["retry", "both", "woven"]


def test_dask_refresh_refuses_a_tampered_segment_and_saves_nothing(
    client: Any, tmp_path: Path
) -> None:
    """A worker verifies its segment's BLAKE3: a changed byte fails the refresh with
    IntegrityError and no checkpoint is written."""
    root = tmp_path / "log"
    with ta.open(root) as log:
        s = log.create_stream("main")
        s.append(rows(30, 0, "a"))
        s.flush()
        mv = log.materialize("v", "main", query=MV_QUERIES["agg"])
        url = s.scan_plan().files[0].url
        path = Path((url or "").removeprefix("file://"))
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.chmod(0o644)
        path.write_bytes(bytes(data))
        with pytest.raises(IntegrityError, match="does not match the scan plan"):
            mv.refresh(dask=client)
        assert mv.branches() == []


def test_dask_refresh_refuses_views_that_are_not_incremental_sql(
    client: Any, tmp_path: Path
) -> None:
    """Full-recompute and reducer views are refused (a clear error, nothing changed)."""
    with ta.open(tmp_path / "log") as log:
        s = log.create_stream("main")
        s.append(rows(5, 0, "a"))
        full = log.materialize(
            "full", "main", query="SELECT key, median(x) AS m FROM records GROUP BY key"
        )
        reducer = log.materialize("red", "main", reducer=lambda state, batch: batch)
        for mv in (full, reducer):
            with pytest.raises(InvalidInputError, match="only incremental SQL views"):
                mv.refresh(dask=client)
            assert mv.branches() == []


# Slow: ~17 s on a loaded 2-core machine (moto round trips from the workers).
@pytest.mark.slow
@pytest.mark.s3
def test_dask_refresh_of_an_s3_log(client: Any, s3_endpoint: Any, tmp_path: Path) -> None:
    """The workers fetch (and verify) the segments from S3 themselves; the views equal a
    local refresh and DuckDB over the replay, on a root and a branch."""
    uri = f"s3://{s3_endpoint.create_bucket()}/log"
    options = s3_endpoint.storage_options
    with ta.open(uri, storage_options=options, local_dir=tmp_path / "w") as log:
        main = log.create_stream("main")
        for k in range(3):
            main.append(rows(15, 15 * k, "main"))
            main.flush()
        fork = log.branch("fork", at="main@20")
        fork.append(rows(5, 100, "fork"))
        for kind, query in MV_QUERIES.items():
            on_dask = log.materialize(f"{kind}-dask", "main", query=query)
            local = log.materialize(f"{kind}-local", "main", query=query)
            for name in ("main", "fork"):
                report = on_dask.refresh(name, dask=client)
                assert "Dask" in report.reason
                local.refresh(name)
                same_rows(on_dask.read(name), local.read(name))
                same_rows(on_dask.read(name), recompute(log, name, query))
