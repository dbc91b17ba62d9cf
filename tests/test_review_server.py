"""The review server (serve/review.py): what it serves and refuses (traversal, tokens, hosts, forged
posts), in-process; then the page itself in headless Chromium: doubtful first, decisions by keyboard
and buttons, reload, markup shown as text, two clients at once, kill -9, and axe-core."""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from browser import axe_violations, free_port, launch, needs_axe, needs_chromium
from captioner.library.decisions import ReviewStore
from captioner.serve.review import create_review_app

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "captioner" / "examples"
MARKUP_NAME = "<img src=x onerror=window.pwned=1>.png"
MARKUP_TEXT = "Renew <script>window.pwned=2</script> & <b>loans</b>"


def rec(image, alt, conf, in_domain=True, kind="photo", text=None, caption=None):
    return {"image": image, "caption": caption or alt.rstrip(".").lower(), "alt_text": alt, "in_domain": in_domain,
            "confidence": conf, "tags": [{"name": "tabby", "prob": 0.61}], "kind": kind, "kind_probability": 0.9,
            "chart_type": None, "text": None if text is None else {"text": text, "lines": []},
            "long_description": None}


@pytest.fixture
def library(tmp_path, monkeypatch):
    """A run's folder: photos (real example images, one named with markup, one broken), a results file
    as `captioner caption --output` writes it, with relative paths, and a secret beside it."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("cat.jpg", "rocket.jpg", "coffee.jpg", "astronaut.jpg", "screenshot.png"):
        shutil.copy(EXAMPLES / name, photos / name)
    shutil.copy(EXAMPLES / "drawing.png", photos / MARKUP_NAME)
    (photos / "broken.jpg").write_text("not an image")
    (tmp_path / "secret.txt").write_text("the reviewer's password")
    os.symlink(tmp_path / "secret.txt", photos / "link.jpg")     # beside the photos, never listed
    recs = [rec("photos/cat.jpg", "A cat lying on a bed.", 0.31, in_domain=False),
            rec("photos/rocket.jpg", "A rocket launching into the sky.", 0.42),
            rec("photos/coffee.jpg", "A cup of coffee on a table.", 0.88),
            rec("photos/astronaut.jpg", "A man in a white suit.", 0.65),
            rec("photos/screenshot.png", "Screenshot: " + MARKUP_TEXT, 0.55, kind="screenshot", text=MARKUP_TEXT),
            rec(f"photos/{MARKUP_NAME}", "A drawing of a house.", 0.72, kind="drawing"),
            {"image": "photos/broken.jpg", "error": "photos/broken.jpg: not an image (cannot identify image file)"}]
    results = tmp_path / "captions.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in recs))
    monkeypatch.chdir(tmp_path)
    return tmp_path, results, recs


def client(results, **kw):
    return TestClient(create_review_app(results, "ana", **kw), base_url="http://127.0.0.1:8765")


def test_serves_only_listed_photos_and_only_their_pixels(library):
    tmp, results, recs = library
    c = client(results)
    r = c.get("/api/photo", params={"image": "photos/cat.jpg"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert max(Image.open(__import__("io").BytesIO(r.content)).size) <= 1024
    for attempt in ("photos/../secret.txt", "../secret.txt", str(tmp / "secret.txt"), "/etc/passwd",
                    "photos%2F..%2Fsecret.txt", "photos/link.jpg", "photos/./cat.jpg", str(tmp / "photos/cat.jpg")):
        assert c.get("/api/photo", params={"image": attempt}).status_code == 404, attempt
    for url in ("/api/photo?image=photos%2F..%2F..%2Fsecret.txt", "/photos/cat.jpg", "/../secret.txt",
                "/%2e%2e/secret.txt", "/static/../secret.txt", "/captions.jsonl", "/review.html"):
        r = c.get(url)
        assert r.status_code == 404 and b"password" not in r.content, url
    # a listed photo swapped for a link to the secret: the server decodes pixels, so it refuses
    os.replace(tmp / "photos/coffee.jpg", tmp / "coffee.jpg")
    os.symlink(tmp / "secret.txt", tmp / "photos/coffee.jpg")
    r = c.get("/api/photo", params={"image": "photos/coffee.jpg"})
    assert r.status_code == 415 and b"password" not in r.content
    assert c.get("/api/photo", params={"image": "photos/broken.jpg"}).status_code == 415
    page = c.get("/")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]


def test_host_token_and_forged_posts(library):
    _, results, _ = library
    assert TestClient(create_review_app(results, "ana"), base_url="http://evil.example").get("/").status_code == 403
    c = client(results)
    good = {"image": "photos/cat.jpg", "action": "accept"}
    assert c.post("/api/decisions", content=json.dumps(good), headers={"content-type": "text/plain"}).status_code == 415
    assert c.post("/api/decisions", json=good, headers={"origin": "http://evil.example"}).status_code == 403
    assert c.post("/api/decisions", json={**good, "action": "approve"}).status_code == 422
    assert c.post("/api/decisions", json={**good, "image": "../secret.txt"}).status_code == 404
    assert c.post("/api/decisions", json={**good, "action": "edit", "text": "  "}).status_code == 422
    ok = c.post("/api/decisions", json=good, headers={"origin": "http://127.0.0.1:8765"})
    assert ok.status_code == 200 and ok.json()["reviewed"] == 1 and ok.json()["decision"]["reviewer"] == "ana"

    # beyond loopback: the token on every request, by header or by the cookie its link sets
    t = TestClient(create_review_app(results, "ana", token="s3cret", loopback_only=False),
                   base_url="http://192.0.2.7:8765")
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cre"}):
        for url in ("/", "/api/summary", "/api/photo?image=photos/cat.jpg", "/review.js"):
            assert t.get(url, headers=headers).status_code == 401, (url, headers)
    assert t.post("/api/decisions", json=good).status_code == 401
    assert t.get("/?token=wrong").status_code == 401
    assert t.get("/api/summary", headers={"authorization": "Bearer s3cret"}).json()["reviewed"] == 1
    r = t.get("/?token=s3cret", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/" and "HttpOnly" in r.headers["set-cookie"]
    assert t.get("/api/photos").status_code == 200          # the cookie now rides along
    from captioner import cli

    assert cli.main(["review", str(results), "--host", "0.0.0.0"]) == 2   # refused without a token


def test_api_lists_doubtful_first_filters_and_counts(library):
    _, results, _ = library
    c = client(results)
    s = c.get("/api/summary").json()
    assert s["photos"] == 7 and s["reviewed"] == 0 and s["kinds"] == ["drawing", "photo", "screenshot"]
    items = c.get("/api/photos").json()["items"]
    assert [i["name"] for i in items][:3] == ["broken.jpg", "cat.jpg", "rocket.jpg"]
    assert next(i for i in items if i["kind"] == "screenshot")["text"] == MARKUP_TEXT     # as data, unchanged
    assert c.get("/api/photos", params={"q": "loans"}).json()["total"] == 1
    assert c.get("/api/photos", params={"kind": "drawing"}).json()["items"][0]["name"] == MARKUP_NAME
    assert c.get("/api/photos", params={"status": "bogus"}).status_code == 422
    c.post("/api/decisions", json={"image": "photos/rocket.jpg", "action": "skip"})
    assert c.get("/api/summary").json()["reviewed"] == 0                               # a skip decides nothing
    assert c.get("/api/photos", params={"status": "unreviewed"}).json()["total"] == 7
    with open(results, "a") as f:                                                       # a run still appending
        f.write(json.dumps(rec("photos/cat2.jpg", "Another cat.", 0.5)) + "\n")
    time.sleep(2.1)
    assert c.get("/api/summary").json()["photos"] == 8


# ---------------------------------------------------------------- the page in a browser

class Server:
    def __init__(self, cwd, results, reviewer="ana"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc = subprocess.Popen([sys.executable, "-m", "captioner", "review", str(results), "--port",
                                      str(self.port), "--reviewer", reviewer], cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(100):
            try:
                urllib.request.urlopen(self.url + "api/summary", timeout=1)
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(self.proc.stdout.read().decode())
                time.sleep(0.2)
        raise RuntimeError("the review server did not start")

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)


@pytest.fixture
def server(library):
    tmp, results, _ = library
    s = Server(tmp, results)
    yield s, results
    s.stop()


def decisions(results):
    with sqlite3.connect(str(results) + ".review.sqlite") as db:
        return db.execute("SELECT image, action, text, reviewer FROM decisions ORDER BY id").fetchall()


@needs_chromium
def test_review_by_keyboard_reload_and_markup(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    srv, results = server
    with playwright.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(srv.url)
        name = page.locator("#photo-name")
        progress = page.locator("#progress-text")
        playwright.expect(name).to_have_text("broken.jpg")                  # the failure first
        playwright.expect(progress).to_have_text("0 of 7 reviewed")
        assert page.locator("#accept").is_disabled()                        # a failure can only be skipped
        page.keyboard.press("j")
        playwright.expect(name).to_have_text("cat.jpg")                     # then out of domain
        page.keyboard.press("k")
        playwright.expect(name).to_have_text("broken.jpg")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("a")                                            # accept cat.jpg
        playwright.expect(name).to_have_text("rocket.jpg")
        page.keyboard.press("e")                                            # edit rocket.jpg
        box = page.locator("#edit-text")
        playwright.expect(box).to_be_focused()
        assert box.input_value() == "A rocket launching into the sky."
        box.fill("A SpaceX Falcon 9 lifting off at dusk.")
        playwright.expect(page.locator("#edit-count")).to_have_text("38 / 125 characters")
        box.press("Control+Enter")
        playwright.expect(name).to_have_text("screenshot.png")
        shown = page.locator("#alt-text").inner_text()
        assert shown == "Screenshot: " + MARKUP_TEXT                          # markup as text
        page.keyboard.press("d")                                            # decorative
        playwright.expect(name).to_have_text("astronaut.jpg")
        page.keyboard.press("s")                                            # skip
        playwright.expect(name).to_have_text(MARKUP_NAME)
        page.wait_for_function("() => document.getElementById('photo').complete")
        assert page.evaluate("window.pwned") is None                        # no markup ran
        assert page.locator("img").count() == 1 and page.locator("script").count() == 1
        playwright.expect(progress).to_have_text("3 of 7 reviewed")
        shot = Path(os.environ.get("CAPTIONER_SCREENSHOT_DIR", tmp_path)) / "review.png"
        page.screenshot(path=str(shot))

        page.reload()                                                       # the decisions are there
        playwright.expect(name).to_have_text(MARKUP_NAME)                   # and the place kept
        playwright.expect(progress).to_have_text("3 of 7 reviewed")
        marks = page.locator("#queue .status").all_inner_texts()
        assert marks == ["failed", "accepted", "edited", "decorative", "pending", "pending", "pending"]
        page.locator("#queue button").nth(2).click()
        assert "edited to “A SpaceX Falcon 9 lifting off at dusk.”, by ana" in page.locator("#decision").inner_text()
        page.locator("#status").select_option("unreviewed")
        page.locator("#filters button").click()
        playwright.expect(page.locator("#queue-title")).to_have_text("Photos (4 listed)")
        browser.close()
    assert [d[:3] for d in decisions(results)] == [
        ("photos/cat.jpg", "accept", None), ("photos/rocket.jpg", "edit", "A SpaceX Falcon 9 lifting off at dusk."),
        ("photos/screenshot.png", "decorative", ""), ("photos/astronaut.jpg", "skip", None)]
    assert shot.stat().st_size > 10_000


@needs_chromium
def test_two_clients_and_kill_9_lose_no_decision(server):
    playwright = pytest.importorskip("playwright.sync_api")
    srv, results = server
    images = [f"photos/{n}" for n in ("cat.jpg", "rocket.jpg", "coffee.jpg", "astronaut.jpg", "screenshot.png")]
    # each tab posts n edits at once and keeps the ids the server acknowledged in window[sink]
    burst = """([images, who, n, sink]) => { window[sink] = []; window[sink + 'Done'] = Promise.all(
        [...Array(n).keys()].map(async (i) => { try {
            const r = await fetch('/api/decisions', {method: 'POST', headers: {'Content-Type': 'application/json'},
                body: JSON.stringify({image: images[i % images.length], action: 'edit', text: who + ' ' + i})});
            if (r.ok) window[sink].push((await r.json()).id);
        } catch (e) {} })); return 0; }"""
    with playwright.sync_playwright() as p:
        browser = launch(p)
        tabs = [browser.new_context().new_page() for _ in range(2)]
        for k, t in enumerate(tabs):
            t.goto(srv.url)
        for k, t in enumerate(tabs):                                         # both at once
            t.evaluate(burst, [images, f"tab{k}", 60, "ok"])
        ids = []
        for t in tabs:
            t.evaluate("window.okDone")
            ids.append(t.evaluate("window.ok"))
        assert [len(i) for i in ids] == [60, 60]                              # two clients, all saved
        # now kill -9 the server in the middle of a burst: what it acknowledged is on disk
        tabs[0].evaluate(burst, [images, "late", 400, "acked"])
        tabs[0].wait_for_function("() => window.acked.length >= 20", timeout=30000)   # a function: the CSP forbids eval
        srv.stop(signal.SIGKILL)
        tabs[0].evaluate("window.ackedDone")
        acked = tabs[0].evaluate("window.acked")
        browser.close()
    saved = {r[0] for r in sqlite3.connect(str(results) + ".review.sqlite").execute("SELECT id FROM decisions")}
    assert set(ids[0]) | set(ids[1]) <= saved and set(acked) <= saved and len(acked) >= 20
    with ReviewStore(results) as s:
        assert s.counts()["reviewed"] == 5


@needs_chromium
@needs_axe
def test_review_page_is_accessible(server):
    playwright = pytest.importorskip("playwright.sync_api")
    srv, _ = server
    with playwright.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_context(bypass_csp=True).new_page()   # lets axe-core's script into the page
        page.goto(srv.url)
        playwright.expect(page.locator("#photo-name")).to_have_text("broken.jpg")
        assert axe_violations(page) == []
        page.keyboard.press("j")
        page.keyboard.press("e")                                 # the editor open, too
        assert axe_violations(page) == []
        # the keyboard alone reaches every control: Tab from the top walks through them in order
        page.keyboard.press("Escape")
        page.evaluate("document.activeElement.blur()")
        seen = set()
        for _ in range(60):
            page.keyboard.press("Tab")
            seen.add(page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()"))
        assert {"kind", "status", "query", "accept", "edit", "decorative", "skip", "prev", "next"} <= seen
        browser.close()


def _luminance(rgb: str) -> float:
    """'rgb(r, g, b)' as a browser computes it -> WCAG relative luminance."""
    channels = [int(c) / 255 for c in rgb[rgb.index("(") + 1:rgb.index(")")].split(",")[:3]]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


@needs_chromium
@needs_axe
def test_each_status_has_its_own_word_and_colour_and_passes_axe(library):
    """Failed, pending, accepted, edited and decorative: each shown as its word, in a colour of its
    own (text and background), each readable (contrast >= 4.5:1), in the queue and on the card; and
    axe-core finds nothing serious on the page showing all five."""
    playwright = pytest.importorskip("playwright.sync_api")
    tmp, results, _ = library
    c = client(results)
    for image, action, text in (("photos/cat.jpg", "accept", None), ("photos/rocket.jpg", "edit", "A rocket."),
                                ("photos/screenshot.png", "decorative", None)):
        assert c.post("/api/decisions", json={"image": image, "action": action, "text": text}).status_code == 200
    srv = Server(tmp, results)
    try:
        with playwright.sync_playwright() as p:
            browser = launch(p)
            page = browser.new_context(bypass_csp=True).new_page()
            page.goto(srv.url)
            playwright.expect(page.locator("#photo-name")).to_have_text("broken.jpg")
            look = """(el) => { const s = getComputedStyle(el);
                return [el.textContent, s.color, s.backgroundColor, s.borderTopStyle]; }"""
            queue = [page.locator("#queue .status").nth(i).evaluate(look)
                     for i in range(page.locator("#queue .status").count())]
            cards = []
            for i in range(len(queue)):                       # each photo's card shows its status too
                page.locator("#queue button").nth(i).click()
                cards.append(page.locator("#status-shown").evaluate(look))
            violations = axe_violations(page)
            browser.close()
    finally:
        srv.stop()
    assert [q[0] for q in queue] == ["failed", "accepted", "edited", "decorative", "pending", "pending", "pending"]
    assert cards == queue
    colours = {word: (fg, bg) for word, fg, bg, _ in queue}
    assert len(colours) == 5 and len(set(colours.values())) == 5            # a colour of its own, each
    assert len({fg for fg, _ in colours.values()}) == 5 and len({bg for _, bg in colours.values()}) == 5
    assert colours["failed"] != colours["accepted"]
    for word, (fg, bg) in colours.items():
        hi, lo = sorted((_luminance(fg), _luminance(bg)), reverse=True)
        assert (hi + 0.05) / (lo + 0.05) >= 4.5, word
    assert violations == [], json.dumps(violations, indent=1)
