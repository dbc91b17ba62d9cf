"""What a model knows about its own limits, stored in its model file and applied to every caption.

One object, ``Knowledge``, bundles:
  * the ImageNet tagger (``tags.py``): tags, and the words guided decoding may require;
  * the out-of-domain check (``domain.py``) with its dev-chosen threshold and the sorted dev
    distances (to say how unusual a photo beyond the threshold is);
  * the confidence calibrator (``confidence.py``).

All of it is computed by ``calibrate.py`` when a model is calibrated or exported, and written
into the model file as ``knowledge.*`` tensors plus a ``knowledge`` JSON entry in its header;
loading reads it back and never recomputes anything.

Guided captions (constrained beam search, ``search.py``) are used only where measurement on the
dev split found them honest and harmless: the photo is in domain, its top ImageNet class has
probability >= 0.5 and maps to a vocabulary word the unguided caption does not already contain
(nor a broader word for it), and the decoder itself finds the guided caption nearly as likely as
the unguided one (length-normalised log-probability at most 0.1 lower).  The guided search runs
in the same decoding pass as the unguided one (``generate(..., also_unconstrained=True)``).
Out of domain the guided captions still invented a person or a dog in 92 % of cases (docs/knowledge.md), so there the caption stays
unguided and the alt text does not use it.
"""
from __future__ import annotations

import numpy as np
from array_api_compat import is_array_api_obj, to_device

from captioner.modelfile import KNOWLEDGE as PREFIX
from captioner.knowledge.confidence import Calibrator, features
from captioner.knowledge.domain import FALSE_ALARM, DomainCheck
from captioner.knowledge.tags import Tagger, imagenet_classes, plural
from captioner.vocab import Vocab

# chosen on the dev split (benchmarks/bench_knowledge.py --sweep; docs/knowledge.md): in domain, loss 0.1,
# minimum probability 0.5 / 0.7 / 0.9 -> dev CIDEr-D 0.539 / 0.538 / 0.538 (unguided 0.536); minimum 0.5,
# loss 0.02 / 0.05 / 0.1 / 0.2 -> 0.536 / 0.537 / 0.539 / 0.537
GUIDE_MIN_PROB = 0.5
GUIDE_MAX_LOSS = 0.1


class ExpertKnowledge:
    """What one expert (decoder) knows of its limits: its domain check, its sorted dev distances and
    its confidence calibrator."""

    def __init__(self, domain: DomainCheck, dev_distances, calibrator: Calibrator | None = None):
        self.domain, self.calibrator = domain, calibrator
        self.dev_distances = np.sort(np.asarray(dev_distances, np.float32))

    def to_file(self, prefix: str) -> tuple[dict, dict]:
        tensors = {f"{prefix}domain.proj": self.domain.proj, f"{prefix}domain.bank": self.domain.bank,
                   f"{prefix}domain.dev_distances": self.dev_distances}
        info = {"domain": {"k": self.domain.k, "threshold": self.domain.threshold, "false_alarm": FALSE_ALARM},
                "calibrator": self.calibrator.to_dict() if self.calibrator else None}
        return tensors, info

    @classmethod
    def from_file(cls, t: dict, info: dict, prefix: str = "") -> "ExpertKnowledge":
        d = info["domain"]
        return cls(DomainCheck(t[f"{prefix}domain.proj"], t[f"{prefix}domain.bank"], d["k"], d["threshold"]),
                   t[f"{prefix}domain.dev_distances"],
                   Calibrator.from_dict(info["calibrator"]) if info.get("calibrator") else None)


def _numpy(x) -> np.ndarray:
    return np.asarray(to_device(x, "cpu"))


class Knowledge:
    """The tagger, shared, and per expert (``experts[0]``: the model's own decoder; more in a model
    adapted to a new world, ``training/adapt.py``) its ``ExpertKnowledge``.  An image goes to the
    expert whose domain it is nearest relative to that expert's threshold (distance / threshold: the
    gate of Expert Gate, Aljundi et al. 2017, with k-NN distances for its autoencoders); it is in
    domain when that expert's check says so."""

    def __init__(self, tagger: Tagger, domain: DomainCheck, dev_distances, calibrator: Calibrator | None = None,
                 more: list[ExpertKnowledge] | None = None):
        self.tagger = tagger
        self.experts = [ExpertKnowledge(domain, dev_distances, calibrator), *(more or [])]
        classes = imagenet_classes()
        # every vocabulary word that names a class or something broader than it ("dog" for a
        # greyhound): a caption holding one already names the object and is not guided
        stoi = tagger.vocab.stoi
        self.named_by = [{stoi[x] for w in c["words"] for x in (w, plural(w)) if x in stoi} for c in classes]

    # the model's own expert's parts, by their old names
    domain = property(lambda self: self.experts[0].domain)
    dev_distances = property(lambda self: self.experts[0].dev_distances)

    @property
    def calibrator(self):
        return self.experts[0].calibrator

    @calibrator.setter
    def calibrator(self, cal):
        self.experts[0].calibrator = cal

    # ------------------------------------------------------------------ file round trip
    def to_file(self) -> tuple[dict, dict]:
        tensors, info = self.experts[0].to_file(PREFIX)
        tensors.update({f"{PREFIX}tagger.weight": self.tagger.weight, f"{PREFIX}tagger.bias": self.tagger.bias})
        more = []
        for i, e in enumerate(self.experts[1:], 1):
            t, inf = e.to_file(f"{PREFIX}experts.{i}.")
            tensors.update(t)
            more.append(inf)
        if more:
            info["experts"] = more
        return tensors, info

    @classmethod
    def from_file(cls, tensors: dict, info: dict, vocab: Vocab) -> "Knowledge":
        t = {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
        own = ExpertKnowledge.from_file(t, info)
        more = [ExpertKnowledge.from_file(t, inf, f"experts.{i}.") for i, inf in enumerate(info.get("experts", []), 1)]
        return cls(Tagger(t["tagger.weight"], t["tagger.bias"], vocab), own.domain, own.dev_distances, own.calibrator,
                   more)

    # ------------------------------------------------------------------ per batch
    def assess(self, pooled):
        """pooled [B, D] (numpy) -> (ImageNet probabilities [B, 1000], distances [B], in_domain [B])."""
        probs, dist, in_domain, _ = self.assess_routed(pooled)
        return probs, dist, in_domain

    def assess_routed(self, pooled):
        """-> (probabilities, distances, in_domain, expert [B]): distance and flag of the expert each
        image goes to."""
        # pooled features on a GPU are scored there; what comes back is small ([B, 1000] and [E, B])
        pooled = pooled if is_array_api_obj(pooled) else np.asarray(pooled, np.float32)
        probs = _numpy(self.tagger.probs(pooled))
        dists = np.stack([_numpy(e.domain.distance(pooled)) for e in self.experts])      # [E, B]
        thresholds = np.asarray([e.domain.threshold for e in self.experts], np.float32)[:, None]
        route = np.argmin(dists / np.maximum(thresholds, 1e-6), axis=0)
        dist = dists[route, np.arange(dists.shape[1])]
        return probs, dist, dist <= thresholds[route, 0], route

    def candidates(self, probs: np.ndarray, in_domain: np.ndarray) -> list:
        """Per image, the word ids a guided caption would have to contain, or None where guidance
        is not tried: known before decoding, so the guided search can run in the same pass."""
        out = []
        p, cls = probs.max(1), probs.argmax(1)
        for pi, ci, ok in zip(p.tolist(), cls.tolist(), np.asarray(in_domain).tolist()):
            words = self.tagger.words[ci]
            out.append(set(words) if ok and pi >= GUIDE_MIN_PROB and words else None)
        return out

    def already_named(self, probs_row: np.ndarray, tokens: list[int]) -> bool:
        """The caption already holds a word for the top class or something broader ("dog")."""
        return bool(self.named_by[int(probs_row.argmax())] & set(tokens))

    @staticmethod
    def accept_guided(unguided_score: float, guided_score: float) -> bool:
        return guided_score >= unguided_score - GUIDE_MAX_LOSS

    def confidence(self, scores, lengths, distances, tag_probs, route=None) -> np.ndarray | None:
        """Calibrated P(acceptable), by each image's expert (``route``; default the model's own);
        beyond the out-of-domain threshold it is scaled by the share of dev photos at least that far
        (over the 5 % the threshold lets through), so it falls towards 0 as a photo moves away from
        anything the model learned from."""
        distances = np.asarray(distances, np.float32)
        route = np.zeros(len(distances), int) if route is None else np.asarray(route)
        x = features(scores, lengths, distances, tag_probs)
        out = np.zeros(len(distances), np.float32)
        for i, e in enumerate(self.experts):
            rows = np.flatnonzero(route == i)
            if not len(rows):
                continue
            if e.calibrator is None:
                return None
            p = e.calibrator(x[rows])
            n = len(e.dev_distances)
            tail = (n - np.searchsorted(e.dev_distances, distances[rows], side="left")) / n   # share at least as far
            scale = np.where(distances[rows] > e.domain.threshold, np.minimum(tail / FALSE_ALARM, 1.0), 1.0)
            out[rows] = p * scale
        return out
