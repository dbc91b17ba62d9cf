"""Markdown (.md .markdown): every image a page shows, ``![alt](src "title")``, ``![alt][ref]``,
``![alt]``, images inside links, and the ``<img>`` tags of the HTML inside it; byte-exact alt edits.

markdown-it-py (CommonMark, with GFM tables) parses the page once.  Its inline rules for images and
inline HTML are wrapped to record where each token starts in its block's inline text, and each block's
text is mapped back to the source lines it came from, so every reference has its line and column and
every edit touches only the characters between ``![`` and ``]`` (or one ``alt`` value of an ``<img>``,
through ``html.py``).  Line endings, front matter and everything else stay as they are.

What counts follows markdownlint's MD045: ``![](x.png)`` has no alt text (``missing``: Markdown image
syntax cannot say "decorative"); an ``<img>`` without an ``alt`` attribute is missing unless
``aria-hidden="true"``; ``<img alt="">`` is decorative.  Unlike MD045, ``role="presentation"`` on an
``<img>`` also marks it decorative (axe-core agrees).  Writing ``""`` (decorative) into Markdown image
syntax is refused with a DocumentError: it would read back as missing.

    read(document, data) -> [ImageRef]         # key = "line:column" of "![" or "<img"
    write(document, data, {key: alt}) -> bytes  # edits, re-reads, verifies (DocumentError otherwise)

    python -m captioner.documents.markdown README.md   # prints each image reference as JSON lines
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from string import punctuation

from markdown_it import MarkdownIt
from markdown_it.rules_inline import html_inline as _html_inline_rule, image as _image_rule

from captioner.documents import html
from captioner.documents.formats import DocumentError
from captioner.documents.refs import Context, ImageRef

NEARBY_CHARS = html.NEARBY_CHARS
FRONT_MATTER = {"---": ("---", "..."), "+++": ("+++",)}


def _positioned(rule, kind: str):
    """An inline rule that also records, in the token it pushes, where the token starts and ends (the
    pending text before it is pushed first, as a token of its own)."""
    def wrapped(state, silent):
        start, count = state.pos, len(state.tokens)
        ok = rule(state, silent)
        if ok and not silent:
            tok = next((t for t in reversed(state.tokens[count:]) if t.type == kind), None)
            if tok is not None:
                meta = {"start": start, "end": state.pos}
                if kind == "image":                  # the "]" closing the label, found as the rule found it
                    meta["label_end"] = state.md.helpers.parseLinkLabel(state, start + 1, False)
                tok.meta = {**(tok.meta or {}), **meta}
        return ok
    return wrapped


@lru_cache(maxsize=1)
def parser() -> MarkdownIt:
    """CommonMark with GFM tables, its image and inline-HTML rules recording source offsets."""
    md = MarkdownIt("commonmark").enable("table")
    # Inline parsing is most of markdown-it's time; _scan runs it only on the blocks that can hold an image
    # (and the first heading, the page's title).
    md.core.ruler.disable("inline")
    md.inline.ruler.at("image", _positioned(_image_rule, "image"))
    md.inline.ruler.at("html_inline", _positioned(_html_inline_rule, "html_inline"))
    return md


# ---------------------------------------------------------------- source positions

class _Lines:
    """The source's lines (any of \\r\\n, \\r, \\n ends one, as markdown-it counts them)."""

    def __init__(self, text: str):
        self.starts, self.bodies = [], []
        i, n = 0, len(text)
        # str.find, not a loop over characters: this ran for every page checked (0.9 ms of a page's 3 ms)
        r, nl = text.find("\r"), text.find("\n")
        while i <= n:
            if 0 <= r < i:
                r = text.find("\r", i)
            if 0 <= nl < i:
                nl = text.find("\n", i)
            j = min(x for x in (r, nl, n) if x >= 0)
            self.starts.append(i)
            self.bodies.append(text[i:j].replace("\x00", "\ufffd"))
            if j >= n:
                break
            i = j + 2 if text.startswith("\r\n", j) else j + 1


@dataclass
class _Map:
    """Offsets in a block's text (as markdown-it hands it over) -> offsets in the source."""
    content_starts: list[int]           # offset in the block text where each of its lines starts
    source_starts: list[int | None]     # offset in the source of that line's first character (None: unknown)
    lines: list[int]                    # 0-based source line of each

    def source(self, offset: int) -> int | None:
        k = _bisect(self.content_starts, offset)
        base = self.source_starts[k]
        return None if base is None else base + offset - self.content_starts[k]

    def span(self, a: int, b: int, text: str) -> tuple[int, int] | None:
        """The source span of the block text ``[a, b)``, or None where it cannot be replaced as one piece:
        a line of it is not found in the source, or it crosses a line break with container marks (``> ``,
        list indentation is fine) between its lines."""
        sa, sb = self.source(a), self.source(b)
        if sa is None or sb is None:
            return None
        for k in range(_bisect(self.content_starts, a), _bisect(self.content_starts, b)):
            end = self.source_starts[k] + self.content_starts[k + 1] - 1 - self.content_starts[k]
            if self.source_starts[k + 1] is None or text[end:self.source_starts[k + 1]].strip():
                return None
        return sa, sb

    def position(self, offset: int, src: _Lines) -> tuple[int, int]:
        """1-based line and column of ``offset``."""
        k = _bisect(self.content_starts, offset)
        line = self.lines[k]
        base = self.source_starts[k]
        col = (base - src.starts[line] if base is not None else 0) + offset - self.content_starts[k]
        return line + 1, col + 1


def _bisect(starts: list[int], offset: int) -> int:
    lo, hi = 0, len(starts) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if starts[mid] <= offset:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _map(content: str, first_line: int, src: _Lines, cells: bool, cursor: dict) -> _Map:
    """Where each line of a block's text lies in the source: markdown-it's block text is each source line
    less its container marks and indentation (a suffix of the line), trimmed at the end of the block; a
    heading's or table cell's text is found inside its line."""
    content_starts, source_starts, lines, pos = [], [], [], 0
    for k, piece in enumerate(content.split("\n")):
        line = min(first_line + k, len(src.bodies) - 1)
        body = src.bodies[line]
        at = -1
        if not cells:
            if body.endswith(piece):
                at = len(body) - len(piece)
            elif body.rstrip().endswith(piece):
                at = len(body.rstrip()) - len(piece)
        if at < 0:
            at = body.find(piece, cursor.get(line, 0))
        if at >= 0 and cells:
            cursor[line] = at + len(piece)
        content_starts.append(pos)
        source_starts.append(src.starts[line] + at if at >= 0 else None)
        lines.append(line)
        pos += len(piece) + 1
    return _Map(content_starts, source_starts, lines)


# ---------------------------------------------------------------- one image

@dataclass
class _Found:
    ref: ImageRef
    kind: str                              # "markdown" | "html"
    block_start: int                       # offset of "![" / "<img" in its block's text
    map: _Map
    block: str                             # the block's text
    label: tuple[int, int] = (0, 0)        # markdown: the label's span in the block text
    form: str = "inline"                   # inline | full | collapsed | shortcut


def _plain(tokens) -> str:
    """Inline tokens as the plain text a renderer puts in an alt attribute."""
    out = []
    for t in tokens or []:
        if t.type in ("text", "text_special", "code_inline"):
            out.append(t.content)
        elif t.type in ("softbreak", "hardbreak"):
            out.append("\n")
        elif t.type == "image":
            out.append(_plain(t.children))
    return "".join(out)


def _front_matter(lines: _Lines) -> int:
    """How many lines of YAML/TOML front matter open the page (0 when none)."""
    first = lines.bodies[0].rstrip() if lines.bodies else ""
    if first in FRONT_MATTER:
        for k in range(1, len(lines.bodies)):
            if lines.bodies[k].rstrip() in FRONT_MATTER[first]:
                return k + 1
    return 0


@dataclass
class _Page:
    found: list[_Found]
    text: str


def _scan(document: str, text: str) -> _Page:
    src = _Lines(text)
    skip = _front_matter(src)
    # front matter becomes blank lines, so markdown-it's line numbers stay those of the file
    body = "\n" * skip + "\n".join(src.bodies[skip:])
    md, env = parser(), {}
    tokens = md.parse(body, env)             # blocks only; env collects the link reference definitions
    found: list[_Found] = []
    page_title = None
    cursor: dict[int, int] = {}
    for i, tok in enumerate(tokens):
        if tok.type == "inline" and tok.map:
            cells = i > 0 and tokens[i - 1].type in ("th_open", "td_open")
            title = page_title is None and i > 0 and tokens[i - 1].type == "heading_open"
            images = "![" in tok.content or "<img" in tok.content.lower()
            where = _map(tok.content, tok.map[0], src, cells, cursor) if images or cells else None
            if images or title:
                tok.children = []
                md.inline.parse(tok.content, md, env, tok.children)
            if title:
                page_title = " ".join(_plain(tok.children).split()) or None
            if images:
                _inline(document, tok, where, src, found)
        elif tok.type == "html_block" and tok.map:
            title = _html(document, tok.content, 0, _map(tok.content, tok.map[0], src, False, cursor), src, found,
                          None)
            page_title = page_title or title           # an HTML <h1> before any Markdown heading
    seen: set[str] = set()
    for f in found:
        f.ref.context.page_title = page_title
        while f.ref.key in seen:        # only where a line was not found in the source (its column is a guess)
            f.ref.key += "+"
        seen.add(f.ref.key)
    return _Page(found, text)


def _inline(document: str, tok, m: _Map, src: _Lines, found: list[_Found]) -> None:
    children = tok.children or []
    nearby = " ".join(_plain([c for c in children if c.type != "image"]).split())[:NEARBY_CHARS]
    link = None                                   # the open link: [open token, its images, its text parts]
    for child in children:
        if child.type == "link_open":
            link = [child, [], []]
        elif child.type == "link_close":
            if link:
                text = " ".join("".join(link[2]).split())
                for ctx in link[1]:
                    ctx.link_text = text
            link = None
        elif child.type in ("text", "text_special", "code_inline") and link:
            link[2].append(child.content)
        elif child.type == "image" and child.meta and "start" in child.meta:
            ctx = Context(nearby_text=nearby, title=child.attrs.get("title") or None)
            if link:
                ctx.link_href = link[0].attrs.get("href")
                ctx.link_title = link[0].attrs.get("title") or None
                link[1].append(ctx)
            start, end = child.meta["start"], child.meta["end"]
            label_end = child.meta["label_end"]
            alt = _plain(child.children)
            line, col = m.position(start, src)
            ref = ImageRef(document, {"line": line, "column": col}, str(child.attrs.get("src", "")),
                           alt if tok.content[start + 2:label_end] else None, f"{line}:{col}", context=ctx)
            found.append(_Found(ref, "markdown", start, m, tok.content, (start + 2, label_end),
                                _form(tok.content, label_end, end)))
        elif child.type == "html_inline" and child.meta and "start" in child.meta:
            ctx_link = link
            before = len(found)
            _html(document, tok.content, child.meta["start"], m, src, found, child.content)
            for f in found[before:]:
                f.ref.context.nearby_text = nearby
                if ctx_link:
                    f.ref.context.link_href = ctx_link[0].attrs.get("href")
                    f.ref.context.link_title = ctx_link[0].attrs.get("title") or None
                    ctx_link[1].append(f.ref.context)


def _form(content: str, label_end: int, end: int) -> str:
    if end == label_end + 1:
        return "shortcut"
    if content.startswith("[]", label_end + 1) and end == label_end + 3:
        return "collapsed"
    return "inline" if content.startswith("(", label_end + 1) else "full"


def _html(document: str, block: str, at: int, m: _Map, src: _Lines, found: list[_Found],
          tag: str | None) -> str | None:
    """The images of HTML inside Markdown: a block (``tag`` None) or one inline tag at ``block[at:]``;
    -> the fragment's title or <h1>, if it has one."""
    fragment = block if tag is None else tag
    page = html.scan(fragment, names=False)
    for img in page.images:
        start = at + img.start
        line, col = m.position(start, src)
        ref = ImageRef(document, {"line": line, "column": col}, img.src, img.alt, f"{line}:{col}",
                       decorative=img.decorative, context=img.context)
        found.append(_Found(ref, "html", start, m, block))
    return page.title


# ---------------------------------------------------------------- writing

def escape(alt: str) -> str:
    """``alt`` as the text between ``![`` and ``]``: brackets and backslashes escaped as CommonMark
    requires, and any other punctuation that would otherwise be read as markup."""
    alt = " ".join(alt.split())
    out = "".join("\\" + c if c in "\\[]" else c for c in alt)
    if _plain_label(out) == alt:
        return out
    return "".join("\\" + c if c in punctuation else c for c in alt)


def _plain_label(label: str) -> str:
    md, children = parser(), []
    md.inline.parse(f"![{label}](x)", md, {}, children)
    img = [t for t in children if t.type == "image"]
    return _plain(img[0].children) if img else ""


def _edits(document: str, text: str, found: _Found, alt: str) -> list[tuple[int, int, str]]:
    """Source-offset edits that set one reference's alt text."""
    if found.kind == "html":
        a, b, new = html.alt_edit(found.block, found.block_start, alt)
        spans = [(a, b, new)]
    else:
        if not alt.strip():
            raise DocumentError(document, f"line {found.ref.location['line']}: Markdown image syntax cannot mark "
                                          "an image decorative (empty alt text is read as missing)")
        a, b = found.label
        label = found.block[a:b]
        spans = [(a, b, escape(alt))]
        if found.form == "collapsed":
            spans.append((b + 1, b + 3, f"[{label}]"))
        elif found.form == "shortcut":
            spans.append((b + 1, b + 1, f"[{label}]"))
    out = []
    for a, b, new in spans:
        where = found.map.span(a, b, text)
        if where is None:
            raise DocumentError(document, f"line {found.ref.location['line']}: the image's text spans lines "
                                          "inside a quote or list; edit it by hand")
        out.append((*where, new))
    return out


def decode(document: str, data: bytes) -> html.Decoded:
    bom = b"\xef\xbb\xbf" if data.startswith(b"\xef\xbb\xbf") else b""
    try:
        return html.Decoded(data[len(bom):].decode("utf-8"), "utf-8", bom)
    except UnicodeDecodeError as e:
        raise DocumentError(document, f"not valid UTF-8 at byte {e.start + len(bom)} "
                                      "(save it as UTF-8: Markdown has no way to declare another encoding)") from None


def read(document: str, data: bytes) -> list[ImageRef]:
    """Every image reference of a Markdown document (its bytes), in document order."""
    text = decode(document, data).text
    if "![" not in text and "<img" not in text.lower():     # no image syntax anywhere: nothing to parse for
        return []
    return [f.ref for f in _scan(document, text).found]


def write(document: str, data: bytes, alts: dict[str, str]) -> bytes:
    """The document's bytes with the alt text of each named reference set."""
    decoded = decode(document, data)
    page = _scan(document, decoded.text)
    by_key = {f.ref.key: f for f in page.found}
    html.require_keys(document, alts, by_key)
    edits = [e for k, alt in alts.items() for e in _edits(document, decoded.text, by_key[k], alt)]
    out = html.splice(decoded, data, edits)
    refs = [f.ref for f in page.found]
    want = {k: (" ".join(a.split()) if by_key[k].kind == "markdown" else a) for k, a in alts.items()}
    html.verify(document, refs, read(document, out), want)
    return out


class MarkdownFormat:
    name = "markdown"
    read = staticmethod(read)
    write = staticmethod(write)


def format_for(path) -> MarkdownFormat:
    return MarkdownFormat()


if __name__ == "__main__":
    from captioner.documents.formats import main

    sys.exit(main(sys.argv[1:]))
