"""notebooks/scaling_out.ipynb runs top to bottom in a fresh kernel: one branch on S3 (a moto
server) read by polars, DuckDB, Dask on a LocalCluster and Ray, with equal answers (the
notebook asserts them and prints "scaling out OK"). Slow: it starts a Dask cluster of two
worker processes and a Ray instance."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "scaling_out.ipynb"


def test_notebook_is_committed_without_outputs() -> None:
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
@pytest.mark.notebook
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # jupyter_client/zmq internals
def test_scaling_out_notebook_runs(tmp_path: Path) -> None:
    pytest.importorskip("dask.distributed")
    pytest.importorskip("ray")
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert errors == []
    text = "".join(
        o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream"
    )
    assert "scaling out OK" in text, text
    outputs = "".join(
        o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if "text" in o
    )
    for engine in ("duckdb", "dask", "ray"):
        assert f"{engine} agrees with polars" in outputs
