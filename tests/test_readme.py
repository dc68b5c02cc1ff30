"""The README's tour runs as written, in order (issue 14): the first Python block of each of
its sections "A tour", "Branches and merges" and "Time travel, checkpoints and verification",
run one after the other in one namespace, in an empty folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
TOUR = ("## A tour", "## Branches and merges", "## Time travel, checkpoints and verification")


def tour_blocks() -> list[str]:
    text = README.read_text()
    blocks = []
    for heading in TOUR:
        start = text.index(f"\n{heading}\n")
        end = text.find("\n## ", start + len(heading) + 2)
        section = text[start : end if end != -1 else len(text)]
        match = re.search(r"```python\n(.*?)```", section, re.S)
        assert match, f"no Python block under {heading!r}"
        blocks.append(match.group(1))
    return blocks


def test_the_readme_tour_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme"}
    for heading, block in zip(TOUR, tour_blocks(), strict=True):
        try:
            exec(compile(block, f"README.md ({heading})", "exec"), namespace)
        except Exception as e:  # name the block that failed
            raise AssertionError(f"the README block under {heading!r} failed: {e!r}") from e
    assert (tmp_path / "data" / "_transit.json").is_file()
    assert sorted(os.listdir(tmp_path / "data" / "streams"))
