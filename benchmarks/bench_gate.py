"""Where a taught model (``captioner train --init``, ``training/adapt.py``) sends each image: the share of
each split that goes to its new decoder, and that is in domain (docs/review.md).

    python benchmarks/bench_gate.py --model runs/stamps_model/best.safetensors \
        --data runs/stamps/captions.csv --data ../shared/flickr8k --out runs/bench_gate.json

Also the same split through the shipped model's single domain check with the new training images added to
its bank (its own 64-dimensional projection, fitted on Flickr8k): the share whose nearest neighbours are
mostly new images, which is why each decoder gets a check of its own.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from captioner.api import Captioner  # noqa: E402
from captioner.knowledge.domain import _normalize  # noqa: E402
from captioner.training.data import load_dataset  # noqa: E402


def pooled(cap: Captioner, ds, names) -> np.ndarray:
    out = []
    for path, p in cap.pooled_features([ds.image_dir / n for n in names], 32):
        if isinstance(p, str):
            raise SystemExit(p)
        out.append(p)
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a model taught with captioner train --init")
    ap.add_argument("--data", action="append", required=True,
                    help="a dataset whose dev and test splits to route (repeat); the first is the one it was taught")
    ap.add_argument("--out", default=None, help="write the figures to this JSON file")
    args = ap.parse_args()
    cap = Captioner(args.model)
    kn = cap.knowledge
    if kn is None or len(kn.experts) < 2:
        raise SystemExit(f"{args.model}: not a taught model (one decoder)")
    old = kn.experts[1].domain                       # the starting model's check
    taught = load_dataset(args.data[0])
    new_bank = _normalize(pooled(cap, taught, taught.images("train"))) @ old.proj
    bank = np.concatenate([old.bank, new_bank])
    out = {}
    for data in args.data:
        ds = load_dataset(data)
        for split in ("dev", "test"):
            x = pooled(cap, ds, ds.images(split))
            _, _, in_domain, route = kn.assess_routed(x)
            sims = (_normalize(x) @ old.proj) @ bank.T
            top = np.argsort(-sims, 1)[:, :old.k]
            majority_new = float(((top >= old.bank.shape[0]).mean(1) > 0.5).mean())
            key = f"{Path(data).name}:{split}"
            out[key] = {"images": len(x), "to_new_decoder": round(float((route == 0).mean()), 4),
                        "in_domain": round(float(in_domain.mean()), 4),
                        "one_check_majority_new_neighbours": round(majority_new, 4)}
            print(key, json.dumps(out[key]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
