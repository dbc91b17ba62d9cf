"""Ensembles: several trained checkpoints caption together, one beam search over the mean of
their word log-probabilities (each model with its own encoder, grid and LSTM state).

    captioner evaluate --model runs/a/best.safetensors --model runs/b/best.safetensors --split dev
    captioner caption photo.jpg --model a.safetensors --model b.safetensors

An ensemble costs one encoder and one decoder per member; the README measures what it buys.
The members must share the vocabulary (they do when trained on the same split with the same
``--min-count``); each keeps its own input size, so a 224-px and a 260-px model can be mixed.
"""
from __future__ import annotations

from captioner.search import log_softmax


class EnsembleDecoder:
    """The ``step()`` interface of one decoder (model.py) over several: ``init_state`` takes one
    feature grid per member, states and memories are the members' tuples laid end to end, and
    ``step`` returns the mean log-probability of the next word (the geometric mean of the
    members' distributions, renormalised by the caller's log_softmax).  Attention comes from
    the first member that has it."""

    def __init__(self, decoders):
        self.members = list(decoders)
        self._sizes: list[tuple[int, int]] = []   # (state tensors, memory tensors) per member

    def init_state(self, feats: list):
        if len(feats) != len(self.members):
            raise ValueError(f"{len(feats)} feature grids for {len(self.members)} ensemble members")
        states, memories, sizes = [], [], []
        for dec, f in zip(self.members, feats):
            s, m = dec.init_state(f)
            m = tuple(m) if m is not None else ()
            states += s
            memories += m
            sizes.append((len(s), len(m)))
        self._sizes = sizes
        return tuple(states), tuple(memories)

    def step(self, words, state, memory):
        logp, alpha, new_state = 0.0, None, []
        i = j = 0
        for dec, (ns, nm) in zip(self.members, self._sizes):
            mem = tuple(memory[j:j + nm]) if nm else None
            logits, s, a = dec.step(words, tuple(state[i:i + ns]), mem)
            logp = logp + log_softmax(logits)
            new_state += s
            alpha = a if alpha is None else alpha
            i, j = i + ns, j + nm
        return logp / len(self.members), tuple(new_state), alpha


class Ensemble:
    """What ``search.generate`` needs from a model (``decoder``, ``cfg``) for several models, of
    any back-end: the arithmetic is the array API's (``search.log_softmax``)."""

    def __init__(self, models):
        first = models[0]
        for m in models[1:]:
            if m.cfg.vocab_size != first.cfg.vocab_size:
                raise ValueError(f"ensemble members have different vocabularies "
                                 f"({first.cfg.vocab_size} vs {m.cfg.vocab_size} words)")
        self.cfg = first.cfg
        self.decoder = EnsembleDecoder([m.decoder for m in models])
