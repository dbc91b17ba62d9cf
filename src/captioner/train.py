"""Training: a frozen-encoder stage on cached features, then end-to-end fine-tuning.

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
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import shutil
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import checkpoint
from .data import LAYOUTS, load_dataset, tokenize
from .decode import DEFAULT_LENGTH_PENALTY, DEFAULT_NO_REPEAT_NGRAM, generate
from .checkpoint import weights_digest
from .features import ImageFiles, Rows, extract_features, load_features, write_features
from .scst import reward_scorer, scst_one_epoch
from .encoders import CHANNELS
from .metrics import score_all
from .model import CaptionModel, ModelConfig
from .plots import plot_history
from .runtime import cache_dir
from .vocab import Vocab


def encode_split(ds, names: list[str], vocab: Vocab, max_len: int):
    """-> list of (image name, token ids with <start>/<end>); captions truncated to max_len words."""
    return [(n, vocab.encode(tokenize(c)[:max_len])) for n in names for c in ds.captions[n]]


def pad(seqs: list[list[int]]) -> torch.Tensor:
    out = torch.zeros(len(seqs), max(len(s) for s in seqs), dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s)
    return out


def length_bucketed_batches(lengths: list[int], batch_size: int, g: torch.Generator) -> list[list[int]]:
    """Shuffle, sort each window of 50 batches by length (less padding, fewer LSTM steps),
    then shuffle the batches."""
    perm = torch.randperm(len(lengths), generator=g).tolist()
    window = batch_size * 50
    batches = []
    for i in range(0, len(perm), window):
        chunk = sorted(perm[i:i + window], key=lambda j: lengths[j])
        batches += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in order]


def train_one_epoch(model, batches, optimizer, params, label_smoothing=0.0, att_reg=1.0, clip=5.0,
                    desc="train", progress=True, sample_prob=0.0) -> float:
    """``batches`` yields (inputs dict for model.forward, captions). Returns the mean loss."""
    model.train()
    total, n = 0.0, 0
    bar = tqdm(batches, desc=desc, unit="batch", disable=not progress, mininterval=5)
    for inputs, caps in bar:
        _, loss = model(captions=caps, label_smoothing=label_smoothing, att_reg=att_reg,
                        sample_prob=sample_prob, **inputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        total += loss.item()
        n += 1
        bar.set_postfix(loss=f"{total / n:.3f}", refresh=False)
    return total / max(n, 1)


@torch.inference_mode()
def caption_features(model, feats: torch.Tensor, vocab: Vocab, beam_size=3, length_penalty=DEFAULT_LENGTH_PENALTY,
                     batch_size=100, no_repeat_ngram=DEFAULT_NO_REPEAT_NGRAM) -> list[list[str]]:
    model.eval()
    out = []
    for i in range(0, feats.size(0), batch_size):
        for hyps in generate(model, feats[i:i + batch_size], beam_size, length_penalty=length_penalty,
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


def cached_features(path: Path, encoder, ds, names: list[str], workers: int, accept_unhashed: bool = False):
    """-> (name -> row, ``FeatureStore``) of ``names`` from ``encoder``, read from ``path`` when it
    was made by exactly these weights (a hash of them is stored with the grids), else computed and
    written.  ``accept_unhashed`` also trusts a cache written before hashes were stored (pip weights
    only).  The grids stay on disk; training reads the rows of each batch."""
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
    feats = write_features(path, encoder.to(memory_format=torch.channels_last), [ds.image_dir / n for n in names],
                           names, {"encoder": encoder.name, "image_size": encoder.preprocess.size, "weights": digest},
                           batch_size=32, workers=workers)
    return {n: i for i, n in enumerate(names)}, feats


def get_features(args, ds, encoder, finetuned: bool = False):
    """Cached grids for every image of the dataset, computed on first use.  ``finetuned``: the
    encoder comes from a fine-tuned checkpoint (``--init``), so it gets a cache of its own."""
    path = Path(args.feature_cache) if args.feature_cache else \
        default_cache(args, weights_digest(encoder) if finetuned else "")
    return cached_features(path, encoder, ds, ds.images(), args.workers, accept_unhashed=not finetuned)


def main(args):
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(args.data, args.layout)
    if ds.assigned_split:  # no split in the data: keep the one assigned, beside the run's checkpoints
        (out / "split.json").write_text(json.dumps(ds.split_of, indent=0, sort_keys=True))
    print(ds.summary())
    train_names, dev_names = ds.images("train"), ds.images("dev")
    if not train_names or not dev_names:
        raise SystemExit(f"{args.data}: the dataset needs train and dev images (have {len(train_names)}, "
                         f"{len(dev_names)})")
    if args.limit:  # quick runs and tests
        train_names, dev_names = train_names[:args.limit], dev_names[:max(args.limit // 5, 2)]

    vocab_path = out / "vocab.json"
    init_meta = {}
    if args.init:  # start from a trained checkpoint (e.g. fine-tune a frozen-stage model)
        model, vocab, init_meta = checkpoint.load_model(args.init, encoder_weights=args.encoder_weights)
        cfg = model.cfg
        if (cfg.encoder, cfg.image_size) != (args.encoder, args.image_size):
            raise SystemExit(f"--init {args.init}: its encoder {cfg.encoder}@{cfg.image_size} differs from "
                             f"--encoder {args.encoder} --image-size {args.image_size}")
        vocab.save(vocab_path)
    else:
        if args.resume and vocab_path.is_file():
            vocab = Vocab.load(vocab_path)
        else:
            vocab = Vocab.build((tokenize(c) for n in train_names for c in ds.captions[n]), args.min_count)
            vocab.save(vocab_path)
        cfg = ModelConfig(vocab_size=len(vocab), decoder=args.decoder, encoder=args.encoder,
                          image_size=args.image_size, feature_dim=CHANNELS[args.encoder],
                          embed_dim=args.embed_dim, hidden_dim=args.hidden_dim,
                          attention_dim=args.attention_dim, dropout=args.dropout, max_len=args.max_len)
        model = CaptionModel(cfg, encoder_weights=args.encoder_weights)
    print(f"vocabulary: {len(vocab)} words")
    model.encoder.update_bn_stats = args.finetune_bn_stats
    if args.epochs or args.finetune_epochs:
        index, feats = get_features(args, ds, model.encoder, finetuned=bool(init_meta.get("finetuned")))
    dev_refs = ds.references("dev")
    pairs = encode_split(ds, train_names, vocab, args.max_len)
    print(f"training captions: {len(pairs)} from {len(train_names)} images; dev images: {len(dev_names)}")

    dec_params = list(model.decoder.parameters())
    opt = torch.optim.Adam(dec_params, lr=args.lr)
    enc_params = model.encoder.set_trainable(args.finetune_blocks)
    model.encoder.set_trainable(0)
    opt_enc = torch.optim.Adam(enc_params, lr=args.finetune_lr) if enc_params else None
    optimizers = {"decoder": opt, **({"encoder": opt_enc} if opt_enc else {})}
    history, best, start_epoch, info = [], -1.0, 1, {}
    g = torch.Generator().manual_seed(args.seed)
    last, best_path, state_path = out / "last.safetensors", out / "best.safetensors", out / "train_state.safetensors"
    if args.resume and state_path.is_file():
        info = checkpoint.load_train_state(state_path, model, optimizers)
        history, best, start_epoch = info["history"], info["best"], info["epoch"] + 1
        g.set_state(torch.tensor(info["gen_state"], dtype=torch.uint8))
        print(f"resumed from {state_path} after epoch {info['epoch']}")
    elif args.resume:
        print(f"--resume: no {state_path} yet, starting from scratch")

    xe_epochs = args.epochs + args.finetune_epochs
    total_epochs = xe_epochs + args.scst_epochs
    stale = info["stale"] if history else 0  # epochs since the last dev improvement
    scst_feats = None
    for epoch in range(start_epoch, total_epochs + 1):
        finetune = args.epochs < epoch <= xe_epochs
        scst = epoch > xe_epochs
        p_sample = 0.0 if scst else sample_prob(args, epoch)
        if not finetune and not scst and stale >= args.patience:
            print(f"early stop: dev CIDEr-D has not improved for {stale} epochs")
            continue
        t0 = time.time()
        # per-epoch step decay, restarted for the fine-tuning stage (its own, lower base rates)
        if scst:
            for grp in opt.param_groups:
                grp["lr"] = args.scst_lr
        elif finetune:
            decay = args.lr_decay ** (epoch - args.epochs - 1)
            for grp in opt.param_groups:
                grp["lr"] = args.lr * args.finetune_decoder_lr_scale * decay
            for grp in opt_enc.param_groups if opt_enc else []:
                grp["lr"] = args.finetune_lr * decay
        else:
            for grp in opt.param_groups:
                grp["lr"] = args.lr * args.lr_decay ** (epoch - 1)
        if scst:
            if epoch == xe_epochs + 1 and best_path.is_file():  # start from the best cross-entropy model
                shutil.copyfile(best_path, out / "best_xe.safetensors")  # kept for the ablation
                m, _, _ = checkpoint.load_model(best_path, encoder_weights=args.encoder_weights)
                model.load_state_dict(m.state_dict())
            if scst_feats is None:
                # the final encoder's grids, cached in the run folder
                idx, store = cached_features(out / "features_final_encoder.npy", model.encoder, ds,
                                             train_names + dev_names, args.workers)
                scst_feats = Rows(store, [idx[n] for n in train_names])   # read batch by batch
                dev_feats = store[[idx[n] for n in dev_names]]
                scorer = reward_scorer([[tokenize(c)[:args.max_len] for c in ds.captions[n]] for n in train_names])
            r = scst_one_epoch(model, scst_feats, scorer, vocab, opt, dec_params, args.scst_batch_size,
                               args.scst_samples, args.scst_max_len, generator=g, desc=f"epoch {epoch} (SCST)",
                               candidates=args.scst_candidates)
            loss = r["loss"]
        elif not finetune:
            lengths = [len(c) for _, c in pairs]
            batches = ((
                {"feats": feats[[index[pairs[j][0]] for j in b]]}, pad([pairs[j][1] for j in b]))
                for b in length_bucketed_batches(lengths, args.batch_size, g))
            n_batches = math.ceil(len(pairs) / args.batch_size)
            loss = train_one_epoch(model, _Sized(batches, n_batches), opt, dec_params, args.label_smoothing,
                                   args.att_reg, desc=f"epoch {epoch} (frozen encoder)", sample_prob=p_sample)
        else:
            if epoch == args.epochs + 1 and best_path.is_file():  # start fine-tuning from the best model
                shutil.copyfile(best_path, out / "best_frozen.safetensors")  # kept for the ablation
                m, _, _ = checkpoint.load_model(best_path, encoder_weights=args.encoder_weights)
                model.load_state_dict(m.state_dict())
            model.encoder.set_trainable(args.finetune_blocks)
            loader = finetune_loader(ds, train_names, vocab, model.preprocess, args, g)
            loss = train_one_epoch(model, _Sized((({"images": x}, c) for x, c in loader), len(loader)),
                                _Multi(optimizers), dec_params + enc_params, args.label_smoothing,
                                args.att_reg, desc=f"epoch {epoch} (fine-tuning)", sample_prob=p_sample)
            model.encoder.set_trainable(0)
            model.eval()
            # the dev grids from the encoder as it is now (the cache keeps the pip encoder's)
            dev_feats = extract_features(model.encoder, [ds.image_dir / n for n in dev_names], workers=args.workers,
                                         progress=False)
        if not scst and not finetune:
            dev_feats = feats[[index[n] for n in dev_names]]
        scores, _ = evaluate(model, dev_feats, dev_names, dev_refs, vocab, args.eval_beam, args.length_penalty,
                             no_repeat_ngram=args.no_repeat_ngram)
        entry = {"epoch": epoch, "stage": "scst" if scst else "finetune" if finetune else "frozen",
                 "train_loss": loss, "dev": scores, "seconds": round(time.time() - t0, 1)}
        if not scst and args.scheduled_sampling > 0:
            entry["sample_prob"] = p_sample
        if scst:
            entry["train_reward"] = r["reward"]
        history.append(entry)
        print(json.dumps(entry))
        meta = {"finetuned": finetune or any(h["stage"] == "finetune" for h in history)
                or bool(init_meta.get("finetuned")), "epoch": epoch,
                "dev": scores, "args": {k: v for k, v in vars(args).items() if k != "func"}}
        if scores["CIDEr-D"] > best:
            best, stale = scores["CIDEr-D"], 0
            checkpoint.save_model(best_path, model, vocab, meta)
        else:
            stale += 1
        checkpoint.save_model(last, model, vocab, meta)
        # the resume point is written last: a kill before this line repeats the epoch, identically
        checkpoint.save_train_state(state_path, model, optimizers, {
            "epoch": epoch, "history": history, "best": best, "stale": stale, "gen_state": g.get_state().tolist()})
        (out / "history.json").write_text(json.dumps(history, indent=1))
        plot_history(history, out / "curves.png")
    print(f"best dev CIDEr-D {best:.4f}: {best_path}")
    if args.calibrate and best_path.is_file():
        # what the model knows of its limits (out-of-domain statistics, confidence), stored in its
        # file; only train and dev images take part (calibrate.py)
        from .calibrate import calibrate

        calibrate(best_path, args.data, layout=args.layout, no_repeat_ngram=args.no_repeat_ngram)
    return history


class _Sized:
    """A generator with a length, so progress bars know the total."""

    def __init__(self, it, n):
        self.it, self.n = it, n

    def __iter__(self):
        return iter(self.it)

    def __len__(self):
        return self.n


class _Multi:
    """Step several optimizers (decoder, encoder at its lower learning rate) as one."""

    def __init__(self, opts: dict):
        self.opts = [o for o in opts.values() if o is not None]

    def zero_grad(self, set_to_none=True):
        for o in self.opts:
            o.zero_grad(set_to_none=set_to_none)

    def step(self):
        for o in self.opts:
            o.step()


class _CaptionedImages(ImageFiles):
    def __init__(self, paths, caps, preprocess):
        super().__init__(paths, preprocess)
        self.caps = caps

    def __getitem__(self, i):
        return super().__getitem__(i), self.caps[i]


def finetune_loader(ds, names, vocab, preprocess, args, g):
    """One pass over the training images, each with one of its captions drawn at random."""
    caps = [vocab.encode(tokenize(ds.captions[n][int(torch.randint(len(ds.captions[n]), (1,), generator=g))])
                         [:args.max_len]) for n in names]
    order = torch.randperm(len(names), generator=g).tolist()
    data = _CaptionedImages([ds.image_dir / names[i] for i in order], [caps[i] for i in order], preprocess)
    return DataLoader(data, batch_size=args.finetune_batch_size, num_workers=args.workers,
                      collate_fn=lambda b: (torch.stack([x for x, _ in b]), pad([c for _, c in b])))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--data", default="../shared/flickr8k",
                    help="dataset: a Flickr8k folder (Kaggle, original or Karpathy layout), a Karpathy JSON (COCO, Flickr30k), or a CSV / JSON-lines file of image,caption[,split]")
    ap.add_argument("--layout", default=None, choices=LAYOUTS, help="force a dataset layout")
    ap.add_argument("--out", required=True, help="run folder: checkpoints, vocabulary, history, curves")
    ap.add_argument("--encoder", default="efficientnet_lite2", choices=["efficientnet_lite2", "resnet50", "vgg16"],
                    help="ImageNet CNN encoder")
    ap.add_argument("--encoder-weights", default=None, help="ImageNet weights file for the encoder")
    ap.add_argument("--image-size", type=int, default=224, help="square input size in pixels")
    ap.add_argument("--decoder", default="attention", choices=["attention", "plain"], help="LSTM decoder type")
    ap.add_argument("--embed-dim", type=int, default=256, help="word embedding size")
    ap.add_argument("--hidden-dim", type=int, default=512, help="LSTM hidden size")
    ap.add_argument("--attention-dim", type=int, default=512, help="attention MLP size")
    ap.add_argument("--dropout", type=float, default=0.5, help="dropout before the word classifier")
    ap.add_argument("--min-count", type=int, default=5, help="vocabulary: minimum word count in training captions")
    ap.add_argument("--max-len", type=int, default=30, help="longest caption in words (training and generation)")
    ap.add_argument("--epochs", type=int, default=12, help="epochs of the frozen-encoder stage")
    ap.add_argument("--batch-size", type=int, default=64, help="captions per batch in the frozen stage")
    ap.add_argument("--lr", type=float, default=4e-4, help="decoder learning rate (Adam)")
    ap.add_argument("--lr-decay", type=float, default=0.85, help="learning rate factor per epoch")
    ap.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing of the word loss")
    ap.add_argument("--scheduled-sampling", type=float, default=0.0,
                    help="scheduled sampling: the highest probability of feeding the model its own word (0: off)")
    ap.add_argument("--scheduled-sampling-start", type=int, default=2,
                    help="scheduled sampling: first epoch that uses it")
    ap.add_argument("--scheduled-sampling-increase", type=float, default=0.05,
                    help="scheduled sampling: probability added per epoch until the highest is reached")
    ap.add_argument("--att-reg", type=float, default=1.0, help="doubly stochastic attention penalty weight")
    ap.add_argument("--patience", type=int, default=3, help="early stop after this many epochs without dev gain")
    ap.add_argument("--finetune-epochs", type=int, default=2, help="epochs of end-to-end fine-tuning after stage 1")
    ap.add_argument("--finetune-blocks", type=int, default=3, help="encoder stages unfrozen when fine-tuning")
    ap.add_argument("--finetune-lr", type=float, default=2e-5, help="encoder learning rate when fine-tuning")
    ap.add_argument("--finetune-decoder-lr-scale", type=float, default=0.1,
                    help="decoder learning rate factor while fine-tuning")
    ap.add_argument("--finetune-bn-stats", action="store_true",
                    help="update batch-norm running statistics when fine-tuning (default: keep ImageNet's)")
    ap.add_argument("--finetune-batch-size", type=int, default=32, help="images per batch when fine-tuning")
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
    ap.add_argument("--init", default=None, help="start from this trained checkpoint (its config and vocabulary)")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/train_state.safetensors")
    ap.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                    help="do not calibrate best.safetensors at the end (out-of-domain flag, confidence, tags)")
