"""The Streamlit app: its logic with AppTest, and once in a real headless browser."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from browser import CHROMIUM, axe_violations, needs_axe

from captioner.training.checkpoint import DEFAULT_MODEL
from conftest import ROOT, SHARED, needs_shared

pytestmark = [needs_shared, pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no shipped model")]
APP = ROOT / "src" / "captioner" / "serve" / "app.py"


@pytest.fixture
def examples(tmp_path, monkeypatch):
    for p in sorted((SHARED / "originals").glob("*.jpg"))[:2]:
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "broken.jpg").write_text("not a photo")
    monkeypatch.setenv("CAPTIONER_EXAMPLES", str(tmp_path))
    return tmp_path


def test_app_captions_an_example_and_survives_a_bad_file(examples):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception
    assert any("broken.jpg" in w.value for w in at.warning)   # the gallery names the unreadable file
    good = sorted(p.name for p in examples.glob("*.jpg") if p.name != "broken.jpg")[0]
    at.selectbox(key="example").set_value(good).run()
    assert not at.exception
    headline = at.subheader[0].value
    assert len(headline.split()) >= 3
    assert at.success and "In domain" in at.success[0].value           # the flag, for a Flickr8k photo
    assert at.metric and at.metric[0].value.endswith("%")              # the confidence
    assert at.code and at.code[0].value == headline                    # the recommended alt text, to copy
    assert at.table                                                    # the ImageNet tags
    assert not at.select_slider                                        # attention maps only on request
    attention = next(t for t in at.toggle if t.label == "Attention maps")
    assert attention.value is False
    attention.set_value(True).run()
    assert not at.exception
    caption = next(m.value for m in at.markdown if m.value.startswith("The model's caption"))
    caption = caption.split(": ", 1)[1].replace("\\", "")
    words = at.select_slider[0].options
    assert len(words) == len(caption.rstrip(".").split())          # one attention map per word
    at.select_slider[0].set_value(1).run()
    assert not at.exception
    at.selectbox(key="example").set_value("broken.jpg").run()
    assert not at.exception and "not an image" in at.error[0].value
    at.slider[0].set_value(5).run()                              # beam size
    at.selectbox(key="example").set_value(good).run()
    assert not at.exception and at.subheader and not at.error


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
@needs_axe
def test_browser_upload_shows_a_caption(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CAPTIONER_EXAMPLES": ""}
    proc = subprocess.Popen([sys.executable, "-m", "captioner", "app", "--port", str(port), "--host", "127.0.0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    photo = sorted((SHARED / "originals").glob("*.jpg"))[0]
    shot = Path(os.environ.get("CAPTIONER_SCREENSHOT_DIR", tmp_path)) / "app_upload.png"
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            for _ in range(120):
                try:
                    page.goto(f"http://127.0.0.1:{port}", timeout=2000)
                    break
                except Exception:
                    if proc.poll() is not None:
                        raise RuntimeError(proc.stdout.read().decode())
                    time.sleep(0.5)
            page.locator("input[type=file]").first.set_input_files(str(photo), timeout=60000)
            heading = page.locator("h3").filter(has_text=".").first
            heading.wait_for(timeout=120000)
            text = heading.inner_text()
            page.get_by_text("Recommended alt text, to copy").wait_for(timeout=60000)   # flag, confidence, alt text
            page.wait_for_timeout(1500)
            page.screenshot(path=str(shot), full_page=True)
            violations = axe_violations(page)                 # accessible: no serious or critical violations
            browser.close()
    finally:
        proc.terminate()
        proc.wait(10)
    assert len(text.split()) >= 3
    assert shot.stat().st_size > 10_000
    assert violations == [], json.dumps(violations, indent=1)


def test_app_survives_every_kind_of_file(tmp_path, monkeypatch):
    """The image zoo through the app: odd-but-valid files get a caption, bad ones a message, and the
    app keeps working after each."""
    from streamlit.testing.v1 import AppTest

    from test_images import make_zoo

    expect = make_zoo(tmp_path / "zoo")
    monkeypatch.setenv("CAPTIONER_EXAMPLES", str(tmp_path / "zoo"))
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception
    names = [n for n in at.selectbox(key="example").options if n != "—"]
    assert len(names) == len(expect) - 2  # all but the folder and the file without an extension
    for name in names:
        at.selectbox(key="example").set_value(name).run()
        assert not at.exception, name
        if expect[name]:
            assert at.subheader and not at.error, name
        else:
            assert at.error and name in at.error[0].value, name


BUNDLED = ROOT / "src" / "captioner" / "examples"


@pytest.mark.parametrize("name, alt_text", [("chart.png", "Bar chart: Visitors to the museum per day."),
                                            ("coffee.jpg", "Image may show: espresso.")])
def test_the_headline_is_the_alt_text_and_the_caption_a_detail(monkeypatch, name, alt_text):
    """The bundled chart and coffee cup: the large headline is the recommended alt text, the model's
    own caption (which describes a photo the image is not) appears only as a labelled line of small
    print, and the image is shown as it is (no attention map unless asked for)."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CAPTIONER_EXAMPLES", str(BUNDLED))
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    at.selectbox(key="example").set_value(name).run()
    assert not at.exception
    assert [h.value for h in at.subheader] == [alt_text]              # the only large line
    details = [m.value.replace("\\", "") for m in at.markdown if m.value.startswith("The model")]
    assert len(details) == 1 and details[0].startswith("The model's caption (not used in the alt text): ")
    caption = details[0].split(": ", 1)[1].rstrip(".")
    assert len(caption.split()) >= 3 and caption not in alt_text
    assert not at.select_slider                                       # no attention map by default
    assert at.get("image"), "the image itself is shown"
