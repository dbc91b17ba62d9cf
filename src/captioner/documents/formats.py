"""The one interface every document format implements, and the table of formats by file suffix.

A format answers two questions and knows nothing of captioning:

- ``read(path, data)``: which images does this document reference, with what alt text and context?
  -> ``[ImageRef]`` in document order (``refs.py``), ``src`` as written; nothing is resolved or opened.
- ``write(path, data, alts)``: this document's bytes with the alt text of each reference named in
  ``alts`` (``ImageRef.key`` -> new alt text; ``""`` marks the image decorative where the format can say
  so) set, and every other byte kept.  A format proves its own result: it reads the new bytes again and
  raises ``DocumentError`` unless the same references come back in the same order with only the asked
  alt texts changed (Black's ``assert_equivalent``, for alt text).

Zip formats also hand out an embedded picture's bytes: ``image_bytes(path, data, member)``.
Walking folders, resolving ``src`` (``paths.py``), captioning, atomic replacement and ``--diff`` live
once, above the formats, in ``reading.py``, ``filling.py`` and ``writing.py``.

    python -m captioner.documents.formats     # lists the formats and their suffixes
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

from captioner.documents.refs import ImageRef


class DocumentError(Exception):
    """A document that cannot be read or written as asked; the message names the document and the problem."""

    def __init__(self, document: str, problem: str):
        super().__init__(f"{document}: {problem}")
        self.document, self.problem = str(document), problem


class Format(Protocol):
    name: str

    def read(self, path: str, data: bytes) -> list[ImageRef]: ...

    def write(self, path: str, data: bytes, alts: dict[str, str]) -> bytes: ...


def verify_rewrite(document: str, before: list[ImageRef], after: list[ImageRef], alts: dict[str, str]) -> None:
    """Raise DocumentError unless ``after`` (a rewrite, read again) is ``before`` with only the alt texts in
    ``alts`` changed: as many references in the same order, each with the same src and embedded member,
    each named one (by its key in ``before``) with its new alt text (``""``: decorative), every other one
    as it was.  References are matched by position, as a key may hold a column that an edit shifts."""
    if len(after) != len(before):
        raise DocumentError(document, f"the rewrite lists other images ({len(before)} -> {len(after)}); "
                                      "nothing written")
    for old, new in zip(before, after):
        if (new.src, new.embedded) != (old.src, old.embedded):
            raise DocumentError(document, f"the rewrite moved the image at {old.location}; nothing written")
        if old.key in alts:
            want = alts[old.key]
            ok = new.alt == want and (want != "" or new.decorative)
        else:
            ok = new.alt == old.alt and new.decorative == old.decorative
        if not ok:
            raise DocumentError(document, f"the image at {old.location} does not read back as asked (alt "
                                          f"{new.alt!r}, wanted {alts.get(old.key, old.alt)!r}); nothing written")


# suffix -> module under captioner.documents that defines FORMAT (imported only when a file of that kind is met)
SUFFIXES = {".html": "html", ".htm": "html", ".xhtml": "html", ".md": "markdown", ".markdown": "markdown",
            ".docx": "ooxml", ".pptx": "ooxml", ".epub": "epub"}


def format_for(path: str | Path) -> Format | None:
    """The format that reads ``path`` (by its suffix, any case), or None for a file that is not a document."""
    module = SUFFIXES.get(Path(path).suffix.lower())
    if module is None:
        return None
    return importlib.import_module(f"captioner.documents.{module}").format_for(path)


def main(argv: list[str]) -> int:
    """``python -m captioner.documents.<any format> FILE…``: each document's references as JSON lines (with
    key, decorative mark and context); no FILE: the formats and their suffixes."""
    import json
    import sys

    if not argv:
        for suffix, module in SUFFIXES.items():
            print(f"{suffix}\tcaptioner.documents.{module}")
        return 0
    for path in argv:
        try:
            fmt = format_for(path)
            if fmt is None:
                raise DocumentError(path, "not a document captioner reads (" + " ".join(SUFFIXES) + ")")
            with open(path, "rb") as f:
                refs = fmt.read(path, f.read())
        except (DocumentError, OSError) as e:
            print(f"captioner: error: {e}", file=sys.stderr)
            return 2
        for ref in refs:
            print(json.dumps({**ref.to_dict(), "key": ref.key, "embedded": ref.embedded,
                              "decorative": ref.decorative, "context": ref.context.to_dict()}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
