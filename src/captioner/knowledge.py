"""What a model knows about its own limits, stored in its model file and applied to every caption.

One object, ``Knowledge``, bundles:
  * the ImageNet tagger (``tags.py``): tags, and the words guided decoding may require;
  * the out-of-domain check (``domain.py``) with its dev-chosen threshold and the sorted dev
    distances (to say how unusual a photo beyond the threshold is);
  * the confidence calibrator (``confidence.py``).

All of it is computed by ``calibrate.py`` when a model is calibrated or exported, and written
into the model file as ``knowledge.*`` tensors plus a ``knowledge`` JSON entry in its header;
loading reads it back and never recomputes anything.

Guided captions (constrained beam search, ``decode.py``) are used only where measurement on the
dev split found them honest and harmless: the photo is in domain, its top ImageNet class has
probability >= 0.5 and maps to a vocabulary word the caption does not already contain (nor a
broader word for it), and the decoder itself finds the guided caption nearly as likely as the
unguided one (length-normalised log-probability at most 0.1 lower).  Out of domain the guided
captions still invented a person or a dog in 90 % of cases (README), so there the caption stays
unguided and the alt text does not use it.
"""
from __future__ import annotations

import torch

from .confidence import Calibrator, features
from .domain import FALSE_ALARM, DomainCheck
from .tags import Tagger, imagenet_classes
from .vocab import Vocab

GUIDE_MIN_PROB = 0.5     # dev: 0.5 / 0.7 / 0.9 -> CIDEr-D 0.539 / 0.539 / 0.538 (unguided 0.535)
GUIDE_MAX_LOSS = 0.1     # dev: 0.02 / 0.05 / 0.1 / 0.2 -> CIDEr-D 0.536 / 0.538 / 0.539 / 0.537
PREFIX = "knowledge."


class Knowledge:
    def __init__(self, tagger: Tagger, domain: DomainCheck, dev_distances: torch.Tensor,
                 calibrator: Calibrator | None = None):
        self.tagger, self.domain, self.calibrator = tagger, domain, calibrator
        self.dev_distances = dev_distances.float().sort().values
        classes = imagenet_classes()
        # every vocabulary word that names a class or something broader than it ("dog" for a
        # greyhound): a caption holding one already names the object and is not guided
        self.named_by = [{tagger.vocab.stoi[w] for w in c["words"] if w in tagger.vocab.stoi} for c in classes]

    # ------------------------------------------------------------------ file round trip
    def to_file(self) -> tuple[dict, dict]:
        tensors = {f"{PREFIX}tagger.weight": self.tagger.weight, f"{PREFIX}tagger.bias": self.tagger.bias,
                   f"{PREFIX}domain.proj": self.domain.proj, f"{PREFIX}domain.bank": self.domain.bank,
                   f"{PREFIX}domain.dev_distances": self.dev_distances}
        info = {"domain": {"k": self.domain.k, "threshold": self.domain.threshold, "false_alarm": FALSE_ALARM},
                "calibrator": self.calibrator.to_dict() if self.calibrator else None}
        return tensors, info

    @classmethod
    def from_file(cls, tensors: dict, info: dict, vocab: Vocab) -> "Knowledge":
        t = {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
        d = info["domain"]
        return cls(Tagger(t["tagger.weight"], t["tagger.bias"], vocab),
                   DomainCheck(t["domain.proj"], t["domain.bank"], d["k"], d["threshold"]),
                   t["domain.dev_distances"],
                   Calibrator.from_dict(info["calibrator"]) if info.get("calibrator") else None)

    # ------------------------------------------------------------------ per batch
    def assess(self, pooled: torch.Tensor):
        """pooled [B, D] -> (ImageNet probabilities [B, 1000], distances [B], in_domain [B])."""
        probs = self.tagger.probs(pooled)
        dist = self.domain.distance(pooled).cpu()
        return probs.cpu(), dist, self.domain.in_domain(dist)

    def required_words(self, probs: torch.Tensor, in_domain: torch.Tensor, captions: list[list[int]]) -> list:
        """Per image, the word ids guided decoding must place, or None where it is not tried."""
        out = []
        p, cls = probs.max(1)
        for pi, ci, ok, toks in zip(p.tolist(), cls.tolist(), in_domain.tolist(), captions):
            words = self.tagger.words[ci]
            if ok and pi >= GUIDE_MIN_PROB and words and not (self.named_by[ci] & set(toks)):
                out.append(set(words))
            else:
                out.append(None)
        return out

    @staticmethod
    def accept_guided(unguided_score: float, guided_score: float) -> bool:
        return guided_score >= unguided_score - GUIDE_MAX_LOSS

    def confidence(self, scores, lengths, distances: torch.Tensor, tag_probs) -> torch.Tensor | None:
        """Calibrated P(acceptable); beyond the out-of-domain threshold it is scaled by the share
        of dev photos at least that far (over the 5 % the threshold lets through), so it falls
        towards 0 as a photo moves away from anything the model learned from."""
        if self.calibrator is None:
            return None
        p = self.calibrator(features(scores, lengths, distances, tag_probs))
        n = len(self.dev_distances)
        tail = (n - torch.searchsorted(self.dev_distances, distances.float())) / n     # share at least as far
        scale = torch.where(distances > self.domain.threshold, (tail / FALSE_ALARM).clamp(max=1.0),
                            torch.ones_like(tail))
        return p * scale
