"""The review page of a library run (report.py): doubtful photos first, everything escaped, and, in
headless Chromium, a real run's page with every thumbnail loaded."""
import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from captioner.training.checkpoint import DEFAULT_MODEL
from captioner.library.report import doubt, write_report
from conftest import SHARED, needs_shared

from browser import CHROMIUM, axe_violations, needs_axe


def test_doubtful_first_and_everything_escaped(tmp_path):
    for n in ("a.jpg", "b.jpg", "c.jpg", "<b>x.jpg"):
        Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / n, "JPEG")
    recs = [{"image": str(tmp_path / "a.jpg"), "caption": "a dog", "alt_text": "A dog.", "in_domain": True,
             "confidence": 0.9},
            {"image": str(tmp_path / "b.jpg"), "caption": "a man", "alt_text": "Image may show: a man.",
             "in_domain": True, "confidence": 0.2, "guided": "bench"},
            {"image": str(tmp_path / "missing.jpg"), "error": "missing.jpg: no such file"},
            {"image": str(tmp_path / "c.jpg"), "caption": "a cat <script>alert(1)</script>",
             "alt_text": "No reliable description", "in_domain": False, "confidence": 0.05},
            {"image": str(tmp_path / "<b>x.jpg"), "caption": "a car", "alt_text": "A car.", "in_domain": None,
             "confidence": None}]
    assert [Path(r["image"]).name for r in sorted(recs, key=doubt)] == \
        ["missing.jpg", "c.jpg", "b.jpg", "a.jpg", "<b>x.jpg"]
    page = write_report(recs, tmp_path / "out" / "report.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;x.jpg" in page and "<b>x" not in page
    shown = [html.unescape(m) for m in re.findall(r'<div class="card[^"]*" data-image="([^"]*)"', page)]
    assert shown == [r["image"] for r in sorted(recs, key=doubt)]
    assert "1 failed, 1 out of domain, 2 with confidence below 0.5" in page
    assert len(list((tmp_path / "out" / "report_thumbs").glob("*.jpg"))) == 4   # not for the missing file


def test_the_page_shows_a_persons_decisions(tmp_path):
    import json

    from captioner.library.decisions import ReviewStore
    from captioner.library.report import main

    for n in ("a.jpg", "b.jpg", "c.jpg"):
        Image.new("RGB", (40, 30), (20, 10, 200)).save(tmp_path / n, "JPEG")
    res = tmp_path / "r.jsonl"
    res.write_text("".join(json.dumps({"image": str(tmp_path / n), "caption": "a dog", "alt_text": "A dog.",
                                       "in_domain": True, "confidence": c}) + "\n"
                           for n, c in (("a.jpg", 0.9), ("b.jpg", 0.4), ("c.jpg", 0.7))))
    with ReviewStore(res) as s:
        s.index()
        s.decide(str(tmp_path / "a.jpg"), "edit", "A <i>wet</i> dog shaking off water.", reviewer="Ana <ana@x>")
        s.decide(str(tmp_path / "b.jpg"), "decorative", reviewer="bo")
        s.decide(str(tmp_path / "c.jpg"), "skip", reviewer="bo")
    assert main([str(res), str(tmp_path / "page.html")]) == 0
    page = (tmp_path / "page.html").read_text()
    assert "2 reviewed by a person" in page
    assert "reviewed: edited to \u201cA &lt;i&gt;wet&lt;/i&gt; dog shaking off water.\u201d, by Ana &lt;ana@x&gt;" in page
    assert "reviewed: decorative (empty alt text), by bo" in page and page.count('class="decision"') == 2
    # each card's status as a word in its own colour class (the same stylesheet as the review page's)
    assert page.count('<span class="status status-edited">edited</span>') == 1
    assert page.count('<span class="status status-decorative">decorative</span>') == 1
    assert page.count('<span class="status status-pending">pending</span>') == 1          # a skip decides nothing
    assert ".status-failed {" in page and ".status-accepted {" in page


@needs_shared
@pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no shipped model")
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
@needs_axe
def test_a_real_runs_page_in_chromium(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted((SHARED / "originals").glob("*.jpg"))[:9]:
        shutil.copy(p, photos / p.name)
    examples = Path(__file__).resolve().parents[1] / "src" / "captioner" / "examples"
    shutil.copy(examples / "cat.jpg", photos / "cat.jpg")           # out of domain
    (photos / "notes.jpg").write_text("not an image")
    html = tmp_path / "review.html"
    r = subprocess.run([sys.executable, "-m", "captioner", "caption", "photos", "--output", "r.jsonl",
                        "--html", "review.html"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 1 and html.is_file(), r.stderr
    shot = Path(os.environ.get("CAPTIONER_SCREENSHOT_DIR", tmp_path)) / "report.png"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(html.as_uri())
        page.wait_for_load_state("load")
        cards = page.locator(".card")
        assert cards.count() == 11
        first = [cards.nth(i).get_attribute("data-image") for i in range(2)]
        assert first[0].endswith("notes.jpg") and first[1].endswith("cat.jpg")   # the failure, then out of domain
        assert "out of domain" in cards.nth(1).inner_text()
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")          # lazy thumbnails load
        page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)", timeout=30000)
        assert page.evaluate("document.images.length") == 10
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(shot), full_page=False)
        assert axe_violations(page) == []                       # accessible (axe-core: no serious or critical)
        browser.close()
    assert shot.stat().st_size > 10_000
