"""The text recommended for an image's alt attribute, from a caption and what the model knows of
its own limits (``bundle.py``).  Pure string logic, so every entry point says the same thing.

  * in domain, confidence >= 0.5 (the caption is more likely acceptable than not): the caption,
    as a sentence;
  * in domain, lower confidence: the caption hedged, "Image may show: a dog runs ...";
  * out of domain, with an ImageNet tag of probability >= 0.9: "Image may show: espresso." (on
    this project's out-of-domain set 81 % of such tags were right, judged by hand; Facebook's
    automatic alt text shows a tag only above about 0.8 precision, and says "may" for the same
    reason: Wu et al. 2017);
  * out of domain without such a tag: an explicit "No reliable description".

Out of domain the caption is never used: there the shipped model invented a person or a dog in
94 % of its captions (docs/knowledge.md).  Alt text stays within 125 characters (IPTC's guidance;
``limit`` changes it: ``--max-chars``).

Images that are not photos (``kind.py``) get what the W3C WAI images tutorial asks for, from the text
read in them (``ocr.py``), and never the caption (a model of outdoor photos does not know what a chart
is):
  * screenshot: "Screenshot: " and its most prominent text (the tallest line), then the text that
    follows in reading order;
  * document: "Document: " and its title (the tallest line in its top third) and opening words;
  * chart: its type and title, "Bar chart: Monthly active users by region.";
  * drawing: "Drawing that may show: " and a confident ImageNet tag (p >= 0.9, right for about two in
    three drawings), else "Drawing", with any text it holds;
  * a drawing captioned by a decoder taught on a library's own captions (an adapted model's own decoder,
    ``training/adapt.py``) in its domain: that caption, as for a photo, after "Drawing: " (or "Drawing
    that may show: " where the confidence is low): those captions are what the library's people wrote;
  * photo: as above, with the text read in it appended (``, with the text "PHARMACY".``) - text that
    passed the strict photo filter of ``ocr.filter_lines``.
``long_description`` is the longer text for a page's long description (IPTC ExtDescrAccessibility):
every line read, in reading order; for a chart its type, title, axis labels, the other labels and the
values read.
"""
from __future__ import annotations

import re

ALT_MIN_CONFIDENCE = 0.5
TAG_MIN_PROB = 0.9
MAX_TAGS = 2
MAX_CHARS = 125
NO_DESCRIPTION = "No reliable description: this image is unlike the photos the captioner was trained on."
MAY_SHOW = "Image may show: "


def sentence(caption: str) -> str:
    caption = caption.strip()
    return caption[:1].upper() + caption[1:] + ("" if caption.endswith(".") else ".") if caption else caption


def shorten(text: str, limit: int = MAX_CHARS) -> str:
    """Cut at a word boundary so the result, with its ellipsis, fits in ``limit`` characters."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "…"


def compose(caption: str, in_domain: bool | None, confidence: float | None, tags: list, kind: str | None = None,
            text=None, chart_type: str | None = None, limit: int = MAX_CHARS, taught: bool = False) -> str:
    """``tags``: ``tags.Tag`` objects, most probable first.  ``in_domain`` None (a model file without
    calibration): the caption as it is; ``confidence`` None (none could be fitted): in domain the
    caption, out of domain as usual.  ``kind``: ``kind.KINDS`` (None: a photo); ``text``:
    ``ocr.ImageText`` read in the image, or None (not read).  ``taught``: the caption comes from a
    decoder taught on a library's own captions."""
    lines = list(text.lines) if text else []
    if kind == "drawing" and taught and in_domain:
        base = _photo(caption, in_domain, confidence, tags)
        base = ("Drawing that may show: " + base[len(MAY_SHOW):]) if base.startswith(MAY_SHOW) else "Drawing: " + base
        return shorten(base, limit)
    if kind in ("screenshot", "document", "chart", "drawing"):
        return shorten(_non_photo(kind, lines, text, tags, chart_type), limit)
    base = _photo(caption, in_domain, confidence, tags)
    if lines:
        quoted = f'the text "{" ".join(l.text for l in lines)}"'
        base = f"Image with {quoted}." if base == NO_DESCRIPTION else base.rstrip(".") + f", with {quoted}."
    return shorten(base, limit)


def _photo(caption, in_domain, confidence, tags) -> str:
    if in_domain is None:
        return sentence(caption)
    if in_domain:
        if confidence is None or confidence >= ALT_MIN_CONFIDENCE:
            return sentence(caption)
        return MAY_SHOW + caption.strip().rstrip(".") + "."
    shown = [t.name for t in tags[:MAX_TAGS] if t.prob >= TAG_MIN_PROB]
    if shown:
        return MAY_SHOW + ", ".join(shown) + "."
    return NO_DESCRIPTION


CHART_NAMES = {"bar": "Bar chart", "line": "Line chart", "pie": "Pie chart", "scatter": "Scatter plot"}
_NUMBER = re.compile(r"^[\s$€£¥+\-−–]*[\d.,]+\s*[%kKmMbB]?\s*$")


def _words(line) -> bool:
    return sum(c.isalpha() for c in line.text) >= 2


def _top(line) -> int:
    return min(p[1] for p in line.box)


def _left(line) -> int:
    return min(p[0] for p in line.box)


def _bottom(line) -> int:
    return max(p[1] for p in line.box)


def _centre(line) -> float:
    xs = [p[0] for p in line.box]
    return (min(xs) + max(xs)) / 2


SAME_SIZE = 0.85   # boxes within 15 % of one height are one size of type: a line with descenders ("y", "p") has a taller box


def _tallest(cands: list):
    """The line of the largest type; where several are of that size, the first in reading order: the
    topmost, or the leftmost of those on the topmost's row (the titles of plots side by side)."""
    if not cands:
        return None
    tallest = max(l.height for l in cands)
    tied = [l for l in cands if l.height >= SAME_SIZE * tallest]
    first = min(tied, key=_top)
    return min((l for l in tied if _top(l) <= _top(first) + 0.5 * first.height), key=_left)


def legend_entries(lines: list) -> set[int]:
    """The ``id``s of the lines that are a legend's entries: lines of one size stacked close one under
    the next (less than half a line apart: a title has more space under it) with their left edges
    aligned (each beside its colour swatch) - three or more, or two whose centres differ (a title set
    on two lines is centred, a legend's entries are not)."""
    rows = [l for l in lines if not l.vertical and _words(l)]
    parent = {id(l): id(l) for l in rows}

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for a in rows:
        for b in rows:
            h = max(a.height, b.height)
            if (a is not b and min(a.height, b.height) >= 0.8 * h and abs(_left(a) - _left(b)) <= 0.5 * h
                    and -0.2 * h <= _top(b) - _bottom(a) <= 0.4 * h):
                parent[root(id(a))] = root(id(b))
    stacks: dict[int, list] = {}
    for l in rows:
        stacks.setdefault(root(id(l)), []).append(l)
    out = set()
    for stack in stacks.values():
        if len(stack) >= 3 or (len(stack) == 2 and abs(_centre(stack[0]) - _centre(stack[1]))
                                > 0.5 * max(l.height for l in stack)):
            out |= {id(l) for l in stack}
    return out


def plot_top(lines: list) -> int | None:
    """Where a chart's plot begins: the top of the highest value on a y axis - three or more numbers
    stacked one above the other with their right edges aligned - or None where there is no such axis
    (a pie).  A title is set above the plot; what begins below that is inside it (a legend, labels)."""
    nums = [l for l in lines if not l.vertical and _NUMBER.match(l.text)]
    tops = []
    for a in nums:
        column = [b for b in nums if abs(_right(b) - _right(a)) <= 0.5 * max(a.height, b.height)]
        if len({_top(b) // max(a.height, 1) for b in column}) >= 3:
            tops.append(min(_top(b) for b in column))
    return min(tops, default=None)


def title_line(lines: list, height: int, top_share: float = 0.34):
    """A chart's title: among the lines with words in the top ``top_share`` of the image and above the
    plot (``plot_top``), fragments on one baseline joined first (``ocr.join_fragments``: a title as
    wide as the plot is read in pieces), a legend's entries left out (``legend_entries``), the one of
    the largest type (the first where several are of that size), with the line over or under it where
    the title is set on two centred lines."""
    from captioner.knowledge.ocr import join_fragments, joined

    rows = [joined(g) for g in join_fragments(list(lines))]
    plot = plot_top(rows)
    legend = legend_entries(rows)
    cands = [l for l in rows if _words(l) and sum(c.isalpha() for c in l.text) >= 3 and not l.vertical
             and id(l) not in legend and _top(l) <= top_share * max(height, 1) and (plot is None or _top(l) < plot)]
    title = _tallest(cands)
    if title is None:
        return None

    def next_line(a, b):   # b the second line of a title a begins: one size, centred, close under it
        return (b is not a and min(a.height, b.height) >= SAME_SIZE * max(a.height, b.height)
                and -0.3 * a.height <= _top(b) - _bottom(a) <= 0.8 * a.height
                and abs(_centre(a) - _centre(b)) <= a.height)

    over = [l for l in cands if next_line(l, title)]
    under = [l for l in cands if next_line(title, l)]
    if over:
        return _stacked(max(over, key=_top), title)
    if under:
        return _stacked(title, min(under, key=_top))
    return title


def _right(line) -> int:
    return max(p[0] for p in line.box)


def _stacked(first, second):
    """A title set on two lines, as one line."""
    from captioner.knowledge.ocr import TextLine

    x0, x1 = min(_left(first), _left(second)), max(_right(first), _right(second))
    return TextLine(first.text + " " + second.text, min(first.confidence, second.confidence),
                    [[x0, _top(first)], [x1, _top(first)], [x1, _bottom(second)], [x0, _bottom(second)]])


_BULLET_MARKS = set("•·◦▪▫■□●○‣⁃∙–—-*+>»")
_NUMBERED = re.compile(r"^\(?(\d{1,3}|[a-zA-Z]|[ivxIVX]{1,4})[.)]\s")
_ROMAN = r"(?=[ivxlc])c{0,3}(xc|xl|l?x{0,3})(ix|iv|v?i{0,3})"     # a well-formed numeral: not "civil"
_PAGE_NUMBER = re.compile(rf"^[\W_]*([Pp]age\s*)?(\d{{1,4}}|{_ROMAN}|{_ROMAN.upper()})(\s*(of|/)\s*\d{{1,4}})?[\W_]*$")


def _body_height(lines: list) -> float:
    """The height of the body text: the median height of the horizontal lines with words."""
    hs = sorted(l.height for l in lines if _words(l) and not l.vertical)
    return hs[len(hs) // 2] if hs else 0


def page_furniture(line, lines: list, height: int, body: float | None = None) -> str | None:
    """Why ``line`` of a page is never its title, or None: "page number" (a number alone, "Page 3",
    "3 of 10"), "running header" (small type at the very top, set apart from the text under it),
    "bullet" (a list item: a bullet mark, or a number or letter with "." or ")" in the body's type -
    a larger "1. Introduction" is a heading)."""
    text = line.text.strip()
    body = _body_height(lines) if body is None else body
    if _PAGE_NUMBER.match(text):
        return "page number"
    if text[:1] in _BULLET_MARKS:
        return "bullet"
    if _NUMBERED.match(text) and line.height <= 1.1 * body:
        return "bullet"
    # a page's top margin is about a tenth of it (an inch of eleven); a header there is set in the
    # body's type or smaller (a title is larger), with space under it, and is smaller still, or shares
    # its row with the page number, or stands off the text's left edge (right-aligned or centred)
    if _bottom(line) <= 0.1 * height and line.height <= 1.25 * body:
        below = [l for l in lines if _top(l) >= _bottom(line)]
        nxt = min(below, key=_top, default=None)
        if nxt is None or _top(nxt) - _bottom(line) >= 0.5 * line.height:
            from captioner.knowledge.ocr import same_row

            lefts = sorted(_left(l) for l in lines if _words(l) and not l.vertical)
            margin = lefts[len(lefts) // 5] if lefts else 0
            numbered = any(l is not line and same_row(l, line, 0.5) and _PAGE_NUMBER.match(l.text.strip())
                           for l in lines)
            if line.height < 0.9 * body or numbered or _left(line) > margin + 2 * line.height:
                return "running header"
    return None


def prominent_line(lines: list):
    cands = [l for l in lines if _words(l) and not l.vertical]
    return max(cands, key=lambda l: l.height, default=None) if cands else None


def _join(first: str, rest: list) -> str:
    more = " ".join(l.text for l in rest)
    return sentence(first.rstrip(".:")) + (" " + more if more else "")


def _non_photo(kind, lines, text, tags, chart_type) -> str:
    if kind == "chart":
        name = CHART_NAMES.get(chart_type, "Chart")
        title = title_line(lines, text.height if text else 0)
        return f"{name}: {title.text.rstrip('.')}." if title else f"{name}."
    if kind == "drawing":
        shown = [t.name for t in tags[:MAX_TAGS] if t.prob >= TAG_MIN_PROB]
        # "may": on drawings, tags of p >= 0.9 were right for about 2 in 3 (docs/text.md)
        base = "Drawing that may show: " + ", ".join(shown) if shown else "Drawing"
        return base + (f', with the text "{" ".join(l.text for l in lines)}".' if lines else ".")
    if not lines:   # "no readable text" only where it was read and none found, not where it was not read
        name = "Screenshot" if kind == "screenshot" else "Document page"
        return f"{name} with no readable text." if text is not None else f"{name}."
    if kind == "screenshot":
        first = prominent_line(lines) or lines[0]
        return "Screenshot: " + _join(first.text, [l for l in lines if l is not first])
    first, after = page_title(lines, text.height)
    return "Document: " + _join(first.text, after)


def page_title(lines: list, height: int, top_share: float = 0.34):
    """A page's title and the lines after it: the line of the largest type with words in the top
    ``top_share`` (fragments on one baseline joined; the topmost where several are of that size),
    never a running header, a page number or a list item (``page_furniture``); where there is none,
    the first line that is none of those.  -> (the title line, the lines that follow it but a running
    header or a page number)."""
    from captioner.knowledge.ocr import join_fragments, joined

    body = _body_height(lines)
    groups = [g for g in join_fragments(list(lines))
              if not any(page_furniture(l, lines, height, body) for l in g)]
    rows = [(joined(g), g) for g in groups]
    cands = [(l, g) for l, g in rows if _words(l) and not l.vertical and _top(l) <= top_share * max(height, 1)]
    best = _tallest([l for l, _ in cands])
    if best is not None:
        first, parts = next((l, g) for l, g in cands if l is best)
    elif rows:
        first, parts = next(((l, g) for l, g in rows if _words(l)), rows[0])
    else:
        return lines[0], lines[1:]
    last = max(lines.index(p) for p in parts)
    skip = {id(p) for p in parts}
    # a list may open the text; a header or page number is no part of it
    after = [l for l in lines[last + 1:] if id(l) not in skip
             and page_furniture(l, lines, height, body) in (None, "bullet")]
    return first, after


def long_description(kind: str | None, text, chart_type: str | None = None) -> str:
    """The text for a long description: every line read, in reading order; for a chart, its parts."""
    if not text:
        return ""
    lines = text.lines
    if kind != "chart":
        return text.text
    title = title_line(lines, text.height)
    bottom = [l for l in lines if _words(l) and not l.vertical and _top(l) >= 0.8 * text.height]
    x_label = max(bottom, key=lambda l: len(l.text), default=None)
    y_labels = [l for l in lines if _words(l) and l.vertical]
    used = {id(l) for l in [title, x_label, *y_labels] if l is not None}
    values = [l.text for l in lines if id(l) not in used and _NUMBER.match(l.text)]
    labels = [l.text for l in lines if id(l) not in used and not _NUMBER.match(l.text)]
    out = [CHART_NAMES.get(chart_type, "Chart") + (f": {title.text}" if title else "") + "."]
    axes = ([f"x axis: {x_label.text}"] if x_label else []) + [f"y axis: {l.text}" for l in y_labels]
    if axes:
        out.append("Axes: " + "; ".join(axes) + ".")
    if labels:
        out.append("Labels: " + ", ".join(labels) + ".")
    if values:
        out.append("Values read: " + ", ".join(values) + ".")
    return "\n".join(out)
