"""Write a trained checkpoint as the shipped default model (fp16, encoder included only when
it was fine-tuned), after checking it loads and captions the same as the original, then
calibrate it (``calibrate.py``: ImageNet head, out-of-domain statistics, confidence) on the
training data's train and dev splits.

    python -m captioner.export runs/main/best.safetensors [--out src/captioner/weights/default.safetensors]
    python -m captioner.export runs/main/best.safetensors --no-calibrate      # weights only
"""
from __future__ import annotations

import argparse

import torch

from . import calibrate, checkpoint
from .decode import generate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="trained checkpoint (.safetensors)")
    ap.add_argument("--out", default=str(checkpoint.DEFAULT_MODEL), help="where to write the fp16 model")
    ap.add_argument("--no-calibrate", action="store_true",
                    help="skip calibration (the model then gives no in_domain, confidence or tags)")
    calibrate.add_arguments(ap)
    args = ap.parse_args(argv)
    model, vocab, meta = checkpoint.load_model(args.checkpoint)
    meta = {**meta, "exported_from": str(args.checkpoint)}
    checkpoint.save_model(args.out, model, vocab, meta, dtype=torch.float16)
    half, _, _ = checkpoint.load_model(args.out)
    feats = torch.randn(8, 49, model.cfg.feature_dim).abs()
    a = [h[0].tokens for h in generate(model, feats)]
    b = [h[0].tokens for h in generate(half, feats)]
    same = sum(x == y for x, y in zip(a, b))
    print(f"wrote {args.out}; fp16 gives the same caption as fp32 for {same}/8 random feature grids")
    if not args.no_calibrate:
        calibrate.calibrate(args.out, args.data, None, args.batch_size, args.encoder_weights, args.layout,
                            args.backend, args.precision, args.no_repeat_ngram, not args.no_guidance,
                            device=args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
