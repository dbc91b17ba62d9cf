"""How fast the HTML and Markdown formats read a page (``read()``: decode, one tokenizer pass, every image
reference with its context), on a real documentation folder: each .md/.markdown/.html/.htm/.xhtml file
under the given folders, and with ``--pandoc`` each Markdown page also made into a standalone HTML page
(``pandoc -f gfm -s``) and read as HTML.  Files are read from disk once; the timing is ``read()`` alone,
each page's median of ``--repeats`` runs, in CPU time of this process (so that other jobs on a shared
machine do not count; one core).

    python benchmarks/bench_document_formats.py ../realdocs/mkdocs-docs --pandoc --repeats 5
    python benchmarks/bench_document_formats.py site/ --out runs/bench_document_formats.json
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from captioner.documents.formats import SUFFIXES, DocumentError, format_for

TEXT_FORMATS = ("html", "markdown")


def pages(folders: list[str]) -> list[Path]:
    return sorted(p for f in folders for p in Path(f).rglob("*")
                  if p.is_file() and SUFFIXES.get(p.suffix.lower()) in TEXT_FORMATS)


def with_pandoc(markdown_pages: list[Path], out: Path) -> list[Path]:
    made = []
    for i, page in enumerate(markdown_pages):
        target = out / f"{i:04d}-{page.stem}.html"
        # GitHub-flavoured input: CommonMark, as markdown.py reads it (and pandoc's own Markdown reader
        # hangs on two of MkDocs' pages)
        subprocess.run(["pandoc", "-f", "gfm", "-s", "--metadata", f"title={page.stem}", str(page), "-o",
                        str(target)], check=True, capture_output=True, timeout=120)
        made.append(target)
    return made


def measure(files: list[Path], repeats: int) -> dict:
    """Each page's ``read()`` time (median of ``repeats``) -> figures for all pages and for the pages that
    have images (a page without any image tag skips the tokenizer, so both are shown)."""
    data, counts, refused = [], [], []
    for p in files:                                                    # also a warm-up pass
        name, b, fmt = str(p), p.read_bytes(), format_for(p)
        try:
            counts.append(len(fmt.read(name, b)))
            data.append((name, b, fmt))
        except DocumentError as e:                                     # an undeclared encoding, say: not timed
            refused.append(str(e))
    per_page = []
    for name, b, fmt in data:
        times = []
        for _ in range(repeats):
            t0 = time.process_time()
            fmt.read(name, b)
            times.append(time.process_time() - t0)
        per_page.append(statistics.median(times))

    def figures(chosen: list[int]) -> dict:
        t = sum(per_page[i] for i in chosen)
        size = sum(len(data[i][1]) for i in chosen)
        return {"pages": len(chosen), "references": sum(counts[i] for i in chosen), "bytes": size,
                "seconds": round(t, 4), "ms_per_page": round(1000 * t / max(len(chosen), 1), 3),
                "mb_per_second": round(size / t / 1e6, 2) if t else None}

    return {"refused": refused, "all": figures(list(range(len(data)))),
            "with_images": figures([i for i, c in enumerate(counts) if c])}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Time the HTML and Markdown formats' read() on real pages.")
    ap.add_argument("folders", nargs="+", help="folders of .md/.html pages (searched recursively)")
    ap.add_argument("--pandoc", action="store_true", help="also make each Markdown page into HTML with pandoc -s")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes over all pages (the median is kept)")
    ap.add_argument("--out", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    files = pages(args.folders)
    results = {}
    for kind in TEXT_FORMATS:
        chosen = [p for p in files if SUFFIXES[p.suffix.lower()] == kind]
        if chosen:
            results[kind] = measure(chosen, args.repeats)
    if args.pandoc:
        if shutil.which("pandoc") is None:
            raise SystemExit("pandoc is not installed (apt-get install pandoc)")
        with tempfile.TemporaryDirectory() as tmp:
            made = with_pandoc([p for p in files if SUFFIXES[p.suffix.lower()] == "markdown"], Path(tmp))
            results["html from pandoc -s"] = measure(made, args.repeats)
    for kind, both in results.items():
        for refusal in both["refused"]:
            print(f"{kind}: not timed: {refusal}")
        for which in ("all", "with_images"):
            r = both[which]
            print(f"{kind:20s} {which:12s} {r['pages']:5d} pages {r['references']:6d} refs {r['bytes'] / 1e6:6.2f} MB "
                  f"{r['ms_per_page']:8.3f} ms/page  {r['mb_per_second']} MB/s")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
