"""Alt text written into photos' metadata on every core: before and after, in one run.

    python benchmarks/bench_metadata.py --baseline 3891960 --json runs/bench_metadata.json

Photos: the 148 test-split originals upscaled to phone size (``bench_large_photos.make_photos``: 4,032 pixels
on the long side, 1.24 MB JPEGs), as a photo library holds them; ``--small`` takes the first ``--photos``
Flickr8k test photos (224 pixels) instead.  For each of ``--baseline``'s code (``git archive``) and this tree, on
fresh writable copies of the photos:

1. a library run that writes as it captions: ``captioner caption DIR --output F.jsonl --write-metadata MODE``;
2. ``captioner write-metadata F.jsonl MODE`` alone (no captioning), on another fresh copy, from the same
   results;

for MODE ``embed`` (into the photo: ExifTool's write, then the check that decodes the pixels before and after)
and ``sidecar`` (``PHOTO.xmp``).  Each: seconds, photos/s (process start included), the statuses, and the
metadata written compared between before and after (the same alt text in every photo).  The photos are only
captioned, never trained on.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cores import DATA, ROOT, baseline_tree, env_for, report, test_photos  # noqa: E402
from bench_large_photos import make_photos  # noqa: E402

ALT = "XMP-iptcCore:AltTextAccessibility"


def fresh_copy(photos: list[str], into: Path) -> Path:
    into.mkdir(parents=True)
    for p in photos:
        shutil.copyfile(p, into / Path(p).name)   # copyfile: writable, whatever the source's mode
    return into


def timed(src: Path, cmd: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "captioner", *cmd], capture_output=True, text=True, env=env_for(src),
                       check=False)
    if r.returncode not in (0, 1):
        raise SystemExit(f"captioner {' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t, r.stderr.strip().splitlines()[-1]


def written_alt(folder: Path, mode: str) -> dict[str, str]:
    files = sorted(folder.glob("*.xmp" if mode == "sidecar" else "*.jpg"))
    r = subprocess.run(["exiftool", "-json", "-G1", f"-{ALT}", *map(str, files)], capture_output=True, text=True,
                       check=True)
    return {Path(d["SourceFile"]).stem: d.get(ALT) for d in json.loads(r.stdout)}


def one(src: Path, photos: list[str], mode: str, work: Path) -> dict:
    lib = fresh_copy(photos, work / "library")
    results = work / "results.jsonl"
    seconds, line = timed(src, ["caption", str(lib), "--output", str(results), "--write-metadata", mode])
    recs = [json.loads(x) for x in results.read_text().splitlines()]
    statuses = Counter((r.get("metadata") or {}).get("status") for r in recs)
    out = {"library_run": {"seconds": round(seconds, 1), "photos_per_s": round(len(photos) / seconds, 1),
                           "statuses": dict(statuses), "summary": line}}
    alts = written_alt(lib, mode)
    again = fresh_copy(photos, work / "again")
    moved = [{**r, "image": str(again / Path(r["image"]).name)} for r in recs]
    (work / "again.jsonl").write_text("".join(json.dumps(r) + "\n" for r in moved))
    seconds, line = timed(src, ["write-metadata", str(work / "again.jsonl"), mode])
    out["write_metadata"] = {"seconds": round(seconds, 1), "photos_per_s": round(len(photos) / seconds, 1),
                             "summary": line}
    out["same_in_both_ways"] = alts == written_alt(again, mode)
    return out, alts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, help="the commit to compare against")
    ap.add_argument("--small", action="store_true", help="Flickr8k's 224-pixel test photos instead of phone-size")
    ap.add_argument("--photos", type=int, default=300, help="with --small: how many")
    ap.add_argument("--modes", nargs="+", default=["embed", "sidecar"], choices=["embed", "sidecar"])
    ap.add_argument("--data", default=str(DATA), help="the Flickr8k folder")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    if shutil.which("exiftool") is None:
        raise SystemExit("needs ExifTool (apt install libimage-exiftool-perl)")
    out: dict = {"baseline": args.baseline}
    with tempfile.TemporaryDirectory(prefix="bench_metadata_") as tmp:
        work = Path(tmp)
        if args.small:
            photos = test_photos(Path(args.data), args.photos)
        else:
            photos = make_photos(Path(args.data) / "originals", work / "photos", 4032)
        out["photos"] = len(photos)
        trees = {"before": baseline_tree(args.baseline, work / "base"), "after": ROOT / "src"}
        for mode in args.modes:
            alts = {}
            for name, src in trees.items():
                out[f"{mode}_{name}"], alts[name] = one(src, photos, mode, work / f"{mode}_{name}")
                print(mode, name, out[f"{mode}_{name}"], file=sys.stderr, flush=True)
            out[f"{mode}_same_alt_text"] = f"{sum(alts['before'].get(k) == v for k, v in alts['after'].items())} " \
                                           f"of {len(alts['after'])}"
    report(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
