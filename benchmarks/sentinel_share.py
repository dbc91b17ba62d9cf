"""How much an adaptive-attention model looks at the photo: the visual sentinel's share, per word.

    python benchmarks/sentinel_share.py --model runs/adaptive_s1_flip/export_fp16.safetensors --n 200

The adaptive decoder (Lu et al. 2017) attends over the grid's regions *and* a visual sentinel (what the
language model already knows); ``caption(...).attention`` holds the region weights, which sum to
1 - beta, beta being the sentinel's share.  This captions ``--n`` dev photos the way users get them and
prints beta over all generated words and for the most frequent ones.  In the paper beta is high for
words like "a" and "of" and low for visual words such as "dog"; a beta near 0 everywhere means the
sentinel is unused, near 1 everywhere that the decoder barely attends to the regions.
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

import captioner
from captioner.training.data import load_dataset


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="an adaptive-decoder model file (default: the shipped model)")
    ap.add_argument("--data", default="../shared/flickr8k", help="dataset root (its dev split is captioned)")
    ap.add_argument("--n", type=int, default=200, help="dev photos")
    ap.add_argument("--words", type=int, default=12, help="most frequent words to list")
    args = ap.parse_args()
    model = captioner.load(args.model)
    if model.model.cfg.decoder != "adaptive":
        raise SystemExit(f"{args.model or 'the shipped model'}: decoder {model.model.cfg.decoder!r} has no sentinel")
    ds = load_dataset(args.data)
    paths = [str(ds.image_dir / n) for n in ds.images("dev")[:args.n]]
    share = defaultdict(list)
    for r in model.caption(paths):
        for word, looked in zip(r.words, np.asarray(r.attention, dtype=np.float64).sum(1)):
            share[word].append(1.0 - looked)
    every = np.concatenate([np.asarray(v) for v in share.values()])
    print(f"{len(paths)} dev photos, {every.size} words: sentinel share beta mean {every.mean():.4f}, "
          f"median {np.median(every):.4f}, max {every.max():.4f}")
    print("| word | count | mean beta |\n| --- | --- | --- |")
    for word, v in sorted(share.items(), key=lambda kv: -len(kv[1]))[:args.words]:
        print(f"| {word} | {len(v)} | {np.mean(v):.4f} |")


if __name__ == "__main__":
    main()
