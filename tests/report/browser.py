"""Open a saved page in headless Chromium, offline, as a reader would: screenshot, console
messages, network requests made by the page, and (for an instrumented copy) measurements of
the rendered page taken by a probe script."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# Measures the rendered page after layout and writes the result on <body data-probe="...">.
PROBE = """
<script>
(() => {
  document.querySelectorAll("details").forEach((d) => { d.open = true; });
  const nodes = [...document.querySelectorAll("svg.ta-lineage g.node")];
  const box = (e) => e.getBoundingClientRect();
  let overlaps = 0;
  document.querySelectorAll("svg.ta-lineage").forEach((svg) => {
    const rects = [...svg.querySelectorAll("g.node rect")].map(box);
    rects.forEach((a, i) => rects.slice(i + 1).forEach((b) => {
      const apart = a.right - 1 <= b.left || b.right - 1 <= a.left
        || a.bottom - 1 <= b.top || b.bottom - 1 <= a.top;
      if (!apart) { overlaps += 1; }
    }));
  });
  const overflowing = nodes.filter((n) => {
    const rect = n.querySelector("rect").getBBox();
    const texts = [...n.querySelectorAll("text")];
    return texts.some((t) => t.getBBox().x + t.getBBox().width > rect.width);
  }).map((n) => n.dataset.stream);
  const result = {
    nodes: nodes.map((n) => ({stream: n.dataset.stream, cls: n.getAttribute("class"),
                              width: box(n).width, height: box(n).height})),
    overlaps,
    overflowing,
    svgs: document.querySelectorAll("svg.ta-lineage").length,
    tables: document.querySelectorAll("table.ta-table").length,
    headings: [...document.querySelectorAll("h2")].map((h) => h.textContent),
    title: document.title,
    width: document.documentElement.scrollWidth,
  };
  document.body.setAttribute("data-probe", JSON.stringify(result));
})();
</script>
"""


@dataclass
class Run:
    """What one Chromium run saw."""

    dom: str
    console: list[str]
    page_requests: list[str]
    probe: dict[str, Any] = field(default_factory=dict)


class _Body(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.probe: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self.probe = dict(attrs).get("data-probe")


def _page_requests(netlog: Path) -> list[str]:
    """URLs the page itself asked for (the browser's own background requests aside)."""
    data = json.loads(netlog.read_text(encoding="utf-8"))
    start = data["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        e["params"]["url"]
        for e in data["events"]
        if e["type"] == start and "file://" in str(e["params"].get("network_isolation_key"))
    ]


def open_page(
    page: Path,
    workdir: Path,
    *,
    screenshot: Path | None = None,
    window: tuple[int, int] = (1400, 1800),
    probe: bool = False,
) -> Run:
    """Load `page` in headless Chromium with every host name unresolvable (nothing can be
    fetched; an attempt is still recorded in the net log), and return what it saw."""
    target = page
    if probe:
        target = workdir / f"probed-{page.name}"
        target.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"))
    netlog = workdir / "netlog.json"
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={workdir / 'profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--log-level=0",
        f"--log-net-log={netlog}",
        f"--window-size={window[0]},{window[1]}",
        "--virtual-time-budget=3000",
    ]
    args.append(f"--screenshot={screenshot}" if screenshot is not None else "--dump-dom")
    done = subprocess.run(
        [*args, target.resolve().as_uri()], capture_output=True, text=True, timeout=90, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    run = Run(dom=done.stdout, console=console, page_requests=_page_requests(netlog))
    if probe:
        parser = _Body()
        parser.feed(done.stdout)
        assert parser.probe, "the probe script did not run"
        run.probe = json.loads(parser.probe)
    return run
