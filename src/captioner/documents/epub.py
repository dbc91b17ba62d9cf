"""EPUB (.epub): the images of each XHTML content document, their alt text and context, and alt-text
edits that keep every other byte of the book.

The package is followed as a reading system does: ``META-INF/container.xml`` names the package document
(the OPF); its manifest and spine name the XHTML content documents, read in spine order and then the
manifest's other XHTML documents (the navigation document, say).  Each is read through ``html.py`` as
XHTML (axe-core's ``image-alt`` rules: ``alt=""``, ``role="presentation"``, ``aria-hidden`` are
decorative); each ``src`` is resolved against its XHTML member, and ``ImageRef.embedded`` names the
member holding the picture.  A remote image, a ``data:`` URI, a src that leaves the book or names a
member that is not there keeps ``embedded`` None: the orchestration reports it.  A page without its own
``<title>`` or heading (or titled with its file name, as pandoc does) takes the book's ``dc:title`` as
``page_title``.

Every XML part is parsed safely first (``xmlparts.parse``: no entity declarations, no external
loading): an entity bomb in the OPF or in a content document refuses the book.

``write`` changes only the alt text of the named images, inside their XHTML members, through
``html.alt_edit``; every other member is copied byte for byte (``zipfiles.SafeZip.rewrite``), so
``mimetype`` stays first and stored, and epubcheck's verdict is the same before and after.  Keys are
``member#line:column`` of the ``<img>`` tag.

    python -m captioner.documents.epub BOOK.epub     # lists the images and their alt text
"""
from __future__ import annotations

import posixpath
import sys
from urllib.parse import unquote, urlsplit

from captioner.documents import html, xmlparts
from captioner.documents.formats import DocumentError, verify_rewrite
from captioner.documents.refs import ImageRef
from captioner.documents.zipfiles import EmbeddedPictures, SafeZip

CONTAINER = "META-INF/container.xml"
ENCRYPTION = "META-INF/encryption.xml"
_XMLENC_NS = "http://www.w3.org/2001/04/xmlenc#"
_CONTAINER_NS = "urn:oasis:names:tc:opendocument:xmlns:container"
_OPF_NS = "http://www.idpf.org/2007/opf"
_DC_NS = "http://purl.org/dc/elements/1.1/"
XHTML_TYPES = ("application/xhtml+xml",)
XHTML_NS = "http://www.w3.org/1999/xhtml"


class Book:
    """An EPUB's zip and the XHTML content documents its package names, in reading order."""

    def __init__(self, document: str, data: bytes):
        self.document = document
        self.zip = SafeZip(document, data)
        if CONTAINER not in self.zip:
            raise DocumentError(document, f"not an EPUB (no {CONTAINER})")
        container = xmlparts.parse(document, CONTAINER, self.zip.read(CONTAINER))
        rootfile = next((r for r in container.iter(f"{{{_CONTAINER_NS}}}rootfile")
                         if r.get("media-type") == "application/oebps-package+xml"), None)
        self.opf = unquote(rootfile.get("full-path", "")) if rootfile is not None else ""
        if not self.opf or self.opf not in self.zip:
            raise DocumentError(document, f"{CONTAINER} names no package document that is in the book "
                                          f"({self.opf or 'none'})")
        package = xmlparts.parse(document, self.opf, self.zip.read(self.opf))
        folder = posixpath.dirname(self.opf)
        manifest = {}
        for item in package.iter(f"{{{_OPF_NS}}}item"):
            member = self.resolve(folder, item.get("href", ""))
            if item.get("media-type") in XHTML_TYPES and member is not None:
                manifest[item.get("id")] = member
        spine = [manifest[r.get("idref")] for r in package.iter(f"{{{_OPF_NS}}}itemref")
                 if r.get("idref") in manifest]
        self.pages = list(dict.fromkeys(spine + list(manifest.values())))
        missing = [p for p in self.pages if p not in self.zip]
        if missing:
            raise DocumentError(document, f"{self.opf} lists {missing[0]!r}, which is not in the book")
        locked = self.encrypted() & set(self.pages)
        if locked:
            raise DocumentError(document, f"{sorted(locked)[0]} is encrypted (a DRM-protected book cannot be read)")
        title = package.find(f"{{{_OPF_NS}}}metadata/{{{_DC_NS}}}title")
        self.title = " ".join("".join(title.itertext()).split()) or None if title is not None else None

    def encrypted(self) -> set[str]:
        """The members META-INF/encryption.xml says are encrypted (DRM; or obfuscated fonts, harmless here)."""
        if ENCRYPTION not in self.zip:
            return set()
        root = xmlparts.parse(self.document, ENCRYPTION, self.zip.read(ENCRYPTION))
        return {m for ref in root.iter(f"{{{_XMLENC_NS}}}CipherReference")
                if (m := self.resolve("", ref.get("URI", ""))) is not None}

    def resolve(self, folder: str, href: str) -> str | None:
        """The member a relative reference names, or None for a remote / data: / absolute reference and
        one that climbs out of the book."""
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or not parts.path or parts.path.startswith("/"):
            return None
        member = posixpath.normpath(posixpath.join(folder, unquote(parts.path)))
        return None if member == ".." or member.startswith("../") else member

    def page(self, member: str) -> tuple[bytes, html.Decoded | None, html.Page]:
        """A content document's bytes, text and images (checked as safe XML first; a document whose XML
        holds no ``img`` element is not scanned again: most chapters of a novel have none)."""
        data = self.zip.read(member)
        root = xmlparts.parse(self.document, member, data, doctype=True)
        if next(root.iter(f"{{{XHTML_NS}}}img", "img"), None) is None:
            return data, None, html.Page([], None)
        decoded = html.decode(f"{self.document}!/{member}", data)
        return data, decoded, html.scan(decoded.text, xml=True)

    def refs(self, member: str, page: html.Page) -> list[ImageRef]:
        refs = html.refs_from(self.document, page, prefix=f"{member}#")
        folder = posixpath.dirname(member)
        for ref in refs:
            ref.location = {"part": member, **ref.location}
            target = self.resolve(folder, ref.src)
            ref.embedded = target if target is not None and target in self.zip else None
            # pandoc titles a chapter with its file name: the book's title says more
            if ref.context.page_title in (None, posixpath.basename(member)):
                ref.context.page_title = self.title or ref.context.page_title
        return refs


class EpubFormat(EmbeddedPictures):
    name = "epub"

    def read(self, path: str, data: bytes) -> list[ImageRef]:
        book = Book(str(path), data)
        return [r for member in book.pages for r in book.refs(member, book.page(member)[2])]

    def write(self, path: str, data: bytes, alts: dict[str, str]) -> bytes:
        book = Book(str(path), data)
        before, replacements = [], {}
        for member in book.pages:
            raw, decoded, page = book.page(member)
            refs = book.refs(member, page)
            before += refs
            if decoded is None:
                continue
            edits = [html.alt_edit(decoded.text, img.start, alts[ref.key])
                     for ref, img in zip(refs, page.images)
                     if ref.key in alts and (ref.alt != alts[ref.key] or ref.decorative != (alts[ref.key] == ""))]
            if edits:
                replacements[member] = html.splice(decoded, raw, edits)
        unknown = sorted(set(alts) - {r.key for r in before})
        if unknown:
            raise DocumentError(book.document, f"no image {unknown[0]!r} in the book")
        if not replacements:
            return data
        result = book.zip.rewrite(replacements)
        verify_rewrite(book.document, before, self.read(path, result), alts)
        return result


def format_for(path) -> EpubFormat:
    return EpubFormat()


if __name__ == "__main__":
    from captioner.documents.formats import main

    sys.exit(main(sys.argv[1:]))
