"""documents/markdown.py on real Markdown (tests/fixtures/documents, origins in its README) and on a page of
every image form: which images and where (compared with markdownlint's MD045 where it is installed), their
alt text and context, byte-exact writes, reference forms, encodings, and mutated pages.

    python -m pytest -q tests/test_documents_markdown.py
    (MD045: npm install --prefix DIR markdownlint-cli2, and put DIR/node_modules/.bin on PATH)
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from captioner.documents import markdown
from captioner.documents.formats import DocumentError, format_for
from captioner.documents.refs import status
from documents_check import MARKDOWNLINT, assert_only_alts, changed, md045

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "documents"
# real pages: MkDocs' getting-started page (kept once, in the end-to-end site), two READMEs
REAL = [FIXTURES / "site" / "getting-started.md", FIXTURES / "axe-core-README.md",
        FIXTURES / "charset-normalizer-README.md"]
FMT = format_for("page.md")

# Every image form of CommonMark and GFM tables, and HTML inside Markdown: (line, column) are what
# markdownlint-cli2 0.22 (markdownlint 0.40) reports for MD045 here, with the one difference below.
TRICKY = """---
title: Front matter ![](not-an-image.png)
---

# A *tricky* page

Text ![](inline.png) more ![ok](ok.png "Title") and ![](two.png).

- item ![](list.png)
  - nested ![][collapsed]
1. ordered ![](ordered.png)

> quoted ![](quote.png)
> > twice ![alt](quote2.png)

| a | b |
|---|---|
| ![](cell1.png) | ![x](cell2.png) ![](cell3.png) |

    ![](indented-code.png)

```
![](fenced.png)
```

`![](code-span.png)` and \\![](escaped.png)

[![](in-link.png)](https://example.com "Link title") [text ![](in-link2.png) more](x.html)

![collapsed][] ![shortcut] ![full][collapsed] ![][shortcut]

![multi
line](multi.png) <img src="inline-html.png"> <img src="i2.png" alt="">
<img src="i3.png" aria-hidden="true"> <img src="i4.png" role="presentation"> <img src="i5.png" title="t">

<div>
<img src="block.png">
  <img
    src="block-multi.png"
    class="x">
</div>

Setext ![](setext.png)
======

![](<with space.png>) ![](url%20enc.png) ![é](ünï.png)

[collapsed]: collapsed.png
[shortcut]: shortcut.png "Ref title"
"""
MISSING = {(7, 6), (7, 53), (9, 8), (10, 12), (11, 12), (13, 10), (18, 3), (18, 36), (28, 2), (28, 60), (30, 47),
           (33, 18), (34, 78), (37, 1), (38, 3), (43, 8), (46, 1), (46, 23)}
PRESENTATION = (34, 39)      # <img role="presentation">: decorative to axe-core and to us, missing to MD045


def missing(refs):
    return {(r.location["line"], r.location["column"]) for r in refs if status(r) == "missing"}


def unescape_label(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out)


def test_every_image_form():
    refs = FMT.read("tricky.md", TRICKY.encode())
    assert missing(refs) == MISSING
    by = {r.src: r for r in refs}
    assert "not-an-image.png" not in by and "fenced.png" not in by and "code-span.png" not in by
    assert "indented-code.png" not in by and "escaped.png" not in by
    assert by["ok.png"].alt == "ok" and by["ok.png"].context.title == "Title"
    assert by["in-link.png"].context.link_href == "https://example.com"
    assert by["in-link.png"].context.link_title == "Link title" and by["in-link.png"].context.link_text == ""
    assert by["in-link2.png"].context.link_text == "text more"
    assert by["inline.png"].context.nearby_text == "Text more and ."
    assert by["i2.png"].decorative and by["i2.png"].alt == ""
    assert by["i3.png"].decorative and by["i4.png"].decorative and status(by["i5.png"]) == "missing"
    assert by["shortcut.png"].context.title == "Ref title"
    assert all(r.context.page_title == "A tricky page" for r in refs)
    assert by["with%20space.png"].location == {"line": 46, "column": 1}


def test_real_markdown_pages():
    refs = FMT.read("g.md", (FIXTURES / "site" / "getting-started.md").read_bytes())
    assert [r.location["line"] for r in refs] == [29, 53, 73, 103, 112, 129]
    assert [status(r) for r in refs] == ["ok"] * 3 + ["suspicious"] * 3          # alt "Screenshot"
    assert refs[0].alt == "The initial MkDocs layout" and refs[0].context.page_title == "Getting Started with MkDocs"
    axe = FMT.read("a.md", (FIXTURES / "axe-core-README.md").read_bytes())
    assert missing(axe) == {(5, 72)}
    assert axe[2].context.link_href == axe[3].context.link_href          # two badges in one link
    html_inside = FMT.read("c.md", (FIXTURES / "charset-normalizer-README.md").read_bytes())
    assert missing(html_inside) == {(6, 5), (12, 5)}
    assert html_inside[0].context.page_title == "Charset Detection, for Everyone 👋"
    assert html_inside[0].context.link_href == "https://pypi.org/project/charset-normalizer"


@pytest.mark.skipif(MARKDOWNLINT is None, reason="markdownlint-cli2 (or markdownlint-cli) is not on PATH")
def test_markdownlint_md045_agrees(tmp_path):
    for page in REAL:
        shutil.copy(page, tmp_path / page.name)
    (tmp_path / "tricky.md").write_text(TRICKY, encoding="utf-8")
    names = [page.name for page in REAL] + ["tricky.md"]
    theirs = md045(tmp_path, names)
    ours = {(name, *where) for name in names
            for where in missing(FMT.read(name, (tmp_path / name).read_bytes()))}
    assert theirs - ours == {("tricky.md", *PRESENTATION)}
    assert ours <= theirs


def test_write_changes_only_the_alt_on_real_pages():
    for page in REAL:
        name, data = page.name, page.read_bytes()
        out = assert_only_alts(FMT, name, data, lambda i, r: f"Badge {i} [new] *not emphasis* \\ it's",
                               unescape_new=unescape_label)
        assert missing(FMT.read(name, out)) == set()


def test_write_keeps_crlf_bom_and_front_matter():
    data = b"\xef\xbb\xbf" + TRICKY.replace("\n", "\r\n").encode()
    refs = FMT.read("t.md", data)
    assert missing(refs) == MISSING
    alts = {r.key: f"Alt {i}" for i, r in enumerate(refs)}
    out = FMT.write("t.md", data, alts)
    assert out.startswith(b"\xef\xbb\xbf---\r\ntitle: Front matter ![](not-an-image.png)\r\n")
    # one line fewer: the label written over two lines ("![multi / line]") is now one
    assert out.count(b"\r\n") == data.count(b"\r\n") - 1 and b"\n" not in out.replace(b"\r\n", b"")
    assert [r.alt for r in FMT.read("t.md", out)] == list(alts.values())


def test_reference_forms_keep_their_reference():
    data = b"![collapsed][] ![shortcut] ![full][collapsed]\n\n[collapsed]: c.png\n[shortcut]: s.png\n"
    refs = FMT.read("r.md", data)
    out = FMT.write("r.md", data, {r.key: f"New {i}" for i, r in enumerate(refs)})
    assert out == (b"![New 0][collapsed] ![New 1][shortcut] ![New 2][collapsed]\n\n"
                   b"[collapsed]: c.png\n[shortcut]: s.png\n")
    assert [r.src for r in FMT.read("r.md", out)] == ["c.png", "s.png", "c.png"]


@pytest.mark.parametrize("alt, label", [
    ("A [bracketed] \\ word", "A \\[bracketed\\] \\\\ word"),
    ("*stars* and _under_ `code`", "\\*stars\\* and \\_under\\_ \\`code\\`"),
    ("Plain words, it's fine!", "Plain words, it's fine!"),
])
def test_alt_text_is_escaped_for_commonmark(alt, label):
    data = b"![](x.png)\n"
    out = FMT.write("e.md", data, {"1:1": alt})
    assert out == b"![" + label.encode() + b"](x.png)\n"
    assert FMT.read("e.md", out)[0].alt == alt


def test_decorative_only_through_html():
    data = b'![](x.png) <img src="y.png">\n'
    with pytest.raises(DocumentError, match="cannot mark an image decorative"):
        FMT.write("d.md", data, {"1:1": ""})
    out = FMT.write("d.md", data, {"1:12": ""})
    assert out == b'![](x.png) <img alt="" src="y.png">\n' and FMT.read("d.md", out)[1].decorative


def test_a_label_across_quoted_lines_is_refused():
    data = b"> ![two\n> lines](x.png)\n"
    refs = FMT.read("q.md", data)
    assert refs[0].alt == "two\nlines"
    with pytest.raises(DocumentError, match="spans lines inside a quote or list"):
        FMT.write("q.md", data, {refs[0].key: "One"})
    assert FMT.write("q.md", b"![two\nlines](x.png)\n", {"1:1": "One"}) == b"![One](x.png)\n"


def test_encoding_errors_are_clear():
    with pytest.raises(DocumentError) as e:
        FMT.read("l.md", b"# Caf\xe9\n![](x.png)\n")
    assert str(e.value).startswith("l.md: not valid UTF-8 at byte 5")


def test_mutated_real_pages_read_and_round_trip():
    rng = random.Random(28)
    pages = [page.read_bytes()[:5000] for page in REAL] + [TRICKY.encode()]
    pieces = [b"!", b"[", b"]", b"(", b")", b"<", b">", b"\\", b"`", b"\n", b"\r\n", b"> ", b"- ", b"    ",
              b"![](a.png)", b"<img src=x>", b"|", b"*", b"\x00", b"\t", b'"', b"'"]
    written = refused = 0
    for _ in range(150):
        page = bytearray(rng.choice(pages))
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(page))
            if rng.random() < 0.6:
                page[at:at] = rng.choice(pieces)
            else:
                del page[at:at + rng.randint(1, 10)]
        page = bytes(page)
        try:
            refs = FMT.read("fuzz.md", page)
        except DocumentError as e:
            assert "not valid UTF-8" in str(e)
            continue
        alts = {r.key: f"fuzz {i} [x] \\" for i, r in enumerate(refs)}
        try:
            out = FMT.write("fuzz.md", page, alts)
        except DocumentError as e:
            assert "nothing written" in str(e) or "edit it by hand" in str(e), e
            refused += 1
            continue
        assert [r.alt for r in FMT.read("fuzz.md", out)] == list(alts.values())
        written += 1
    assert written > 100 and refused < 10, (written, refused)


def test_changed_helper_sees_one_stretch():
    assert changed(b"abcXdef", b"abcYYdef") == (b"X", b"YY")
    assert markdown.escape("a]b") == "a\\]b"
