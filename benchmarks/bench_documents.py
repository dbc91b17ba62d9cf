"""How fast ``captioner check`` reads a documentation tree, and that ``fill`` captions each distinct image once.

Generates, in a temporary folder (never committed), a tree of ``--pages`` documents (half Markdown, half HTML
rendered from that Markdown by markdown-it-py), built from real pages' text (this repository's docs/*.md and
MkDocs' getting-started.md in tests/fixtures, cut into paragraphs), each with ``--refs`` image references
drawn from ``--images`` distinct images: one logo on every page (a link to the home page), the others at
random; 40 % of the references without alt text, 10 % with a file name for alt text, the rest with words.

Then:
  * ``check``: ``documents.check`` over the whole tree, timed (best of ``--repeats``): seconds, pages/s, refs/s;
  * ``fill``: ``documents.fill`` with the shipped model behind a counter: how many captions it asked for,
    against the distinct images that need one (the references needing alt text, grouped by the image file's
    content, less those a context rule decides), and whether any image was captioned twice.  The images are
    small generated pictures; ``--read-text never`` by default (OCR would time the text reader, not this).

Prints one JSON line.

    python benchmarks/bench_documents.py                               # 10,000 pages, 50,000 references, 300 images
    python benchmarks/bench_documents.py --pages 1000 --images 50      # smaller
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "tests" / "fixtures" / "documents" / "site" / "getting-started.md"]


def paragraphs() -> list[str]:
    """Real Markdown text, as blocks separated by blank lines (no code fences split in half: a fence's
    block is kept whole)."""
    out = []
    for src in SOURCES:
        block, fence = [], False
        for line in src.read_text(encoding="utf-8").splitlines():
            if line.lstrip().startswith("```"):
                fence = not fence
            if not line.strip() and not fence:
                if block:
                    out.append("\n".join(block))
                block = []
            elif "![" not in line and "<img" not in line:    # the source's own images would skew the counts
                block.append(line)
        if block and not fence:
            out.append("\n".join(block))
    return [p for p in out if not p.startswith("```") or p.rstrip().endswith("```")]


def make_images(folder: Path, n: int) -> list[str]:
    from PIL import Image, ImageDraw

    rng = random.Random(1)
    folder.mkdir(parents=True)
    names = []
    for i in range(n):
        im = Image.new("RGB", (96, 72), tuple(rng.randrange(256) for _ in range(3)))
        d = ImageDraw.Draw(im)
        for _ in range(6):
            x, y = rng.randrange(80), rng.randrange(60)
            d.rectangle([x, y, x + rng.randrange(8, 40), y + rng.randrange(8, 30)],
                        fill=tuple(rng.randrange(256) for _ in range(3)))
        name = "logo.png" if i == 0 else f"figure-{i:04}.png"
        im.save(folder / name)
        names.append(name)
    return names


def make_tree(top: Path, pages: int, refs: int, images: int, seed: int = 0) -> dict:
    from markdown_it import MarkdownIt

    rng = random.Random(seed)
    paras = paragraphs()
    names = make_images(top / "img", images)
    md = MarkdownIt("commonmark")
    md.add_render_rule("image", _image_without_empty_alt)
    size = n_refs = 0
    for i in range(pages):
        sub = top / f"section-{i // 500:02}"
        sub.mkdir(exist_ok=True)
        start = rng.randrange(len(paras))
        body = [paras[(start + k) % len(paras)] for k in range(rng.randint(12, 30))]
        picks = [names[0]] + [rng.choice(names[1:]) for _ in range(refs - 1)]
        lines = [f"# Page {i}", "", f"[![](../img/{picks[0]})](../index.md)", ""]
        slots = sorted(rng.sample(range(len(body)), min(refs - 1, len(body))))
        extra = picks[1:]
        for k, para in enumerate(body):
            lines += [para, ""]
            while extra and slots and slots[0] == k:
                slots.pop(0)
                name = extra.pop()
                r = rng.random()
                alt = "" if r < 0.4 else (name if r < 0.5 else f"Figure {rng.randrange(100)} of the guide")
                lines += [f"![{alt}](../img/{name})", ""]
        n_refs += len(picks)
        text = "\n".join(lines)
        if i % 2:
            html = md.render(text).replace("../index.md", "../index.html")
            page = f"<!doctype html>\n<html lang=\"en\">\n<head><title>Page {i}</title></head>\n<body>\n{html}</body>\n</html>\n"
            (sub / f"page-{i:05}.html").write_text(page, encoding="utf-8")
        else:
            page = text
            (sub / f"page-{i:05}.md").write_text(page, encoding="utf-8")
        size += len(page.encode())
    (top / "index.md").write_text("# Home\n\nThe generated site.\n", encoding="utf-8")
    return {"pages": pages + 1, "references": n_refs, "mean_page_kb": round(size / pages / 1024, 1)}


def _image_without_empty_alt(self, tokens, idx, options, env):
    """markdown-it's image, but ``![](x.png)`` becomes ``<img src="x.png">`` with no alt at all (a missing alt
    text, as hand-written HTML has it), not ``alt=""`` (decorative)."""
    from markdown_it.common.utils import escapeHtml

    token = tokens[idx]
    alt = self.renderInlineAsText(token.children or [], options, env)
    return f'<img src="{escapeHtml(token.attrGet("src") or "")}"' + (f' alt="{escapeHtml(alt)}"' if alt else "") + ">"


def _cpu() -> float:
    """CPU seconds of this process and of its finished worker processes."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Counting:
    """A captioner that counts what it is asked to caption, and asks the real one."""

    def __init__(self, captioner):
        self.inner, self.asked = captioner, []

    def caption_paths(self, paths, batch_size=16, workers=0):
        paths = list(paths)
        self.asked += paths
        yield from self.inner.caption_paths(paths, batch_size, workers)

    def caption(self, img):
        self.asked.append("<memory>")
        return self.inner.caption(img)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=10_000)
    ap.add_argument("--refs", type=int, default=5, help="image references per page")
    ap.add_argument("--images", type=int, default=300, help="distinct images")
    ap.add_argument("--repeats", type=int, default=3, help="check runs; the best is reported")
    ap.add_argument("--read-text", default="never", choices=["auto", "always", "never"])
    ap.add_argument("--workers", type=int, default=None, help="check's parsing processes (default: one per CPU)")
    ap.add_argument("--skip-fill", action="store_true")
    args = ap.parse_args()

    import captioner.documents as documents

    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp) / "site"
        t = time.perf_counter()
        tree = make_tree(top, args.pages, args.refs, args.images)
        out = {"tree": tree, "generate_s": round(time.perf_counter() - t, 1)}
        times, cpu = [], []
        for _ in range(args.repeats):
            t, c = time.perf_counter(), _cpu()
            refs = documents.check([str(top)], workers=args.workers)
            times.append(time.perf_counter() - t)
            cpu.append(_cpu() - c)
        assert not refs.errors, refs.errors[:3]
        best = min(times)
        counts = {s: sum(r.status == s for r in refs) for s in ("missing", "suspicious", "decorative", "ok")}
        out["check"] = {"seconds": round(best, 2), "runs_s": [round(x, 2) for x in times],
                        "cpu_s": round(min(cpu), 2),     # this process and its workers: the parsing's cost
                        "workers": args.workers or min(os.cpu_count() or 1, 8),
                        "cpus": os.cpu_count(),
                        "pages_per_s": round(tree["pages"] / best), "refs_per_s": round(len(refs) / best),
                        "references": len(refs), **counts}
        if not args.skip_fill:
            from captioner.api import Captioner

            need = {r.image for r in refs if r.status in ("missing", "suspicious")}
            by_content = {hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in need}
            cap = Counting(Captioner(read_text=args.read_text))
            t = time.perf_counter()
            props = documents.fill([str(top)], cap)
            secs = time.perf_counter() - t
            logo = str(top / "img" / "logo.png")
            out["fill"] = {"seconds": round(secs, 1), "captions": len(cap.asked),
                           "distinct_images_needing_alt": len(by_content),
                           "decided_by_rule_only": sorted(os.path.basename(p) for p in need
                                                          if p.endswith("logo.png")),
                           "captioned_twice": len(cap.asked) - len(set(cap.asked)),
                           "logo_captioned": logo in cap.asked or os.path.normpath(logo) in cap.asked,
                           "proposal_records": len(props), "references_decided_by_rule": props.by_rule,
                           "read_text": args.read_text}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
