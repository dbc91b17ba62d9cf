"""The whole documents flow on real documents nobody here wrote (MkDocs' docs: tests/fixtures/documents/site,
and the .docx/.pptx/.epub made from them in tests/fixtures/documents/zip), through the command line with the
shipped model: check fails -> fill --output -> a person's decisions -> fill --write --from -> check passes;
only alt text changed; axe-core's image-alt on the HTML page before (violations) and after (none); the review
page showing each image's documents and context, accessible by axe-core.  `check` never imports onnxruntime."""
from __future__ import annotations

import difflib
import html
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import captioner.documents as documents
from captioner.cli import main
from browser import AXE, launch, needs_axe, needs_chromium

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "tests" / "fixtures" / "documents" / "site"
ZIP = ROOT / "tests" / "fixtures" / "documents" / "zip"


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """The flow run once (the model loads once): the folder before and after, and what each step printed."""
    tmp = tmp_path_factory.mktemp("flow")
    shutil.copytree(SITE, tmp / "site")
    before = {p.relative_to(tmp): p.read_bytes() for p in (tmp / "site").rglob("*") if p.is_file()}
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        steps = {"check_before": main(["check", "site"])}
        steps["fill"] = main(["fill", "site", "--output", "proposals.jsonl"])
        recs = [json.loads(x) for x in Path("proposals.jsonl").read_text().splitlines()]
        from captioner.library.decisions import ReviewStore

        with ReviewStore("proposals.jsonl") as store:          # what a person does on the review page
            store.index()
            store.decide("site/img/search.png", "edit", "The MkDocs search dialog listing pages that match.",
                         reviewer="ana")
        steps["write"] = main(["fill", "site", "--write", "--from", "proposals.jsonl"])
        steps["check_after"] = main(["check", "site"])
        steps["rerun"] = documents.write(["site"], from_="proposals.jsonl")
    finally:
        os.chdir(cwd)
    after = {p.relative_to(tmp): p.read_bytes() for p in (tmp / "site").rglob("*") if p.is_file()}
    return tmp, before, after, steps, recs


def test_check_fails_fill_proposes_write_fills_and_check_passes(flow):
    tmp, before, after, steps, recs = flow
    assert steps == {**steps, "check_before": 1, "fill": 0, "write": 0, "check_after": 0}
    assert steps["rerun"].written == [] and steps["rerun"].errors == []     # a rerun writes nothing
    # multipage.png, search.png, readthedocs.png are used by both pages: each one image, captioned once
    by_image = {r["image"]: r for r in recs}
    assert set(by_image) == {"site/img/multipage.png", "site/img/search.png", "site/img/readthedocs.png",
                             "site/img/plugin-events.svg"}
    assert {Path(x["document"]).name for x in by_image["site/img/search.png"]["references"]} == \
        {"getting-started.md", "getting-started.html"}
    linked = [x for x in by_image["site/img/readthedocs.png"]["references"] if x["document"].endswith(".html")][0]
    assert (linked["rule"], linked["proposed"]) == ("link_only", "readthedocs.org")
    assert by_image["site/img/plugin-events.svg"].get("caption")          # the SVG rendered and captioned
    refs = documents.check([str(tmp / "site")])
    assert {r.status for r in refs} <= {"ok", "decorative"}
    search = [r for r in refs if r.src.endswith("search.png")]
    assert {r.alt for r in search} == {"The MkDocs search dialog listing pages that match."}


def _alt_spans(text: str, alts: list[str]) -> list[str]:
    """What an edit may add or remove: an alt text, as written in Markdown or in an HTML attribute."""
    out = []
    for a in alts:
        out += [a, f' alt="{html.escape(a, quote=True)}" ']    # html.py adds the attribute with a space
    return out


def test_only_alt_text_changed_byte_for_byte(flow):
    tmp, before, after, steps, recs = flow
    assert before.keys() == after.keys()
    changed = {p for p in before if before[p] != after[p]}
    assert changed == {Path("site/getting-started.md"), Path("site/getting-started.html")}
    for p in changed:
        old, new = before[p].decode("utf-8"), after[p].decode("utf-8")
        new_alts = [r.alt for r in documents.check([str(tmp / p)]) if r.alt]
        old_alts = ["Screenshot"]
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
            if op == "equal":
                continue
            assert any(old[i1:i2] in s for s in _alt_spans(old, old_alts)), (p, old[i1:i2])
            assert any(new[j1:j2] in s for s in _alt_spans(new, new_alts)), (p, new[j1:j2])
        assert old.count("\n") == new.count("\n")


@needs_chromium
@needs_axe
def test_axe_image_alt_before_and_after_fill_write(flow):
    playwright = pytest.importorskip("playwright.sync_api")
    tmp, before, after, steps, recs = flow
    page_before = tmp / "before.html"
    page_before.write_bytes(before[Path("site/getting-started.html")])
    shutil.copytree(tmp / "site" / "img", tmp / "img")
    with playwright.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page()

        def image_alt(url):
            page.goto(url)
            page.evaluate(AXE.read_text(encoding="utf-8"))
            r = page.evaluate("async () => await axe.run(document, {runOnly: ['image-alt']})")
            return [n["html"] for v in r["violations"] for n in v["nodes"]]

        assert len(image_alt(page_before.as_uri())) == 4
        assert image_alt((tmp / "site" / "getting-started.html").as_uri()) == []
        browser.close()


def _epubcheck(path) -> tuple[int, list[str]]:
    """epubcheck's exit status and its message kinds (ERROR(RSC-005), WARNING(…)…), not their file positions."""
    r = subprocess.run(["java", "-jar", shutil.which("epubcheck"), "-q", str(path)], capture_output=True, text=True)
    return r.returncode, sorted({line.split(":")[0] for line in (r.stdout + r.stderr).splitlines() if "(" in line})


@pytest.mark.parametrize("name", ["getting-started.docx", "getting-started-libreoffice.docx", "getting-started.pptx",
                                  "getting-started.epub"])
def test_zip_documents_are_checked_and_filled(tmp_path, name):
    shutil.copytree(ZIP, tmp_path / "zip")
    doc = tmp_path / "zip" / name
    verdict = None
    if name.endswith(".epub") and os.environ.get("CAPTIONER_EPUBCHECK") and shutil.which("epubcheck"):
        verdict = _epubcheck(doc)      # a JVM start each: run with CAPTIONER_EPUBCHECK=1 (or -m slow's test below)
    refs = documents.check([str(doc)])
    need = [r for r in refs if r.status in ("missing", "suspicious")]
    assert need and all(r.image and "!/" in r.image for r in refs)
    diff = documents.write([str(doc)], captioner=_Fixed(), diff=True)
    assert diff.written == [] and len(diff.diff.splitlines()) == len(need)     # a line per reference to change
    assert "-> 'A screenshot of a documentation page.'" in diff.diff
    done = documents.write([str(doc)], captioner=_Fixed())
    assert done.errors == [] and done.written == [str(doc)]
    after = documents.check([str(doc)])
    assert all(r.status in ("ok", "decorative") for r in after)
    assert [r.key for r in after] == [r.key for r in refs]
    assert documents.write([str(doc)], captioner=_Fixed()).written == []      # a rerun writes nothing
    if verdict is not None:
        assert _epubcheck(doc) == verdict                                    # epubcheck: the same verdict


def test_a_books_pictures_are_captioned_on_every_core_without_a_model_here(tmp_path, monkeypatch):
    """``fill`` as the CLI runs it: the pictures inside an e-book (no file of their own) are captioned in
    worker processes, in batches, from their bytes, and the process that reads the book never loads the
    model; the proposals are those of one process."""
    from captioner import api

    doc = tmp_path / "book.epub"
    shutil.copy(ZIP / "getting-started.epub", doc)
    one = documents.fill([str(doc)], model_args={"read_text": "never"}, batch_size=2, processes=1)
    monkeypatch.setattr(api.Captioner, "__init__", lambda *a, **k: pytest.fail("a model was loaded here"))
    pooled = documents.fill([str(doc)], model_args={"read_text": "never"}, batch_size=2, processes=2)
    assert pooled.captioned == one.captioned == 3   # the others are decided by their context
    assert [(r["image"], r.get("alt_text")) for r in pooled] == [(r["image"], r.get("alt_text")) for r in one]


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("epubcheck") or not shutil.which("java"), reason="epubcheck is not installed")
def test_epubcheck_gives_the_same_verdict_after_fill_write(tmp_path):
    doc = tmp_path / "getting-started.epub"
    shutil.copy(ZIP / doc.name, doc)
    verdict = _epubcheck(doc)
    assert documents.write([str(doc)], captioner=_Fixed()).written == [str(doc)]
    assert _epubcheck(doc) == verdict


class _Fixed:
    """A stand-in for the model where the test is about the document, not the words."""

    def caption_paths(self, paths, batch_size=16, workers=0):
        from captioner.api import Caption

        for p in paths:
            yield p, Caption(text="a screenshot", words=[], score=0.0, alt_text="A screenshot of a documentation page.")


def test_check_never_imports_onnxruntime_or_the_model():
    code = ("import sys; sys.modules['onnxruntime'] = None; sys.modules['torch'] = None\n"
            "from captioner.cli import main\n"
            f"rc = main(['check', {str(SITE)!r}, '--format', 'jsonl'])\n"
            "assert 'captioner.api' not in sys.modules, 'the model code was imported'\n"
            "sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 1, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert {"document", "location", "src", "image", "alt", "status"} <= lines[0].keys()
    assert sum(x["status"] == "missing" for x in lines) == 4


def test_check_prints_lines_like_a_linter(capsys):
    assert main(["check", str(SITE / "getting-started.md")]) == 1
    out = capsys.readouterr()
    assert out.out.splitlines()[0] == (f"{SITE / 'getting-started.md'}:103:1: suspicious: img/multipage.png "
                                         '(alt "Screenshot" is a placeholder word)')
    assert "3 suspicious" in out.err
    assert main(["check", str(SITE / "index.md")]) == 0
    assert main(["check", str(SITE / "nothing.md")]) == 2
    assert "nothing.md: no such file or folder" in capsys.readouterr().err


LOADED = "() => { const i = document.getElementById('photo'); return i.complete && i.naturalWidth > 0; }"


@needs_chromium
@needs_axe
def test_review_page_shows_the_documents_context_and_is_accessible(flow):
    playwright = pytest.importorskip("playwright.sync_api")
    from test_review_server import Server
    from browser import axe_violations

    tmp, *_ = flow
    srv = Server(tmp, "proposals.jsonl")
    try:
        with playwright.sync_playwright() as p:
            browser = launch(p)
            page = browser.new_context(bypass_csp=True).new_page()
            page.goto(srv.url + "#" + "site%2Fimg%2Freadthedocs.png")
            playwright.expect(page.locator("#photo-name")).to_have_text("readthedocs.png")
            uses = page.locator("#use-list")
            playwright.expect(uses).to_contain_text("getting-started.html")
            playwright.expect(uses).to_contain_text("readthedocs.org")
            playwright.expect(uses).to_contain_text("the image is a link's only content")
            playwright.expect(page.locator("#uses-title")).to_have_text("Where documents show it (2)")
            page.wait_for_function(LOADED)                               # the preview is the image's pixels
            assert axe_violations(page) == []
            page.locator("#queue button", has_text="plugin-events.svg").click()   # an SVG, rendered for the preview
            playwright.expect(page.locator("#photo-name")).to_have_text("plugin-events.svg")
            page.wait_for_function(LOADED)
            assert axe_violations(page) == []
            browser.close()
    finally:
        srv.stop()


def test_fill_says_what_it_needs(capsys):
    assert main(["fill", str(SITE)]) == 2
    assert "choose --output PROPOSALS.jsonl" in capsys.readouterr().err
    assert main(["fill", str(SITE), "--output", "p.jsonl", "--write"]) == 2
    assert main(["fill", str(SITE), "--write", "--from", "no-such-proposals.jsonl"]) == 2
    assert "--from no-such-proposals.jsonl: no such proposals file" in capsys.readouterr().err


def test_a_page_on_one_line_is_filled(tmp_path, capsys):
    """Minified HTML, every image on one line: setting the first alt shifts the columns of the others,
    which name them.  The write is still verified (the same images, in order, only the asked alt texts
    changed) and done; before, it failed its own check and ended in a traceback."""
    photo = ROOT / "src" / "captioner" / "examples" / "cat.jpg"
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(photo, tmp_path / name)
    page = tmp_path / "index.html"
    page.write_text('<html><body><img src="a.jpg"><p>x</p><img src="b.jpg" alt="">'
                    '<img src="a.jpg"></body></html>')
    assert main(["fill", str(tmp_path), "--write"]) == 0, capsys.readouterr().err
    after = page.read_text()
    assert after.count('alt="Image may show: Egyptian cat."') == 2 and '<img src="b.jpg" alt="">' in after
    assert main(["check", str(tmp_path)]) == 0
