"""What a document says about each image it shows: ``ImageRef`` (one reference), its ``Context`` (what
the document says around it), and the status rules of ``captioner check``.

Every format module (html, markdown, ooxml, epub) produces ImageRefs; the orchestration above the
formats (``reading.py``) resolves each ``src`` to an image and sets ``status``.  The rules
here decide the status from the alt text alone, so ``check`` never needs the model:

- ``missing``: no alt text at all (no ``alt`` attribute; in Markdown also ``![](x.png)``, as
  markdownlint's MD045 counts it; an Office picture with no description);
- ``decorative``: marked decorative by its author (``alt=""``, ``role="presentation"``/``"none"``,
  ``aria-hidden="true"``, an Office picture's decorative mark);
- ``suspicious``: alt text that describes nothing: a file name, the src repeated, "image", "photo",
  a camera's file name (IMG_1234, DSC01234), placeholder words;
- ``ok``: anything else.

    python -m captioner.documents.refs "IMG_1234.jpg"   # prints the status this alt text gets
"""
from __future__ import annotations

import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

STATUSES = ("missing", "suspicious", "decorative", "ok")

# Words that are alt text only in form: what authoring tools and people type when they have nothing to say.
PLACEHOLDERS = frozenset({
    "image", "img", "images", "photo", "photograph", "picture", "pic", "graphic", "graphics", "icon", "figure",
    "fig", "screenshot", "screen shot", "diagram", "chart", "illustration", "drawing", "logo", "banner",
    "thumbnail", "spacer", "placeholder", "alt", "alt text", "alttext", "alt-text", "description", "caption",
    "todo", "tbd", "fixme", "xxx", "untitled", "blank", "null", "none", "undefined", "n/a", "na", "-",
    "insert alt text", "insert alt text here", "add alt text", "alt text here", "image description",
    "enter image description here", "lorem ipsum", "text", "click here", "link",
})
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg", ".bmp", ".tif", ".tiff", ".avif", ".ico",
                  ".emf", ".wmf", ".jfif", ".heic")
# The file names cameras, phones and screenshot tools give (IMG_1234, DSC01234, PXL_20240101_…): these are
# patterns over a plain alt-text string, never over markup.
CAMERA_NAME = re.compile(r"^(img|dsc|dscn|dscf|dcim|pxl|mvimg|gopr|sam|imag|photo|image|screenshot|"
                         r"screen shot|capture|scan)[\s_\-]*\d[\d_\-\s.:]*\w*$", re.IGNORECASE)   # a digit: a number
NUMBERED_PLACEHOLDER = re.compile(r"^(image|img|photo|picture|figure|fig|graphic|icon)[\s_\-.#]*\d+$",
                                  re.IGNORECASE)


@dataclass
class Context:
    """What the document says around an image: the facts the WAI decision rules (``context.py``) use."""
    link_href: str | None = None      # the image sits inside a link to this target
    link_text: str = ""               # the link's own text besides the image ("" = the image is its only content)
    link_title: str | None = None     # the link's title attribute
    figure_caption: str = ""          # <figcaption>, an Office caption, the caption paragraph below it
    nearby_text: str = ""             # the text of the paragraph / block around it (at most ~300 characters)
    title: str | None = None          # the image's own title attribute / Markdown title
    width: int | None = None          # declared size (attributes, EMU converted to pixels at 96 dpi)
    height: int | None = None
    role: str | None = None           # role attribute, when there is one
    page_title: str | None = None     # the document's own title (<title>, the first heading, docProps title)
    name: str | None = None           # an Office object's name (docPr / cNvPr name: "Picture 3", a file name)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


@dataclass
class ImageRef:
    """One place where a document shows an image.

    A format module fills ``document``, ``location``, ``src``, ``alt``, ``decorative``, ``key``,
    ``embedded`` and ``context``; the orchestration fills ``image``, ``problem`` and ``status``."""
    document: str                     # the document's path, as the user gave it or as the walk found it
    location: dict                    # text: {"line": 3, "column": 10} (1-based, of the tag / image syntax);
                                      # zip: {"part": "word/document.xml", "element": "wp:docPr id=4"}
    src: str                          # as written (URL, path, data: URI), or an Office picture's media part
    alt: str | None                   # None: there is no alt text at all
    key: str                          # names this reference inside its document for a write (format's own)
    decorative: bool = False          # marked decorative by the document itself
    embedded: str | None = None       # zip formats: the member that holds the image's bytes
    context: Context = field(default_factory=Context)
    image: str | None = None          # the resolved image: a file path, or "DOC!/member" for an embedded one
    problem: str | None = None        # why there is no image: "remote image, not fetched", "not found", ...
    status: str = ""                  # one of STATUSES

    def to_dict(self) -> dict:
        """The JSON-lines object ``captioner check --format jsonl`` prints."""
        return {"document": self.document, "location": self.location, "src": self.src, "image": self.image,
                "alt": self.alt, "status": self.status, **({"problem": self.problem} if self.problem else {})}


def _file_name(src: str) -> str:
    if src.startswith("data:"):
        return ""
    return unquote(PurePosixPath(urlsplit(src).path).name)


def suspicious(alt: str, src: str = "") -> str | None:
    """Why ``alt`` describes nothing (a short reason), or None when it may well be real alt text."""
    text = " ".join(alt.split()).strip()
    low = text.lower().strip(" .:;,!?'\"()[]")
    name = _file_name(src).lower()
    if not text:
        return "only white space"
    if low in PLACEHOLDERS:
        return "a placeholder word"
    if src and (text == src or (name and low in (name, name.rsplit(".", 1)[0]))):
        return "the image's file name"
    if low.endswith(IMAGE_SUFFIXES) and " " not in low:
        return "a file name"
    if CAMERA_NAME.match(low) or NUMBERED_PLACEHOLDER.match(low):
        return "a camera's or a numbered file name"
    if low.startswith(("http://", "https://", "data:", "file:")):
        return "a URL"
    if not any(c.isalpha() for c in text):
        return "no words"
    return None


def status(ref: ImageRef) -> str:
    """``ref``'s status from its alt text and decorative marks (see the module docstring)."""
    if ref.decorative or ref.alt == "":
        return "decorative"
    if ref.alt is None:
        return "missing"
    return "suspicious" if suspicious(ref.alt, ref.src) else "ok"


if __name__ == "__main__":
    for a in sys.argv[1:]:
        print(f"{a!r}: {status(ImageRef('-', {}, '', a, ''))} {suspicious(a) or ''}")
