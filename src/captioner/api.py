"""The Python API every entry point calls: load a model once, caption images.

    import captioner
    model = captioner.load()                       # the shipped model, offline
    print(model.caption("photo.jpg").text)
    for path, result in model.caption_paths(["a.jpg", "b.png"]):   # batched, errors per image
        ...
    model, preprocess = captioner.load(with_preprocess=True)   # CLIP-style
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from . import checkpoint
from .decode import DEFAULT_LENGTH_PENALTY, DEFAULT_NO_REPEAT_NGRAM, generate
from .ensemble import Ensemble
from .images import ImageError, open_image
from .runtime import bf16_matmuls, make_encoder, resolve_precision


@dataclass
class Caption:
    text: str
    words: list[str]
    score: float                                   # length-normalised log-probability
    beams: list[tuple[str, float]] = field(default_factory=list)  # (text, score), best first
    attention: torch.Tensor | None = None          # [len(words), grid cells], attention decoder only
    grid: int = 0                                  # side of the attention grid

    def to_dict(self) -> dict:
        d = {"caption": self.text, "score": round(self.score, 4)}
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
                 no_repeat_ngram: int = DEFAULT_NO_REPEAT_NGRAM):
        self.device = torch.device(device)
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
        out = []
        for hyps in generate(self.decoding, feats, k, length_penalty=self.length_penalty, n_best=max(n_best, 1),
                             no_repeat_ngram=self.no_repeat_ngram):
            best = hyps[0]
            words = self.vocab.decode(best.tokens)
            out.append(Caption(" ".join(words), words, best.score,
                               [(" ".join(self.vocab.decode(h.tokens)), h.score) for h in hyps],
                               best.attention, side))
        return out

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
        loader = DataLoader(_Files(paths, self.preprocess), batch_size=batch_size, num_workers=workers,
                            collate_fn=_collate)
        for batch in loader:
            good = [(i, x) for i, x, err in batch if err is None]
            results = {}
            if good:
                caps = self.caption_tensors(torch.stack([x for _, x in good]), beam_size, n_best)
                results = {i: c for (i, _), c in zip(good, caps)}
            for i, _, err in batch:
                yield paths[i], results.get(i, err)


def load(path=None, device: str = "cpu", with_preprocess: bool = False, **kwargs):
    """Load a checkpoint (default: the shipped model). ``with_preprocess=True`` returns
    ``(captioner, preprocess)`` like CLIP's ``load()``."""
    c = Captioner(path, device, **kwargs)
    return (c, c.preprocess) if with_preprocess else c
