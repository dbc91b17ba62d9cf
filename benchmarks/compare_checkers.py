"""Do the HTML and Markdown formats find what the field's checkers find?  On every page under the given
folders: axe-core's ``image-alt`` rule run in Chromium on each HTML page (images failing it versus the
images ``check`` calls missing, compared by src, with multiplicity), and markdownlint's MD045 on each
Markdown page (the lines and columns it flags versus ours).

    python benchmarks/compare_checkers.py /usr/share/doc --limit 60
    python benchmarks/compare_checkers.py ../realdocs/mkdocs-docs tests/fixtures/documents

Needs Chromium, axe-core (npm ci --prefix tests/browser) and Playwright for HTML; markdownlint-cli2 on PATH
for Markdown.  Pages with missing images are compared first; ``--limit`` pages of each kind at most.
"""
from __future__ import annotations

import argparse
import collections
import shutil
import sys
import tempfile
from pathlib import Path

from captioner.documents import html
from captioner.documents.formats import SUFFIXES, DocumentError, format_for
from captioner.documents.refs import status

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from documents_check import MARKDOWNLINT, md045  # noqa: E402

AXE_RUN = """async () => {
    const r = await axe.run(document, {runOnly: ['image-alt']});
    const src = (n) => { const e = document.querySelector(n.target[0]); return e ? e.getAttribute('src') : null; };
    return r.violations.flatMap(v => v.nodes.map(src));
}"""


def readable(folders: list[str], kind: str, limit: int) -> list[tuple[Path, list]]:
    """Pages of ``kind`` that read and have images, those with missing images first."""
    found = []
    for p in sorted(p for f in folders for p in Path(f).rglob("*") if p.is_file()):
        if SUFFIXES.get(p.suffix.lower()) != kind:
            continue
        try:
            refs = format_for(p).read(str(p), p.read_bytes())
        except DocumentError:
            continue
        if refs:
            found.append((p, refs))
    found.sort(key=lambda c: -sum(status(r) == "missing" for r in c[1]))
    return found[:limit]


def compare_html(pages) -> tuple[int, list[str]]:
    from playwright.sync_api import sync_playwright
    from browser import AXE, launch
    differences = []
    with sync_playwright() as p:
        browser = launch(p)
        for path, refs in pages:
            page = browser.new_page()
            page.route("**/*", lambda route: route.fulfill(status=404, body=""))   # offline
            page.set_content(html.decode(str(path), path.read_bytes()).text)
            page.evaluate(AXE.read_text(encoding="utf-8"))
            theirs = collections.Counter(page.evaluate(AXE_RUN))
            page.close()
            ours = collections.Counter(r.src for r in refs if status(r) == "missing")
            if theirs != ours:
                differences.append(f"{path}: axe-core only {dict(theirs - ours)}, ours only {dict(ours - theirs)}")
        browser.close()
    return len(pages), differences


def compare_markdown(pages) -> tuple[int, list[str]]:
    differences = []
    with tempfile.TemporaryDirectory() as tmp:
        names = {}
        for i, (path, _) in enumerate(pages):
            names[f"{i:04d}.md"] = path
            shutil.copy(path, Path(tmp) / f"{i:04d}.md")
        theirs = md045(Path(tmp), list(names))
        for name, (path, refs) in zip(names, pages):
            t = {(line, col) for n, line, col in theirs if n == name}
            o = {(r.location["line"], r.location["column"]) for r in refs if status(r) == "missing"}
            if t != o:
                differences.append(f"{path}: MD045 only {sorted(t - o)}, ours only {sorted(o - t)}")
    return len(pages), differences


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Compare check's missing images with axe-core and markdownlint.")
    ap.add_argument("folders", nargs="+", help="folders of .html/.md pages (searched recursively)")
    ap.add_argument("--limit", type=int, default=100, help="pages of each kind at most")
    args = ap.parse_args(argv)
    for kind, compare in (("html", compare_html), ("markdown", compare_markdown)):
        pages = readable(args.folders, kind, args.limit)
        if not pages:
            continue
        if kind == "markdown" and MARKDOWNLINT is None:
            print("markdown: markdownlint-cli2 is not on PATH; not compared")
            continue
        n, differences = compare(pages)
        missing = sum(status(r) == "missing" for _, refs in pages for r in refs)
        print(f"{kind}: {n} pages with images ({missing} missing): {n - len(differences)} agree, "
              f"{len(differences)} differ")
        for d in differences:
            print("  " + d)


if __name__ == "__main__":
    main()
