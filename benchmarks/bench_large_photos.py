"""Camera-size photos: what decoding a large JPEG costs, before and after it is decoded at a smaller scale.

    python benchmarks/bench_large_photos.py --baseline 02a5476 --json runs/bench_large_photos.json   # ~5 min, 2 cores

A phone or camera photo is 12 megapixels or more; the model sees 224 x 224.  Decoding the whole JPEG and
resizing it costs several times the models' own time.  This script measures that on photos of such a size and
compares two versions of the code: ``--baseline`` (a git revision, its ``src/`` unpacked by ``git archive``),
and this checkout.

The photos are the 148 full-size Flickr8k originals (``../shared/flickr8k/originals``, test split, 500 px on
the long side), each upscaled (bicubic) to ``--long-side`` pixels and saved as a JPEG at quality 92, in a
temporary folder.  Their pixel count and their file size are a phone's, so the time to decode them is real.
Their detail is the 500-pixel original's, so they do not show what the smaller decode does to detail a real
12-megapixel photo has.

For each version it reports:

* ``open + resize ms``: open, decode and resize one photo to the model's input (``preprocess.decode_batch``, the
  GPU path's decoding, which opens a file as the CPU path's ``Captioner._load`` does), in a fresh process, per
  photo, the best of 3 passes over 40 photos.
* ``library run``: a fresh ``captioner caption --from-list L --output F.jsonl`` on every core this script may
  use, with images/s, process start included.

Between the versions it reports the records whose caption and alt text are the same, and the mean absolute
difference of the model's uint8 input pixels; and for each, the captions' BLEU-4 and CIDEr-D against the
photos' five Flickr8k reference captions (``captions.txt``; 148 photos: a check that nothing got worse, too few
for a finer comparison).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cores import DATA, ROOT, baseline_tree, env_for, report  # noqa: E402

sys.path.insert(0, str(ROOT / "src"))
from captioner.training.data import tokenize  # noqa: E402
from captioner.training.metrics import score_all  # noqa: E402


def make_photos(originals: Path, into: Path, long_side: int) -> list[str]:
    from PIL import Image

    into.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sorted(originals.glob("*.jpg")):
        im = Image.open(src).convert("RGB")
        k = long_side / max(im.size)
        big = im.resize((round(im.width * k), round(im.height * k)), Image.BICUBIC)
        path = into / src.name
        big.save(path, "JPEG", quality=92)
        out.append(str(path))
    return out


# run in a fresh process on one version's code: the per-photo cost of decode_batch and its pixels
_PROBE = """
import json, sys, time
import numpy as np
from captioner.preprocess import decode_batch
paths, size, dump = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
best = None
for _ in range(3):
    t = time.perf_counter()
    errors, pixels, colour = decode_batch(paths, size)
    best = min(best or 1e9, time.perf_counter() - t)
np.save(dump, pixels)
print(json.dumps({"ms_per_photo": round(best / len(paths) * 1000, 2), "errors": sum(e is not None for e in errors)}))
"""


def probe(src: Path, paths: list[str], size: int, dump: Path) -> dict:
    r = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(paths), str(size), str(dump)], env=env_for(src),
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def library_run(src: Path, paths: list[str], work: Path) -> tuple[float, dict]:
    listing, out = work / "list.txt", work / "out.jsonl"
    listing.write_text("\n".join(paths) + "\n")
    out.unlink(missing_ok=True)
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "captioner", "caption", "--from-list", str(listing), "--output", str(out)]
    r = subprocess.run(cmd, env=env_for(src), capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"library run failed:\n{r.stderr[-3000:]}")
    return wall, {rec["image"]: rec for rec in map(json.loads, out.open())}


def references(captions: Path) -> dict[str, list[list[str]]]:
    import csv

    refs: dict[str, list[list[str]]] = {}
    with captions.open(newline="") as f:
        for row in csv.DictReader(f):
            refs.setdefault(row["image"], []).append(tokenize(row["caption"]))
    return refs


def main() -> None:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, help="git revision to compare against (its src/)")
    ap.add_argument("--long-side", type=int, default=4032, help="long side of the photos made, in pixels (a "
                    "12-megapixel phone photo: 4032)")
    ap.add_argument("--data", type=Path, default=DATA, help="the Flickr8k folder (with originals/)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    out = {"cores": len(os.sched_getaffinity(0)), "baseline": args.baseline, "long_side": args.long_side}
    with tempfile.TemporaryDirectory(prefix="bench_large_photos_") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        paths = make_photos(args.data / "originals", tmp / "photos", args.long_side)
        print(f"[bench_large_photos] {len(paths)} photos made in {time.perf_counter() - t:.0f} s",
              file=sys.stderr, flush=True)
        from PIL import Image

        sizes = [Image.open(p).size for p in paths]
        out["photos"] = len(paths)
        out["megapixels_mean"] = round(sum(w * h for w, h in sizes) / len(sizes) / 1e6, 1)
        out["file_mb_mean"] = round(sum(os.path.getsize(p) for p in paths) / len(paths) / 2 ** 20, 2)
        trees = {"before": baseline_tree(args.baseline, tmp / "base"), "after": ROOT / "src"}
        records, pixels = {}, {}
        for name, src in trees.items():
            print(f"[bench_large_photos] {name}", file=sys.stderr, flush=True)
            dump = tmp / f"{name}.npy"
            out[f"{name}: open + resize ms per photo"] = probe(src, paths[:40], 224, dump)["ms_per_photo"]
            pixels[name] = np.load(dump).astype(np.int16)
            wall, records[name] = library_run(src, paths, tmp)
            out[f"{name}: library run images/s"] = round(len(paths) / wall, 1)
        out["records with the same caption"] = sum(records["before"][k]["caption"] == records["after"][k]["caption"]
                                                   for k in records["before"])
        out["records with the same alt text"] = sum(records["before"][k]["alt_text"] == records["after"][k]["alt_text"]
                                                    for k in records["before"])
        out["model input: mean absolute difference of the uint8 pixels"] = round(
            float(np.abs(pixels["before"] - pixels["after"]).mean()), 3)
        refs = references(args.data / "captions.txt")
        for name, recs in records.items():
            keys = sorted(recs)
            scores = score_all([tokenize(recs[k]["caption"]) for k in keys],
                               [refs[Path(k).name] for k in keys])
            out[f"{name}: BLEU-4, CIDEr-D of the captions"] = [round(scores["BLEU-4"], 4), round(scores["CIDEr-D"], 4)]
        rate = out["after: library run images/s"] / out["before: library run images/s"]
        out["speed-up: library run"] = round(rate, 2)
    report(out, args.json)


if __name__ == "__main__":
    main()
