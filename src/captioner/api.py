"""The Python API every entry point calls: load a model once, caption images.

    import captioner
    model = captioner.load()                       # the shipped model, offline
    print(model.caption("photo.jpg").text)
    for path, result in model.caption_paths(["a.jpg", "b.png"]):   # batched, errors per image
        ...
    model, preprocess = captioner.load(with_preprocess=True)   # CLIP-style

Every Caption also says what the model knows of its limits (``knowledge.py``, stored in the
model file): ``in_domain``, ``confidence``, ``tags``, ``guided`` (the word a guided caption was
required to contain) and ``alt_text`` (``alttext.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from . import alttext, checkpoint
from .decode import DEFAULT_LENGTH_PENALTY, DEFAULT_NO_REPEAT_NGRAM, generate
from .ensemble import Ensemble
from .images import ImageError, open_image
from .knowledge import Knowledge
from .runtime import bf16_matmuls, make_encoder, resolve_device, resolve_precision
from .tags import Tag


@dataclass
class Caption:
    text: str
    words: list[str]
    score: float                                   # length-normalised log-probability
    beams: list[tuple[str, float]] = field(default_factory=list)  # (text, score), best first
    attention: torch.Tensor | None = None          # [len(words), grid cells]; None for the plain decoder
    grid: int = 0                                  # side of the attention grid
    alt_text: str = ""                             # the text recommended for an alt attribute
    in_domain: bool | None = None                  # resembles the training photos (None: model not calibrated)
    confidence: float | None = None                # calibrated P(caption acceptable)
    tags: list[Tag] = field(default_factory=list)  # top ImageNet classes, most probable first
    guided: str | None = None                      # the word a guided caption had to contain
    domain_distance: float | None = None           # distance to the nearest training photos

    def to_dict(self) -> dict:
        d = {"caption": self.text, "score": round(self.score, 4), "alt_text": self.alt_text,
             "in_domain": self.in_domain,
             "confidence": None if self.confidence is None else round(self.confidence, 4),
             "tags": [t.to_dict() for t in self.tags], "guided": self.guided,
             "domain_distance": None if self.domain_distance is None else round(self.domain_distance, 4)}
        if len(self.beams) > 1:
            d["beams"] = [{"caption": t, "score": round(s, 4)} for t, s in self.beams]
        return d


class _Files(Dataset):
    def __init__(self, paths, preprocess):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            return i, self.preprocess(open_image(self.paths[i])), None
        except ImageError as e:
            return i, None, str(e)
        except Exception as e:  # never let one odd file stop a batch
            return i, None, f"{self.paths[i]}: cannot read image ({type(e).__name__}: {e})"


def _collate(batch):
    return batch


class Captioner:
    """A loaded model with its preprocessing and vocabulary. ``path`` may list several checkpoints:
    they then caption as one ensemble (``ensemble.py``)."""

    def __init__(self, path=None, device: str = "cpu", beam_size: int = 3, length_penalty: float = DEFAULT_LENGTH_PENALTY,
                 encoder_weights: str | None = None, backend: str = "auto", precision: str = "auto",
                 no_repeat_ngram: int = DEFAULT_NO_REPEAT_NGRAM, knowledge: bool = True, guidance: bool = True):
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        # several checkpoints caption as one ensemble (ensemble.py); the first sets the preprocessing
        paths = list(path) if isinstance(path, (list, tuple)) else [path]
        if not paths:
            raise ValueError("no checkpoint given")
        loaded = [checkpoint.load_model(p, self.device, encoder_weights) for p in paths]
        (self.model, self.vocab, self.meta), self.members = loaded[0], [m for m, _, _ in loaded]
        for p, (m, vocab, _) in zip(paths[1:], loaded[1:]):
            if vocab.itos != self.vocab.itos:
                raise ValueError(f"{p}: its vocabulary differs from {paths[0] or 'the shipped model'}'s; "
                                 "ensemble members must share one")
            if (m.preprocess.mean, m.preprocess.std) != (self.preprocess.mean, self.preprocess.std):
                raise ValueError(f"{p}: its input normalisation differs from {paths[0] or 'the shipped model'}'s")
        # back-end and precision chosen once, here (runtime.py); the model code follows x.device/dtype
        self.encoders = [make_encoder(m.encoder, backend, self.device) for m in self.members]
        self.encode_images = self.encoders[0]
        self.backend = self.encode_images.name
        self.precision = resolve_precision(precision, self.device)
        if self.precision == "bf16":
            for m in self.members:
                bf16_matmuls(m.decoder)
        self.decoding = self.model if len(self.members) == 1 else Ensemble(self.members)
        self.beam_size, self.length_penalty, self.no_repeat_ngram = beam_size, length_penalty, no_repeat_ngram
        self.paths = [Path(p) if p else checkpoint.DEFAULT_MODEL for p in paths]
        self.path = self.paths[0]
        # the first member's file says what the model knows of its limits; read, never recomputed
        stored = checkpoint.load_knowledge(self.path) if knowledge else None
        self.knowledge = Knowledge.from_file(*stored, self.vocab) if stored else None
        self.guidance = guidance      # guided captions where the knowledge allows them (knowledge.py)

    def _grids(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Preprocessed images -> one feature grid per member; a member with another input size
        gets the batch resized (bicubic), as its own preprocessing would have done."""
        grids = []
        for m, enc in zip(self.members, self.encoders):
            size = m.preprocess.size
            xi = x if x.size(-1) == size else F.interpolate(x, size=(size, size), mode="bicubic",
                                                             align_corners=False, antialias=True)
            grids.append(enc(xi).to(self.device))
        return grids

    @property
    def preprocess(self):
        return self.model.preprocess

    @torch.inference_mode()
    def caption_tensors(self, x: torch.Tensor, beam_size: int | None = None, n_best: int = 1) -> list[Caption]:
        """Preprocessed images [B, 3, S, S] -> one Caption each."""
        k = beam_size or self.beam_size
        grids = self._grids(x)
        side = grids[0].size(-1)
        feats = [g.flatten(2).transpose(1, 2) for g in grids]
        feats = feats[0] if len(feats) == 1 else feats
        decode = dict(length_penalty=self.length_penalty, n_best=max(n_best, 1), no_repeat_ngram=self.no_repeat_ngram)
        kn = self.knowledge
        if kn is None:   # a model file that was never calibrated: the caption is the alt text
            out = [self._caption(hyps, side) for hyps in generate(self.decoding, feats, k, **decode)]
            for c in out:
                c.alt_text = alttext.compose(c.text, None, None, [])
            return out
        # the ImageNet head and the domain check run on the pooled grid already computed
        probs, dist, in_domain = kn.assess(grids[0].mean((2, 3)))
        cand = kn.candidates(probs, in_domain) if self.guidance else [None] * len(probs)
        todo = [i for i, r in enumerate(cand) if r]
        rest = [i for i, r in enumerate(cand) if not r]
        results, guided = [None] * len(probs), [None] * len(probs)

        def rows(idx):
            return [f[idx] for f in feats] if isinstance(feats, list) else feats[idx]

        if rest:
            for i, hyps in zip(rest, generate(self.decoding, rows(rest), k, **decode)):
                results[i] = hyps
        if todo:  # the images that may be guided: plain and guided search in one pass
            plain, constrained = generate(self.decoding, rows(todo), k, required=[cand[i] for i in todo],
                                          also_unconstrained=True, **decode)
            for i, p, g in zip(todo, plain, constrained):
                results[i] = p
                if g and not kn.already_named(probs[i], p[0].tokens) and kn.accept_guided(p[0].score, g[0].score):
                    results[i] = g
                    guided[i] = next(self.vocab.itos[t] for t in g[0].tokens if t in cand[i])
        out = [self._caption(hyps, side) for hyps in results]
        top = kn.tagger.top(probs, 5)
        conf = kn.confidence([c.score for c in out], [len(c.words) for c in out], dist, probs.max(1).values)
        for i, c in enumerate(out):
            c.tags, c.guided, c.in_domain = top[i], guided[i], bool(in_domain[i])
            c.domain_distance = float(dist[i])
            c.confidence = float(conf[i]) if conf is not None else None
            c.alt_text = alttext.compose(c.text, c.in_domain, c.confidence, c.tags)
        return out

    def _caption(self, hyps, side: int) -> Caption:
        best = hyps[0]
        words = self.vocab.decode(best.tokens)
        text = " ".join(words)
        return Caption(text, words, best.score, [(" ".join(self.vocab.decode(h.tokens)), h.score) for h in hyps],
                       best.attention, side)

    def _batches(self, paths: list, batch_size: int, workers: int = 0):
        """Yield (batch of (index, tensor or None, error or None), the readable images stacked with
        their indices): one bad file never stops the batch."""
        loader = DataLoader(_Files(paths, self.preprocess), batch_size=batch_size, num_workers=workers,
                            collate_fn=_collate)
        for batch in loader:
            good = [(i, x) for i, x, err in batch if err is None]
            yield batch, [i for i, _ in good], (torch.stack([x for _, x in good]) if good else None)

    @torch.inference_mode()
    def pooled_features(self, paths, batch_size: int = 32):
        """Yield (path, pooled encoder features [D] or an error message): the encoder only, for
        calibration (``calibrate.py``)."""
        paths = list(paths)
        for batch, idx, x in self._batches(paths, batch_size):
            pooled = dict(zip(idx, self._grids(x)[0].mean((2, 3)).float().cpu())) if idx else {}
            for i, _, err in batch:
                yield paths[i], pooled.get(i, err)

    def caption(self, images, beam_size: int | None = None, n_best: int = 1):
        """A path, PIL image, or a list of them -> Caption (or a list). Raises ImageError."""
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        x = torch.stack([self.preprocess(open_image(im)) for im in items])
        res = self.caption_tensors(x, beam_size, n_best)
        return res[0] if single else res

    def caption_paths(self, paths, batch_size: int = 16, workers: int = 0, beam_size: int | None = None,
                      n_best: int = 1):
        """Yield (path, Caption or error message) in input order; decoding and preprocessing run in
        ``workers`` processes while the model computes; a bad file never stops the batch."""
        paths = list(paths)
        for batch, idx, x in self._batches(paths, batch_size, workers):
            results = dict(zip(idx, self.caption_tensors(x, beam_size, n_best))) if idx else {}
            for i, _, err in batch:
                yield paths[i], results.get(i, err)


def load(path=None, device: str = "cpu", with_preprocess: bool = False, **kwargs):
    """Load a checkpoint (default: the shipped model). ``with_preprocess=True`` returns
    ``(captioner, preprocess)`` like CLIP's ``load()``."""
    c = Captioner(path, device, **kwargs)
    return (c, c.preprocess) if with_preprocess else c
