"""A foreign domain with its own captions, for issue 23's measurement of teaching the captioner a
library's world: Debian's Tux Paint stamps (``tuxpaint-stamps-default``; GPL-2+ / public domain per
its copyright file), each a drawing or cut-out photo with one English sentence its authors wrote
("Grandma's old rag doll."), written as a captions CSV that ``captioner train --data`` reads.

    apt-get install tuxpaint-stamps-default
    python tools/stamps_dataset.py --out runs/stamps        # runs/stamps/captions.csv + images/*.jpg

Split (the CSV's ``split`` column, fixed, not drawn at training time):
  * ``test``  - every stamp that ``benchmarks/ood_set.py`` (its default seed and sample size) puts in the
                out-of-domain set, so the images a fine-tuned model trains on never reach the out-of-domain
                measurements, and 1 in 10 of the rest, by a hash of the path;
  * ``dev``   - another 1 in 10 of the rest (model selection and recalibration);
  * ``train`` - the rest.
Mirrored copies (``*_mirror``) share their original's split, so no photo is on both sides.  Each stamp
is pasted on a light background as a 400-px JPEG, as ``ood_set.py`` does.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import random
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
STAMPS = Path("/usr/share/tuxpaint/stamps")


def _ood_set():
    spec = importlib.util.spec_from_file_location("ood_set", ROOT / "benchmarks" / "ood_set.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def description(png: Path) -> str | None:
    """The stamp's English sentence: the first line of its .txt that names no language."""
    txt = png.with_suffix(".txt")
    if not txt.is_file():
        return None
    for line in txt.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if line and "=" not in line.split(" ", 1)[0]:
            return line
    return None


def held_out(ood) -> set[Path]:
    """The stamps ``ood_set.py`` samples with its defaults (seed 0, 25 per kind), by the same calls."""
    rng = random.Random(0)
    names = {name for name, *_ in ood.stamp_images(rng, 25)}
    return {p for p in STAMPS.rglob("*.png") if f"stamp_{ood.STAMP_KINDS.get(p.relative_to(STAMPS).parts[0], '')}_{p.stem}" in names}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/stamps", help="folder for captions.csv and images/")
    ap.add_argument("--seed", type=int, default=0, help="the backgrounds' colours")
    args = ap.parse_args()
    if not STAMPS.is_dir():
        raise SystemExit(f"{STAMPS}: absent; apt-get install tuxpaint-stamps-default")
    ood = _ood_set()
    test = held_out(ood)
    test_stems = {p.parent / p.stem.replace("_mirror", "") for p in test}
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    rows, counts = [], {"train": 0, "dev": 0, "test": 0}
    for p in sorted(STAMPS.rglob("*.png")):
        base = p.parent / p.stem.replace("_mirror", "")
        text = description(p) or description(base.with_suffix(".png"))
        if not text:
            continue
        rel = p.relative_to(STAMPS)
        if base in test_stems:
            split = "test"
        else:
            h = int(hashlib.sha1(str(base.relative_to(STAMPS)).encode()).hexdigest()[:8], 16)
            split = "dev" if h % 10 == 0 else "test" if h % 10 == 1 else "train"
        name = "images/" + "_".join(rel.with_suffix("").parts) + ".jpg"
        ood.on_background(Image.open(p), rng).save(out / name, quality=92)
        rows.append({"image": name, "caption": text, "split": split, "source": f"tuxpaint:{rel}"})
        counts[split] += 1
    with open(out / "captions.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["image", "caption", "split", "source"])
        w.writeheader()
        w.writerows(rows)
    print(f"{out / 'captions.csv'}: {len(rows)} stamps, {counts}; the test split holds the {len(test)} stamps "
          "of the out-of-domain set")


if __name__ == "__main__":
    main()
