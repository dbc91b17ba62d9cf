"""documents/html.py on real pages (tests/fixtures/documents, origins in its README): which images, their alt
text and context, byte-exact writes in every quoting style, encodings, broken markup, and axe-core's
image-alt in Chromium on the same pages.

    python -m pytest -q tests/test_documents_html.py
"""
from __future__ import annotations

import collections
import random
from pathlib import Path

import pytest

from captioner.documents import html
from captioner.documents.formats import DocumentError, format_for
from captioner.documents.refs import status
from documents_check import assert_only_alts, changed

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "documents"
PANDOC = FIXTURES / "mkdocs-getting-started.html"
GTKDOC = FIXTURES / "libtasn1-ch01.html"
FMT = format_for("page.html")


def statuses(refs):
    return [status(r) for r in refs]


def test_gtk_doc_page_finds_the_navigation_icon_without_alt():
    refs = FMT.read(str(GTKDOC), GTKDOC.read_bytes())
    assert [r.src for r in refs] == ["home.png", "up-insensitive.png", "left.png", "right.png"]
    assert [r.alt for r in refs] == ["Home", None, "Prev", "Next"]
    assert statuses(refs) == ["suspicious", "missing", "ok", "ok"]     # "Home" for home.png: its file name
    assert refs[1].location == {"line": 18, "column": 5} and refs[1].key == "18:5"
    home = refs[0].context
    assert (home.link_href, home.link_text, home.width, home.height) == ("index.html", "", 16, 16)
    assert home.page_title == "GNU Libtasn1 API Reference Manual: GNU Libtasn1 Reference Manual"
    assert refs[1].context.link_href is None


def test_pandoc_page_figures_and_captions():
    refs = FMT.read(str(PANDOC), PANDOC.read_bytes())
    assert [r.src for r in refs][:3] == ["img/initial-layout.png", "img/screenshot.png", "img/site-name.png"]
    assert len(refs) == 6 and all(r.alt and not r.decorative for r in refs)
    assert refs[0].context.figure_caption == "The initial MkDocs layout"
    assert refs[0].context.page_title == "mkdocs-getting-started"
    assert statuses(refs).count("suspicious") == 3          # alt="Screenshot", three times


def test_what_counts_and_what_is_decorative():
    page = b"""<!doctype html><title>T</title><h1>Heading</h1>
<p>See <a href="/next" title="Next page"><img src="a.png"> next</a>.</p>
<img src="b.png" alt=""><img src="c.png" role="presentation"><img src="d.png" role="none">
<div aria-hidden="true"><span><img src="e.png"></span></div><img src="f.png" aria-hidden="true">
<img src="g.png" aria-label="Our logo"><img src="h.png" title="A title"><img src="i.png" aria-labelledby="l">
<span id="l">Label text</span><img src="j.png" alt="  ">
<noscript><img src="k.png"></noscript><template><img src="t.png"></template><textarea><img src="x.png"></textarea>
<script>document.write('<img src="s.png">')</script><!-- <img src="c.png"> --><svg><image href="v.png"/></svg>
<input type="image" src="btn.png"><map><area alt="" href="x"></map>
"""
    refs = FMT.read("p.html", page)
    got = {r.src: (r.alt, r.decorative, status(r)) for r in refs}
    assert got == {
        "a.png": (None, False, "missing"), "b.png": ("", True, "decorative"), "c.png": (None, True, "decorative"),
        "d.png": (None, True, "decorative"), "e.png": (None, True, "decorative"),
        "f.png": (None, True, "decorative"), "g.png": ("Our logo", False, "ok"), "h.png": ("A title", False, "ok"),
        "i.png": ("Label text", False, "ok"), "j.png": ("  ", False, "suspicious")}
    a = refs[0].context
    assert (a.link_href, a.link_title, a.link_text, a.nearby_text, a.page_title) == \
        ("/next", "Next page", "next", "See next.", "T")


def test_write_changes_only_the_alt_on_real_pages():
    for path in (PANDOC, GTKDOC):
        out = assert_only_alts(FMT, str(path), path.read_bytes(), lambda i, r: f'Picture {i}: "a" & <b> it\'s')
        assert statuses(FMT.read(str(path), out)) == ["ok"] * len(FMT.read(str(path), out))


def test_write_keeps_crlf_and_latin1_with_meta_charset():
    crlf = PANDOC.read_bytes().replace(b"\n", b"\r\n")
    out = assert_only_alts(FMT, "crlf.html", crlf, lambda i, r: f"Alt {i}")
    assert out.count(b"\r\n") == crlf.count(b"\r\n") and b"\n" not in out.replace(b"\r\n", b"")
    text = PANDOC.read_text(encoding="utf-8").replace('<meta charset="utf-8" />', '<meta charset="iso-8859-1" />')
    latin = text.encode("cp1252")           # what "iso-8859-1" means to a browser (the Encoding Standard)
    assert FMT.read("latin.html", latin)[0].alt == "The initial MkDocs layout"
    out = assert_only_alts(FMT, "latin.html", latin, lambda i, r: f"Café {i} ☕", encoding="cp1252")
    assert "Café 0 &#9749;".encode("cp1252") in out
    assert FMT.read("latin.html", out)[0].alt == "Café 0 ☕"


@pytest.mark.parametrize("tag, written", [
    (b'<img src="a.png">', b'<img alt="New" src="a.png">'),
    (b"<img src='a.png' alt='Old'>", b"<img src='a.png' alt='New'>"),
    (b"<img src=a.png alt=Old>", b'<img src=a.png alt="New">'),
    (b"<IMG SRC=a.png>", b'<IMG ALT="New" SRC=a.png>'),
    (b'<img src="a.png"/>', b'<img alt="New" src="a.png"/>'),
    (b"<img/src='a.png'>", b"<img alt='New'/src='a.png'>"),
    (b'<img\r\n\tsrc="a.png"\r\n\talt = "Old"\r\n>', b'<img\r\n\tsrc="a.png"\r\n\talt = "New"\r\n>'),
    (b'<img alt src="a.png">', b'<img alt="New" src="a.png">'),
    (b'<img alt="Old" alt="Second" src="a.png">', b'<img alt="New" alt="Second" src="a.png">'),
    (b'<img src="a.png" alt="x &amp; y">', b'<img src="a.png" alt="New">'),
])
def test_write_in_every_quoting_style(tag, written):
    page = b"<p>before " + tag + b" after</p>\n"
    refs = FMT.read("q.html", page)
    assert len(refs) == 1 and refs[0].src == "a.png"
    assert FMT.write("q.html", page, {refs[0].key: "New"}) == b"<p>before " + written + b" after</p>\n"


def test_escaping_for_each_quote():
    page = b"<img src='a.png' alt='x'><img src=\"b.png\" alt=\"y\">"
    refs = FMT.read("e.xhtml", page)
    out = FMT.write("e.xhtml", page, {refs[0].key: "It's \"q\" & <b>", refs[1].key: "It's \"q\""})
    assert out == (b"<img src='a.png' alt='It&#39;s \"q\" &amp; &lt;b&gt;'>"
                   b"<img src=\"b.png\" alt=\"It's &quot;q&quot;\">")


def test_decorative_is_an_empty_alt():
    refs = FMT.read("d.html", b'<img src="spacer.gif">')
    out = FMT.write("d.html", b'<img src="spacer.gif">', {refs[0].key: ""})
    assert out == b'<img alt="" src="spacer.gif">' and status(FMT.read("d.html", out)[0]) == "decorative"


def test_unknown_key_is_refused():
    with pytest.raises(DocumentError, match="no image reference at 9:9"):
        FMT.write("k.html", b'<img src="a.png">', {"9:9": "x"})


@pytest.mark.parametrize("data, alt", [
    (b'\xef\xbb\xbf<img src="a" alt="caf\xc3\xa9">', "café"),
    ('<img src="a" alt="café">'.encode("utf-16-le").join([b"\xff\xfe", b""]), "café"),
    (b'<meta http-equiv="Content-Type" content="text/html; charset=ISO-8859-1"><img src="a" alt="caf\xe9">', "café"),
    (b'<?xml version="1.0" encoding="windows-1252"?><img src="a" alt="\x80 caf\xe9"/>', "€ café"),
    (b'<meta charset="shift_jis"><img src="a" alt="\x93\xfa\x96\x7b">', "日本"),
    (b'<meta charset="no-such-encoding"><img src="a" alt="caf\xc3\xa9">', "café"),
])
def test_encodings(data, alt):
    refs = FMT.read("enc.html", data)
    assert refs[0].alt == alt
    out = FMT.write("enc.html", data, {refs[0].key: "日本 café"})
    assert FMT.read("enc.html", out)[0].alt == "日本 café"
    old, new = changed(data, out)
    assert new and out.startswith(data[:2])


def test_undeclared_latin1_is_a_clear_error():
    with pytest.raises(DocumentError) as e:
        FMT.read("old.html", b'<html><img src="a" alt="caf\xe9"></html>')
    assert str(e.value) == "old.html: not valid UTF-8 at byte 27 (declare its encoding with <meta charset>)"


MALFORMED = [b"<img src=a.png alt='unclosed", b"<p><img src=a.png <b>text", b"<<img src=a.png>>", b"<img",
             b"<img src=\x00a.png alt=\"\x00\">", b"</img><img/><img///alt=x>", b"<img alt=\"a\"src=\"b\">",
             b"<a href=x><a href=y><img src=z></a>", b"<title>never closed <img src=a>", b"<!-- <img src=a",
             b"<img src=a alt=x alt=y alt>", b"<table><td><img src=a><tr><img src=b>", b"<![CDATA[<img src=a>]]>",
             b"<img src=a\nalt\n=\n'x'\n>", b"<img src=\"a\" alt=\"\"\"\"\">", b"<img =x alt=y src=a>",
             b"<svg><title>t</title></svg><img src=a>", b"&#x0; &bogus; <img src=a alt='&amp;&lt'>"]


@pytest.mark.parametrize("page", MALFORMED)
def test_malformed_pages_read_and_round_trip(page):
    refs = FMT.read("bad.html", page)
    alts = {r.key: f"alt {i}" for i, r in enumerate(refs)}
    if refs:
        out = FMT.write("bad.html", page, alts)
        assert [r.alt for r in FMT.read("bad.html", out)] == list(alts.values())


def test_mutated_real_pages_never_raise_anything_but_document_error():
    """A fuzz over real pages: random bytes of markup punctuation inserted, deleted and swapped."""
    rng = random.Random(28)
    pages = [PANDOC.read_bytes()[:6000], GTKDOC.read_bytes()]
    pieces = [b"<", b">", b"/", b'"', b"'", b"=", b" ", b"\x00", b"<img ", b"alt", b"<!--", b"-->", b"&",
              b"<script>", b"<title>", b"\r", b"\n", b"<a href=x>", b"</a>", b"<figure>", b"<p>"]
    checked = 0
    for _ in range(400):
        page = bytearray(rng.choice(pages))
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(page))
            op = rng.random()
            if op < 0.5:
                page[at:at] = rng.choice(pieces)
            elif op < 0.8:
                del page[at:at + rng.randint(1, 20)]
            else:
                page[at] = rng.randrange(128)
        page = bytes(page)
        try:
            refs = FMT.read("fuzz.html", page)
        except DocumentError as e:           # a deletion that cut a UTF-8 sequence in two
            assert "not valid UTF-8" in str(e)
            continue
        alts = {r.key: f"fuzz {i} \"&'" for i, r in enumerate(refs)}
        try:
            out = FMT.write("fuzz.html", page, alts)
        except DocumentError as e:           # allowed, but it must be a clear refusal, never a wrong write
            assert "nothing written" in str(e), e
            continue
        assert [r.alt for r in FMT.read("fuzz.html", out)] == list(alts.values())
        checked += 1
    assert checked > 350


def test_function_level_api_for_fragments():
    text = 'intro <img src="a.png"> and <img src="b.png" alt="B">'
    page = html.scan(text)
    assert [(i.start, i.line, i.column, i.alt) for i in page.images] == [(6, 1, 7, None), (28, 1, 29, "B")]
    assert html.set_alts(text, {6: "A", 28: ""}) == 'intro <img alt="A" src="a.png"> and <img src="b.png" alt="">'
    assert html.scan('<img src="a.png" title="t">', names=False).images[0].alt is None


# ---------------------------------------------------------------- axe-core's image-alt in Chromium

def axe_image_alt(pages: list[str]) -> list[tuple[collections.Counter, collections.Counter]]:
    """For each page: the srcs (with multiplicity; "" for none) of the images axe-core's image-alt rule
    fails and passes, in Chromium, offline."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from browser import AXE, launch
    out = []
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            for page_html in pages:
                page = browser.new_page()
                page.route("**/*", lambda route: route.fulfill(status=404, body=""))   # images never load
                page.set_content(page_html)
                page.evaluate(AXE.read_text(encoding="utf-8"))
                result = page.evaluate("""async () => {
                    const r = await axe.run(document, {runOnly: ['image-alt']});
                    const src = (n) => document.querySelector(n.target[0]).getAttribute('src') || '';
                    return {fail: r.violations.flatMap(v => v.nodes.map(src)),
                            pass: r.passes.flatMap(v => v.nodes.map(src))};
                }""")
                page.close()
                out.append((collections.Counter(result["fail"]), collections.Counter(result["pass"])))
        finally:
            browser.close()
    return out


def needs_axe():
    from browser import AXE, CHROMIUM
    if CHROMIUM is None or not AXE.is_file():
        pytest.skip("Chromium or axe-core is not installed (npm ci --prefix tests/browser)")


def missing_srcs(page: str) -> collections.Counter:
    return collections.Counter(r.src for r in FMT.read("p.html", page.encode("utf-8")) if status(r) == "missing")


def test_axe_image_alt_agrees_on_real_and_tricky_pages():
    needs_axe()
    tricky = """<!doctype html><html lang="en"><title>T</title><main>
<img src="a.png"><img src="b.png" alt=""><img src="c.png" role="presentation"><img src="d.png" role="none">
<img src="f.png" aria-hidden="true"><img src="g.png" aria-label="Our logo">
<img src="h.png" title="A title"><img src="i.png" aria-labelledby="l"><span id="l">Label</span>
<img src="j.png" alt="Fine"><img src="k.png" aria-label="  "><IMG SRC=m.png><img src=n.png alt>
<noscript><img src="o.png"></noscript><template><img src="p.png"></template><svg><img src="q.png"></svg>
<svg><foreignObject><img src="r.png"></foreignObject></svg></main>"""
    pages = {"gtk-doc": GTKDOC.read_text(encoding="utf-8"), "tricky": tricky,
             "pandoc": PANDOC.read_text(encoding="utf-8")}
    for (name, page), (fail, passed) in zip(pages.items(), axe_image_alt(list(pages.values()))):
        refs = FMT.read(name + ".html", page.encode("utf-8"))
        assert missing_srcs(page) == fail, name
        counted = collections.Counter(r.src for r in refs if r.src != "f.png")  # aria-hidden: axe leaves it out
        assert fail + passed == counted, name
    assert missing_srcs(tricky) == collections.Counter(["a.png", "k.png", "m.png", "q.png", "r.png"])


def test_axe_image_alt_agrees_on_mutated_real_pages():
    """Broken markup is read as the browser reads it: the same images fail axe-core's image-alt."""
    needs_axe()
    rng = random.Random(8)
    real = [GTKDOC.read_text(encoding="utf-8"), PANDOC.read_text(encoding="utf-8")]
    pieces = ["<", ">", "/", '"', "'", "=", " ", "<img ", "alt", "<!--", "-->", "&", "<script>", "<title>", "\n",
              "<a href=x>", "</a>", "<p>", "<textarea>", "<noscript>", "<template>", "<svg>", "</svg>"]
    pages = []
    for _ in range(40):
        chars = list(rng.choice(real))
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(chars))
            if rng.random() < 0.6:
                chars[at:at] = [rng.choice(pieces)]
            else:
                del chars[at:at + rng.randint(1, 15)]
        pages.append("".join(chars))
    for page, (fail, _) in zip(pages, axe_image_alt(pages)):
        assert missing_srcs(page) == fail, page


def test_xhtml_member_api_for_epub():
    data = (b'<?xml version="1.0" encoding="UTF-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml"><head>'
            b'<title>Chapter 1</title></head>\n<body><div/><p>Text <img src="a.png"/></p>'
            b'<p><img src="b.png" alt="B"/></p></body></html>\n')
    refs = html.read("book.epub", data, xml=True, prefix="OEBPS/c1.xhtml#")
    assert [r.key for r in refs] == ["OEBPS/c1.xhtml#3:21", "OEBPS/c1.xhtml#3:46"]
    assert refs[0].context.nearby_text == "Text" and refs[0].context.page_title == "Chapter 1"
    out = html.write("book.epub", data, {refs[0].key: "A & <B> \u00e9"}, xml=True, prefix="OEBPS/c1.xhtml#")
    assert b'<img alt="A &amp; &lt;B&gt; \xc3\xa9" src="a.png"/>' in out
    etree = pytest.importorskip("lxml.etree")
    etree.fromstring(out)                       # still well-formed XML
