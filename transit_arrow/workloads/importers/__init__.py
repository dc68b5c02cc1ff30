"""Importers: eval logs and traces of other tools, mapped onto the evals layout.

- `import_inspect_log`: an inspect_ai eval log (`.json`; `.eval` needs
  `pip install "transit-arrow[evals]"`) -> a task per sample, an attempt per epoch, scores as
  evaluations.
- `import_otel_spans`: OpenTelemetry GenAI spans in OTLP JSON -> a task per trace, its model
  calls, tool calls and tool results as an attempt.
"""

from __future__ import annotations

from .inspect_log import InspectImport, import_inspect_log
from .otel import OtelImport, import_otel_spans

__all__ = ["InspectImport", "OtelImport", "import_inspect_log", "import_otel_spans"]
