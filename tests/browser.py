"""What the browser tests share: Debian's Chromium (Playwright's own download cannot work offline),
a free port, and axe-core, the accessibility checker (tests/browser/package.json, installed by
``.ci/run`` with ``npm ci --prefix tests/browser``), run inside a page."""
from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
AXE = Path(__file__).resolve().parent / "browser" / "node_modules" / "axe-core" / "axe.min.js"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
needs_axe = pytest.mark.skipif(not AXE.is_file(), reason="axe-core is not installed: npm ci --prefix tests/browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=ARGS)


def axe_violations(page, exclude: list[str] | None = None) -> list[dict]:
    """Run axe-core (WCAG 2.x A and AA rules and best practices) in ``page`` -> its serious and
    critical violations, each as {id, impact, help, nodes: [html]}.  The page's context must allow
    the script (``bypass_csp=True`` where the page has a content security policy)."""
    page.evaluate(AXE.read_text(encoding="utf-8"))
    context = {"exclude": [[s] for s in exclude]} if exclude else None
    result = page.evaluate("async (ctx) => await axe.run(ctx || document, {resultTypes: ['violations']})",
                           context)
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["html"][:200] for n in v["nodes"]]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]
