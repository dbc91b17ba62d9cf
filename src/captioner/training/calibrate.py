"""Calibrate a model file: compute what the model knows of its own limits and store it in the
file (``knowledge/bundle.py``), so that loading it never recomputes anything.

    python -m captioner.training.calibrate runs/main/export_fp16.safetensors [--data ../shared/flickr8k]
    python -m captioner.training.export runs/main/best.safetensors     # exports, then runs this

Steps, on the training and dev splits only (the test split never takes part):
  1. the ImageNet head of the encoder's pre-training weights (``encoders.imagenet_head``);
  2. the out-of-domain bank from the training images' pooled features (``domain.py``);
  3. the out-of-domain threshold: at most 5 % of dev photos beyond it;
  4. the dev captions through the product's own path (guidance included), each scored for
     acceptability (``confidence.py``; an image with a single reference against a fixed threshold), and
     the confidence calibrator fitted on them (skipped, with a warning, where it cannot be: fewer
     than two dev captions, or all of one kind).
About 3 minutes on 2 CPU cores for Flickr8k (7,000 images encoded, 1,000 captioned).

Recalibration (``start``: the model a run adapted, ``training/adapt.py``), without the starting model's
training data: steps 2-4 fit the knowledge of the model's own (new) decoder on the new data, and the
decoders it started from keep the knowledge the starting model had for them; the gate between them is
their domain checks (``knowledge/bundle.py``).  The confidence is fitted on the dev captions the new
decoder makes.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from captioner.training import checkpoint
from captioner import runtime
from captioner.api import Captioner
from captioner.knowledge.confidence import Calibrator, expected_calibration_error, features
from captioner.training.metrics import CiderD
from captioner.training.data import LAYOUTS, load_dataset
from captioner.search import DEFAULT_NO_REPEAT_NGRAM
from captioner.knowledge.domain import DomainCheck
from captioner.training.encoders import imagenet_head
from captioner.knowledge.bundle import Knowledge
from captioner.knowledge.tags import Tagger


MIN_DEV_FOR_CONFIDENCE = 2   # dev captions needed to fit the confidence calibrator (of both kinds)

# An image with one reference has no second human caption to compare with (a library's own captions,
# one per photo): its caption is acceptable when its CIDEr-D against that reference reaches this
# threshold, the one that best reproduces the five-reference labels on Flickr8k dev with a single
# reference kept per image (python benchmarks/single_reference.py: agreement 68.2 %, each of the five
# references in turn 65.9-70.4 %, against 65.1 % for calling every caption acceptable; 64.1 % acceptable
# under it, 65.1 % with five).  One reference is a weak judge; the confidence fitted on it is weaker too.
SINGLE_REFERENCE_THRESHOLD = 0.13


def per_image_quality(cands: list[list[str]], refs: list[list[list[str]]]) -> tuple[np.ndarray, np.ndarray]:
    """-> (the caption's leave-one-out CIDEr-D, the weakest human caption's), per image, as
    ``knowledge/confidence.py`` defines "acceptable"; the document frequencies come from all the
    references of the evaluated set, as coco-caption's.  An image with a single reference gets its
    caption's CIDEr-D against it and, as the human level, ``SINGLE_REFERENCE_THRESHOLD``."""
    scorer = CiderD(refs)
    model, human = [], []
    for i, (c, rs) in enumerate(zip(cands, refs)):
        if len(rs) < 2:
            model.append(scorer.score(c, i))
            human.append(SINGLE_REFERENCE_THRESHOLD)
            continue
        model.append(sum(scorer.score(c, i, leave_out=j) for j in range(len(rs))) / len(rs))
        human.append(min(scorer.score(r, i, leave_out=j) for j, r in enumerate(rs)))
    return np.asarray(model, np.float32), np.asarray(human, np.float32)


def fit_calibrator(x, y, l2: float = 1e-3) -> Calibrator:
    """The confidence's logistic regression by maximum likelihood with a small L2 penalty (L-BFGS;
    a convex problem), on the features ``confidence.features`` gives and the acceptability labels."""
    x, y = torch.as_tensor(np.asarray(x, np.float32)), torch.as_tensor(np.asarray(y, np.float32))
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    z = (x - mean) / std
    w = torch.zeros(x.size(1), requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return Calibrator(mean.numpy(), std.numpy(), w.detach().numpy(), float(b.detach()))


def _pooled(cap: Captioner, paths, batch_size: int) -> np.ndarray:
    out = []
    for path, p in cap.pooled_features(paths, batch_size):
        if isinstance(p, str):
            raise ValueError(f"cannot calibrate on an unreadable image: {p}")
        out.append(p)
    return np.stack(out)


def calibrate(model_path, data: str, out=None, batch_size: int = 32, encoder_weights: str | None = None,
              layout: str | None = None, backend: str = "auto", precision: str = "auto",
              no_repeat_ngram: int = DEFAULT_NO_REPEAT_NGRAM, guidance: bool = True, log=print,
              device: str = "cpu", start=None) -> dict:
    """Fit and store the knowledge of ``model_path`` (written to ``out`` or in place); -> a summary.
    ``start``: the calibrated model ``model_path`` was adapted from (same encoder): recalibrate."""
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
    old = Knowledge.from_file(*checkpoint.load_knowledge(start), cap.vocab) if start else None
    log(f"encoding {len(train)} training images for the out-of-domain bank")
    domain = DomainCheck.fit(_pooled(cap, [ds.image_dir / n for n in train], batch_size))
    dev_pooled = _pooled(cap, [ds.image_dir / n for n in dev], batch_size)
    dev_dist = domain.distance(dev_pooled)
    threshold = domain.set_threshold(dev_dist)
    # an adapted model (training/adapt.py): the experts it started from keep the knowledge they had
    cap.knowledge = Knowledge(Tagger(*head, cap.vocab), domain, dev_dist, more=old.experts if old else None)
    if len(cap.knowledge.experts) != len(cap.experts):
        raise ValueError(f"{model_path} holds {len(cap.experts)} decoders; the knowledge of "
                         f"{start or 'a fresh calibration'} covers {len(cap.knowledge.experts)}")
    log(f"out-of-domain threshold {threshold:.4f} (dev 95th percentile); captioning {len(dev)} dev images")
    refs = ds.references("dev")
    caps = []
    for path, res in cap.caption_paths([ds.image_dir / n for n in dev], batch_size, processes=1):
        if isinstance(res, str):
            raise ValueError(f"cannot calibrate on an unreadable image: {res}")
        caps.append(res)
    names = dev   # caption_paths answers in input order
    model_q, human_q = per_image_quality([c.words for c in caps], [refs[n] for n in names])
    if old:   # the confidence of this model's own expert, from the dev images it captions
        _, _, _, route = cap.knowledge.assess_routed(dev_pooled)
        keep = np.flatnonzero(route == 0)
        log(f"{len(keep)} of {len(dev)} dev images go to this model's own decoder")
        caps, model_q, human_q = [caps[i] for i in keep], model_q[keep], human_q[keep]
    y = model_q >= human_q
    x = features([c.score for c in caps], [len(c.words) for c in caps], [c.domain_distance for c in caps],
                 [c.tags[0].prob for c in caps])
    if len(caps) < MIN_DEV_FOR_CONFIDENCE or bool(y.all()) or not bool(y.any()):
        # too few dev captions, or all of one kind, to fit a probability: the file keeps the domain check
        # and tags (the alt text still follows the out-of-domain flag) but gives no confidence
        cal = None
        log(f"warning: {len(caps)} dev captions, {int(y.sum())} of them acceptable: a confidence cannot be fitted "
            f"(it needs at least {MIN_DEV_FOR_CONFIDENCE} and both kinds); "
            "the model gives none")
    else:
        cal = fit_calibrator(x, y)
    cap.knowledge.calibrator = cal
    summary = {"threshold": threshold, "dev_acceptable": float(y.mean()),
               "dev_ece": expected_calibration_error(cal(x), y) if cal else None,
               "dev_guided": sum(c.guided is not None for c in caps), "seconds": round(time.time() - t0, 1)}
    tensors, info = cap.knowledge.to_file()
    info["fitted_on"] = {"data": str(data), "train_images": len(train), "dev_images": len(dev), **summary,
                         **({"adapted_from": str(start)} if old else {})}
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
        print(f"captioner.training.calibrate: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
