"""Training: a plan of stages (``stages.py``) run by one loop that evaluates and checkpoints.

Stage 1 (``--epochs``) trains the decoder on encoder features computed once and cached
(``features.py``), so an epoch costs decoder time only.  Stage 2 (``--finetune-epochs``)
unfreezes the encoder's top ``--finetune-blocks`` stages and trains everything from pixels
at a lower learning rate.  Stage 3 (``--scst-epochs``, ``scst.py``, off by default: it did not
help on Flickr8k, see the README) optimises CIDEr-D directly by self-critical sequence
training on features of the final encoder.  After every epoch the model captions the dev split by free
decoding (beam search, no teacher forcing) and is scored; the best dev CIDEr-D is kept as
``best.safetensors``, which is then calibrated (``calibrate.py``: out-of-domain statistics,
confidence, ImageNet head; ``--no-calibrate`` skips it).  Test images never reach this file.

    captioner train --out runs/main          # the shipped model's recipe (defaults)
    captioner train ... --resume          # continue an interrupted run
    captioner train --data photos/reviewed.csv --init --out runs/library   # teach the shipped model a library

With ``--init`` a run starts from a trained model and, by default, adapts it to the new captions
without making it forget its own world (``adapt.py``): the vocabulary grows, the encoder stays
frozen, the loss adds Learning without Forgetting's distillation, the knowledge is recalibrated.
The defaults that differ between the two recipes are in ``RECIPES``.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

import torch

from captioner.training import checkpoint
from captioner.training.data import LAYOUTS, load_dataset, tokenize
from captioner.search import DEFAULT_LENGTH_PENALTY, DEFAULT_NO_REPEAT_NGRAM, generate
from captioner.training.checkpoint import weights_digest
from captioner.training import distributed
from captioner.training.distributed import TRAIN_PRECISIONS, Dist
from captioner.training.features import FeatureStore, load_features, merge_features, write_features
from captioner.training.stages import FinetuneStage, Run, ScstStage, encode_split, plan
from captioner.training.encoders import CHANNELS
from captioner.training.metrics import score_all
from captioner.training.model import DECODERS, CaptionModel, ModelConfig
from captioner.training.plots import plot_history
from captioner.training.adapt import grow_vocabulary, keep_experts
from captioner.runtime import DEVICE_HELP, cache_dir
from captioner.vocab import Vocab


# defaults that depend on whether a run starts from scratch or adapts a trained model (--init);
# a flag given on the command line wins.  The adapt recipe was chosen on the Tux Paint stamps' dev split
# (docs/review.md).
RECIPES = {"scratch": {"epochs": 12, "finetune_epochs": 2, "min_count": 5, "lr": 4e-4, "distill": 0.0, "patience": 3},
           "adapt": {"epochs": 20, "finetune_epochs": 0, "min_count": 2, "lr": 8e-4, "distill": 0.0, "patience": 5}}


def recipe(args) -> str:
    """``scratch``, ``adapt`` (--init, the default), or ``continue`` (--init --init-mode continue: more
    training of a model on its own data, as before adapt.py; the scratch recipe's defaults)."""
    return "scratch" if not args.init else args.init_mode


def resolve_recipe(args) -> None:
    """Fill the flags left at None with the defaults of the run's recipe."""
    for k, v in RECIPES["adapt" if recipe(args) == "adapt" else "scratch"].items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    if recipe(args) == "adapt" and args.finetune_epochs:
        raise SystemExit("--init adapts with the encoder frozen: the decoders it keeps as experts and the knowledge "
                         "read its features (use --init-mode continue to fine-tune a model on its own data)")


@torch.inference_mode()
def caption_features(model, feats: torch.Tensor, vocab: Vocab, beam_size=3, length_penalty=DEFAULT_LENGTH_PENALTY,
                     batch_size=100, no_repeat_ngram=DEFAULT_NO_REPEAT_NGRAM) -> list[list[str]]:
    model.eval()
    out = []
    dev = next(model.parameters()).device
    for i in range(0, feats.size(0), batch_size):
        for hyps in generate(model, feats[i:i + batch_size].to(dev).float(), beam_size, length_penalty=length_penalty,
                             no_repeat_ngram=no_repeat_ngram):
            out.append(vocab.decode(hyps[0].tokens))
    return out


def evaluate(model, feats, names, refs: dict, vocab, beam_size=3, length_penalty=DEFAULT_LENGTH_PENALTY, with_meteor=False,
             no_repeat_ngram=DEFAULT_NO_REPEAT_NGRAM):
    """Free-running decoding of ``feats`` (rows in ``names`` order) scored against ``refs``."""
    cands = caption_features(model, feats, vocab, beam_size, length_penalty, no_repeat_ngram=no_repeat_ngram)
    scores = score_all(cands, [refs[n] for n in names], with_meteor=with_meteor)
    return scores, cands


def sample_prob(args, epoch: int) -> float:
    """Scheduled sampling's probability for ``epoch`` (1-based): 0 before
    ``--scheduled-sampling-start``, then up by ``--scheduled-sampling-increase`` per epoch,
    capped at ``--scheduled-sampling``; fine-tuning epochs continue the same ramp."""
    if args.scheduled_sampling <= 0 or epoch < args.scheduled_sampling_start:
        return 0.0
    steps = epoch - args.scheduled_sampling_start + 1
    return round(min(args.scheduled_sampling, steps * args.scheduled_sampling_increase), 6)


def default_cache(args, digest: str = "") -> Path:
    root = Path(args.data).resolve()
    tag = f"{root.name}_{hashlib.sha1(str(root).encode()).hexdigest()[:8]}"  # one cache per dataset folder
    suffix = f"_{digest}" if digest else ""  # a fine-tuned encoder's features never overwrite the pip weights'
    return cache_dir() / f"features_{tag}_{args.encoder}_{args.image_size}{suffix}.npy"


def cached_features(path: Path, encoder, ds, names: list[str], workers: int, accept_unhashed: bool = False,
                    dist: Dist | None = None):
    """-> (name -> row, ``FeatureStore``) of ``names`` from ``encoder``, read from ``path`` when it
    was made by exactly these weights (a hash of them is stored with the grids), else computed and
    written.  ``accept_unhashed`` also trusts a cache written before hashes were stored (pip weights
    only).  The grids stay on disk; training reads the rows of each batch.  In data-parallel
    training each rank encodes its share of the images and rank 0 writes the one cache."""
    dist = dist or Dist(torch.device("cpu"))
    digest = weights_digest(encoder)
    found = load_features(path)
    if found:
        index, feats, meta = found
        same_weights = meta.get("weights") == digest or (accept_unhashed and "weights" not in meta)
        if meta.get("encoder") == encoder.name and meta.get("image_size") == encoder.preprocess.size \
                and same_weights and all(n in index for n in names):
            print(f"features: {feats.path} {feats.shape}")
            return index, feats
        print(f"features: {feats.path} does not match this run; recomputing")
    meta = {"encoder": encoder.name, "image_size": encoder.preprocess.size, "weights": digest}
    encoder = encoder.to(memory_format=torch.channels_last)
    paths = [ds.image_dir / n for n in names]
    if not dist.distributed:
        return {n: i for i, n in enumerate(names)}, write_features(path, encoder, paths, names, meta, 32, workers)
    dist.barrier()   # every rank has looked at the old cache before it is replaced
    parts = [Path(path).with_name(f"{Path(path).stem}.part{r}of{dist.world}.npy") for r in range(dist.world)]
    write_features(parts[dist.rank], encoder, paths[dist.rank::dist.world], names[dist.rank::dist.world], meta,
                   32, workers, progress=dist.is_main)
    dist.barrier()
    if dist.is_main:
        merge_features(path, parts, names, meta)
        for p in parts:
            p.unlink()
            p.with_suffix(".json").unlink()
    dist.barrier()
    return {n: i for i, n in enumerate(names)}, FeatureStore(path)


def get_features(args, ds, encoder, finetuned: bool = False, dist: Dist | None = None):
    """Cached grids for every image of the dataset, computed on first use.  ``finetuned``: the
    encoder comes from a fine-tuned checkpoint (``--init``), so it gets a cache of its own."""
    path = Path(args.feature_cache) if args.feature_cache else \
        default_cache(args, weights_digest(encoder) if finetuned else "")
    return cached_features(path, encoder, ds, ds.images(), args.workers, accept_unhashed=not finetuned, dist=dist)


def setup(args, dist: Dist) -> Run:
    """Data, vocabulary, model, optimizers and the stage-1 feature cache of a run."""
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(args.data, args.layout)
    if ds.assigned_split and dist.is_main:  # no split in the data: keep the one assigned, beside the checkpoints
        (out / "split.json").write_text(json.dumps(ds.split_of, indent=0, sort_keys=True))
    print(ds.summary())
    train_names, dev_names = ds.images("train"), ds.images("dev")
    if not train_names or not dev_names:
        raise SystemExit(f"{args.data}: the dataset needs train and dev images (have {len(train_names)}, "
                         f"{len(dev_names)})")
    if args.limit:  # quick runs and tests
        train_names, dev_names = train_names[:args.limit], dev_names[:max(args.limit // 5, 2)]

    vocab_path = out / "vocab.json"
    init_meta, teacher = {}, None
    if args.init:  # start from a trained checkpoint: adapt it (adapt.py), or continue its training
        model, vocab, init_meta = checkpoint.load_model(args.init, encoder_weights=args.encoder_weights)
        cfg = model.cfg
        if (cfg.encoder, cfg.image_size) != (args.encoder, args.image_size):
            raise SystemExit(f"--init {args.init}: its encoder {cfg.encoder}@{cfg.image_size} differs from "
                             f"--encoder {args.encoder} --image-size {args.image_size}")
        if recipe(args) == "adapt":
            if args.distill > 0 and args.epochs:
                teacher = copy.deepcopy(model).eval().requires_grad_(False).to(dist.device)
            keep_experts(model)
            vocab, new_words = grow_vocabulary(model, vocab, (tokenize(c) for n in train_names
                                                              for c in ds.captions[n]), args.min_count)
            print(f"--init {args.init}: {len(model.experts)} decoder(s) kept as experts; {len(new_words)} new words "
                  f"seen at least {args.min_count} times"
                  + (f" ({', '.join(new_words[:12])}{', ...' if len(new_words) > 12 else ''})" if new_words else ""))
    else:
        if args.resume and vocab_path.is_file():
            vocab = Vocab.load(vocab_path)
        else:
            vocab = Vocab.build((tokenize(c) for n in train_names for c in ds.captions[n]), args.min_count)
        cfg = ModelConfig(vocab_size=len(vocab), decoder=args.decoder, encoder=args.encoder,
                          image_size=args.image_size, feature_dim=CHANNELS[args.encoder],
                          embed_dim=args.embed_dim, hidden_dim=args.hidden_dim,
                          attention_dim=args.attention_dim, dropout=args.dropout, max_len=args.max_len)
        model = CaptionModel(cfg, encoder_weights=args.encoder_weights)
    if dist.is_main:
        vocab.save(vocab_path)
    print(f"vocabulary: {len(vocab)} words")
    model.encoder.update_bn_stats = args.finetune_bn_stats
    model.to(dist.device)
    index, feats = {}, None
    if args.epochs or args.finetune_epochs:
        index, feats = get_features(args, ds, model.encoder, bool(init_meta.get("finetuned")), dist)
    # computing the features iterates a DataLoader, which draws from the global generator: seed it again, so
    # a run that computes them and one that reads them from the cache train alike (dropout included)
    torch.manual_seed(args.seed)
    pairs = encode_split(ds, train_names, vocab, args.max_len)
    print(f"training captions: {len(pairs)} from {len(train_names)} images; dev images: {len(dev_names)}")

    dec_params = list(model.decoder.parameters())
    opt = torch.optim.Adam(dec_params, lr=args.lr)
    enc_params = model.encoder.set_trainable(args.finetune_blocks)
    model.encoder.set_trainable(0)
    opt_enc = torch.optim.Adam(enc_params, lr=args.finetune_lr) if enc_params else None
    optimizers = {"decoder": opt, **({"encoder": opt_enc} if opt_enc else {})}
    return Run(args, ds, vocab, model, train_names, dev_names, pairs, optimizers, dec_params, enc_params,
               torch.Generator().manual_seed(args.seed), out, out / "best.safetensors", index, feats,
               init_finetuned=bool(init_meta.get("finetuned")), dist=dist, teacher=teacher)


def main(args):
    """Run the plan of stages: train an epoch, caption the dev split, keep the best, write the
    resume point; -> the history.  Under torchrun, every rank runs this; rank 0 writes."""
    resolve_recipe(args)
    dist = distributed.init(args.device, args.precision)
    quiet = None
    if not dist.is_main:   # one voice: rank 0's
        quiet = sys.stdout = open(os.devnull, "w")
    try:
        return _run(args, dist)
    finally:
        distributed.cleanup()
        if quiet:
            sys.stdout = sys.__stdout__
            quiet.close()


def _run(args, dist: Dist):
    run = setup(args, dist)
    print(f"device {dist.device}, precision {dist.amp_dtype or 'fp32'}, {dist.world} process(es)")
    model, vocab, out, g = run.model, run.vocab, run.out, run.g
    last, best_path, state_path = out / "last.safetensors", run.best_path, out / "train_state.safetensors"
    history, best, start_epoch, info = [], -1.0, 1, {}
    if args.resume and state_path.is_file():
        info = checkpoint.load_train_state(state_path, model, run.optimizers)
        history, best, start_epoch = info["history"], info["best"], info["epoch"] + 1
        g.set_state(torch.tensor(info["gen_state"], dtype=torch.uint8))
        print(f"resumed from {state_path} after epoch {info['epoch']}")
    elif args.resume:
        print(f"--resume: no {state_path} yet, starting from scratch")
    run.stale = info["stale"] if history else 0  # epochs since the last dev improvement
    dev_refs = run.ds.references("dev")

    for stage in plan(run, cached_features):
        for epoch in stage.epochs():
            if epoch < start_epoch:
                continue
            if stage.stopped():
                if not getattr(stage, "said_stop", False):   # once, not for every epoch left
                    print(f"early stop: dev CIDEr-D has not improved for {run.stale} epochs")
                    stage.said_stop = True
                continue
            t0 = time.time()
            p_sample = 0.0 if isinstance(stage, ScstStage) else sample_prob(args, epoch)
            stage.set_lr(epoch)
            if epoch == stage.first:
                stage.begin()
            result = stage.train_one_epoch(epoch, p_sample)
            if dist.distributed:   # the whole batch's loss: the ranks' parts summed
                result["train_loss"] = dist.sum(result["train_loss"])
            scores = None
            if dist.is_main:       # rank 0 evaluates; the others take its scores
                scores, _ = evaluate(model, stage.dev_features(), run.dev_names, dev_refs, vocab, args.eval_beam,
                                     args.length_penalty, no_repeat_ngram=args.no_repeat_ngram)
            scores = dist.broadcast(scores)
            entry = {"epoch": epoch, "stage": stage.name, "train_loss": result["train_loss"], "dev": scores,
                     "seconds": round(time.time() - t0, 1)}
            if not isinstance(stage, ScstStage) and args.scheduled_sampling > 0:
                entry["sample_prob"] = p_sample
            entry.update({k: v for k, v in result.items() if k != "train_loss"})
            history.append(entry)
            print(json.dumps(entry))
            meta = {"finetuned": isinstance(stage, FinetuneStage) or any(h["stage"] == "finetune" for h in history)
                    or run.init_finetuned, "epoch": epoch,
                    "dev": scores, "args": {k: v for k, v in vars(args).items() if k != "func"}}
            improved = scores["CIDEr-D"] > best
            if improved:
                best, run.stale = scores["CIDEr-D"], 0
            else:
                run.stale += 1
            if dist.is_main:
                if improved:
                    checkpoint.save_model(best_path, model, vocab, meta)
                checkpoint.save_model(last, model, vocab, meta)
                # the resume point is written last: a kill before this line repeats the epoch, identically
                checkpoint.save_train_state(state_path, model, run.optimizers, {
                    "epoch": epoch, "history": history, "best": best, "stale": run.stale,
                    "gen_state": g.get_state().tolist()})
                (out / "history.json").write_text(json.dumps(history, indent=1))
                plot_history(history, out / "curves.png")
            dist.barrier()
    # the ranks are in step after the last barrier: they leave the process group together, before rank 0
    # calibrates alone (a rank that tore it down while rank 0 still held it aborted once in CI, at exit)
    distributed.cleanup()
    print(f"best dev CIDEr-D {best:.4f}: {best_path}")
    if args.calibrate and best_path.is_file() and dist.is_main:
        # what the model knows of its limits (out-of-domain statistics, confidence), stored in its
        # file; only train and dev images take part (calibrate.py)
        from captioner.training.calibrate import calibrate

        calibrate(best_path, args.data, layout=args.layout, no_repeat_ngram=args.no_repeat_ngram,
                  device=str(dist.device), start=args.init if recipe(args) == "adapt" else None)
    return history


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--data", default="../shared/flickr8k",
                    help="dataset: a Flickr8k folder (Kaggle, original or Karpathy layout), a Karpathy JSON (COCO, Flickr30k), or a CSV / JSON-lines file of image,caption[,split]")
    ap.add_argument("--layout", default=None, choices=LAYOUTS, help="force a dataset layout")
    ap.add_argument("--out", required=True, help="run folder: checkpoints, vocabulary, history, curves")
    # the model's sizes default to ModelConfig's (one place); the decoder to the shipped recipe's
    ap.add_argument("--encoder", default=ModelConfig.encoder, choices=["efficientnet_lite2", "resnet50", "vgg16"],
                    help="ImageNet CNN encoder")
    ap.add_argument("--encoder-weights", default=None, help="ImageNet weights file for the encoder")
    ap.add_argument("--image-size", type=int, default=ModelConfig.image_size, help="square input size in pixels")
    ap.add_argument("--decoder", default="adaptive", choices=list(DECODERS),
                    help="LSTM decoder: adaptive (visual sentinel, Lu et al. 2017; the shipped model's, default), "
                         "attention (Show, Attend and Tell), updown (top-down attention, Anderson et al. 2018), "
                         "plain (no attention)")
    ap.add_argument("--embed-dim", type=int, default=ModelConfig.embed_dim, help="word embedding size")
    ap.add_argument("--hidden-dim", type=int, default=ModelConfig.hidden_dim, help="LSTM hidden size")
    ap.add_argument("--attention-dim", type=int, default=ModelConfig.attention_dim, help="attention MLP size")
    ap.add_argument("--dropout", type=float, default=ModelConfig.dropout, help="dropout before the word classifier")
    ap.add_argument("--min-count", type=int, default=None,
                    help="vocabulary: minimum count of a word in the training captions (default 5; with --init, "
                         "2: the words a trained model lacks that join its vocabulary)")
    ap.add_argument("--max-len", type=int, default=ModelConfig.max_len,
                    help="longest caption in words (training and generation)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="epochs of the frozen-encoder stage (default 12; with --init, 20)")
    ap.add_argument("--batch-size", type=int, default=64, help="captions per batch in the frozen stage")
    ap.add_argument("--lr", type=float, default=None, help="decoder learning rate (Adam; default 4e-4, with --init 8e-4)")
    ap.add_argument("--lr-decay", type=float, default=0.85, help="learning rate factor per epoch")
    ap.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing of the word loss")
    ap.add_argument("--scheduled-sampling", type=float, default=0.0,
                    help="scheduled sampling: the highest probability of feeding the model its own word (0: off)")
    ap.add_argument("--scheduled-sampling-start", type=int, default=2,
                    help="scheduled sampling: first epoch that uses it")
    ap.add_argument("--scheduled-sampling-increase", type=float, default=0.05,
                    help="scheduled sampling: probability added per epoch until the highest is reached")
    ap.add_argument("--att-reg", type=float, default=1.0, help="doubly stochastic attention penalty weight")
    ap.add_argument("--patience", type=int, default=None,
                    help="early stop after this many epochs without dev gain (default 3; with --init, 5)")
    ap.add_argument("--finetune-epochs", type=int, default=None,
                    help="epochs of end-to-end fine-tuning after stage 1 (default 2; with --init, 0: the encoder "
                         "stays frozen, as the knowledge the model file carries reads its features)")
    ap.add_argument("--finetune-blocks", type=int, default=3, help="encoder stages unfrozen when fine-tuning")
    ap.add_argument("--finetune-lr", type=float, default=2e-5, help="encoder learning rate when fine-tuning")
    ap.add_argument("--finetune-decoder-lr-scale", type=float, default=0.1,
                    help="decoder learning rate factor while fine-tuning")
    ap.add_argument("--finetune-bn-stats", action="store_true",
                    help="update batch-norm running statistics when fine-tuning (default: keep ImageNet's)")
    ap.add_argument("--finetune-batch-size", type=int, default=32, help="images per batch when fine-tuning")
    ap.add_argument("--flip", type=float, default=0.5,
                    help="fine-tuning: mirror each photo with this probability, 'left' and 'right' swapped in its caption")
    ap.add_argument("--scst-epochs", type=int, default=0, help="epochs of self-critical CIDEr-D training at the end")
    ap.add_argument("--scst-lr", type=float, default=5e-5, help="decoder learning rate during SCST")
    ap.add_argument("--scst-samples", type=int, default=5, help="candidate captions per image during SCST")
    ap.add_argument("--scst-candidates", default="beam", choices=["beam", "sample"],
                    help="SCST candidates: the beams of a beam search, or multinomial samples")
    ap.add_argument("--scst-batch-size", type=int, default=32, help="images per batch during SCST")
    ap.add_argument("--scst-max-len", type=int, default=20, help="longest sampled caption during SCST")
    ap.add_argument("--eval-beam", type=int, default=3, help="beam size of the dev-split evaluation")
    ap.add_argument("--length-penalty", type=float, default=DEFAULT_LENGTH_PENALTY, help="beam score = logP / length**this")
    ap.add_argument("--no-repeat-ngram", type=int, default=DEFAULT_NO_REPEAT_NGRAM,
                    help="dev-split decoding: forbid repeating an n-gram of this length (0: off)")
    ap.add_argument("--feature-cache", default=None, help="feature cache file (default: ~/.cache/captioner/...)")
    ap.add_argument("--workers", type=int, default=1, help="image decoding worker processes")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: PyTorch's default)")
    ap.add_argument("--limit", type=int, default=0, help="use only this many training images (quick runs)")
    ap.add_argument("--seed", type=int, default=0, help="random seed")
    ap.add_argument("--init", nargs="?", const=str(checkpoint.DEFAULT_MODEL), default=None, metavar="MODEL",
                    help="start from this trained model (the shipped one if MODEL is left out) and teach it --data "
                         "(adapt.py: its decoders kept as experts, the vocabulary grown, the knowledge recalibrated)")
    ap.add_argument("--init-mode", choices=["adapt", "continue"], default="adapt",
                    help="with --init: adapt it to new data (default), or continue training it on its own data "
                         "(no experts, no new words; e.g. fine-tune a frozen-stage model)")
    ap.add_argument("--distill", type=float, default=None,
                    help="adapting: weight of Learning without Forgetting's distillation from the --init model "
                         "along its own captions of the new images (default 0: plain fine-tuning; docs/review.md)")
    ap.add_argument("--distill-temperature", type=float, default=2.0, help="temperature of that distillation")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/train_state.safetensors")
    ap.add_argument("--device", default="auto", help=DEVICE_HELP + "; under torchrun, each process's own GPU")
    ap.add_argument("--precision", default="auto", choices=TRAIN_PRECISIONS,
                    help="mixed precision on GPUs: bf16 autocast, fp16 with a gradient scaler, fp32; "
                         "auto = bf16 where the GPU has it, fp32 on the CPU")
    ap.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                    help="do not calibrate best.safetensors at the end (out-of-domain flag, confidence, tags)")
