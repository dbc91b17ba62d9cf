"""What each decoder costs per image, beside the encoder, on the machine at hand.

    python benchmarks/bench_decoders.py --images ../shared/flickr8k/Images --n 64

The encoder (the shipped model's, through the default back-end) encodes ``--n`` photos once; each
decoder (default sizes, this vocabulary) then runs beam search over those grids in batches of 16
with every caption forced to ``--words`` words (the shipped model's mean test caption is 10.6), so
that the decoders do the same number of steps and only their own cost differs.  The ratio column is
(encoder + decoder) per image against the attention decoder's; issue 10's limit is 1.3.  Weights are
random: the cost of a step does not depend on them.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from captioner import Captioner
from captioner.search import generate
from captioner.images import open_image
from captioner.training.model import DECODERS, CaptionModel, ModelConfig


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default="../shared/flickr8k/Images", help="folder of photos")
    ap.add_argument("--n", type=int, default=64, help="photos")
    ap.add_argument("--words", type=int, default=11, help="decoding steps per caption (words + <end>)")
    ap.add_argument("--beam-size", type=int, default=3, help="beam size")
    ap.add_argument("--reps", type=int, default=3, help="timed passes per decoder (the median counts)")
    args = ap.parse_args()
    cap = Captioner(backend="torch")   # the decoders are compared as torch modules
    paths = sorted(Path(args.images).glob("*.jpg"))[:args.n]
    x = torch.stack([torch.from_numpy(cap.preprocess(open_image(p))) for p in paths])
    t = time.perf_counter()
    with torch.inference_mode():
        grids = [cap.encode_images(x[i:i + 16]) for i in range(0, len(x), 16)]
    enc_ms = 1000 * (time.perf_counter() - t) / len(x)
    feats = [g.flatten(2).transpose(1, 2).float() for g in grids]
    cfg0 = cap.model.cfg
    rows = []
    for name in DECODERS:
        torch.manual_seed(0)
        cfg = ModelConfig(**{**cfg0.to_dict(), "decoder": name})
        model = CaptionModel(cfg, encoder=cap.model.encoder).eval()
        dec = model.decoder
        step = dec.step

        def never_end(words, state, memory, step=step):
            # <end> forbidden: every caption runs the same --words steps, whatever the weights
            logits, state, alpha = step(words, state, memory)
            logits = logits.clone()
            logits[:, 2] = -1e4
            return logits, state, alpha

        dec.step = never_end
        times = []
        with torch.inference_mode():
            for _ in range(args.reps):
                t = time.perf_counter()
                for f in feats:
                    generate(model, f, args.beam_size, max_len=args.words, no_repeat_ngram=0)
                times.append(1000 * (time.perf_counter() - t) / len(x))
        rows.append((name, statistics.median(times)))
    base = dict(rows)["attention"] + enc_ms
    print(f"encoder: {enc_ms:.2f} ms per image ({cap.backend}); beam {args.beam_size}, {args.words} steps per caption")
    print("| decoder | decoder ms per image | encoder + decoder | against attention |")
    print("| --- | --- | --- | --- |")
    for name, ms in rows:
        print(f"| {name} | {ms:.2f} | {ms + enc_ms:.2f} | {(ms + enc_ms) / base:.2f}x |")


if __name__ == "__main__":
    main()
