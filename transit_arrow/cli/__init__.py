"""The `transit` command line: a thin click group over the library (DESIGN §11).

`main` is the console-script entry point declared in pyproject.toml.
"""

from __future__ import annotations

from .app import main

__all__ = ["main"]
