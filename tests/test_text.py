"""Reading text and telling kinds of image apart (ocr.py, kind.py, alttext.py, wording.py): a chart, a
page and a screenshot drawn here get the right kind, their words and an alt text of their kind;
photos stay photos and are not read; a missing OCR engine gives a message, never a traceback, and
the caption still comes; nothing is written outside the outputs asked for (no telemetry)."""
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from captioner import wording
from captioner.knowledge import alttext
from captioner.knowledge.ocr import ImageText, TextLine, filter_lines, latin, reading_order
from conftest import SHARED, needs_shared

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ROOT = Path(__file__).resolve().parents[1]


def mpl_font(serif: bool = False) -> str:
    import matplotlib

    return str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / ("DejaVuSerif.ttf" if serif else "DejaVuSans.ttf"))


def draw_chart(path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    ax.bar(["North", "South", "East", "West"], [42, 31, 57, 18])
    ax.set_title("Monthly active users by region")
    ax.set_xlabel("Region")
    ax.set_ylabel("Users (thousands)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


PAGE_TEXT = ("The garden club met on the first Monday of the month to plan the spring planting. Members "
             "agreed to share seeds, tools and compost, and to keep a record of what grew well in each bed. "
             "The treasurer reported that the annual fees cover the rent of the allotment and the water bill.")


def draw_page(path: Path) -> Path:
    import textwrap

    im = Image.new("RGB", (850, 1100), "white")
    d = ImageDraw.Draw(im)
    d.text((80, 70), "Minutes of the garden club", fill="black", font=ImageFont.truetype(mpl_font(True), 32))
    f = ImageFont.truetype(mpl_font(True), 17)
    y = 140
    for _ in range(4):
        for line in textwrap.wrap(PAGE_TEXT, 78):
            d.text((80, y), line, fill="#111", font=f)
            y += 26
        y += 18
    im.save(path)
    return path


SCREEN = """<html><body style="margin:0;font-family:sans-serif;background:#f5f6f8">
<header style="background:#1a73e8;color:white;padding:14px 24px;font-size:20px">Northwind Bank</header>
<div style="background:white;width:380px;margin:60px auto;padding:32px;border-radius:10px;box-shadow:0 2px 8px #0002">
<h1 style="font-size:28px">Sign in to Northwind Bank</h1><label>Email address</label><br>
<input style="width:90%;padding:9px"><br><label>Password</label><br><input style="width:90%;padding:9px"><br>
<button style="margin-top:20px;background:#1a73e8;color:white;border:0;padding:11px 22px">Sign in</button>
<p style="font-size:13px;color:#666">Forgot your password?</p></div></body></html>"""


def draw_screenshot(path: Path) -> Path:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                    "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_content(SCREEN)
        Image.open(io.BytesIO(page.screenshot())).convert("RGB").save(path)
        browser.close()
    return path


def words_of(text: str) -> set[str]:
    return {w.strip(".,:;()?").lower() for w in text.split()}


@pytest.fixture(scope="module")
def cap():
    from captioner.api import Captioner

    return Captioner()


# ------------------------------------------------------------------ the whole path, on drawn images


def test_chart_is_a_bar_chart_with_its_title_and_labels(cap, tmp_path):
    c = cap.caption(draw_chart(tmp_path / "chart.png"))
    assert c.kind == "chart" and c.chart_type == "bar", (c.kind, c.chart_type, c.kind_probability)
    read = words_of(c.image_text.text)
    assert {"monthly", "active", "users", "region", "north", "south", "east", "west"} <= read, read
    assert c.alt_text == "Bar chart: Monthly active users by region."
    assert "Monthly active users by region" in c.long_description
    assert "Labels:" in c.long_description and "North" in c.long_description
    assert "Values read:" in c.long_description
    for line in c.image_text.lines:      # each line with a confidence and a box inside the image
        assert 0.5 <= line.confidence <= 1 and len(line.box) == 4
        assert all(0 <= x <= 700 and 0 <= y <= 450 for x, y in line.box)
    d = c.to_dict()
    assert d["kind"] == "chart" and d["text"]["lines"] and d["long_description"] == c.long_description


def test_page_is_a_document_with_title_and_opening_words(cap, tmp_path):
    c = cap.caption(draw_page(tmp_path / "page.png"))
    assert c.kind == "document", (c.kind, c.kind_probability)
    assert c.alt_text.startswith("Document: Minutes of the garden club. The garden club met"), c.alt_text
    assert len(c.alt_text) <= alttext.MAX_CHARS
    truth = words_of(PAGE_TEXT) | {"minutes", "of", "the", "garden", "club"}
    read = words_of(c.image_text.text)
    assert len(read & truth) / len(truth) >= 0.9 and len(read & truth) / len(read) >= 0.9


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_screenshot_says_screenshot_and_its_heading(cap, tmp_path):
    c = cap.caption(draw_screenshot(tmp_path / "screen.png"))
    assert c.kind == "screenshot", (c.kind, c.kind_probability)
    assert c.alt_text.startswith("Screenshot: Sign in to Northwind Bank."), c.alt_text
    assert {"email", "password", "forgot"} <= words_of(c.image_text.text)


@needs_shared
def test_photos_stay_photos_and_are_not_read_by_default(cap):
    from captioner.api import Captioner

    photos = sorted((SHARED / "originals").glob("*.jpg"))[:12] + sorted((ROOT / "src/captioner/examples").glob("*.jpg"))
    out = dict(cap.caption_paths(photos))
    assert all(c.kind == "photo" for c in out.values()), {p.name: c.kind for p, c in out.items() if c.kind != "photo"}
    assert all(c.image_text is None and c.long_description == "" for c in out.values())
    # the README's first example is worded as before
    dog = SHARED / "originals" / "1107246521_d16a476380.jpg"
    assert cap.caption(dog).alt_text == "A black dog runs through the grass."
    # read anyway: what the strict photo filter keeps is appended; the caption part stays
    c = Captioner(read_text="always").caption(dog)
    assert c.image_text is not None and c.alt_text.startswith("A black dog runs through the grass")


def test_read_text_never_and_max_chars(cap, tmp_path):
    chart = draw_chart(tmp_path / "chart.png")
    c = cap.caption(chart, read_text="never")
    assert c.kind == "chart" and c.image_text is None and c.alt_text == "Bar chart."
    c = cap.caption(draw_page(tmp_path / "page.png"), max_chars=40)
    assert len(c.alt_text) <= 40 and c.alt_text.endswith("…")
    with pytest.raises(ValueError, match="max_chars 5"):
        cap.caption(chart, max_chars=5)


def test_missing_ocr_engine_gives_a_message_and_the_caption(cap, tmp_path, monkeypatch):
    from captioner.knowledge.ocr import TextReader

    chart = draw_chart(tmp_path / "chart.png")
    monkeypatch.setitem(sys.modules, "rapidocr", None)     # import rapidocr now fails
    monkeypatch.setattr(cap, "reader", TextReader())
    c = cap.caption(chart)
    assert c.kind == "chart" and c.text and c.alt_text == "Bar chart."
    assert "pip install 'rapidocr==3.10.0'" in c.text_error


def test_failing_ocr_engine_gives_a_message_and_the_caption(cap, tmp_path, monkeypatch):
    from captioner.knowledge.ocr import TextReader

    def broken(image):
        raise RuntimeError("onnxruntime: bad allocation")

    reader = TextReader()
    monkeypatch.setattr(reader, "engine", lambda: broken)
    monkeypatch.setattr(cap, "reader", reader)
    c = cap.caption(draw_page(tmp_path / "page.png"))
    assert c.kind == "document" and c.text and c.image_text is None
    assert c.text_error == "RapidOCR failed on this image (RuntimeError: onnxruntime: bad allocation)"
    assert c.alt_text == "Document page."      # not "no readable text": it was not read


def test_cli_without_ocr_engine_warns_and_captions(tmp_path):
    chart = draw_chart(tmp_path / "chart.png")
    shim = tmp_path / "shim"
    (shim / "rapidocr").mkdir(parents=True)
    (shim / "rapidocr" / "__init__.py").write_text("raise ImportError('libGL.so.1: cannot open shared object file')\n")
    env = {**os.environ, "PYTHONPATH": str(shim), "HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "captioner", "caption", str(chart)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Bar chart."
    assert "warning" in r.stderr and "libGL.so.1" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------ pure logic


def line(text, x, y, w, h, conf=0.99):
    return TextLine(text, conf, [[x, y], [x + w, y], [x + w, y + h], [x, y + h]])


def test_filters_and_reading_order():
    assert latin("RITE AID") and latin("Café 12") and not latin("东方明珠") and not latin("~~ ..")
    lines = [line("second", 300, 102, 80, 20), line("first", 10, 100, 80, 24), line("top", 10, 10, 50, 20),
             line("东方", 10, 200, 50, 20), line("weak", 10, 300, 50, 20, conf=0.3)]
    kept = reading_order(filter_lines(lines, 400))
    assert [l.text for l in kept] == ["top", "first", "second"]
    # photos: strict (confidence, letters, size, shape)
    photo = [line("GAKES", 10, 10, 60, 20, conf=0.8), line("PHARMACY", 10, 50, 120, 30), line("ab", 10, 90, 30, 30),
             line("tiny", 10, 130, 30, 4), line("tall", 10, 200, 10, 60)]
    assert [l.text for l in filter_lines(photo, 400, photo=True)] == ["PHARMACY"]


def test_alt_text_per_kind():
    t = ImageText([line("Monthly sales", 200, 10, 300, 30), line("Jan", 50, 400, 30, 14),
                   line("120", 5, 200, 30, 14), TextLine("Units sold", 0.99, [[5, 300], [25, 300], [25, 150], [5, 150]])],
                  700, 450)
    assert alttext.compose("a man", False, 0.1, [], "chart", t, "line") == "Line chart: Monthly sales."
    assert alttext.compose("a man", False, 0.1, [], "chart", None, None) == "Chart."
    long = alttext.long_description("chart", t, "line")
    assert long.splitlines()[0] == "Line chart: Monthly sales." and "y axis: Units sold" in long and "Values read: 120" in long
    shot = ImageText([line("Acme", 0, 0, 60, 20), line("Sign in to Acme", 300, 100, 400, 40), line("Password", 300, 200, 100, 18)], 1280, 800)
    assert alttext.compose("", None, None, [], "screenshot", shot) == "Screenshot: Sign in to Acme. Acme Password"
    assert alttext.compose("", None, None, [], "screenshot", ImageText()) == "Screenshot with no readable text."
    assert alttext.compose("", None, None, [], "screenshot", None) == "Screenshot."
    assert alttext.compose("a dog", False, 0.1, [], "drawing", None) == "Drawing."
    from captioner.knowledge.tags import Tag

    assert alttext.compose("a dog", False, 0.1, [Tag("zebra", 0.95, None)], "drawing", None) == "Drawing that may show: zebra."
    # a drawing in the domain of a decoder taught on a library's own captions (training/adapt.py) gets its caption
    assert alttext.compose("a sheep", True, 0.8, [], "drawing", None, taught=True) == "Drawing: A sheep."
    assert alttext.compose("a sheep", True, 0.2, [], "drawing", None, taught=True) == "Drawing that may show: a sheep."
    assert alttext.compose("a sheep", False, 0.8, [], "drawing", None, taught=True) == "Drawing."

    sign = ImageText([line("PHARMACY", 10, 50, 120, 30)], 500, 400)
    assert alttext.compose("a dog", False, 0.1, [Tag("zebra", 0.5, None)], "drawing", sign) == 'Drawing, with the text "PHARMACY".'
    assert alttext.compose("a man stands on the street", True, 0.8, [], "photo", sign) == \
        'A man stands on the street, with the text "PHARMACY".'
    assert alttext.compose("a man", False, 0.1, [], "photo", sign) == 'Image with the text "PHARMACY".'
    assert len(alttext.compose("x " * 100, True, 0.9, [], limit=30)) <= 30


def test_gender_neutral_wording():
    assert wording.neutral("a man and a woman sit on a bench") == "two people sit on a bench"
    assert wording.neutral("A girl throws his ball to the boys") == "A child throws their ball to the children"
    assert wording.neutral("a mango stand") == "a mango stand"       # whole words only
    assert wording.names_gender(["a", "woman", "runs"]) and not wording.names_gender(["a", "dog", "runs"])


# ------------------------------------------------------------------ entry points


def test_http_api_carries_kind_text_and_wording(cap, tmp_path):
    from fastapi.testclient import TestClient

    from captioner.serve.http import create_app

    _, app = create_app(cap)
    data = draw_chart(tmp_path / "chart.png").read_bytes()
    with TestClient(app) as client:
        r = client.post("/caption", files={"image": ("chart.png", data, "image/png")})
        assert r.status_code == 200
        body = r.json()
        assert body["kind"] == "chart" and body["alt_text"] == "Bar chart: Monthly active users by region."
        assert "Monthly" in body["text"]["text"] and body["long_description"]
        r = client.post("/caption?read_text=never&max_chars=30", files={"image": ("c.png", data, "image/png")})
        assert r.json()["text"] is None and len(r.json()["alt_text"]) <= 30
        assert client.post("/caption?read_text=sometimes", files={"image": ("c.png", data, "image/png")}).status_code == 422
        assert client.post("/caption?max_chars=3", files={"image": ("c.png", data, "image/png")}).status_code == 422


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_results_file_and_review_page_carry_text(tmp_path, suffix):
    from captioner.library.run import LibraryJob, caption_library
    from captioner.library.results import open_results

    photos = tmp_path / "photos"
    photos.mkdir()
    draw_chart(photos / "chart.png")
    out = tmp_path / f"results{suffix}"
    caption_library(LibraryJob([str(photos / "chart.png")], str(out), html=str(tmp_path / "r.html"), progress=False))
    with open_results(out) as store:
        (rec,) = store.records()
    assert rec["kind"] == "chart" and rec["chart_type"] == "bar" and "Monthly" in rec["text"]["text"]
    assert rec["long_description"].startswith("Bar chart: Monthly active users by region.")
    page = (tmp_path / "r.html").read_text()
    assert "kind: chart (bar)" in page and "Values read:" in page


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed")
def test_long_description_reaches_the_metadata(tmp_path):
    from captioner.library.run import LibraryJob, caption_library

    chart = draw_chart(tmp_path / "chart.png")
    caption_library(LibraryJob([str(chart)], str(tmp_path / "r.jsonl"), metadata="sidecar", progress=False))
    got = json.loads(subprocess.run(["exiftool", "-json", "-G1", "-XMP-iptcCore:all", str(chart.with_suffix(".xmp"))],
                                    capture_output=True, text=True, check=True).stdout)[0]
    assert got["XMP-iptcCore:AltTextAccessibility"] == "Bar chart: Monthly active users by region."
    assert got["XMP-iptcCore:ExtDescrAccessibility"].startswith("Bar chart: Monthly active users by region. / ")


# ------------------------------------------------------------------ nothing leaves the machine


def no_telemetry(home: Path) -> list[str]:
    """Files under a HOME that are ONNX Runtime's telemetry or Ray's usage statistics."""
    return [str(p) for p in home.rglob("*") if "Microsoft" in p.parts or "usage_stats" in p.name
            or p.name in ("onnxruntime.db", "deviceid")]


def test_caption_run_writes_no_telemetry_and_works_without_network(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    chart = draw_chart(tmp_path / "chart.png")
    env = {**os.environ, "HOME": str(home)}
    env.pop("ORT_DISABLE_TELEMETRY", None)
    r = subprocess.run([sys.executable, "-m", "captioner", "caption", str(chart)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "Bar chart: Monthly active users by region.", r.stderr
    assert no_telemetry(home) == []
    # and inside a network namespace with no network at all
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -n is not permitted here")
    r = subprocess.run(["unshare", "-n", sys.executable, "-m", "captioner", "caption", str(chart)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "Bar chart: Monthly active users by region.", r.stderr
    assert no_telemetry(home) == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_request_writes_no_telemetry(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    env.pop("ORT_DISABLE_TELEMETRY", None)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "captioner", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        data = draw_chart(tmp_path / "chart.png").read_bytes()
        boundary = "xYzBoundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"c.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/caption", data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert json.loads(urllib.request.urlopen(req, timeout=120).read())["kind"] == "chart"
    finally:
        proc.terminate()
        proc.wait(30)
    assert no_telemetry(home) == []


def test_ray_run_writes_no_telemetry(tmp_path):
    pytest.importorskip("ray")
    home = tmp_path / "home"
    home.mkdir()
    chart = draw_chart(tmp_path / "chart.png")
    env = {**os.environ, "HOME": str(home)}
    for k in ("ORT_DISABLE_TELEMETRY", "RAY_USAGE_STATS_ENABLED"):
        env.pop(k, None)
    r = subprocess.run([sys.executable, "-m", "captioner", "caption", str(chart), "--output", str(tmp_path / "r.jsonl"),
                        "--engine", "ray", "--ray-cpus", "1"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "r.jsonl").read_text())["kind"] == "chart"
    assert no_telemetry(home) == []


def test_ray_usage_statistics_are_off_for_the_clusters_it_starts(monkeypatch):
    pytest.importorskip("ray")
    from ray._common.usage import usage_lib

    from captioner.library.ray_engine import _environment

    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)
    assert usage_lib.usage_stats_enabled()          # Ray's default: on
    _environment()
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0" and not usage_lib.usage_stats_enabled()


def test_app_shows_kind_text_boxes_and_long_description(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    draw_chart(tmp_path / "chart.png")
    monkeypatch.setenv("CAPTIONER_EXAMPLES", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "src" / "captioner" / "serve" / "app.py"), default_timeout=180).run()
    at.selectbox(key="example").set_value("chart.png").run()
    assert not at.exception
    assert any("Kind of image:** chart (bar)" in m.value for m in at.markdown)
    assert at.code[0].value == "Bar chart: Monthly active users by region."
    # the boxes the app draws over the image: each line's outline in red
    from captioner.serve.app import text_boxes

    img = Image.open(tmp_path / "chart.png").convert("RGB")
    c = ImageText([line("Monthly", 100, 20, 200, 30)], *img.size)
    drawn = text_boxes(img, c)
    assert drawn.getpixel((100, 35)) == (230, 40, 40) and img.getpixel((100, 35)) != (230, 40, 40)
    assert any("Values read:" in t.value for t in at.text)
    at.selectbox(key="read_text").set_value("never").run()
    assert not at.exception and at.code[0].value == "Bar chart."


def test_bundled_examples_of_each_kind_give_the_readme_alt_texts(cap):
    ex = ROOT / "src" / "captioner" / "examples"
    got = {p.stem: cap.caption(p) for p in sorted(ex.glob("*.png"))}
    assert {k: c.kind for k, c in got.items()} == {"chart": "chart", "document": "document", "drawing": "drawing",
                                                   "screenshot": "screenshot"}
    readme = (ROOT / "docs" / "usage.md").read_text()
    for name, c in got.items():   # docs/usage.md shows each one's real output
        assert f"src/captioner/examples/{name}.png\t{c.alt_text}" in readme, (name, c.alt_text)


# ------------------------------------------------------------------ titles, on figures and pages made by others

TITLES = ROOT / "tests" / "fixtures" / "titles"    # origins and licences: README.md there


@pytest.fixture(scope="module")
def reader():
    from captioner.knowledge.ocr import TextReader

    return TextReader()


def read_fixture(reader, name):
    return reader.read(Image.open(TITLES / name).convert("RGB"))


@pytest.mark.parametrize("name, title", [
    # a title set on two centred lines, kept whole (the second line alone was taken)
    ("plot_rfe_with_cross_validation_001.png", "Recursive Feature Elimination with correlated features"),
    # the legend's heading "true class", in larger type, is inside the plot: not the title
    ("plot_isolation_forest_001.png", "Gaussian inliers with uniformly distributed outliers"),
    # legend entries ("virginica", "class 1") in type as large as the title's: never the title
    ("plot_sgd_iris_001.png", "Decision surface of multi-class SGD"),
    ("plot_voting_probas_001.png", "Class probabilities for sample 1 by different classifiers"),
    # a legend right under the title, left-aligned with it: the title stays
    ("plot_robust_vs_empirical_covariance_001.png", "Influence of outliers on the location estimation"),
    # no title at all: none of the five legend entries ("No shrinkage", ...) is taken for one
    ("plot_gradient_boosting_regularization_001.png", None),
])
def test_chart_titles_on_real_figures(reader, name, title):
    """scikit-learn's documentation figures, read by the OCR: the title is kept whole, and a legend's
    entries are never the title."""
    text = read_fixture(reader, name)
    alt = alttext.compose("a man is standing", True, 0.9, [], kind="chart", text=text, chart_type="line")
    assert alt == (f"Line chart: {title}." if title else "Line chart."), [l.text for l in text.lines][:8]


@pytest.mark.parametrize("name, starts, never", [
    # the running header "Chapter 1: Introduction", beside its page number, is not the title
    ("nettle_manual_p6.png", "Document: 1 Introduction. Nettle is a cryptographic library", "Chapter 1"),
    # the running header "Shared MIME-info Database", right-aligned at the top, is not the title
    ("shared_mime_info_spec_p4.png", "Document: 2.2. The source XML files. Each application provides", "Shared MIME"),
    # no heading on the page: the first line of its text, not the header over it
    ("shared_mime_info_spec_p9.png", "Document: The file starts with the magic string", "Shared MIME"),
    # a bullet list first: no bullet line is the title ("• SET;" was)
    ("libtasn1_manual_p6.png", "Document: This version doesn't handle the REAL type.", "Chapter 2"),
])
def test_page_titles_on_real_pages(reader, name, starts, never):
    """Pages of Debian's PDF manuals, rendered at 100 dpi and read by the OCR: a running header, a page
    number or a bullet line is never the title, and no header or page number is in the opening words."""
    text = read_fixture(reader, name)
    alt = alttext.compose("a man is standing", True, 0.9, [], kind="document", text=text, limit=1000)
    assert alt.startswith(starts) and never not in alt, alt[:200]


def test_fragments_on_one_baseline_are_joined_and_a_legend_is_not():
    """The geometry under the title rules: the detector's pieces of one wide line of type are joined
    left to right; entries apart by a colour swatch, another size or another baseline are not."""
    from captioner.knowledge.ocr import join_fragments, joined

    pieces = [line("museum per day", 330, 20, 190, 24), line("Visitors to the", 120, 21, 198, 24),
              line("Actual", 30, 80, 60, 20), line("Target", 30, 104, 62, 20),
              line("North", 600, 22, 60, 20), line("10", 700, 26, 12, 10)]
    rows = [joined(g).text for g in join_fragments(pieces)]
    assert rows[0] == "Visitors to the museum per day"
    assert "North" in rows and "10" in rows and "Actual" in rows and "Target" in rows
    text = ImageText(pieces, 800, 600)
    assert alttext.compose("", True, 0.9, [], kind="chart", text=text, chart_type="bar") == \
        "Bar chart: Visitors to the museum per day."
