"""The text recommended for an image's alt attribute, from a caption and what the model knows of
its own limits (``knowledge.py``).  Pure string logic, so every entry point says the same thing.

  * in domain, confidence >= 0.5 (the caption is more likely acceptable than not): the caption,
    as a sentence;
  * in domain, lower confidence: the caption hedged, "Image may show: a dog runs ...";
  * out of domain, with an ImageNet tag of probability >= 0.9: "Image may show: espresso." (on
    this project's out-of-domain set 81 % of such tags were right, judged by hand; Facebook's
    automatic alt text shows a tag only above about 0.8 precision, and says "may" for the same
    reason: Wu et al. 2017);
  * out of domain without such a tag: an explicit "No reliable description".

Out of domain the caption is never used: there the shipped model invented a person or a dog in
94 % of its captions (docs/knowledge.md).  Alt text stays within 125 characters (IPTC's guidance).
"""
from __future__ import annotations

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


def compose(caption: str, in_domain: bool | None, confidence: float | None, tags: list) -> str:
    """``tags``: ``tags.Tag`` objects, most probable first.  ``in_domain``/``confidence`` None
    (a model file without calibration): the caption as it is."""
    if in_domain is None or confidence is None:
        return shorten(sentence(caption))
    if in_domain:
        if confidence >= ALT_MIN_CONFIDENCE:
            return shorten(sentence(caption))
        return shorten(MAY_SHOW + caption.strip().rstrip(".") + ".")
    shown = [t.name for t in tags[:MAX_TAGS] if t.prob >= TAG_MIN_PROB]
    if shown:
        return shorten(MAY_SHOW + ", ".join(shown) + ".")
    return NO_DESCRIPTION
