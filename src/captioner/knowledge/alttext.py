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


def title_line(lines: list, height: int, top_share: float = 0.34):
    """The tallest horizontal line with words in the top ``top_share`` of the image (first if tied)."""
    cands = [l for l in lines if _words(l) and not l.vertical and _top(l) <= top_share * max(height, 1)]
    return max(cands, key=lambda l: l.height, default=None) if cands else None


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
    first = title_line(lines, text.height) or lines[0]
    after = lines[lines.index(first) + 1:]
    return "Document: " + _join(first.text, after)


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
