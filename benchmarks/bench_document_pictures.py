"""The pictures inside a document (an e-book's, a Word file's, a page's ``data:`` URIs), captioned before
and after, in one run: ``captioner fill BOOK.epub --output proposals.jsonl``, a fresh process each time.

    python benchmarks/bench_document_pictures.py --photos 300 --json runs/bench_document_pictures.json
    python benchmarks/bench_document_pictures.py --large --json runs/bench_document_pictures_large.json

The book is built here from tests/fixtures/documents/zip/getting-started.epub: one more chapter with
``--photos`` Flickr8k test photos (only captioned, never trained on), each a picture of the book with no
alt text.  Such pictures have no file of their own, so ``fill`` captions them from their bytes: before
(``--baseline``), one at a time in one process; now as ``images.Blob``s in the batches of
``Captioner.caption_paths``, on every core, as files are.  For each: seconds, pictures a second (process
start and reading the book included), the peak memory of all its processes (PSS, ``bench_pool_memory.Sampler``)
and the proposals compared (the same alt text for each picture).  ``--large``: the photos are the 148
test-split originals upscaled to phone size (``bench_large_photos.make_photos``: 4,032 pixels on the long side),
as photos pasted into a Word file or a book are.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cores import DATA, ROOT, baseline_tree, env_for, report, test_photos  # noqa: E402
from bench_large_photos import make_photos  # noqa: E402
from bench_pool_memory import sampled  # noqa: E402

TEMPLATE = ROOT / "tests" / "fixtures" / "documents" / "zip" / "getting-started.epub"
CHAPTER = """<?xml version="1.0" encoding="UTF-8"?>
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops" xml:lang="en">
<head><title>Photos</title></head>
<body><section><h1>Photos</h1>
{}
</section></body></html>
"""


def book(photos: list[str]) -> bytes:
    """The fixture book with a chapter of ``photos`` (no alt text on any)."""
    out = io.BytesIO()
    names = [f"media/photo{k:04d}.jpg" for k in range(len(photos))]
    with zipfile.ZipFile(TEMPLATE) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            content = src.read(info)
            if info.filename == "EPUB/content.opf":
                items = "".join(f'<item id="p{k}" href="{n}" media-type="image/jpeg" />' for k, n in enumerate(names))
                items += '<item id="photos" href="text/photos.xhtml" media-type="application/xhtml+xml" />'
                content = content.replace(b"</manifest>", items.encode() + b"</manifest>")
                content = content.replace(b"</spine>", b'<itemref idref="photos" /></spine>')
            kind = zipfile.ZIP_STORED if info.filename == "mimetype" else zipfile.ZIP_DEFLATED
            dst.writestr(info, content, compress_type=kind)
        body = "\n".join(f'<p><img src="../{n}" /></p>' for n in names)
        dst.writestr("EPUB/text/photos.xhtml", CHAPTER.format(body))
        for n, p in zip(names, photos):
            dst.writestr(f"EPUB/{n}", Path(p).read_bytes(), compress_type=zipfile.ZIP_STORED)
    return out.getvalue()


def fill(src: Path, doc: Path, out: Path) -> dict:
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "captioner", "fill", str(doc), "--output", str(out)]
    returncode, err, wall, sampler = sampled(cmd, env_for(src))
    recs = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    captioned = sum("error" not in rec for rec in recs)
    return {"exit_status": returncode, "pictures": len(recs), "captioned": captioned, "seconds": round(wall, 1),
            "pictures_per_s": round(captioned / wall, 1), "processes": sampler.procs,
            "peak_pss_mb_all_processes": round(sampler.pss / 1024), "peak_pss_mb_parent": round(sampler.parent / 1024),
            "stderr_tail": err.strip().splitlines()[-1:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=300, help="Flickr8k test photos put in the book")
    ap.add_argument("--large", action="store_true", help="phone-size photos (the 148 originals, upscaled)")
    ap.add_argument("--baseline", default="77cf4b0", help="the commit to compare against (one picture at a time)")
    ap.add_argument("--data", default=str(DATA), help="the Flickr8k folder")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    out: dict = {"baseline": args.baseline, "large": args.large}
    with tempfile.TemporaryDirectory(prefix="bench_document_pictures_") as tmp:
        work = Path(tmp)
        if args.large:
            photos = make_photos(Path(args.data) / "originals", work / "photos", 4032)[:args.photos]
        else:
            photos = test_photos(Path(args.data), args.photos)
        out["photos"] = len(photos)
        doc = work / "photos.epub"
        doc.write_bytes(book(photos))
        out["book_mb"] = round(doc.stat().st_size / 2 ** 20, 1)
        trees = {"before": baseline_tree(args.baseline, work / "base"), "after": ROOT / "src"}
        alts = {}
        for name, src in trees.items():
            out[name] = fill(src, doc, work / f"{name}.jsonl")
            recs = [json.loads(line) for line in (work / f"{name}.jsonl").read_text().splitlines()]
            alts[name] = {rec["image"]: rec.get("alt_text") for rec in recs}
            print(name, out[name], file=sys.stderr, flush=True)
        same = sum(alts["before"].get(k) == v for k, v in alts["after"].items())
        out["same_alt_text"] = f"{same} of {len(alts['after'])}"
        out["speed_up"] = round(out["after"]["pictures_per_s"] / max(out["before"]["pictures_per_s"], 1e-9), 2)
    report(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
