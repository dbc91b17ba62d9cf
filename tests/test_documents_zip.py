"""documents/zipfiles.py: hostile archives are refused before anything is decompressed, and a rewrite
copies every untouched member byte for byte (checked against Python's zipfile, unzip and zipinfo).

    python -m pytest -q tests/test_documents_zip.py
"""
from __future__ import annotations

import io
import random
import shutil
import struct
import subprocess
import warnings
import zipfile
from pathlib import Path

import pytest

from captioner.documents.formats import DocumentError, format_for
from captioner.documents.zipfiles import Limits, SafeZip

FIXTURES = Path(__file__).parent / "fixtures" / "documents" / "zip"


def make_zip(members, *, compression=zipfile.ZIP_DEFLATED, stream=False) -> bytes:
    """A zip of (name, bytes) pairs; ``stream`` writes it to a non-seekable file (data descriptors)."""
    buf = io.BytesIO()
    target = _Unseekable(buf) if stream else buf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # duplicate names are wanted in one test
        with zipfile.ZipFile(target, "w", compression) as z:
            for name, data in members:
                z.writestr(zipfile.ZipInfo(name, (2024, 1, 2, 3, 4, 6)), data, compress_type=compression)
    return buf.getvalue()


class _Unseekable(io.RawIOBase):
    def __init__(self, buf):
        self.buf = buf

    def writable(self):
        return True

    def write(self, b):
        return self.buf.write(b)

    def flush(self):
        pass


def set_flag(data: bytes, bit: int) -> bytes:
    """Set a general-purpose flag bit on every local and central header (to craft an 'encrypted' zip)."""
    out = bytearray(data)
    for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = out.find(sig)
        while pos >= 0:
            flags = struct.unpack_from("<H", out, pos + at)[0] | bit
            struct.pack_into("<H", out, pos + at, flags)
            pos = out.find(sig, pos + 4)
    return bytes(out)


def set_sizes(data: bytes, size: int) -> bytes:
    """Make every header declare ``size`` uncompressed bytes (a lying header)."""
    out = bytearray(data)
    for sig, at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = out.find(sig)
        while pos >= 0:
            struct.pack_into("<I", out, pos + at, size)
            pos = out.find(sig, pos + 4)
    return bytes(out)


def central_fields(z: SafeZip, name: str) -> bytes:
    """A member's central record without its offset field."""
    record = next(m.central for m in z.members if m.name == name)
    return record[:42] + record[46:]


# -- refusals ---------------------------------------------------------------------------------------

def test_not_a_zip_is_refused_with_the_document_named():
    with pytest.raises(DocumentError, match=r"report\.docx: not a zip archive"):
        SafeZip("report.docx", b"This is a plain text file pretending to be a document.\n")


def test_a_truncated_zip_is_refused():
    data = (FIXTURES / "getting-started.docx").read_bytes()
    with pytest.raises(DocumentError, match="zip"):
        SafeZip("cut.docx", data[: len(data) // 2])


def test_an_encrypted_member_is_refused():
    data = set_flag(make_zip([("word/document.xml", b"<x/>")]), 0x1)
    with pytest.raises(DocumentError, match="encrypted"):
        SafeZip("secret.docx", data)


@pytest.mark.parametrize("name", ["../evil.xml", "word/../../evil.xml", "/etc/passwd", "C:\\evil.xml",
                                  "C:/evil.xml", "word\\document.xml", "word//document.xml", "./x.xml"])
def test_a_traversal_or_absolute_member_name_is_refused(name):
    data = make_zip([("mimetype", b"x"), (name, b"<x/>")])
    with pytest.raises(DocumentError, match="path-traversal"):
        SafeZip("bad.epub", data)


def test_duplicate_member_names_are_refused():
    data = make_zip([("word/document.xml", b"<a/>"), ("word/document.xml", b"<b/>")])
    with pytest.raises(DocumentError, match="two members named"):
        SafeZip("twice.docx", data)


def test_too_many_members_are_refused():
    data = make_zip([(f"m{i}.xml", b"<x/>") for i in range(11)])
    with pytest.raises(DocumentError, match="11 members"):
        SafeZip("many.docx", data, Limits(members=10))
    assert len(SafeZip("many.docx", data, Limits(members=11)).names()) == 11


def test_a_member_declaring_too_many_bytes_is_refused():
    data = make_zip([("big.xml", b"x" * 3000)], compression=zipfile.ZIP_STORED)
    with pytest.raises(DocumentError, match="declares 3000 bytes"):
        SafeZip("big.docx", data, Limits(member_bytes=1000))


def test_a_zip_bomb_is_refused_by_its_compression_ratio():
    data = make_zip([("word/document.xml", b"\0" * (8 * 1024 * 1024))])
    assert len(data) < 20_000
    with pytest.raises(DocumentError, match="expands .* times"):
        SafeZip("bomb.docx", data)


def test_a_header_that_lies_about_the_size_is_caught_when_read():
    data = set_sizes(make_zip([("word/document.xml", b"<w>" + b"lol" * 30000 + b"</w>")]), 100)
    z = SafeZip("liar.docx", data)          # the declared sizes pass the checks...
    with pytest.raises(DocumentError, match="word/document.xml"):
        z.read("word/document.xml")         # ...and reading stops at the cap


def _with_extra_central_record(data: bytes, record: bytes) -> bytes:
    end = data.rfind(b"PK\x05\x06")
    cd_start = struct.unpack_from("<I", data, end + 16)[0]
    eocd = bytearray(data[end:])
    n = struct.unpack_from("<H", eocd, 10)[0] + 1
    struct.pack_into("<HHI", eocd, 8, n, n, end - cd_start + len(record))
    return data[:end] + record + bytes(eocd)


def test_overlapping_members_are_refused():
    # the overlapping-file zip bomb: member b's local header lies inside member a's data
    inner = make_zip([("b.xml", b"<b/>" * 10)], compression=zipfile.ZIP_STORED)
    inner_end = inner.rfind(b"PK\x01\x02")
    outer = make_zip([("a.bin", inner[:inner_end])], compression=zipfile.ZIP_STORED)
    b_record = bytearray(inner[inner_end:inner.rfind(b"PK\x05\x06")])
    struct.pack_into("<I", b_record, 42, 30 + len("a.bin"))     # b's header, inside a's data
    with pytest.raises(DocumentError, match="overlap"):
        SafeZip("overlap.docx", _with_extra_central_record(outer, bytes(b_record)))


def test_two_records_for_one_local_header_are_refused():
    one = make_zip([("a.xml", b"<a/>" * 10)])
    end = one.rfind(b"PK\x05\x06")
    record = one[struct.unpack_from("<I", one, end + 16)[0]:end]
    with pytest.raises(DocumentError, match="two members named"):
        SafeZip("twice.docx", _with_extra_central_record(one, record))


def test_a_zip_needing_an_unknown_version_is_refused():
    data = bytearray(make_zip([("a.xml", b"<a/>")]))
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<H", data, central + 6, 0x00FF)          # "version needed to extract": 25.5
    with pytest.raises(DocumentError, match="zip file version"):
        SafeZip("future.docx", bytes(data))


@pytest.mark.parametrize("fixture", ["getting-started.docx", "getting-started.pptx", "getting-started.epub"])
def test_damaged_documents_give_document_errors_only(fixture):
    """Random byte flips and truncations of a real document: read and write either work or raise a
    DocumentError, never another exception (a short fixed-seed fuzz; wider runs found the case above)."""
    data = (FIXTURES / fixture).read_bytes()
    fmt = format_for(fixture)
    rng = random.Random(fixture)
    for i in range(40):
        if i % 2:
            case = data[:rng.randrange(len(data))]
        else:
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            case = bytes(mutated)
        try:
            refs = fmt.read(fixture, case)
            if refs:
                fmt.write(fixture, case, {refs[0].key: "An alt text", refs[-1].key: ""})
        except DocumentError:
            pass


# -- reading and rewriting -------------------------------------------------------------------------

def test_members_read_back_in_archive_order():
    data = (FIXTURES / "getting-started.epub").read_bytes()
    z = SafeZip("getting-started.epub", data)
    assert z.names() == zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert z.read("mimetype") == b"application/epub+zip"


@pytest.mark.parametrize("fixture", ["getting-started.docx", "getting-started-libreoffice.docx",
                                     "getting-started.pptx", "getting-started.epub"])
def test_a_rewrite_copies_untouched_members_byte_for_byte(fixture):
    data = (FIXTURES / fixture).read_bytes()
    before = SafeZip(fixture, data)
    target = next(n for n in before.names() if n.endswith((".xhtml", "document.xml", "slide3.xml")))
    new_content = before.read(target).replace(b"MkDocs", b"MkDOCS")
    after_bytes = before.rewrite({target: new_content})
    after = SafeZip(fixture, after_bytes)
    assert after.names() == before.names()
    assert after.read(target) == new_content
    with zipfile.ZipFile(io.BytesIO(after_bytes)) as z:
        assert z.testzip() is None
        assert z.namelist() == before.names()
    for name in before.names():
        if name == target:
            continue
        assert after.raw(name) == before.raw(name), name                    # header + compressed bytes
        assert central_fields(after, name) == central_fields(before, name), name
        assert after.info(name).CRC == before.info(name).CRC
    assert after.info(target).compress_type == before.info(target).compress_type
    if fixture.endswith(".epub"):
        first = after.members[0]
        assert first.name == "mimetype" and first.start == 0
        assert first.info.compress_type == zipfile.ZIP_STORED and after.raw("mimetype")[28:30] == b"\0\0"


def test_an_unchanged_rewrite_gives_the_same_members():
    data = (FIXTURES / "getting-started.docx").read_bytes()
    again = SafeZip("x.docx", data).rewrite({})
    assert [SafeZip("x.docx", again).raw(n) for n in SafeZip("x.docx", again).names()] == \
        [SafeZip("x.docx", data).raw(n) for n in SafeZip("x.docx", data).names()]


def test_members_with_data_descriptors_are_copied_whole():
    data = make_zip([("a.xml", b"<a>" + b"alpha " * 50 + b"</a>"), ("b.xml", b"<b/>"), ("c.bin", b"\x01" * 99)],
                    stream=True)
    z = SafeZip("stream.docx", data)
    assert all(m.info.flag_bits & 0x08 for m in z.members)
    out = z.rewrite({"b.xml": b"<b>new</b>"})
    again = SafeZip("stream.docx", out)
    assert again.raw("a.xml") == z.raw("a.xml") and again.raw("c.bin") == z.raw("c.bin")
    assert again.read("b.xml") == b"<b>new</b>" and not again.info("b.xml").flag_bits & 0x08
    assert again.read("a.xml") == z.read("a.xml")


def test_a_stored_member_stays_stored():
    data = make_zip([("mimetype", b"application/epub+zip"), ("x.xhtml", b"<p/>")], compression=zipfile.ZIP_STORED)
    out = SafeZip("s.epub", data).rewrite({"x.xhtml": b"<p>changed</p>"})
    assert SafeZip("s.epub", out).info("x.xhtml").compress_type == zipfile.ZIP_STORED


def test_replacing_an_unknown_member_is_refused():
    data = make_zip([("a.xml", b"<a/>")])
    with pytest.raises(DocumentError, match="no member 'b.xml'"):
        SafeZip("a.docx", data).rewrite({"b.xml": b"<b/>"})


@pytest.mark.skipif(not (shutil.which("unzip") and shutil.which("zipinfo")), reason="unzip/zipinfo absent")
def test_unzip_and_zipinfo_agree_on_a_rewritten_archive(tmp_path):
    data = (FIXTURES / "getting-started.docx").read_bytes()
    z = SafeZip("x.docx", data)
    out = z.rewrite({"word/document.xml": z.read("word/document.xml").replace(b"Picture", b"Pict")})
    (tmp_path / "before.docx").write_bytes(data)
    (tmp_path / "after.docx").write_bytes(out)
    test = subprocess.run(["unzip", "-t", str(tmp_path / "after.docx")], capture_output=True, text=True)
    assert test.returncode == 0 and "No errors detected" in test.stdout

    def listing(path):
        lines = subprocess.run(["zipinfo", str(path)], capture_output=True, text=True, check=True).stdout
        return [line for line in lines.splitlines()[2:-1] if not line.endswith("word/document.xml")]
    assert listing(tmp_path / "after.docx") == listing(tmp_path / "before.docx")
    names = subprocess.run(["unzip", "-Z1", str(tmp_path / "after.docx")], capture_output=True, text=True).stdout
    assert names.split() == z.names()
