"""Every notebook in notebooks/ runs top to bottom in a fresh kernel, and says it worked.

Each notebook works in its own temporary folder, asserts on its own results in its last cell
and prints a closing line, which this test checks. The notebooks are committed without
outputs; this test never writes them back.
"""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = {
    "quickstart.ipynb": "quickstart OK",
    "agent_eval_provenance.ipynb": "agent-eval provenance OK",
    "chat_threads.ipynb": "chat threads OK",
    "s3_restore.ipynb": "S3 restore OK",
    "scaling_out.ipynb": "scaling out OK",
}
# Run by tests/test_notebook_scaling.py (marked slow: it starts Dask and Ray clusters).
RUN_ELSEWHERE = {"scaling_out.ipynb"}


def test_every_notebook_is_tested_and_committed_without_outputs() -> None:
    import nbformat

    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(EXPECTED)
    for name in EXPECTED:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), name


@pytest.mark.notebook
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # jupyter_client/zmq internals
@pytest.mark.parametrize("name", sorted(set(EXPECTED) - RUN_ELSEWHERE))
def test_notebook_runs(name: str, tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    last = nb.cells[-1]
    text = "".join(o.get("text", "") for o in last.outputs if o.get("output_type") == "stream")
    assert EXPECTED[name] in text, text
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert errors == []
