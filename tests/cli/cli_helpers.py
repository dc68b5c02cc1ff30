"""Helpers shared by the CLI tests: run `transit` in-process and check how it ended."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from transit_arrow.cli import main


def run(*args: str | Path, stdin: str | bytes | None = None) -> Result:
    """Invoke `transit` in-process; stdout and stderr are captured separately."""
    return CliRunner().invoke(main, [str(a) for a in args], input=stdin)


def ok(*args: str | Path, stdin: str | bytes | None = None) -> Result:
    """Run a command that must succeed."""
    result = run(*args, stdin=stdin)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def failed(*args: str | Path, stdin: str | bytes | None = None, code: int = 1) -> str:
    """Run a command that must fail cleanly; return its stderr."""
    result = run(*args, stdin=stdin)
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    if code == 1:
        assert result.stderr.startswith("error: ")
    return result.stderr


def ndjson(result: Result) -> list[dict[str, Any]]:
    """The NDJSON rows a command printed."""
    return [json.loads(line) for line in result.stdout.splitlines()]


def records(n: int, start: int = 0) -> str:
    """`n` NDJSON records `{"i": start}`, `{"i": start + 1}`, ..."""
    return "\n".join(json.dumps({"i": i}) for i in range(start, start + n))
