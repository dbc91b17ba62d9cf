"""Vocabulary: word <-> id, built from training captions with a minimum-count threshold,
saved and loaded as plain JSON (never pickled)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)


class Vocab:
    def __init__(self, words: list[str]):
        if list(words[:4]) != list(SPECIALS):
            raise ValueError(f"vocabulary must start with {SPECIALS}")
        self.itos = list(words)
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary has duplicate words")
        self.pad, self.start, self.end, self.unk = range(4)

    @classmethod
    def build(cls, token_lists, min_count: int = 5) -> "Vocab":
        counts = Counter(t for toks in token_lists for t in toks)
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls([*SPECIALS, *words])

    def __len__(self):
        return len(self.itos)

    def encode(self, tokens: list[str]) -> list[int]:
        return [self.start] + [self.stoi.get(t, self.unk) for t in tokens] + [self.end]

    def decode(self, ids) -> list[str]:
        out = []
        for i in ids:
            i = int(i)
            if i == self.end:
                break
            if i in (self.pad, self.start):
                continue
            out.append(self.itos[i])
        return out

    def to_json(self) -> str:
        return json.dumps(self.itos)

    @classmethod
    def from_json(cls, text: str) -> "Vocab":
        words = json.loads(text)
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError("vocabulary JSON must be a list of strings")
        return cls(words)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
