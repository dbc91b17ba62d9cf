"""HTML and XHTML (.html .htm .xhtml): every ``<img>`` a page shows, its alt text and context, and
byte-exact alt-text edits.

One pass of Python's ``html.parser`` (a tokenizer as tolerant of broken markup as browsers are, with
source positions) finds the images; a small scanner that follows the HTML spec's attribute states
(``_attributes``) gives each attribute's exact span inside a start tag, so an edit replaces only the
characters of one ``alt`` value and every other byte of the file stays: encoding, line endings, quoting,
attribute order and case.  No regular expression ever looks at markup.

Which images count and which are decorative follows axe-core's ``image-alt`` rule on the rendered page:
every ``<img>`` outside ``<template>``/``<noscript>``/raw-text elements counts; ``alt=""``,
``role="presentation"``/``"none"`` and ``aria-hidden="true"`` (on the image or an ancestor) mark it
decorative; with no ``alt`` attribute, a non-empty ``aria-label``, ``aria-labelledby`` text or ``title``
is what a screen reader reads instead, so it is reported as the image's alt text (axe passes it too).
Not followed: CSS (``display:none``), the ``hidden`` attribute, ``<input type="image">``, ``<area>``
and SVG ``<image>``.  Where ``html.parser`` reads broken markup differently from browsers in a way that
changes which images exist, the scanner follows the browser: a tag, quote or comment left open to the end
of the file hides the rest; ``<svg>`` ends at an HTML start tag such as ``<img>``; ``<p>``, ``<li>``,
``<td>`` and ``<a>`` are closed by the tags that close them in the HTML spec.

The function-level API (used by ``markdown.py`` for the HTML inside Markdown and by ``epub.py`` for
XHTML members), all offsets being indices into the decoded text:

    read(document, data, xml=None, prefix="") -> [ImageRef]
        # key = prefix + "line:column" of the tag; xml None: XHTML when document ends in .xhtml
        # (epub.py: read("book.epub", member_bytes, xml=True, prefix="OEBPS/ch1.xhtml#"))
    write(document, data, {key: alt}, xml=None, prefix="") -> bytes
        # sets the alt texts, re-reads its own output and raises DocumentError unless only they changed
    decode(document, data) -> Decoded             # .text, .codec, .bom: BOM, <?xml encoding>, <meta charset>, UTF-8
    splice(decoded, data, [(start, end, new)]) -> bytes   # text-offset edits back to bytes; the rest copied
    scan(text, xml=False, names=True) -> Page     # Page.images: [Img] in document order; Page.title
    Img: start, end (offsets of "<" and after ">"), line, column (1-based), src, alt (None: absent),
         decorative, context (refs.Context, page_title filled)
    alt_edit(text, img.start, alt) -> (start, end, new)   # the one replacement that sets an alt
    set_alts(text, {img.start: alt}) -> text      # only the alt values change; "" = decorative (alt="")
    require_keys(document, {key: alt}, keys)      # DocumentError naming each key that is no reference

    python -m captioner.documents.html page.html  # prints each image reference as JSON lines
"""
from __future__ import annotations

import codecs
import sys
from bisect import bisect_right
from dataclasses import dataclass, field
from html import unescape
from html.parser import HTMLParser

from captioner.documents.formats import DocumentError
from captioner.documents.refs import Context, ImageRef

NEARBY_CHARS = 300
WHITESPACE = "\t\n\f\r "   # the HTML spec's ASCII whitespace
VOID = frozenset("area base br col embed hr img input keygen link meta param source track wbr".split())
# Elements a browser parses as text (scripting on: <noscript> too): an <img> inside them is no image.
RAW_TEXT = frozenset("script style textarea title xmp iframe noembed noframes noscript".split())
BLOCKS = frozenset("address article aside blockquote body caption dd details div dl dt fieldset figcaption "
                   "figure footer form h1 h2 h3 h4 h5 h6 header html li main nav ol p pre section summary "
                   "table td th ul".split())
# A start tag of these closes an open <p> (the spec's "close a p element").
CLOSES_P = frozenset("address article aside blockquote details div dl fieldset figcaption figure footer form "
                     "h1 h2 h3 h4 h5 h6 header hr main menu nav ol p pre section table ul li dd dt".split())
P_SCOPE = frozenset("td th table button caption html template".split())
# Start tags that end an <svg> or <math> (the spec's breakout from foreign content): "<svg><img>" is an image.
BREAKOUT = frozenset("b big blockquote body br center code dd div dl dt em embed h1 h2 h3 h4 h5 h6 head hr i img li "
                     "listing menu meta nobr ol p pre ruby s small span strong strike sub sup table tt u ul var".split())
IMPLIED = {"li": ({"li"}, {"ul", "ol", "table", "td", "th"}), "dd": ({"dd", "dt"}, {"dl", "table"}),
           "dt": ({"dd", "dt"}, {"dl", "table"}), "tr": ({"tr", "td", "th"}, {"table"}),
           "td": ({"td", "th"}, {"tr", "table"}), "th": ({"td", "th"}, {"tr", "table"}),
           "a": ({"a"}, {"td", "th", "table", "caption"}), "option": ({"option"}, {"select"})}


# ---------------------------------------------------------------- attributes of one start tag

@dataclass
class Attr:
    name: str                 # lower-cased, as the spec's tokenizer makes it
    name_start: int           # offsets inside the scanned text
    value_start: int          # where the value's characters start (after any quote); == end of name if none
    value_end: int
    quote: str                # '"', "'", "" (unquoted), or None when the attribute has no value at all
    raw_value: str            # as written (character references not decoded)

    @property
    def value(self) -> str:
        return unescape(self.raw_value) if "&" in self.raw_value else self.raw_value


def _attributes(text: str, start: int) -> tuple[str, list[Attr], int, int]:
    """Tokenize the start tag at ``text[start] == "<"`` as the HTML spec's tokenizer does:
    -> (tag name lower-cased, attributes in order, offset just after the tag name, offset after ">")."""
    n, i = len(text), start + 1
    while i < n and text[i] not in WHITESPACE and text[i] not in "/>":
        i += 1
    name, name_end = text[start + 1:i].lower(), i
    attrs: list[Attr] = []
    state, a = "before_name", None
    while i < n:
        c = text[i]
        if state == "before_name":
            if c in WHITESPACE:
                i += 1
            elif c in "/>":
                state = "after_name"
            else:                      # "=" here starts a name too (the spec's parse error case)
                a = Attr("", i, i, i, None, "")
                attrs.append(a)
                state, i = "name", i + 1
        elif state == "name":
            if c in WHITESPACE or c in "/>":
                a.name = text[a.name_start:i].lower()
                a.value_start = a.value_end = i
                state = "after_name"
            elif c == "=":
                a.name = text[a.name_start:i].lower()
                a.value_start = a.value_end = i
                state, i = "before_value", i + 1
            else:
                i += 1
        elif state == "after_name":
            if c in WHITESPACE:
                i += 1
            elif c == "/":
                state, i = "self_closing", i + 1
            elif c == "=":
                state, i = "before_value", i + 1
            elif c == ">":
                return name, attrs, name_end, i + 1
            else:
                state = "before_name"
        elif state == "self_closing":
            if c == ">":
                return name, attrs, name_end, i + 1
            state = "before_name"
        elif state == "before_value":
            if c in WHITESPACE:
                i += 1
            elif c in "\"'":
                a.quote, a.value_start = c, i + 1
                j = text.find(c, i + 1)
                j = n if j < 0 else j
                a.value_end, a.raw_value = j, text[i + 1:j]
                state, i = "after_quoted", j + 1
            elif c == ">":
                a.quote = ""           # "alt=>": an empty value, no quotes
                return name, attrs, name_end, i + 1
            else:
                a.quote, a.value_start, j = "", i, i
                while j < n and text[j] not in WHITESPACE and text[j] != ">":
                    j += 1
                a.value_end, a.raw_value = j, text[i:j]
                state, i = "before_name", j
        elif state == "after_quoted":
            if c in WHITESPACE:
                state, i = "before_name", i + 1
            elif c == "/":
                state, i = "self_closing", i + 1
            elif c == ">":
                return name, attrs, name_end, i + 1
            else:
                state = "before_name"
    if a is not None and state == "name":
        a.name = text[a.name_start:n].lower()
        a.value_start = a.value_end = n
    return name, attrs, name_end, n


def _first(attrs: list[Attr]) -> dict[str, Attr]:
    """Attributes by name; a repeated attribute keeps its first value, as browsers do."""
    out: dict[str, Attr] = {}
    for a in attrs:
        out.setdefault(a.name, a)
    return out


def _integer(value: str | None) -> int | None:
    value = (value or "").strip(WHITESPACE)
    return int(value) if value.isascii() and value.isdigit() else None


def _words(parts: list[str]) -> str:
    return " ".join("".join(parts).split())


# ---------------------------------------------------------------- the one pass over a page

@dataclass
class Img:
    start: int                        # offset of "<" in the text
    end: int                          # offset just after ">"
    line: int                         # 1-based line and column of "<"
    column: int
    src: str
    alt: str | None
    decorative: bool
    context: Context = field(default_factory=Context)
    has_alt: bool = False             # an alt attribute is present (alt may come from aria-label/title)
    labelledby: list[str] = field(default_factory=list)


@dataclass
class Page:
    images: list[Img]
    title: str | None


class _Frame:
    """One open element: its text (blocks, links, captions), the images waiting for that text, and
    for a link its href and title, for a figure its caption."""
    __slots__ = ("tag", "parts", "images", "hidden", "caption", "href", "title")

    def __init__(self, tag: str, collects: bool, hidden: bool):
        self.tag, self.parts, self.images, self.hidden = tag, [] if collects else None, [], hidden
        self.caption, self.href, self.title = "", None, None


class _Scanner(HTMLParser):
    def __init__(self, text: str, xml: bool, names: bool):
        super().__init__(convert_charrefs=True)
        self.text, self.xml, self.names = text, xml, names
        self.offset = 0
        self.line_starts = [0]
        find, i = text.find, text.find("\n")
        while i >= 0:
            self.line_starts.append(i + 1)
            i = find("\n", i + 1)
        self.images: list[Img] = []
        self.stack: list[_Frame] = []
        self.open: dict[str, int] = {}
        self.blocks: list[_Frame] = []      # the open frames that collect nearby text
        self.links: list[_Frame] = []
        self.captions: list[_Frame] = []    # open <figcaption>
        self.figures: list[_Frame] = []
        self.raw: str | None = None         # inside a raw-text element: its name
        self.title_parts: list[str] | None = None
        self.title: str | None = None
        self.h1: str | None = None
        self.h1_parts: list[str] | None = None
        self.track_ids = names and "aria-labelledby" in text      # only then keep the text of elements with an id
        self.ids: dict[str, list[str]] = {}
        self.id_frames: list[tuple[_Frame, list[str]]] = []

    # -- the element stack
    def _push(self, tag: str, attrs: list[tuple[str, str | None]]) -> _Frame:
        hidden = bool(self.stack and self.stack[-1].hidden)
        if not hidden:
            for k, v in attrs:
                if k == "aria-hidden" and (v or "").strip().lower() == "true":
                    hidden = True
        frame = _Frame(tag, tag in BLOCKS or tag in ("a", "figcaption"), hidden)
        self.stack.append(frame)
        self.open[tag] = self.open.get(tag, 0) + 1
        if tag in BLOCKS:
            self.blocks.append(frame)
        if tag == "a":
            frame.href = next((v for k, v in attrs if k == "href"), None)
            frame.title = next((v for k, v in attrs if k == "title"), None)
            self.links.append(frame)
        if tag == "figcaption":
            self.captions.append(frame)
        if tag == "figure":
            self.figures.append(frame)
        if self.track_ids:
            for k, v in attrs:
                if k == "id" and v:
                    parts: list[str] = []
                    self.ids.setdefault(v, parts)
                    self.id_frames.append((frame, parts))
        return frame

    def _pop(self) -> None:
        frame = self.stack.pop()
        self.open[frame.tag] -= 1
        if frame.tag in BLOCKS:
            self.blocks.pop()
            text = _words(frame.parts)[:NEARBY_CHARS]
            waiting = [img for img in frame.images if not img.context.nearby_text]
            if text:
                for img in waiting:
                    img.context.nearby_text = text
            elif waiting and self.blocks:          # an image alone in its block: the text around the block
                self.blocks[-1].images.extend(waiting)
        if frame.tag == "a":
            self.links.pop()
            text = _words(frame.parts)
            for img in frame.images:
                img.context.link_text = text
        elif frame.tag == "figcaption":
            self.captions.pop()
            if self.figures:
                self.figures[-1].caption = _words(frame.parts)
        elif frame.tag == "figure":
            self.figures.pop()
            for img in frame.images:
                img.context.figure_caption = frame.caption
        if frame.tag == "h1" and self.h1_parts is not None and self.h1 is None:
            self.h1 = _words(self.h1_parts) or None
            self.h1_parts = None
        while self.id_frames and self.id_frames[-1][0] is frame:
            self.id_frames.pop()

    def _close(self, targets: set, boundary: set | frozenset) -> None:
        """Close the innermost open element named in ``targets`` unless a ``boundary`` element is nearer."""
        if not any(self.open.get(t) for t in targets):
            return
        for k in range(len(self.stack) - 1, -1, -1):
            tag = self.stack[k].tag
            if tag in targets:
                while len(self.stack) > k:
                    self._pop()
                return
            if tag in boundary:
                return

    # -- tokenizer callbacks
    def updatepos(self, i, j):
        # html.parser reports every token's start here; keeping the offset (the '<' of the tag being handled)
        # instead of counting lines at each token saves a sixth of the pass.  Lines are counted per image.
        self.offset = j
        return j

    # A tag, comment or declaration that runs to the end of the file (an unclosed quote or "<!--"): a
    # browser drops it and everything after it; html.parser would read on from the next ">" as text.
    def parse_starttag(self, i):
        k = super().parse_starttag(i)
        return len(self.rawdata) if k < 0 else k

    def parse_endtag(self, i):
        k = super().parse_endtag(i)
        return len(self.rawdata) if k < 0 else k

    def parse_comment(self, i, report=1):
        k = super().parse_comment(i, report)
        return len(self.rawdata) if k < 0 else k

    def parse_html_declaration(self, i):
        k = super().parse_html_declaration(i)
        return len(self.rawdata) if k < 0 else k

    def parse_pi(self, i):
        k = super().parse_pi(i)
        return len(self.rawdata) if k < 0 else k

    def handle_starttag(self, tag, attrs):
        if tag in CLOSES_P:
            self._close({"p"}, P_SCOPE)
        if tag in IMPLIED:
            self._close(*IMPLIED[tag])
        foreign = self.open.get("svg") or self.open.get("math")
        if foreign and tag in BREAKOUT and not self.open.get("foreignobject"):
            self._close({"svg", "math"}, frozenset())
            foreign = self.open.get("svg") or self.open.get("math")
        if tag == "img" and not self.open.get("template") and not (foreign and not self.open.get("foreignobject")):
            self._image()
        if tag in VOID:
            return
        self._push(tag, attrs)
        if tag in RAW_TEXT and not (self.xml and tag in ("noscript", "iframe", "noembed", "noframes")):
            if tag == "title" and self.open.get("svg"):
                return
            self.raw = tag
            self.set_cdata_mode(tag)
            if tag == "title" and self.title is None:
                self.title_parts = []
        if tag == "h1" and self.h1 is None and self.h1_parts is None:
            self.h1_parts = []

    def handle_startendtag(self, tag, attrs):
        # "<div/>" opens a div in HTML (the slash is ignored); in XHTML it is an empty element.
        self.handle_starttag(tag, attrs)
        if self.xml and tag not in VOID:
            self.raw = None
            self.clear_cdata_mode()
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if tag == "p" and not self.open.get("p"):
            return
        if self.raw is not None:
            if tag != self.raw:
                return
            self.raw = None
            if tag == "title" and self.title_parts is not None:
                self.title = _words([unescape("".join(self.title_parts))]) or None
                self.title_parts = None
        if tag in ("br",) or not self.open.get(tag):
            return
        while self.stack:
            last = self.stack[-1].tag
            self._pop()
            if last == tag:
                break

    def handle_data(self, data):
        if self.raw is not None:
            if self.title_parts is not None and self.raw == "title":
                self.title_parts.append(data)
            return
        if self.blocks:
            parts = self.blocks[-1].parts
            if len(parts) < 64:
                parts.append(data)
        if self.links:
            self.links[-1].parts.append(data)
        if self.captions and self.captions[-1] is not self.blocks[-1]:   # a <p> inside the caption
            self.captions[-1].parts.append(data)
        if self.h1_parts is not None:
            self.h1_parts.append(data)
        for _, parts in self.id_frames:
            parts.append(data)

    # -- the image
    def _image(self):
        start = self.offset
        line = bisect_right(self.line_starts, start)
        col = start - self.line_starts[line - 1]
        name, attrs, _, end = _attributes(self.text, start)
        by = _first(attrs)
        value = lambda k: by[k].value if k in by else None  # noqa: E731
        src = value("src")
        if src is None and value("srcset"):
            src = value("srcset").strip(WHITESPACE).split(",")[0].split()[0] if value("srcset").strip() else ""
        alt, has_alt = value("alt"), "alt" in by
        if has_alt and by["alt"].quote is None:
            alt = ""                                        # <img alt>: an empty alt
        role = (value("role") or "").strip(WHITESPACE).lower().split()
        role = role[0] if role else None
        hidden = (value("aria-hidden") or "").strip().lower() == "true" or bool(self.stack and self.stack[-1].hidden)
        labelledby = (value("aria-labelledby") or "").split()
        if not has_alt and self.names:
            alt = next((v.strip() for v in (value("aria-label"), value("title")) if v and v.strip()), None)
        ctx = Context(title=value("title"), width=_integer(value("width")), height=_integer(value("height")),
                      role=role)
        img = Img(start, end, line, col + 1, src or "", alt, hidden or role in ("presentation", "none") or alt == "",
                  ctx, has_alt, labelledby if self.names and not has_alt and alt is None else [])
        self.images.append(img)
        if self.blocks:
            self.blocks[-1].images.append(img)
        if self.links:
            link = self.links[-1]
            link.images.append(img)
            ctx.link_href, ctx.link_title = link.href, link.title
        if self.figures:
            self.figures[-1].images.append(img)

    def finish(self) -> Page:
        while self.stack:
            self._pop()
        if self.title_parts is not None:           # an unclosed <title>: the rest of the file, as browsers do
            self.title = _words([unescape("".join(self.title_parts))]) or None
        if self.h1_parts is not None and self.h1 is None:
            self.h1 = _words(self.h1_parts) or None
        page_title = self.title or self.h1
        for img in self.images:
            img.context.page_title = page_title
            if img.labelledby:
                name = " ".join(_words(self.ids.get(i, [])) for i in img.labelledby).strip()
                img.alt = name or None
        return Page(self.images, page_title)


def scan(text: str, xml: bool = False, names: bool = True) -> Page:
    """Every image of ``text`` (a whole page or a fragment) in document order, in one tokenizer pass.
    ``xml``: the text is XHTML parsed as XML (``<div/>`` is empty, no raw-text ``<noscript>``).
    ``names``: with no alt attribute, report the aria-label/aria-labelledby/title a screen reader reads
    instead as the alt text (axe-core's view); False reports None (markdownlint's view)."""
    scanner = _Scanner(text, xml, names)
    # The whole text in one pass with end=True (what feed() then close() do, but without feed's early stop
    # before an incomplete construct, after which close() would count offsets from the rest anew).
    scanner.rawdata = text
    scanner.goahead(True)
    return scanner.finish()


# ---------------------------------------------------------------- edits

def escape(alt: str, quote: str) -> str:
    """``alt`` as an attribute value between ``quote`` characters, valid in HTML and XHTML alike."""
    out = alt.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return out.replace('"', "&quot;") if quote == '"' else out.replace("'", "&#39;")


def alt_edit(text: str, start: int, alt: str) -> tuple[int, int, str]:
    """The one replacement that sets the alt text of the ``<img>`` starting at ``text[start]``:
    (from, to, new characters).  The quote character in use is kept; an unquoted or missing alt gets the
    quote style of the tag's other attributes (double quotes when it has none)."""
    name, attrs, name_end, end = _attributes(text, start)
    if name != "img":
        raise ValueError(f"no <img> tag at offset {start}")
    by = _first(attrs)
    quote = next((a.quote for a in attrs if a.quote), '"')
    a = by.get("alt")
    if a is None:                                  # <IMG SRC=…> gets ALT=, in the case of its tag name
        attr = "ALT" if text[start + 1:name_end].isupper() else "alt"
        return name_end, name_end, f" {attr}={quote}{escape(alt, quote)}{quote}"
    if a.quote:
        return a.value_start, a.value_end, escape(alt, a.quote)
    if a.quote == "":                              # alt=value (unquoted)
        return a.value_start, a.value_end, f"{quote}{escape(alt, quote)}{quote}"
    return a.value_end, a.value_end, f"={quote}{escape(alt, quote)}{quote}"   # <img alt>


def set_alts(text: str, alts: dict[int, str]) -> str:
    """``text`` with the alt text of each ``<img>`` starting at an offset in ``alts`` set; nothing else changes."""
    edits = sorted(alt_edit(text, start, alt) for start, alt in alts.items())
    out, pos = [], 0
    for a, b, new in edits:
        out += [text[pos:a], new]
        pos = b
    out.append(text[pos:])
    return "".join(out)


# ---------------------------------------------------------------- encodings

@dataclass
class Decoded:
    text: str
    codec: str          # the Python codec that decoded the bytes after the BOM
    bom: bytes


# The WHATWG Encoding Standard decodes these labels as windows-1252; Python's cp1252 lacks five bytes that
# windows-1252 maps to C1 controls, so a page using them is decoded as Latin-1 instead (same characters else).
WINDOWS_1252 = frozenset("ansi_x3.4-1968 ascii cp1252 cp819 csisolatin1 ibm819 iso-8859-1 iso-ir-100 iso8859-1 "
                         "iso88591 iso_8859-1 iso_8859-1:1987 l1 latin1 us-ascii windows-1252 x-cp1252".split())
UTF8 = frozenset("unicode-1-1-utf-8 unicode11utf8 unicode20utf8 utf-8 utf8 x-unicode20utf8".split())


def _codec(label: str) -> str | None:
    label = label.strip(WHITESPACE).lower()
    if label in UTF8 or label.startswith("utf-16"):    # a <meta> that says UTF-16 means UTF-8 (the spec)
        return "utf-8"
    if label in WINDOWS_1252:
        return "cp1252"
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def _charset_from_content(content: str) -> str | None:
    """The HTML spec's "extracting a character encoding from a meta element" over a content attribute."""
    low, i = content.lower(), 0
    while True:
        i = low.find("charset", i)
        if i < 0:
            return None
        j = i + 7
        while j < len(low) and low[j] in WHITESPACE:
            j += 1
        if j < len(low) and low[j] == "=":
            j += 1
            while j < len(low) and low[j] in WHITESPACE:
                j += 1
            if j < len(low) and low[j] in "\"'":
                k = low.find(low[j], j + 1)
                return content[j + 1:k] if k > 0 else None
            k = j
            while k < len(low) and low[k] not in WHITESPACE and low[k] != ";":
                k += 1
            return content[j:k] or None
        i = j


class _Prescan(HTMLParser):
    """The first <meta> that declares an encoding (the WHATWG prescan, over our tokenizer), or an
    XML declaration's encoding."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.label: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag != "meta" or self.label:
            return
        a = dict(reversed(attrs))
        if a.get("charset"):
            self.label = a["charset"]
        elif (a.get("http-equiv") or "").strip().lower() == "content-type" and a.get("content"):
            self.label = _charset_from_content(a["content"])

    handle_startendtag = handle_starttag

    def handle_pi(self, data):
        if data.startswith("xml ") and not self.label:
            for a in _attributes("<" + data.rstrip("?") + ">", 0)[1]:
                if a.name == "encoding" and a.raw_value:
                    self.label = a.raw_value


def decode(document: str, data: bytes) -> Decoded:
    """The page's text: its BOM, else its XML declaration or first ``<meta>`` charset (looked for in the
    first 1024 bytes, as browsers do), else UTF-8.  Undecodable bytes raise DocumentError."""
    for bom, codec in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                       (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            break
    else:
        bom, codec = b"", "utf-8"
        head = data[:1024]
        if b"<meta" in head.lower() or head.startswith(b"<?xml"):
            prescan = _Prescan()
            try:
                prescan.feed(head.decode("latin-1"))
            except Exception:                       # a broken head: no declaration found
                pass
            if prescan.label:
                codec = _codec(prescan.label) or "utf-8"
    body = data[len(bom):]
    try:
        return Decoded(body.decode(codec), codec, bom)
    except UnicodeDecodeError as e:
        if codec == "cp1252":
            return Decoded(body.decode("latin-1"), "latin-1", bom)
        hint = ("declare its encoding with <meta charset>" if codec == "utf-8" and not bom
                else "its declared encoding does not match its bytes")
        name = {"utf-8": "UTF-8", "utf-16-le": "UTF-16", "utf-16-be": "UTF-16"}.get(codec, codec)
        raise DocumentError(document, f"not valid {name} at byte {e.start + len(bom)} ({hint})") from None


def splice(decoded: Decoded, data: bytes, edits: list[tuple[int, int, str]]) -> bytes:
    """``data`` (the bytes ``decoded`` came from) with text ranges replaced: untouched bytes are copied as
    they are; the new characters are encoded in the document's encoding, those it cannot hold as numeric
    character references."""
    out, text, codec = [decoded.bom], decoded.text, decoded.codec
    tpos, bpos = 0, len(decoded.bom)
    for a, b, new in sorted(edits):
        ba = bpos + len(text[tpos:a].encode(codec))
        bb = ba + len(text[a:b].encode(codec))
        out += [data[bpos:ba], new.encode(codec, "xmlcharrefreplace")]
        tpos, bpos = b, bb
    out.append(data[bpos:])
    return b"".join(out)


# ---------------------------------------------------------------- the format

def _xml(document: str) -> bool:
    return str(document).lower().endswith(".xhtml")


def refs_from(document: str, page: Page, prefix: str = "") -> list[ImageRef]:
    """ImageRefs for the images of a scanned page; ``prefix`` goes before each key (epub: the member)."""
    return [ImageRef(document=document, location={"line": img.line, "column": img.column}, src=img.src,
                     alt=img.alt, key=f"{prefix}{img.line}:{img.column}", decorative=img.decorative,
                     context=img.context) for img in page.images]


def read(document: str, data: bytes, xml: bool | None = None, prefix: str = "") -> list[ImageRef]:
    """Every image reference of an HTML/XHTML document (its bytes), in document order.  ``xml``: parse as
    XHTML (None: when the document's name ends in .xhtml); ``prefix`` goes before each key."""
    text = decode(document, data).text
    if "<img" not in text.lower():             # no image tag anywhere: nothing to tokenize for
        return []
    return refs_from(document, scan(text, _xml(document) if xml is None else xml), prefix)


def verify(document: str, before: list, after: list, alts: dict[str, str], key=lambda r: r.key) -> None:
    """Raise DocumentError unless ``after`` is ``before`` with only the asked alt texts changed."""
    if len(before) != len(after):
        raise DocumentError(document, f"the edit changed the number of images ({len(before)} -> {len(after)}); "
                                      "nothing written")
    for old, new in zip(before, after):
        want = alts.get(key(old), old.alt)
        if new.src != old.src or new.alt != want:
            raise DocumentError(document, f"the edit of the image at {old.location} did not read back as asked "
                                          f"(alt {new.alt!r}, wanted {want!r}); nothing written")


def require_keys(document: str, alts: dict[str, str], keys) -> None:
    """Raise DocumentError naming every key of ``alts`` that is none of the document's references."""
    unknown = sorted(set(alts) - set(keys))
    if unknown:
        raise DocumentError(document, f"no image reference at {', '.join(unknown)}")


def write(document: str, data: bytes, alts: dict[str, str], xml: bool | None = None, prefix: str = "") -> bytes:
    """The document's bytes with the alt text of each named reference set (``""``: decorative, alt="")."""
    decoded = decode(document, data)
    xml = _xml(document) if xml is None else xml
    page = scan(decoded.text, xml)
    refs = refs_from(document, page, prefix)
    by_key = {r.key: img for r, img in zip(refs, page.images)}
    require_keys(document, alts, by_key)
    edits = [alt_edit(decoded.text, by_key[k].start, alt) for k, alt in alts.items()]
    out = splice(decoded, data, edits)
    verify(document, refs, read(document, out, xml, prefix), alts)
    return out


class HtmlFormat:
    name = "html"
    read = staticmethod(read)
    write = staticmethod(write)


def format_for(path) -> HtmlFormat:
    return HtmlFormat()


if __name__ == "__main__":
    from captioner.documents.formats import main

    sys.exit(main(sys.argv[1:]))
