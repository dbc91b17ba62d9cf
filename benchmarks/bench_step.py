"""The adaptive decoder's fused fp32 step (``AdaptiveDecoder.fuse_for_inference``, issue 22) against
the plain one: decoder-alone speed and whether every caption stays the same.

    python benchmarks/bench_step.py --n 1000 --repeats 3 --out runs/bench_step.json

The test photos are encoded once (ONNX Runtime); then the same grids are decoded (beam 3, no repeated
bigram, batches of 16) by the plain and the fused step alternately, so only the step differs.  A second
check runs the whole product path (``Captioner.caption_paths``: guidance, knowledge, alt text) with and
without the rewrite and compares the captions and alt texts.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from captioner.api import Captioner
from captioner.search import generate

SHARED = Path(__file__).resolve().parents[2] / "shared" / "flickr8k"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="test photos")
    ap.add_argument("--repeats", type=int, default=3, help="alternating timed runs of each step")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", default=None, help="write the figures as JSON")
    args = ap.parse_args()
    names = (SHARED / "Flickr8k_text" / "Flickr_8k.testImages.txt").read_text().split()[:args.n]
    paths = [SHARED / "Images" / n for n in names]
    cap = Captioner(precision="fp32", backend="torch")   # the torch decoder's plain and fused steps
    dec = cap.model.model.decoder
    if not hasattr(dec, "fuse_for_inference"):
        raise SystemExit(f"the {cap.model.cfg.decoder} decoder has no fused step")
    with torch.inference_mode():
        grids = [cap._grids(x)[0].flatten(2).transpose(1, 2) for _, idx, x in cap._batches(paths, args.batch_size)]

    def decode(fused: bool):
        if fused:
            dec.fuse_for_inference()
        else:
            dec._fused = None
        t0 = time.perf_counter()
        out = [h[0].tokens for g in grids for h in generate(cap.model, g, 3, no_repeat_ngram=2)]
        return out, time.perf_counter() - t0

    times = {"plain": [], "fused": []}
    caps = {}
    for _ in range(args.repeats):
        for name in ("plain", "fused"):
            caps[name], dt = decode(name == "fused")
            times[name].append(dt)
    same = sum(a == b for a, b in zip(caps["plain"], caps["fused"]))
    res = {"images": len(paths), "identical_captions": same,
           **{f"{k}_images_per_s": len(paths) / statistics.median(v) for k, v in times.items()},
           "times": times}
    res["speed_up"] = res["fused_images_per_s"] / res["plain_images_per_s"]
    print(f"decoder alone, {len(paths)} test photos: plain {res['plain_images_per_s']:.1f} images/s, fused "
          f"{res['fused_images_per_s']:.1f} ({res['speed_up']:.2f}x); identical captions {same}/{len(paths)}")
    # the whole product path
    plain = Captioner(precision="fp32")
    plain.model.decoder._fused = None
    fused = Captioner(precision="fp32")
    a = [(c.text, c.alt_text) for _, c in plain.caption_paths(paths, args.batch_size)]
    b = [(c.text, c.alt_text) for _, c in fused.caption_paths(paths, args.batch_size)]
    res["product_identical_captions"] = sum(x[0] == y[0] for x, y in zip(a, b))
    res["product_identical_alt_texts"] = sum(x[1] == y[1] for x, y in zip(a, b))
    res["differences"] = [{"image": p.name, "plain": x[0], "fused": y[0]} for p, x, y in zip(paths, a, b) if x != y]
    print(f"product path: identical captions {res['product_identical_captions']}/{len(paths)}, alt texts "
          f"{res['product_identical_alt_texts']}/{len(paths)}")
    for d in res["differences"][:10]:
        print("  ", d)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
