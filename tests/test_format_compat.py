"""Logs written by earlier versions open, read the same and verify (DEVELOPERS: formats stay
readable).

`fixtures/log_v1` was written by transit-arrow 0.1.0 at commit f30bd17 (before the engine was
layered) with `fixtures/make_log_v1.py`; `log_v1.expected.json` holds what that version read
back from it (`/tmp`-free: timestamps and roots are data of the fixture).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import transit_arrow as ta

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def old_log(tmp_path: Path) -> Path:
    target = tmp_path / "log"
    shutil.copytree(FIXTURES / "log_v1", target)
    return target


def _plain(rows: list[dict[str, Any]]) -> Any:
    return json.loads(json.dumps(rows, default=str))


def test_a_log_written_by_version_0_1_reads_the_same(old_log: Path) -> None:
    expected = json.loads((FIXTURES / "log_v1.expected.json").read_text())
    with ta.open(old_log) as log:
        names = log.streams().column("name").to_pylist()
        assert names == sorted(k for k in expected if not k.startswith("__"))
        for name in names:
            table = log.stream(name).read()
            assert table.column_names == expected[name]["columns"], name
            assert _plain(table.to_pylist()) == expected[name]["rows"], name
        mv = log.materialization("per_s").read().sort_by("s")
        assert _plain(mv.to_pylist()) == expected["__mv__"]
        lineage = log.lineage().select(
            ["name", "kind", "parent_stream", "parent_offset", "policy", "root"]
        )
        assert lineage.to_pylist() == expected["__lineage__"]


def test_a_log_written_by_version_0_1_verifies_deeply(old_log: Path) -> None:
    checkpoint = ta.Checkpoint.from_json((FIXTURES / "log_v1.checkpoint.json").read_text())
    with ta.open(old_log) as log:
        for name in log.streams().column("name").to_pylist():
            report = log.verify(name, deep=True)
            assert report.ok, str(report)
        report = log.verify(checkpoint, deep=True)
        assert report.ok, str(report)
        assert log.stream("events").at(checkpoint).read().num_rows == checkpoint.head_offset + 1


def test_a_log_written_by_version_0_1_takes_new_appends(old_log: Path) -> None:
    with ta.open(old_log) as log:
        retry = log.stream("events/retry")
        before = retry.next_offset
        ack = retry.append({"i": 1, "s": "new", "x": 0.0})
        assert ack.first_offset == before
        retry.flush()
        assert log.verify("events/retry").ok
