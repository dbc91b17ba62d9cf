"""Training stages: each a small unit with its own data, learning rates and ``train_one_epoch``;
``train.py`` runs a plan of them, evaluates after every epoch and checkpoints.

  * ``FrozenStage``   - the decoder on cached encoder grids (``features.py``): an epoch costs
                        decoder time only.  Stops early after ``--patience`` epochs without gain.
  * ``FinetuneStage`` - the encoder's top ``--finetune-blocks`` stages and the decoder, from pixels,
                        at lower learning rates, starting from the best model so far.
  * ``AdaptStage``    - with ``--init``: the frozen stage on a library's own captions with Learning
                        without Forgetting (``adapt.py``): the loss adds the distillation from the
                        starting model along its own captions of the new images.
  * ``ScstStage``     - self-critical CIDEr-D training (``scst.py``) on the final encoder's grids,
                        starting from the best cross-entropy model; in data-parallel runs its
                        gradients are summed by hand (``Dist.sum_grads``), not by DDP.

A stage reads what the run shares (``Run``: data, vocabulary, model, optimizers, the batch-order
generator) and keeps its own data.  ``begin()`` runs on the stage's first epoch only, so a resumed
run does not repeat it.
"""
from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from captioner.training import checkpoint
from captioner.training.data import tokenize
from captioner.training.distributed import Dist
from captioner.training.features import ImageFiles, Rows, extract_features
from captioner.training.adapt import distillation_loss, teacher_captions
from captioner.training.scst import reward_scorer, scst_one_epoch


@dataclass
class Run:
    """What every stage of one training run shares."""
    args: object
    ds: object
    vocab: object
    model: object
    train_names: list
    dev_names: list
    pairs: list                      # (image name, token ids) of every training caption
    optimizers: dict                 # "decoder" and, when fine-tuning is possible, "encoder"
    dec_params: list
    enc_params: list
    g: torch.Generator               # batch order and caption draws: saved with the resume state
    out: Path
    best_path: Path
    index: dict = field(default_factory=dict)   # image name -> row of the stage-1 feature cache
    feats: object = None                        # the stage-1 feature cache (FeatureStore)
    init_finetuned: bool = False                # started (--init) from a fine-tuned model
    stale: int = 0                              # epochs since the last dev improvement
    teacher: object = None                      # --init with --distill: the starting model, frozen
    dist: Dist = field(default_factory=lambda: Dist(torch.device("cpu")))   # device, precision, ranks

    def restart_from_best(self, keep_as: str) -> None:
        """Continue from the best model so far (its file kept as ``keep_as`` for the ablations)."""
        self.dist.barrier()   # rank 0 may still be writing it
        if self.best_path.is_file():
            if self.dist.is_main:
                shutil.copyfile(self.best_path, self.out / keep_as)
            m, _, _ = checkpoint.load_model(self.best_path, encoder_weights=self.args.encoder_weights)
            self.model.load_state_dict(m.state_dict())


# ---------------------------------------------------------------- shared pieces

def encode_split(ds, names: list[str], vocab, max_len: int):
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
                    desc="train", progress=True, sample_prob=0.0, dist: Dist | None = None) -> float:
    """Cross-entropy training: ``batches`` yields (inputs dict for model.forward, captions) or,
    in data-parallel training, (inputs, captions, (words, captions) of the global batch, weight).
    ``model`` may be wrapped in DDP.  Returns the mean loss (this rank's, in parallel runs)."""
    dist = dist or Dist(torch.device("cpu"))
    model.train()
    total, n = 0.0, 0
    bar = tqdm(batches, desc=desc, unit="batch", disable=not progress or not dist.is_main, mininterval=5)
    for inputs, caps, *parallel in bar:
        norm, weight = parallel if parallel else (None, 1.0)
        inputs = {k: v.to(dist.device, non_blocking=True) for k, v in inputs.items()}
        with dist.autocast():
            _, loss = model(captions=caps.to(dist.device, non_blocking=True), label_smoothing=label_smoothing,
                            att_reg=att_reg, sample_prob=sample_prob, loss_norm=norm, **inputs)
        if norm is not None:
            # DDP averages gradients over ranks: scaled so that they sum to the whole batch's
            loss = loss * (dist.world * weight)
        optimizer.zero_grad(set_to_none=True)
        if dist.scaler is not None:   # fp16: scale the loss so small gradients survive
            dist.scaler.scale(loss).backward()
            dist.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, clip)
            dist.scaler.step(optimizer)
            dist.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
        total += loss.item() / (dist.world if norm is not None else 1)
        n += 1
        bar.set_postfix(loss=f"{total / n:.3f}", refresh=False)
    return total / max(n, 1)


def parallel_batches(dist: Dist, batches, lengths):
    """Each global batch -> this rank's share, the global (target words, captions) and a weight:
    0 for a rank left without captions (it still runs a step, so that DDP's all-reduce meets)."""
    for b in batches:
        mine, weight = dist.share(b), 1.0
        if not mine:
            mine, weight = b[:1], 0.0
        yield mine, (sum(lengths[j] - 1 for j in b), len(b)), weight


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

    @property
    def param_groups(self):   # what GradScaler.unscale_ and step look at
        return [g for o in self.opts for g in o.param_groups]

    @property
    def state(self):
        return {k: v for o in self.opts for k, v in o.state.items()}


class _CaptionedImages(ImageFiles):
    """Images with one caption each; ``flips[i]``: mirror image i (its caption's left/right swapped)."""

    def __init__(self, paths, caps, preprocess, flips=None):
        super().__init__(paths, preprocess)
        self.caps, self.flips = caps, flips

    def __getitem__(self, i):
        x = super().__getitem__(i)
        if self.flips is not None and self.flips[i]:
            x = x.flip(-1)
        return x, self.caps[i]


def mirror_caption(ids: list[int], vocab) -> list[int]:
    """A caption of the mirrored photo: "left" and "right" swapped (ids of words the vocabulary has)."""
    swap = {vocab.stoi[a]: vocab.stoi[b] for a, b in (("left", "right"), ("right", "left"))
            if a in vocab.stoi and b in vocab.stoi}
    return [swap.get(t, t) for t in ids]


def finetune_loader(ds, names, vocab, preprocess, args, g, dist: Dist | None = None):
    """One pass over the training images, each with one of its captions drawn at random; in
    data-parallel training each rank loads its share of every global batch."""
    caps = [vocab.encode(tokenize(ds.captions[n][int(torch.randint(len(ds.captions[n]), (1,), generator=g))])
                         [:args.max_len]) for n in names]
    order = torch.randperm(len(names), generator=g).tolist()
    flips = None
    if args.flip > 0:   # drawn only when asked, so that runs without it keep their random stream
        flips = (torch.rand(len(names), generator=g) < args.flip).tolist()
        caps = [mirror_caption(c, vocab) if f else c for c, f in zip(caps, flips)]
        flips = [flips[i] for i in order]
    data = _CaptionedImages([ds.image_dir / names[i] for i in order], [caps[i] for i in order], preprocess, flips)
    pin = dist is not None and dist.device.type == "cuda"

    def collate(b):
        return torch.stack([x for x, _ in b]), pad([c for _, c in b])

    if dist is None or not dist.distributed:
        return DataLoader(data, batch_size=args.finetune_batch_size, num_workers=args.workers,
                          collate_fn=collate, pin_memory=pin)
    bs = args.finetune_batch_size
    glob = [list(range(i, min(i + bs, len(data)))) for i in range(0, len(data), bs)]
    lengths = [len(c) for c in data.caps]
    plan = list(parallel_batches(dist, glob, lengths))
    loader = DataLoader(data, batch_sampler=[mine for mine, _, _ in plan], num_workers=args.workers,
                        collate_fn=collate, pin_memory=pin)
    return _Sized(((x, c, norm, w) for (x, c), (_, norm, w) in zip(loader, plan)), len(plan))


# ---------------------------------------------------------------- the stages

class Stage:
    name = "stage"

    def __init__(self, run: Run, first: int, last: int):
        self.run, self.first, self.last = run, first, last

    def epochs(self) -> range:
        return range(self.first, self.last + 1)

    def stopped(self) -> bool:
        return False

    def begin(self) -> None:
        """Once, before the stage's first epoch (not again on resume)."""

    def set_lr(self, epoch: int) -> None:
        raise NotImplementedError

    def train_one_epoch(self, epoch: int, sample_prob: float) -> dict:
        """-> {"train_loss": ..., and anything else the history should record}."""
        raise NotImplementedError

    def dev_features(self) -> torch.Tensor:
        """The dev images' grids from the encoder as it now is."""
        raise NotImplementedError


class FrozenStage(Stage):
    name = "frozen"

    def stopped(self) -> bool:
        return self.run.stale >= self.run.args.patience

    def set_lr(self, epoch: int) -> None:
        a = self.run.args
        for grp in self.run.optimizers["decoder"].param_groups:
            grp["lr"] = a.lr * a.lr_decay ** (epoch - 1)

    def train_one_epoch(self, epoch: int, sample_prob: float) -> dict:
        r, a = self.run, self.run.args
        lengths = [len(c) for _, c in r.pairs]
        order = length_bucketed_batches(lengths, a.batch_size, r.g)   # the same on every rank
        if r.dist.distributed:
            batches = (({"feats": r.feats[[r.index[r.pairs[j][0]] for j in mine]]},
                        pad([r.pairs[j][1] for j in mine]), norm, w)
                       for mine, norm, w in parallel_batches(r.dist, order, lengths))
        else:
            batches = (({"feats": r.feats[[r.index[r.pairs[j][0]] for j in b]]}, pad([r.pairs[j][1] for j in b]))
                       for b in order)
        n_batches = math.ceil(len(r.pairs) / a.batch_size)
        loss = train_one_epoch(r.dist.wrap(r.model), _Sized(batches, n_batches), r.optimizers["decoder"],
                               r.dec_params, a.label_smoothing, a.att_reg, desc=f"epoch {epoch} (frozen encoder)",
                               sample_prob=sample_prob, dist=r.dist)
        return {"train_loss": loss}

    def dev_features(self) -> torch.Tensor:
        r = self.run
        return r.feats[[r.index[n] for n in r.dev_names]]


class AdaptStage(FrozenStage):
    """The frozen stage with Learning without Forgetting (``adapt.py``): cross-entropy on the new
    captions plus ``--distill`` x the distillation from the teacher along its caption of each image."""
    name = "adapt"

    def __init__(self, run: Run, first: int, last: int):
        super().__init__(run, first, last)
        self.targets = None

    def _prepare(self) -> None:
        """The teacher's caption of every training image, once per process (so a resumed run
        makes them again, identically: beam search is deterministic)."""
        r = self.run
        if r.dist.distributed:
            raise SystemExit("--init with --distill trains in one process (a library's captions are few): "
                             "run it without torchrun, or with --distill 0")
        feats = Rows(r.feats, [r.index[n] for n in r.train_names])
        caps = teacher_captions(r.teacher, feats, beam_size=r.args.eval_beam, max_len=r.args.max_len)
        self.targets = dict(zip(r.train_names, caps))

    def train_one_epoch(self, epoch: int, sample_prob: float) -> dict:
        r, a = self.run, self.run.args
        if self.targets is None:
            self._prepare()
        model, teacher, dev = r.model, r.teacher, r.dist.device
        lengths = [len(c) for _, c in r.pairs]
        order = length_bucketed_batches(lengths, a.batch_size, r.g)
        model.train()
        totals = {"train_loss": 0.0, "train_xe": 0.0, "train_distill": 0.0}
        bar = tqdm(order, desc=f"epoch {epoch} (adapt, distilled)", unit="batch", mininterval=5)
        for b in bar:
            names = [r.pairs[j][0] for j in b]
            feats = r.feats[[r.index[n] for n in names]].to(dev)
            caps = pad([r.pairs[j][1] for j in b]).to(dev)
            _, xe = model(feats=feats, captions=caps, label_smoothing=a.label_smoothing, att_reg=a.att_reg,
                          sample_prob=sample_prob)
            told = pad([self.targets[n] for n in names]).to(dev)
            student, _ = model.teacher_forced(feats, told[:, :-1])
            with torch.no_grad():
                guide, _ = teacher.teacher_forced(feats, told[:, :-1])
            kd = distillation_loss(student, guide, told[:, 1:], a.distill_temperature)
            loss = xe + a.distill * kd
            r.optimizers["decoder"].zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(r.dec_params, 5.0)
            r.optimizers["decoder"].step()
            for k, v in (("train_loss", loss), ("train_xe", xe), ("train_distill", kd)):
                totals[k] += v.item() / len(order)
            bar.set_postfix(xe=f"{xe.item():.3f}", kd=f"{kd.item():.3f}", refresh=False)
        return {k: round(v, 4) for k, v in totals.items()}


class FinetuneStage(Stage):
    name = "finetune"

    def begin(self) -> None:
        self.run.restart_from_best("best_frozen.safetensors")

    def set_lr(self, epoch: int) -> None:
        # per-epoch step decay, restarted for this stage at its own, lower base rates
        a = self.run.args
        decay = a.lr_decay ** (epoch - self.first)
        for grp in self.run.optimizers["decoder"].param_groups:
            grp["lr"] = a.lr * a.finetune_decoder_lr_scale * decay
        for grp in self.run.optimizers["encoder"].param_groups if "encoder" in self.run.optimizers else []:
            grp["lr"] = a.finetune_lr * decay

    def train_one_epoch(self, epoch: int, sample_prob: float) -> dict:
        r, a = self.run, self.run.args
        r.model.encoder.set_trainable(a.finetune_blocks)
        if r.dist.device.type == "cuda":
            r.model.encoder.to(memory_format=torch.channels_last)
        loader = finetune_loader(r.ds, r.train_names, r.vocab, r.model.preprocess, a, r.g, r.dist)
        loss = train_one_epoch(r.dist.wrap(r.model), _Sized((({"images": x}, c, *rest) for x, c, *rest in loader),
                                                             len(loader)),
                               _Multi(r.optimizers), r.dec_params + r.enc_params, a.label_smoothing,
                               a.att_reg, desc=f"epoch {epoch} (fine-tuning)", sample_prob=sample_prob, dist=r.dist)
        r.model.encoder.set_trainable(0)
        r.model.eval()
        return {"train_loss": loss}

    def dev_features(self) -> torch.Tensor:
        r = self.run
        if not r.dist.is_main:   # only rank 0 evaluates
            return None
        return extract_features(r.model.encoder, [r.ds.image_dir / n for n in r.dev_names],
                                workers=r.args.workers, progress=False)


class ScstStage(Stage):
    name = "scst"

    def __init__(self, run: Run, first: int, last: int, cached_features):
        super().__init__(run, first, last)
        self.cached_features = cached_features   # train.cached_features: the final encoder's grids
        self.train_feats = self.dev_feats = self.scorer = None

    def begin(self) -> None:
        self.run.restart_from_best("best_xe.safetensors")

    def set_lr(self, epoch: int) -> None:
        for grp in self.run.optimizers["decoder"].param_groups:
            grp["lr"] = self.run.args.scst_lr

    def _prepare(self) -> None:
        """The final encoder's grids, cached in the run folder; on the first SCST epoch of a
        process, so a resumed run prepares them too."""
        r, a = self.run, self.run.args
        idx, store = self.cached_features(r.out / "features_final_encoder.npy", r.model.encoder, r.ds,
                                          r.train_names + r.dev_names, a.workers, dist=r.dist)
        self.train_feats = Rows(store, [idx[n] for n in r.train_names])   # read batch by batch
        self.dev_feats = store[[idx[n] for n in r.dev_names]]
        self.scorer = reward_scorer([[tokenize(c)[:a.max_len] for c in r.ds.captions[n]] for n in r.train_names])

    def train_one_epoch(self, epoch: int, sample_prob: float) -> dict:
        r, a = self.run, self.run.args
        if self.train_feats is None:
            self._prepare()
        res = scst_one_epoch(r.model, self.train_feats, self.scorer, r.vocab, r.optimizers["decoder"],
                             r.dec_params, a.scst_batch_size, a.scst_samples, a.scst_max_len, generator=r.g,
                             desc=f"epoch {epoch} (SCST)", candidates=a.scst_candidates, dist=r.dist)
        return {"train_loss": res["loss"], "train_reward": res["reward"]}

    def dev_features(self) -> torch.Tensor:
        return self.dev_feats


def plan(run: Run, cached_features) -> list[Stage]:
    """The run's stages in order: ``--epochs`` frozen, ``--finetune-epochs`` fine-tuning,
    ``--scst-epochs`` SCST; epochs are numbered through the whole plan."""
    a = run.args
    xe = a.epochs + a.finetune_epochs
    first = AdaptStage if run.teacher is not None else FrozenStage
    return [first(run, 1, a.epochs), FinetuneStage(run, a.epochs + 1, xe),
            ScstStage(run, xe + 1, xe + a.scst_epochs, cached_features)]
