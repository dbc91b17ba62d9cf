"""ImageNet tags: what the encoder's own ImageNet classifier sees in a photo, and which caption
words may name it.

The encoder was pre-trained as an ImageNet classifier; its 1,000-class head still works on the
fine-tuned trunk's pooled grid, which the captioner computes anyway, so tags cost one small
matrix product and no second encoder pass.  The head's weights are stored in the model file
(``knowledge.tagger.*``, written by ``calibrate.py``).

ImageNet classes are WordNet synsets; ``assets/imagenet_classes.json`` (made by
``tools/imagenet_words.py``) lists for each class a readable name and the single words that name
it, from the class itself up its hypernyms (Egyptian cat -> cat, espresso -> coffee, missile ->
rocket).  A class's *caption words* are the first of those the model's vocabulary holds, with
its plural when the vocabulary has it: the word set constrained beam search may require.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from array_api_compat import array_namespace, is_array_api_obj

from captioner.vocab import Vocab

CLASSES_FILE = Path(__file__).parent.parent / "assets" / "imagenet_classes.json"


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[dict, ...]:
    """The 1,000 classes in the order of timm's and torchvision's ImageNet heads (read once:
    an immutable asset of the package)."""
    return tuple(json.loads(CLASSES_FILE.read_text())["classes"])


@dataclass
class Tag:
    name: str          # readable class name, e.g. "Egyptian cat"
    prob: float        # the classifier's softmax probability
    word: str | None   # the caption word that names it, e.g. "cat", if the vocabulary has one

    def to_dict(self) -> dict:
        return {"name": self.name, "prob": round(self.prob, 4), **({"word": self.word} if self.word else {})}


def plural(word: str) -> str:
    return word + "es" if word.endswith(("s", "x", "ch", "sh")) else word[:-1] + "ies" \
        if word.endswith("y") and word[-2:-1] not in "aeiou" else word + "s"


def caption_words(vocab: Vocab) -> list[tuple[int, ...]]:
    """Per class, the vocabulary ids of the word naming it and of its plural (empty: none)."""
    out = []
    for c in imagenet_classes():
        ids: tuple[int, ...] = ()
        for w in c["words"]:
            if w in vocab.stoi:
                ids = tuple(vocab.stoi[x] for x in (w, plural(w)) if x in vocab.stoi)
                break
        out.append(ids)
    return out


class Tagger:
    """The ImageNet head on pooled features: [B, D] -> probabilities [B, 1000], and tags."""

    def __init__(self, weight, bias, vocab: Vocab):
        if weight.shape[0] != len(imagenet_classes()):
            raise ValueError(f"ImageNet head has {weight.shape[0]} classes, expected {len(imagenet_classes())}")
        self.weight, self.bias = np.asarray(weight, np.float32), np.asarray(bias, np.float32)
        self.vocab = vocab
        self.words = caption_words(vocab)
        self._devices = {}                  # device -> the head there (``domain.on_device``)

    def probs(self, pooled):
        """pooled [B, D] -> probabilities [B, 1000], in ``pooled``'s array type (on a GPU: there)."""
        from captioner.knowledge.domain import on_device

        pooled = pooled if is_array_api_obj(pooled) else np.asarray(pooled, np.float32)
        xp = array_namespace(pooled)
        w = on_device({"weight": self.weight, "bias": self.bias}, self._devices, pooled)
        z = xp.astype(pooled, xp.float32) @ xp.permute_dims(w["weight"], (1, 0)) + w["bias"]
        z = xp.exp(z - xp.max(z, axis=1, keepdims=True))
        return z / xp.sum(z, axis=1, keepdims=True)

    def top(self, probs: np.ndarray, k: int = 5) -> list[list[Tag]]:
        idx = top_k(probs, k)
        classes = imagenet_classes()
        return [[Tag(classes[i]["name"], float(pr[i]), self.vocab.itos[self.words[i][0]] if self.words[i] else None)
                 for i in ix.tolist()] for pr, ix in zip(probs, idx)]


def top_k(probs: np.ndarray, k: int) -> np.ndarray:
    """[B, C] -> the indices of each row's k largest, largest first, ties in index order: exactly
    ``np.argsort(-probs, kind="stable")[:, :k]``, but sorting only the candidates a partition leaves
    (every value at least the k-th largest), not all C."""
    neg = -np.asarray(probs)
    if k >= neg.shape[1]:
        return np.argsort(neg, axis=1, kind="stable")[:, :k]
    kth = np.take_along_axis(neg, np.argpartition(neg, k - 1, axis=1)[:, :k], 1).max(1)
    out = []
    for row, limit in zip(neg, kth):
        cand = np.flatnonzero(row <= limit)      # ascending index order: a stable sort keeps ties so
        out.append(cand[np.argsort(row[cand], kind="stable")][:k])
    return np.stack(out) if out else np.zeros((0, k), np.int64)
