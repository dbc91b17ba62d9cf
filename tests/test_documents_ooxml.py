"""documents/ooxml.py on real .docx/.pptx files (pandoc and LibreOffice made them from MkDocs' docs):
the pictures, their alt text and context; writes that change only ``descr`` (or add Office's decorative
mark) and keep every other byte; hostile or broken packages refused with a clear message.

    python -m pytest -q tests/test_documents_ooxml.py            # -m slow adds the LibreOffice round trip
"""
from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from lxml import etree

from captioner.documents import ooxml, xmlparts
from captioner.documents.formats import DocumentError, format_for
from captioner.documents.refs import status
from captioner.documents.zipfiles import SafeZip

FIXTURES = Path(__file__).parent / "fixtures" / "documents" / "zip"
DOCX = FIXTURES / "getting-started.docx"
LO_DOCX = FIXTURES / "getting-started-libreoffice.docx"
PPTX = FIXTURES / "getting-started.pptx"
BILLION_LAUGHS = (b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
                  b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
                  b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>\n')


def read(path: Path, data: bytes | None = None):
    return format_for(path).read(str(path), data if data is not None else path.read_bytes())


def replace_member(data: bytes, name: str, content: bytes | None) -> bytes:
    """The package with one member's content replaced (or the member dropped), made with zipfile."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename != name:
                dst.writestr(info, src.read(info))
            elif content is not None:
                dst.writestr(info, content)
    return out.getvalue()


def edit_window(old: bytes, new: bytes) -> tuple[bytes, bytes, bytes]:
    """What one edit changed: (old bytes, new bytes) between the common prefix and suffix, and the start
    tag the change begins in (from its '<' to the change)."""
    p = 0
    while p < min(len(old), len(new)) and old[p] == new[p]:
        p += 1
    s = 0
    while s < min(len(old), len(new)) - p and old[-1 - s] == new[-1 - s]:
        s += 1
    return old[p:len(old) - s], new[p:len(new) - s], old[old.rindex(b"<", 0, p):p]


# -- reading ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [DOCX, LO_DOCX])
def test_word_pictures_alt_text_and_context(path):
    refs = read(path)
    assert [r.key for r in refs] == [f"word/document.xml#{i}" for i in range(1, 7)]
    assert [r.alt for r in refs] == ["The initial MkDocs layout", "The MkDocs live server", None,
                                     "Screenshot", "Screenshot", "Screenshot"]
    assert [status(r) for r in refs] == ["ok", "ok", "missing", "suspicious", "suspicious", "suspicious"]
    first = refs[0]
    assert first.location["part"] == "word/document.xml" and first.location["element"].startswith("wp:docPr id=")
    assert first.embedded.startswith("word/media/") and first.embedded.endswith(".png")
    assert first.context.figure_caption == "The initial MkDocs layout"
    assert first.context.nearby_text.startswith("Take a moment to review the initial project")
    assert (first.context.width, first.context.height) == (267, 81)    # 2540000 x 774700 EMU at 96 dpi
    assert first.context.page_title == "Getting Started with MkDocs"
    linked = refs[5]
    assert linked.context.link_href == "https://readthedocs.org/" and linked.context.figure_caption == ""
    assert len({r.embedded for r in refs}) == 6


def test_slides_in_order_with_links_and_sizes():
    refs = read(PPTX)
    assert [r.location["part"] for r in refs] == [f"ppt/slides/slide{n}.xml" for n in range(3, 9)]
    assert [r.location["slide"] for r in refs] == list(range(3, 9))
    assert all(r.location["element"].startswith("p:cNvPr id=") for r in refs)
    assert refs[0].alt == "fig:  img/initial-layout.png"       # what pandoc 2.17 writes, newlines normalised
    assert refs[2].alt == "img/site-name.png" and status(refs[2]) == "suspicious"
    assert refs[5].context.link_href == "https://readthedocs.org/"
    assert refs[1].context.width == 536 and "mkdocs.yml" in refs[1].context.nearby_text
    assert refs[0].embedded == "ppt/media/image1.png"
    assert refs[0].context.page_title == "Getting Started with MkDocs"


def test_image_bytes_hands_out_the_embedded_picture():
    data = DOCX.read_bytes()
    ref = read(DOCX)[0]
    png = format_for(DOCX).image_bytes(str(DOCX), data, ref.embedded)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(DocumentError, match="no member"):
        format_for(DOCX).image_bytes(str(DOCX), data, "word/media/nothing.png")


def test_reading_is_stable():
    assert [r.to_dict() for r in read(DOCX)] == [r.to_dict() for r in read(DOCX)]


# -- writing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [DOCX, LO_DOCX])
def test_word_write_changes_only_the_descr_bytes(path):
    data = path.read_bytes()
    fmt = format_for(path)
    alts = {"word/document.xml#3": "The site_name setting set to MkLorum",
            "word/document.xml#4": 'A page with "Home" & <About> links'}
    out = data
    for key, alt in alts.items():              # one edit at a time, each checked byte by byte
        before_bytes, out = out, fmt.write(str(path), out, {key: alt})
        before, after = SafeZip("b", before_bytes), SafeZip("a", out)
        assert [n for n in before.names() if before.raw(n) != after.raw(n)] == ["word/document.xml"]
        old, new, tag = edit_window(before.read("word/document.xml"), after.read("word/document.xml"))
        assert tag.startswith(b"<wp:docPr ") and b">" not in tag         # inside the docPr start tag
        assert b"<" not in old and b"<" not in new.replace(b"&lt;", b"")
        assert new in b' descr="' + xmlparts.escape(alt) + b'"'        # (part of) the new value only
    refs = read(path, out)
    assert refs[2].alt == alts["word/document.xml#3"] and refs[3].alt == alts["word/document.xml#4"]
    assert [r.alt for i, r in enumerate(read(path)) if i not in (2, 3)] == \
        [r.alt for i, r in enumerate(refs) if i not in (2, 3)]
    assert fmt.write(str(path), out, alts) == out                 # a rerun writes nothing new
    assert fmt.write(str(path), data, alts) == out                # both keys at once: the same bytes


def test_an_absent_descr_is_added_in_place():
    data = DOCX.read_bytes()
    z = SafeZip("x", data)
    xml = z.read("word/document.xml")
    tree = etree.fromstring(xml)
    props = tree.findall(".//{%s}docPr" % ooxml.NS["wp"])[2]
    del props.attrib["descr"]
    # rebuild the part with the attribute gone (lxml re-serialises; fine for making the input)
    stripped = replace_member(data, "word/document.xml", etree.tostring(tree, xml_declaration=True,
                                                                        encoding="UTF-8", standalone=True))
    assert read(DOCX, stripped)[2].alt is None
    out = format_for(DOCX).write("x.docx", stripped, {"word/document.xml#3": "Site name"})
    old = SafeZip("x", stripped).read("word/document.xml")
    new = SafeZip("x", out).read("word/document.xml")
    assert len(new) == len(old) + len(b' descr="Site name"') and new.replace(b' descr="Site name"', b"", 1) == old


@pytest.mark.parametrize("path", [DOCX, LO_DOCX, PPTX])
def test_decorative_mark_is_written_and_read_back(path):
    data = path.read_bytes()
    fmt = format_for(path)
    key = read(path)[2].key
    out = fmt.write(str(path), data, {key: ""})
    ref = read(path, out)[2]
    assert ref.decorative and ref.alt == "" and status(ref) == "decorative"
    part = SafeZip("x", out).read(ref.location["part"])
    assert ooxml.DECORATIVE_URI.encode() in part
    etree.fromstring(part)                                          # still well-formed, namespaces bound
    back = fmt.write(str(path), out, {key: "The site name"})       # text again: the mark is turned off
    again = read(path, back)[2]
    assert again.alt == "The site name" and not again.decorative
    assert fmt.write(str(path), back, {key: ""}) != back


def test_pptx_write_changes_one_slide():
    data = PPTX.read_bytes()
    out = format_for(PPTX).write(str(PPTX), data, {"ppt/slides/slide5.xml#1": "The site_name setting"})
    before, after = SafeZip("b", data), SafeZip("a", out)
    assert [n for n in before.names() if before.raw(n) != after.raw(n)] == ["ppt/slides/slide5.xml"]
    old, new = before.read("ppt/slides/slide5.xml"), after.read("ppt/slides/slide5.xml")
    assert new == old.replace(b'descr="img/site-name.png"', b'descr="The site_name setting"', 1)
    assert read(PPTX, out)[2].alt == "The site_name setting"


def test_alt_text_with_line_breaks_and_quotes_round_trips():
    text = "Line one\nline 'two'\t\"three\" & more"
    out = format_for(DOCX).write(str(DOCX), DOCX.read_bytes(), {"word/document.xml#1": text})
    assert read(DOCX, out)[0].alt == text


def test_an_unknown_key_is_refused():
    with pytest.raises(DocumentError, match="no picture"):
        format_for(DOCX).write(str(DOCX), DOCX.read_bytes(), {"word/document.xml#99": "x"})


def test_a_control_character_in_alt_text_is_refused():
    with pytest.raises(DocumentError, match="control character"):
        format_for(DOCX).write(str(DOCX), DOCX.read_bytes(), {"word/document.xml#1": "bell\x07"})


# -- bad input -------------------------------------------------------------------------------------

def test_a_docx_that_is_really_a_pptx_is_refused():
    with pytest.raises(DocumentError, match=r"slides\.docx: is a PowerPoint presentation"):
        format_for("slides.docx").read("slides.docx", PPTX.read_bytes())


def test_not_a_zip_is_refused():
    with pytest.raises(DocumentError, match=r"notes\.docx: not a zip archive"):
        format_for("notes.docx").read("notes.docx", b"{\\rtf1 an RTF file renamed .docx}")


def test_an_entity_bomb_in_document_xml_is_refused():
    xml = SafeZip("x", DOCX.read_bytes()).read("word/document.xml")
    body = xml[xml.index(b"?>") + 2:]
    bomb = replace_member(DOCX.read_bytes(), "word/document.xml", BILLION_LAUGHS + body.replace(
        b"Getting Started with MkDocs", b"&lol3;", 1))
    with pytest.raises(DocumentError, match="word/document.xml declares a DTD or entities"):
        read(DOCX, bomb)


def test_a_missing_picture_part_is_refused():
    ref = read(DOCX)[0]
    broken = replace_member(DOCX.read_bytes(), ref.embedded, None)
    with pytest.raises(DocumentError, match="not in the package"):
        read(DOCX, broken)


def test_a_relationship_id_not_in_the_rels_is_refused():
    data = DOCX.read_bytes()
    xml = SafeZip("x", data).read("word/document.xml")
    broken = replace_member(data, "word/document.xml", xml.replace(b'r:embed="rId22"', b'r:embed="rId999"'))
    with pytest.raises(DocumentError, match="rId999"):
        read(DOCX, broken)


def test_malformed_xml_is_refused():
    broken = replace_member(DOCX.read_bytes(), "word/document.xml", b"<w:document><w:body>")
    with pytest.raises(DocumentError, match="not well-formed"):
        read(DOCX, broken)


def test_a_package_without_a_main_part_is_refused():
    data = replace_member(DOCX.read_bytes(), "_rels/.rels", None)
    with pytest.raises(DocumentError, match="not an Office document"):
        read(DOCX, data)


# -- the real programs agree -----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("soffice"), reason="LibreOffice (soffice) is absent")
@pytest.mark.parametrize("path", [DOCX, LO_DOCX, PPTX])
def test_libreoffice_opens_the_written_document_and_reads_its_alt_text(path, tmp_path):
    refs = read(path)
    alts = {refs[2].key: "The site_name setting, written by captioner", refs[3].key: ""}
    out = tmp_path / path.name
    out.write_bytes(format_for(path).write(str(path), path.read_bytes(), alts))
    target = "odp" if path.suffix == ".pptx" else "odt"
    run = subprocess.run(["soffice", "--headless", f"-env:UserInstallation=file://{tmp_path}/profile",
                          "--convert-to", target, "--outdir", str(tmp_path / "out"), str(out)],
                         capture_output=True, text=True, timeout=180)
    converted = tmp_path / "out" / f"{path.stem}.{target}"
    assert run.returncode == 0 and converted.exists(), run.stderr
    with zipfile.ZipFile(converted) as z:
        content = etree.fromstring(z.read("content.xml"))
    descriptions = [d.text for d in content.iter("{urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0}desc")]
    assert "The site_name setting, written by captioner" in descriptions     # LibreOffice's alt text



def test_pictures_in_headers_are_read_and_written():
    data = DOCX.read_bytes()
    z = SafeZip("x", data)
    body = z.read("word/document.xml")
    start = body.index(b"<w:drawing>")
    drawing = body[start:body.index(b"</w:drawing>", start) + len(b"</w:drawing>")]
    drawing = drawing.replace(b'descr="The initial MkDocs layout"', b'descr="MkDocs logo"')
    namespaces = body[body.index(b"xmlns"):body.index(b">", body.index(b"<w:document"))]
    header = (b'<?xml version="1.0" encoding="UTF-8"?><w:hdr ' + namespaces + b"><w:p><w:r>" + drawing
              + b"</w:r></w:p></w:hdr>")
    rels = z.read("word/_rels/document.xml.rels").replace(b"</Relationships>", (
        b'<Relationship Id="rIdH1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/header"'
        b' Target="header1.xml"/></Relationships>'))
    image = read(DOCX)[0].embedded
    header_rels = (b'<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
                   b'relationships"><Relationship Id="rId22" Type="http://schemas.openxmlformats.org/officeDocument/'
                   b'2006/relationships/image" Target="' + image.split("/", 1)[1].encode() + b'"/></Relationships>')
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info, rels if info.filename == "word/_rels/document.xml.rels" else src.read(info))
        dst.writestr("word/header1.xml", header)
        dst.writestr("word/_rels/header1.xml.rels", header_rels)
    package = out.getvalue()
    refs = read(DOCX, package)
    logo = refs[-1]
    assert len(refs) == 7 and logo.key == "word/header1.xml#1" and logo.alt == "MkDocs logo"
    assert logo.embedded == image and logo.location["part"] == "word/header1.xml"
    written = format_for(DOCX).write("x.docx", package, {logo.key: "The MkDocs logo"})
    assert read(DOCX, written)[-1].alt == "The MkDocs logo"
    assert SafeZip("x", written).read("word/document.xml") == body


def test_strict_open_xml_is_refused_with_a_reason():
    data = DOCX.read_bytes()
    xml = SafeZip("x", data).read("word/document.xml").replace(
        b"http://schemas.openxmlformats.org/wordprocessingml/2006/main",
        b"http://purl.oclc.org/ooxml/wordprocessingml/main")
    with pytest.raises(DocumentError, match="Strict Open XML"):
        read(DOCX, replace_member(data, "word/document.xml", xml))
