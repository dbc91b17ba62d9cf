"""The HTML review page of a library run (``--html``, or ``python -m captioner.library.report``): before and
after, in one run.

    python benchmarks/bench_report.py --baseline 7243159 --json runs/bench_report.json

Photos: the 148 test-split originals upscaled to phone size (``bench_large_photos.make_photos``); ``--copies N``
lists each N times under other names (hard links), as a larger library.  They are captioned once, by this tree
(``captioner caption DIR --output F.jsonl``); then the page is built from that results file by ``--baseline``'s
code (``git archive``) and by this tree, each in a fresh process with no thumbnails made yet: seconds, photos/s,
and whether the page and every thumbnail are byte for byte the same.  The photos are only captioned.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cores import DATA, ROOT, baseline_tree, env_for, report  # noqa: E402
from bench_large_photos import make_photos  # noqa: E402


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, help="the commit to compare against")
    ap.add_argument("--copies", type=int, default=4, help="each photo listed this many times (hard links)")
    ap.add_argument("--data", default=str(DATA), help="the Flickr8k folder")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    out: dict = {"baseline": args.baseline, "cores": len(os.sched_getaffinity(0))}
    with tempfile.TemporaryDirectory(prefix="bench_report_") as tmp:
        work = Path(tmp)
        made = make_photos(Path(args.data) / "originals", work / "made", 4032)
        lib = work / "library"
        lib.mkdir()
        for k in range(args.copies):
            for p in made:
                os.link(p, lib / f"{k}_{Path(p).name}")
        results = work / "results.jsonl"
        subprocess.run([sys.executable, "-m", "captioner", "caption", str(lib), "--output", str(results)],
                       check=True, capture_output=True, env=env_for(ROOT / "src"))
        out["photos"] = sum(1 for _ in results.open())
        trees = {"before": baseline_tree(args.baseline, work / "base"), "after": ROOT / "src"}
        pages = {}
        for name, src in trees.items():
            page = work / name / "report.html"
            page.parent.mkdir()
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "captioner.library.report", str(results), str(page)], check=True,
                           capture_output=True, env=env_for(src))
            seconds = time.perf_counter() - t
            out[name] = {"seconds": round(seconds, 2), "photos_per_s": round(out["photos"] / seconds, 1)}
            pages[name] = (page.read_bytes(), digest(page.with_name("report_thumbs")))
            print(name, out[name], file=sys.stderr, flush=True)
        out["same_page"] = pages["before"][0] == pages["after"][0]
        out["same_thumbnails"] = pages["before"][1] == pages["after"][1]
    report(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
