"""Evaluation: caption a split with a checkpoint and score it against all its references.

Images go through the same ``Captioner`` path users get (files -> preprocessing -> encoder ->
beam search), never through cached features, so a fine-tuned encoder is measured as shipped.

    captioner evaluate --split test                      # the shipped model
    captioner evaluate --model runs/main/best.safetensors --split dev --beam-size 5
    captioner evaluate --split test --image-dir ../shared/flickr8k/originals   # full-size originals
    captioner evaluate --model a.safetensors --model b.safetensors --split dev     # an ensemble of two
    captioner evaluate --split test --gender-neutral      # neutral wording, references mapped the same way
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from captioner.api import Captioner
from captioner.training.data import LAYOUTS, load_dataset, tokenize
from captioner import runtime
from captioner.search import DEFAULT_LENGTH_PENALTY
from captioner.training.metrics import score_all
from captioner import wording


def diversity(cands: list[list[str]], train_captions: set[tuple]) -> dict:
    """Distinct words used, mean length, share of captions not copied from a training caption."""
    return {"distinct words": len({w for c in cands for w in c}),
            "mean length": round(sum(map(len, cands)) / max(len(cands), 1), 2),
            "novel": round(sum(tuple(c) not in train_captions for c in cands) / max(len(cands), 1), 4)}


def evaluate(captioner: Captioner, data: str, split: str = "test", beam_size: int = 3,
             image_dir: str | None = None, batch_size: int = 32, workers: int = 1, with_meteor: bool = True,
             layout: str | None = None, names_from: str | None = None, gender_neutral: bool = False):
    """-> (scores dict, {image name: caption}). With ``image_dir``, the split's images are read from
    that folder and only those found there are used (for example the full-size originals); with
    ``names_from``, only the split's images that also exist in that folder are used (to score the
    224-px copies of exactly the same images).  ``gender_neutral``: the captioner's wording option is
    scored against references mapped by the same ``wording.neutral``; the share of references and
    captions that name a gender is reported either way."""
    ds = load_dataset(data, layout)
    names = ds.images(split)
    folder = Path(image_dir) if image_dir else ds.image_dir
    for restrict in (image_dir, names_from):
        if restrict:
            names = [n for n in names if (Path(restrict) / n).is_file()]
    if not names:
        raise SystemExit(f"no {split} images found in {folder}")
    refs = ds.references(split)
    gendered_refs = sum(wording.names_gender(r) for n in names for r in refs[n]) / max(sum(len(refs[n]) for n in names), 1)
    if gender_neutral:
        refs = {n: [wording.neutral(" ".join(r)).split() for r in rs] for n, rs in refs.items()}
    t0 = time.time()
    results, failed = {}, {}
    key = {str(folder / n): n for n in names}   # names may hold sub-folders (COCO's train2014/...)
    for path, res in captioner.caption_paths([folder / n for n in names], batch_size, workers, beam_size,
                                             read_text="never", gender_neutral=gender_neutral,
                                             processes=1, attention=False):
        if isinstance(res, str):
            failed[key[str(path)]] = res
        else:
            results[key[str(path)]] = res.words
    if failed:
        print(f"warning: {len(failed)} images could not be read: {next(iter(failed.values()))}", file=sys.stderr)
    done = [n for n in names if n in results]
    scores = score_all([results[n] for n in done], [refs[n] for n in done], with_meteor=with_meteor)
    train_caps = {tuple(tokenize(c)) for n in ds.images("train") for c in ds.captions[n]}
    scores.update(diversity([results[n] for n in done], train_caps))
    scores.update({"references naming a gender": round(gendered_refs, 4),
                   "captions naming a gender": round(sum(wording.names_gender(results[n]) for n in done) / max(len(done), 1), 4),
                   "gender-neutral": gender_neutral})
    scores.update({"images": len(done), "failed": len(failed), "beam size": beam_size or captioner.beam_size,
                   "no-repeat n-gram": captioner.no_repeat_ngram, "backend": captioner.backend,
                   "precision": captioner.precision,
                   "seconds": round(time.time() - t0, 1)})
    return scores, {n: " ".join(results[n]) for n in done}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    runtime.add_model_argument(ap)
    ap.add_argument("--data", default="../shared/flickr8k",
                    help="dataset: a Flickr8k folder (Kaggle, original or Karpathy layout), a Karpathy JSON (COCO, Flickr30k), or a CSV / JSON-lines file of image,caption[,split]")
    ap.add_argument("--layout", default=None, choices=LAYOUTS, help="force a dataset layout")
    ap.add_argument("--split", default="test", choices=["train", "dev", "test"], help="split to evaluate")
    ap.add_argument("--beam-size", type=int, default=3, help="beam size (1 = greedy)")
    ap.add_argument("--length-penalty", type=float, default=DEFAULT_LENGTH_PENALTY, help="beam score = logP / length**this")
    runtime.add_arguments(ap)
    ap.add_argument("--image-dir", default=None, help="read the split's images from this folder instead")
    ap.add_argument("--names-from", default=None, help="use only the split's images that also exist in this folder")
    ap.add_argument("--batch-size", type=int, default=32, help="images per batch")
    ap.add_argument("--workers", type=int, default=0, help="image decoding worker processes (0: in-process)")
    ap.add_argument("--no-meteor", action="store_true", help="skip METEOR even where Java is installed")
    ap.add_argument("--out", default=None, help="write scores and generated captions to this JSON file")
    ap.add_argument("--gender-neutral", action="store_true",
                    help="neutral wording (person/child/...), scored against references mapped the same way")


def main(args) -> int:
    runtime.check_model_args(args.model)
    cap = Captioner(args.model, device=args.device, beam_size=args.beam_size, length_penalty=args.length_penalty,
                    backend=args.backend, precision=args.precision, no_repeat_ngram=args.no_repeat_ngram,
                        guidance=not args.no_guidance)
    scores, captions = evaluate(cap, args.data, args.split, args.beam_size, args.image_dir, args.batch_size,
                                args.workers, not args.no_meteor, args.layout, args.names_from, args.gender_neutral)
    for k, v in scores.items():
        print(f"{k:>15}: {v:.4f}" if isinstance(v, float) else f"{k:>15}: {v}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"model": " + ".join(map(str, cap.paths)), "split": args.split, "scores": scores,
                                              "captions": captions}, indent=1))
        print(f"wrote {args.out}")
    return 0
