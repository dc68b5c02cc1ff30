"""Write `inspect_eval.eval` and `inspect_eval.json`: a real inspect_ai eval log, run offline.

The eval runs inspect_ai's `mockllm/model` (no network, no API key): two arithmetic samples,
two epochs each, a tool the model calls, and a `match` scorer, so the log holds messages, tool
calls with their results, several epochs and both correct and incorrect scores.

Run it with inspect_ai installed (`pip install "transit-arrow[evals]"`):

    python tests/workloads/data/make_inspect_log.py [OUT_DIR]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from inspect_ai import Task, eval
from inspect_ai.dataset import Sample
from inspect_ai.log import read_eval_log, write_eval_log
from inspect_ai.model import ModelOutput, ModelUsage, get_model
from inspect_ai.scorer import match
from inspect_ai.solver import generate, use_tools
from inspect_ai.tool import Tool, tool

MODEL = "mockllm/model"


@tool
def add() -> Tool:
    """The tool the mock model calls."""

    async def execute(x: int, y: int) -> int:
        """Add two integers.

        Args:
            x: The first integer.
            y: The second integer.
        """
        return x + y

    return execute


def _outputs() -> list[ModelOutput]:
    """What the mock model says, in order: per sample and epoch a tool call, then an answer.

    Samples run one at a time (max_samples=1), epoch by epoch, so the order is fixed: the
    second epoch of sample 2 answers wrongly, so the log has an incorrect score too.
    """
    plan = [((2, 3), "5"), ((10, 4), "14"), ((2, 3), "5"), ((10, 4), "15")]
    out = []
    for (x, y), answer in plan:
        call = ModelOutput.for_tool_call(MODEL, tool_name="add", tool_arguments={"x": x, "y": y})
        final = ModelOutput.from_content(MODEL, answer)
        # Usage given explicitly: otherwise mockllm counts tokens with tiktoken, which downloads
        # its encoding files (this script must run offline).
        call.usage = ModelUsage(input_tokens=120, output_tokens=18, total_tokens=138)
        final.usage = ModelUsage(input_tokens=160, output_tokens=2, total_tokens=162)
        out += [call, final]
    return out


def main(out_dir: Path) -> None:
    """Run the eval and write both log formats into `out_dir`."""
    task = Task(
        name="arithmetic",
        dataset=[
            Sample(id="add-2-3", input="What is 2 + 3? Use the add tool.", target="5"),
            Sample(id="add-10-4", input="What is 10 + 4? Use the add tool.", target="14"),
        ],
        solver=[use_tools(add()), generate()],
        scorer=match(),
        epochs=2,
    )
    model = get_model(MODEL, custom_outputs=_outputs())
    with tempfile.TemporaryDirectory() as tmp:
        [log] = eval(task, model=model, log_dir=tmp, max_samples=1, display="none")
        if log.status != "success":
            raise SystemExit(f"eval failed: {log.error}")
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(log.location, out_dir / "inspect_eval.eval")
        full = read_eval_log(log.location)
        write_eval_log(full, str(out_dir / "inspect_eval.json"), format="json")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
