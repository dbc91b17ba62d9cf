"""documents/epub.py on a real EPUB (pandoc made it from MkDocs' docs): container -> OPF -> XHTML, src
resolved to members, alt edits that keep every other member byte for byte (mimetype first and stored),
epubcheck's verdict unchanged, hostile books refused.

    python -m pytest -q tests/test_documents_epub.py            # -m slow runs the epubcheck comparison
"""
from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from captioner.documents.formats import DocumentError, format_for
from captioner.documents.refs import status
from captioner.documents.zipfiles import SafeZip

FIXTURES = Path(__file__).parent / "fixtures" / "documents" / "zip"
EPUB = FIXTURES / "getting-started.epub"
CHAPTER = "EPUB/text/ch001.xhtml"
BILLION_LAUGHS = (b'<!DOCTYPE html [<!ENTITY lol "lol">'
                  b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
                  b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>')


def read(data: bytes | None = None, name: str = str(EPUB)):
    return format_for(name).read(name, data if data is not None else EPUB.read_bytes())


def make_book(members: dict[str, bytes]) -> bytes:
    """A small EPUB: mimetype first and stored, then the given members (deflated)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("mimetype", b"application/epub+zip", compress_type=zipfile.ZIP_STORED)
        for name, data in members.items():
            z.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


CONTAINER_XML = (b'<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:'
                 b'container"><rootfiles><rootfile full-path="OPS/book.opf" media-type="application/oebps-'
                 b'package+xml"/></rootfiles></container>')


def opf(items: str, spine: str) -> bytes:
    return (f'<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
            f'<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>A Small Book</dc:title></metadata>'
            f'<manifest>{items}</manifest><spine>{spine}</spine></package>').encode()


def xhtml(body: str, head: bytes = b"") -> bytes:
    return (b'<?xml version="1.0" encoding="UTF-8"?>' + head + b'<html xmlns="http://www.w3.org/1999/xhtml">'
            b"<head><title>Chapter</title></head><body>" + body.encode() + b"</body></html>")


def small_book(chapter: bytes, nav: bytes | None = None) -> bytes:
    items = ('<item id="c1" href="text/c1.xhtml" media-type="application/xhtml+xml"/>'
             '<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>'
             '<item id="p" href="img/p.png" media-type="image/png"/>')
    return make_book({"META-INF/container.xml": CONTAINER_XML,
                      "OPS/book.opf": opf(items, '<itemref idref="c1"/>'),
                      "OPS/nav.xhtml": nav or xhtml('<nav><img src="img/p.png"/></nav>'),
                      "OPS/text/c1.xhtml": chapter, "OPS/img/p.png": b"\x89PNG\r\n\x1a\nnot really"})


# -- reading ---------------------------------------------------------------------------------------

def test_a_real_books_images_alt_text_and_members():
    refs = read()
    assert [r.location["part"] for r in refs] == [CHAPTER] * 6
    assert [r.alt for r in refs] == ["The initial MkDocs layout", "The MkDocs live server", None,
                                     "Screenshot", "Screenshot", "Screenshot"]
    assert [status(r) for r in refs] == ["ok", "ok", "missing", "suspicious", "suspicious", "suspicious"]
    assert [r.embedded for r in refs] == [f"EPUB/media/file{i}.png" for i in range(6)]
    assert refs[0].src == "../media/file0.png" and refs[0].key == f"{CHAPTER}#162:1"
    assert refs[0].location == {"part": CHAPTER, "line": 162, "column": 1}
    assert refs[0].context.figure_caption == "The initial MkDocs layout"
    assert refs[5].context.link_href == "https://readthedocs.org/"
    assert refs[0].context.page_title == "Getting Started with MkDocs"      # dc:title, not "ch001.xhtml"


def test_image_bytes_hands_out_the_picture():
    ref = read()[0]
    assert format_for(EPUB).image_bytes(str(EPUB), EPUB.read_bytes(), ref.embedded).startswith(b"\x89PNG")


def test_a_books_archive_is_checked_once_for_all_its_pictures(monkeypatch):
    """Each picture's bytes come from one checked archive per document (before: the whole archive checked
    again for each picture, which grew with the square of a large book's pictures)."""
    from captioner.documents import zipfiles

    opened = []
    monkeypatch.setattr(zipfiles, "SafeZip", lambda *a: opened.append(a[0]) or SafeZip(*a))
    fmt, data, refs = format_for(EPUB), EPUB.read_bytes(), read()
    pictures = [fmt.image_bytes(str(EPUB), data, r.embedded) for r in refs]
    assert len(pictures) == 6 and len(set(pictures)) > 1 and opened == [str(EPUB)]
    other = bytes(bytearray(data))   # another document's bytes (equal, but another object): checked anew
    assert fmt.image_bytes("other.epub", other, refs[0].embedded) == pictures[0] and len(opened) == 2


def test_spine_then_other_manifest_documents_and_src_resolution():
    chapter = xhtml('<p><img src="../img/p.png" alt="A plot"/><img src="https://example.org/x.png"/>'
                    '<img src="../img/missing.png" alt=""/><img src="../../../etc/passwd"/>'
                    '<img src="data:image/png;base64,iVBORw0KGgo="/><img src="../img/p%2Epng" alt="x"/></p>')
    refs = read(small_book(chapter), "small.epub")
    assert [r.location["part"] for r in refs] == ["OPS/text/c1.xhtml"] * 6 + ["OPS/nav.xhtml"]
    assert [r.embedded for r in refs] == ["OPS/img/p.png", None, None, None, None, "OPS/img/p.png",
                                          "OPS/img/p.png"]
    assert refs[2].decorative and refs[0].context.page_title == "Chapter"


def test_a_chapter_without_images_gives_none():
    refs = read(small_book(xhtml("<p>Only words here.</p>")), "small.epub")
    assert [r.location["part"] for r in refs] == ["OPS/nav.xhtml"]


# -- writing ---------------------------------------------------------------------------------------

def test_write_changes_only_the_alt_bytes_and_keeps_mimetype_first_and_stored():
    data = EPUB.read_bytes()
    refs = read()
    alts = {refs[2].key: "The site_name setting, set to MkLorum", refs[3].key: ""}
    out = format_for(EPUB).write(str(EPUB), data, alts)
    before, after = SafeZip("b", data), SafeZip("a", out)
    assert [n for n in before.names() if before.raw(n) != after.raw(n)] == [CHAPTER]
    assert after.members[0].name == "mimetype" and after.members[0].start == 0
    assert after.info("mimetype").compress_type == zipfile.ZIP_STORED and after.raw("mimetype")[28:30] == b"\0\0"
    old, new = before.read(CHAPTER), after.read(CHAPTER)
    expected = old.replace(b'<img src="../media/file2.png" />',
                           b'<img alt="The site_name setting, set to MkLorum" src="../media/file2.png" />', 1)
    expected = expected.replace(b'<img src="../media/file3.png" alt="Screenshot" />',
                                b'<img src="../media/file3.png" alt="" />', 1)
    assert new == expected
    again = read(out)
    assert again[2].alt == alts[refs[2].key] and again[3].decorative and again[3].alt == ""
    assert format_for(EPUB).write(str(EPUB), out, {refs[2].key: alts[refs[2].key]}) == out   # nothing to do


def test_two_images_on_one_line_are_both_written():
    chapter = xhtml('<p><img src="../img/p.png"/><img src="../img/p.png"/></p>')
    book = small_book(chapter)
    refs = read(book, "small.epub")
    out = format_for("small.epub").write("small.epub", book, {refs[0].key: "First", refs[1].key: "Second"})
    assert [r.alt for r in read(out, "small.epub")][:2] == ["First", "Second"]


def test_an_unknown_key_is_refused():
    with pytest.raises(DocumentError, match="no image"):
        format_for(EPUB).write(str(EPUB), EPUB.read_bytes(), {"EPUB/text/ch001.xhtml#1:1": "x"})


# -- bad input -------------------------------------------------------------------------------------

def test_an_entity_bomb_in_an_xhtml_member_is_refused():
    chapter = xhtml("<p>&lol3;</p>", head=BILLION_LAUGHS)
    with pytest.raises(DocumentError, match=r"bomb\.epub: OPS/text/c1\.xhtml declares a DTD or entities"):
        read(small_book(chapter), "bomb.epub")


def test_an_entity_bomb_in_the_package_document_is_refused():
    book = make_book({"META-INF/container.xml": CONTAINER_XML,
                      "OPS/book.opf": b'<?xml version="1.0"?>' + BILLION_LAUGHS.replace(b"html", b"package")
                      + b'<package xmlns="http://www.idpf.org/2007/opf"><metadata>&lol3;</metadata></package>'})
    with pytest.raises(DocumentError, match="OPS/book.opf declares a DTD or entities"):
        read(book, "bomb.epub")


def test_a_bare_doctype_is_accepted():
    chapter = xhtml('<p><img src="../img/p.png" alt="ok"/></p>', head=b"<!DOCTYPE html>")
    assert read(small_book(chapter), "ok.epub")[0].alt == "ok"


def test_not_a_zip_and_not_an_epub_are_refused():
    with pytest.raises(DocumentError, match=r"book\.epub: not a zip archive"):
        read(b"<html>a web page saved as .epub</html>", "book.epub")
    with pytest.raises(DocumentError, match="not an EPUB"):
        read((FIXTURES / "getting-started.docx").read_bytes(), "book.epub")


def test_a_package_naming_a_missing_chapter_is_refused():
    items = '<item id="c1" href="text/gone.xhtml" media-type="application/xhtml+xml"/>'
    book = make_book({"META-INF/container.xml": CONTAINER_XML, "OPS/book.opf": opf(items, '<itemref idref="c1"/>')})
    with pytest.raises(DocumentError, match="gone.xhtml"):
        read(book, "broken.epub")


def test_malformed_xhtml_is_refused():
    with pytest.raises(DocumentError, match="not well-formed"):
        read(small_book(b"<html><body><p>unclosed</body></html>"), "broken.epub")


# -- epubcheck agrees ------------------------------------------------------------------------------

def _epubcheck(path: Path) -> tuple[int, set[str]]:
    run = subprocess.run(["java", "-jar", shutil.which("epubcheck"), str(path)], capture_output=True, text=True,
                         timeout=300)
    messages = {line.replace(str(path), "BOOK").replace(path.name, "BOOK") for line in
                (run.stdout + run.stderr).splitlines() if line.startswith(("ERROR", "WARNING", "FATAL"))}
    return run.returncode, messages


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("epubcheck") and shutil.which("java")), reason="epubcheck/java absent")
def test_epubcheck_gives_the_same_verdict_after_a_write(tmp_path):
    refs = read()
    out = format_for(EPUB).write(str(EPUB), EPUB.read_bytes(), {refs[2].key: "The site_name setting",
                                                                 refs[4].key: ""})
    written = tmp_path / "written.epub"
    written.write_bytes(out)
    original = tmp_path / "original.epub"
    original.write_bytes(EPUB.read_bytes())
    rc_before, before = _epubcheck(original)
    rc_after, after = _epubcheck(written)
    assert rc_before == rc_after and before == after and before      # pandoc's book has known errors


def test_a_drm_encrypted_chapter_is_refused():
    book = io.BytesIO(small_book(xhtml("<p>x</p>")))
    with zipfile.ZipFile(book, "a") as z:
        z.writestr("META-INF/encryption.xml", b'<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
                   b'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData><enc:CipherData>'
                   b'<enc:CipherReference URI="OPS/text/c1.xhtml"/></enc:CipherData></enc:EncryptedData>'
                   b'</encryption>')
    with pytest.raises(DocumentError, match="OPS/text/c1.xhtml is encrypted"):
        read(book.getvalue(), "drm.epub")
