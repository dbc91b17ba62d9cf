"""The WAI alt decision tree (https://www.w3.org/WAI/tutorials/images/decision-tree/) as small rules: what a
document already says around an image decides its alt text before (or instead of) the model's caption.

Each rule is one function ``rule(ref, facts) -> Decision | None`` (None: the rule does not apply); ``decide``
asks them in the order below and the first that answers wins; when none does, the image's alt text is the
model's (``rule = "caption"``).

1. ``link_only`` — an image that is a link's only content is functional: its alt text says where the link
   goes: the link's ``title``, else the title of the local document it points to (its title, else a name
   made from its file name: ``getting-started.md`` -> "Getting started"), else a remote link's host
   (``github.com``).  A link to a place in the same page (``#…``) decides nothing.
2. ``spacer`` — an image of at most 2×2 pixels (declared or actual) or of a single colour carries nothing:
   decorative (``alt=""``).  A 1×1 tracking pixel, a spacer GIF, a blank divider.
3. ``tiny_unlinked`` — an image at most 16 pixels wide and high (declared or actual) and not in a link is a
   bullet, a status dot or an icon beside words that say the same: decorative.  (In a link, rule 1 has
   already spoken.)
4. ``repeated`` — an image used on at least half of the pages, where there are at least 4 (a logo, a
   header icon): the same picture on every page tells a reader nothing new on each; its own ``title``
   where it has one, else decorative.  (A logo that links home was decided by rule 1.)
5. ``captioned`` — an image whose figure caption describes it (two words or more besides "Figure 3" and the
   like): the caption is read with the figure, so alt text repeating it is noise: decorative.  WAI calls
   this a redundant image; we choose ``alt=""`` over a short alt text because we cannot write one that is
   sure not to repeat the caption.
6. ``said_nearby`` — (needs the model's alt text) when the paragraph around the image already names what
   the alt text would say (at least 3 of its content words and 80 % of them), the image is redundant:
   decorative.

    python -m captioner.documents.context      # prints the rules in order, with their first lines
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from captioner.documents.refs import ImageRef


@dataclass
class Facts:
    """What is known about an image beyond its reference: its pixels (when it could be opened) and its site."""
    width: int | None = None          # actual pixel size
    height: int | None = None
    one_colour: bool = False          # every pixel the same colour
    pages_using: int = 1              # documents that show this image (by content)
    pages_total: int = 1              # documents read
    target_title: str | None = None   # the title of the local document the image's link points to
    machine_alt: str | None = None    # the model's alt text, once the image is captioned


@dataclass
class Decision:
    alt: str
    rule: str
    why: str


def _size(ref: ImageRef, facts: Facts) -> tuple[int | None, int | None]:
    """The smaller of declared and actual size per side (a big image shown small is shown small)."""
    w = [v for v in (ref.context.width, facts.width) if v is not None]
    h = [v for v in (ref.context.height, facts.height) if v is not None]
    return (min(w) if w else None), (min(h) if h else None)


def name_from_file(href_path: str) -> str:
    """``user-guide/getting-started.md`` -> "Getting started"; an index page -> its folder's name, "Home" at the top."""
    p = PurePosixPath(unquote(href_path.rstrip("/")) or "/")
    stem = p.stem if p.suffix else p.name
    if stem.lower() in ("index", "readme", "default", "") or href_path.endswith("/"):
        stem = p.parent.name if p.suffix else p.name
        if stem.lower() in ("index", "readme", "default", "", ".", ".."):
            return "Home"
    words = stem.replace("_", " ").replace("-", " ").split()
    return " ".join(words).capitalize() if words else "Home"


def link_only(ref: ImageRef, facts: Facts) -> Decision | None:
    """Rule 1: a link's only content says where the link goes (title, target page's title or name, host)."""
    c = ref.context
    if not c.link_href or c.link_text.strip():
        return None
    if c.link_title and c.link_title.strip():
        return Decision(" ".join(c.link_title.split()), "link_only", "the image is a link's only content: the link's title")
    parts = urlsplit(c.link_href.strip())
    if parts.scheme in ("http", "https") or c.link_href.strip().startswith("//"):
        host = parts.netloc.rsplit("@", 1)[-1].split(":")[0]
        if host.startswith("www."):
            host = host[4:]
        if host:
            return Decision(host, "link_only", "the image is a link's only content: the site it goes to")
        return None
    if parts.scheme or not (parts.path or "").strip():   # mailto:, javascript:, or "#section" in this page
        return None
    if facts.target_title:
        return Decision(facts.target_title, "link_only", "the image is a link's only content: the title of the page it goes to")
    return Decision(name_from_file(parts.path), "link_only",
                    "the image is a link's only content: the name of the page it goes to")


def spacer(ref: ImageRef, facts: Facts) -> Decision | None:
    """Rule 2: at most 2×2 pixels, or one colour: decorative."""
    w, h = _size(ref, facts)
    if w is not None and h is not None and w <= 2 and h <= 2:
        return Decision("", "spacer", f"{w}×{h} pixels: a spacer or tracking pixel")
    if facts.one_colour:
        return Decision("", "spacer", "a single colour: nothing to describe")
    return None


def tiny_unlinked(ref: ImageRef, facts: Facts) -> Decision | None:
    """Rule 3: at most 16×16 pixels and not in a link: decorative."""
    w, h = _size(ref, facts)
    if ref.context.link_href or w is None or h is None or w > 16 or h > 16:
        return None
    return Decision("", "tiny_unlinked", f"{w}×{h} pixels and not a link: an icon or bullet beside its words")


def repeated(ref: ImageRef, facts: Facts) -> Decision | None:
    """Rule 4: on at least half of at least 4 pages: its title, else decorative."""
    if facts.pages_total < 4 or facts.pages_using * 2 < facts.pages_total:
        return None
    why = f"on {facts.pages_using} of {facts.pages_total} pages: a logo or icon of the site"
    title = " ".join((ref.context.title or "").split())
    return Decision(title, "repeated", why + (": its title" if title else ": decorative"))


_NUMBERING = re.compile(r"^(figure|fig|image|img|picture|photo|table|screenshot|plate)\.?$|^[\divxlc.:\-()]+$",
                        re.IGNORECASE)


def _words(text: str) -> list[str]:
    return [w.strip(".,;:!?()[]\"'«»“”‘’").lower() for w in text.split()]


def captioned(ref: ImageRef, facts: Facts) -> Decision | None:
    """Rule 5: a figure caption of two words or more besides numbering: decorative (redundant)."""
    words = [w for w in _words(ref.context.figure_caption or "") if w and not _NUMBERING.match(w)]
    if len(words) < 2:
        return None
    return Decision("", "captioned", "its figure caption says what it shows (a redundant image)")


STOP = frozenset("a an the of in on at to for with and or by from is are be its it this that these those some "
                 "image may show shows showing picture photo screenshot".split())


def said_nearby(ref: ImageRef, facts: Facts) -> Decision | None:
    """Rule 6: the text beside it holds at least 3 and 80 % of the model's content words: decorative."""
    if not facts.machine_alt or not ref.context.nearby_text:
        return None
    content = {w for w in _words(facts.machine_alt) if len(w) > 2 and w not in STOP}
    near = set(_words(ref.context.nearby_text))
    said = content & near
    if len(said) < 3 or len(said) < 0.8 * len(content):
        return None
    return Decision("", "said_nearby", "the text beside it already says " + ", ".join(sorted(said)))


BEFORE_CAPTION = (link_only, spacer, tiny_unlinked, repeated, captioned)   # need no caption
AFTER_CAPTION = (said_nearby,)


def decide(ref: ImageRef, facts: Facts, rules=BEFORE_CAPTION + AFTER_CAPTION) -> Decision | None:
    """The first rule that decides ``ref``'s alt text, or None (the model's alt text stands)."""
    for rule in rules:
        d = rule(ref, facts)
        if d is not None:
            return d
    return None


if __name__ == "__main__":
    for rule in BEFORE_CAPTION + AFTER_CAPTION:
        print(rule.__name__)
