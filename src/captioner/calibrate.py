"""Calibrate a model file: compute what the model knows of its own limits and store it in the
file (``knowledge.py``), so that loading it never recomputes anything.

    python -m captioner.calibrate runs/main/export_fp16.safetensors [--data ../shared/flickr8k]
    python -m captioner.export runs/main/best.safetensors     # exports, then runs this

Steps, on the training and dev splits only (the test split never takes part):
  1. the ImageNet head of the encoder's pre-training weights (``encoders.imagenet_head``);
  2. the out-of-domain bank from the training images' pooled features (``domain.py``);
  3. the out-of-domain threshold: at most 5 % of dev photos beyond it;
  4. the dev captions through the product's own path (guidance included), each scored for
     acceptability (``confidence.py``; an image with a single reference against a fixed threshold), and
     the confidence calibrator fitted on them (skipped, with a warning, where it cannot be: fewer
     than two dev captions, or all of one kind).
About 3 minutes on 2 CPU cores for Flickr8k (7,000 images encoded, 1,000 captioned).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from . import checkpoint, runtime
from .api import Captioner
from .confidence import Calibrator, expected_calibration_error, features, per_image_quality
from .data import LAYOUTS, load_dataset
from .decode import DEFAULT_NO_REPEAT_NGRAM
from .domain import DomainCheck
from .encoders import imagenet_head
from .knowledge import Knowledge
from .tags import Tagger


MIN_DEV_FOR_CONFIDENCE = 2   # dev captions needed to fit the confidence calibrator (of both kinds)


def _pooled(cap: Captioner, paths, batch_size: int) -> torch.Tensor:
    out = []
    for path, p in cap.pooled_features(paths, batch_size):
        if isinstance(p, str):
            raise ValueError(f"cannot calibrate on an unreadable image: {p}")
        out.append(p)
    return torch.stack(out)


def calibrate(model_path, data: str, out=None, batch_size: int = 32, encoder_weights: str | None = None,
              layout: str | None = None, backend: str = "auto", precision: str = "auto",
              no_repeat_ngram: int = DEFAULT_NO_REPEAT_NGRAM, guidance: bool = True, log=print,
              device: str = "cpu") -> dict:
    """Fit and store the knowledge of ``model_path`` (written to ``out`` or in place); -> a summary."""
    t0 = time.time()
    # the same decoding as the product's, so the confidence describes the captions users get
    cap = Captioner(model_path, device=device, encoder_weights=encoder_weights, backend=backend, precision=precision,
                    no_repeat_ngram=no_repeat_ngram, knowledge=False, guidance=guidance)
    head = imagenet_head(cap.model.cfg.encoder, encoder_weights)
    if head is None:
        raise ValueError(f"encoder {cap.model.cfg.encoder} has no ImageNet head on its pooled grid: "
                         "tags, guidance and calibration need one")
    ds = load_dataset(data, layout)
    train, dev = ds.images("train"), ds.images("dev")
    if not train or not dev:
        raise ValueError(f"{data}: calibration needs train and dev images ({len(train)} / {len(dev)})")
    log(f"encoding {len(train)} training images for the out-of-domain bank")
    domain = DomainCheck.fit(_pooled(cap, [ds.image_dir / n for n in train], batch_size))
    dev_dist = domain.distance(_pooled(cap, [ds.image_dir / n for n in dev], batch_size))
    threshold = domain.set_threshold(dev_dist)
    cap.knowledge = Knowledge(Tagger(*head, cap.vocab), domain, dev_dist)
    log(f"out-of-domain threshold {threshold:.4f} (dev 95th percentile); captioning {len(dev)} dev images")
    refs = ds.references("dev")
    caps = []
    for path, res in cap.caption_paths([ds.image_dir / n for n in dev], batch_size):
        if isinstance(res, str):
            raise ValueError(f"cannot calibrate on an unreadable image: {res}")
        caps.append(res)
    names = dev   # caption_paths answers in input order
    model_q, human_q = per_image_quality([c.words for c in caps], [refs[n] for n in names])
    y = model_q >= human_q
    x = features([c.score for c in caps], [len(c.words) for c in caps], [c.domain_distance for c in caps],
                 [c.tags[0].prob for c in caps])
    if len(caps) < MIN_DEV_FOR_CONFIDENCE or bool(y.all()) or not bool(y.any()):
        # too few dev captions, or all of one kind, to fit a probability: the file keeps the domain check
        # and tags (the alt text still follows the out-of-domain flag) but gives no confidence
        cal = None
        log(f"warning: {len(caps)} dev captions, {int(y.sum())} of them acceptable: a confidence cannot be fitted "
            f"(it needs at least {MIN_DEV_FOR_CONFIDENCE} and both kinds); the model gives none")
    else:
        cal = Calibrator.fit(x, y)
    cap.knowledge.calibrator = cal
    summary = {"threshold": threshold, "dev_acceptable": float(y.float().mean()),
               "dev_ece": expected_calibration_error(cal(x), y) if cal else None,
               "dev_guided": sum(c.guided is not None for c in caps), "seconds": round(time.time() - t0, 1)}
    tensors, info = cap.knowledge.to_file()
    info["fitted_on"] = {"data": str(data), "train_images": len(train), "dev_images": len(dev), **summary}
    checkpoint.save_knowledge(model_path, tensors, info, out)
    ece = "none" if summary["dev_ece"] is None else f"{summary['dev_ece']:.4f}"
    log(f"wrote {out or model_path}: dev acceptable {summary['dev_acceptable']:.3f}, dev ECE "
        f"{ece}, guided {summary['dev_guided']}/{len(dev)} dev captions, {summary['seconds']} s")
    return summary


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--data", default="../shared/flickr8k",
                    help="dataset: a Flickr8k folder (Kaggle, original or Karpathy layout), a Karpathy JSON (COCO, Flickr30k), or a CSV / JSON-lines file of image,caption[,split] (its train and dev splits are used)")
    ap.add_argument("--layout", default=None, choices=LAYOUTS, help="force a dataset layout")
    ap.add_argument("--batch-size", type=int, default=32, help="images per batch")
    ap.add_argument("--encoder-weights", default=None, help="the encoder's ImageNet weights file (for its head)")
    runtime.add_arguments(ap)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="model file (.safetensors) to calibrate")
    ap.add_argument("--out", default=None, help="write the calibrated model here instead of in place")
    add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        calibrate(args.model, args.data, args.out, args.batch_size, args.encoder_weights, args.layout,
                  args.backend, args.precision, args.no_repeat_ngram, not args.no_guidance, device=args.device)
    except (OSError, ValueError) as e:
        print(f"captioner.calibrate: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
