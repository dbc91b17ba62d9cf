"""How long the zip formats (.docx, .pptx, .epub) take to read and to write, per document.

For each fixture in tests/fixtures/documents/zip/ and for a scaled-up copy of each (the body of the
Word document, every slide, the EPUB chapter repeated ``--scale`` times, built here in memory), it
times ``read`` (the median of ``--repeats`` runs) and ``write`` of one alt text (which reads, edits,
rewrites the zip and reads the result again to verify it), and counts which XML parts a read parses
(the rest of the package -- themes, fonts, numbering, pictures -- is never decompressed).

    python benchmarks/bench_documents_zip.py --repeats 20 --scale 50 --out runs/bench_documents_zip.json

Needs nothing but the base install; runs in seconds.
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import time
import zipfile
from pathlib import Path

from captioner.documents import epub, ooxml
from captioner.documents.formats import format_for

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "documents" / "zip"


def _rebuild(data: bytes, change) -> bytes:
    """A copy of the package with ``change(name, content) -> {name: content}`` applied to each member."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            for name, content in change(info.filename, src.read(info)).items():
                kind = zipfile.ZIP_STORED if name == "mimetype" else zipfile.ZIP_DEFLATED
                dst.writestr(zipfile.ZipInfo(name, info.date_time), content, compress_type=kind)
    return out.getvalue()


def scaled(name: str, data: bytes, n: int) -> bytes:
    """The document with ``n`` times its content (and pictures)."""
    if name.endswith(".docx"):
        def change(member, content):
            if member != "word/document.xml":
                return {member: content}
            head, rest = content.split(b"<w:body>", 1)
            body, tail = rest.rsplit(b"<w:sectPr", 1) if b"<w:sectPr" in rest else rest.rsplit(b"</w:body>", 1)
            sep = b"<w:sectPr" if b"<w:sectPr" in rest else b"</w:body>"
            return {member: head + b"<w:body>" + body * n + sep + tail}
        return _rebuild(data, change)
    if name.endswith(".pptx"):
        def change(member, content):
            if member == "ppt/presentation.xml":
                head, rest = content.split(b"<p:sldIdLst>", 1)
                ids, tail = rest.split(b"</p:sldIdLst>", 1)
                extra = b"".join(f'<p:sldId id="{1000 + k}" r:id="rIdB{k}" />'.encode() for k in range(n * 8))
                return {member: head + b"<p:sldIdLst>" + ids + extra + b"</p:sldIdLst>" + tail}
            if member == "ppt/_rels/presentation.xml.rels":
                extra = b"".join(f'<Relationship Id="rIdB{k}" Type="http://schemas.openxmlformats.org/'
                                 f'officeDocument/2006/relationships/slide" Target="slides/b{k}.xml" />'.encode()
                                 for k in range(n * 8))
                return {member: content.replace(b"</Relationships>", extra + b"</Relationships>")}
            if member.startswith("ppt/slides/slide"):
                number = int(member[len("ppt/slides/slide"):-4])
                copies = {f"ppt/slides/b{k}.xml": content for k in range(n * 8) if k % 8 == number - 1}
                return {member: content, **copies}
            if member.startswith("ppt/slides/_rels/slide"):
                number = int(member[len("ppt/slides/_rels/slide"):-9])
                copies = {f"ppt/slides/_rels/b{k}.xml.rels": content for k in range(n * 8) if k % 8 == number - 1}
                return {member: content, **copies}
            return {member: content}
        return _rebuild(data, change)

    def change(member, content):
        if member == "EPUB/content.opf":
            items = b"".join(f'<item id="c{k}" href="text/c{k}.xhtml" media-type="application/xhtml+xml" />'
                             .encode() for k in range(n))
            refs = b"".join(f'<itemref idref="c{k}" />'.encode() for k in range(n))
            content = content.replace(b"</manifest>", items + b"</manifest>")
            return {member: content.replace(b"</spine>", refs + b"</spine>")}
        if member == "EPUB/text/ch001.xhtml":
            return {member: content, **{f"EPUB/text/c{k}.xhtml": content for k in range(n)}}
        return {member: content}
    return _rebuild(data, change)


def measure(name: str, data: bytes, repeats: int) -> dict:
    fmt = format_for(name)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        refs = fmt.read(name, data)
        times.append(time.perf_counter() - t)
    key = next(r.key for r in refs if r.alt is None) if any(r.alt is None for r in refs) else refs[0].key
    writes = []
    for _ in range(max(3, repeats // 4)):
        t = time.perf_counter()
        fmt.write(name, data, {key: "A description written by the benchmark"})
        writes.append(time.perf_counter() - t)
    if name.endswith((".docx", ".pptx")):
        pkg = ooxml.Package(name, data)
        fmt.pictures(pkg)
        parsed = len(pkg._roots)
        members = len(pkg.zip.names())
    else:
        book = epub.Book(name, data)
        parsed = 2 + len(book.pages)          # container, OPF, each content document
        members = len(book.zip.names())
    return {"document": name, "kb": round(len(data) / 1024, 1), "pictures": len(refs),
            "read_ms": round(1000 * statistics.median(times), 2),
            "write_ms": round(1000 * statistics.median(writes), 2),
            "xml_parts_parsed": parsed, "members": members}


def main() -> None:
    ap = argparse.ArgumentParser(description="Time reading and writing the zip document formats.")
    ap.add_argument("--repeats", type=int, default=20, help="reads timed per document (the median is kept)")
    ap.add_argument("--scale", type=int, default=50, help="how many times the scaled-up copies repeat the content")
    ap.add_argument("--out", help="also write the results to this JSON file")
    args = ap.parse_args()
    rows = []
    for path in sorted(FIXTURES.glob("*.*")):
        if path.suffix not in (".docx", ".pptx", ".epub"):
            continue
        data = path.read_bytes()
        rows.append(measure(path.name, data, args.repeats))
        rows.append(measure(f"{path.stem}-x{args.scale}{path.suffix}", scaled(path.name, data, args.scale),
                            max(3, args.repeats // 4)))
    print(f"{'document':44} {'KB':>8} {'pictures':>8} {'read ms':>8} {'write ms':>9} {'parsed/members':>15}")
    for r in rows:
        print(f"{r['document']:44} {r['kb']:>8} {r['pictures']:>8} {r['read_ms']:>8} {r['write_ms']:>9} "
              f"{r['xml_parts_parsed']:>7}/{r['members']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
