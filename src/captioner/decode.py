"""Batched caption generation: greedy (beam size 1) and beam search, one code path.

Every image of a batch carries ``beam_size`` rows through ``decoder.step()``; finished
beams keep their score and only emit <end>.  Hypotheses are ranked by
``log P / length ** length_penalty`` (0 = raw log-probability, 1 = mean per word, the default).
The attention weights of each kept word are returned for plotting.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# chosen on the dev split (0.7 / 1.0 / 1.5 -> dev CIDEr-D 0.515 / 0.517 / 0.512; README)
DEFAULT_LENGTH_PENALTY = 1.0


@dataclass
class Hypothesis:
    tokens: list[int]            # word ids, without <start>/<end>
    logprob: float               # sum of log-probabilities, <end> included
    score: float                 # length-normalised score used for ranking
    attention: torch.Tensor | None  # [len(tokens), L] or None for the plain decoder


@torch.inference_mode()
def generate(model, feats: torch.Tensor, beam_size: int = 3, max_len: int | None = None,
             length_penalty: float = DEFAULT_LENGTH_PENALTY, n_best: int = 1) -> list[list[Hypothesis]]:
    """feats [B, L, D] (``model.encode(images)``) -> for each image its ``n_best`` hypotheses."""
    dec, vocab_size = model.decoder, model.cfg.vocab_size
    max_len = max_len or model.cfg.max_len
    B, K = feats.size(0), beam_size
    n_best = min(n_best, K)
    feats = feats.float()
    state, memory = dec.init_state(feats)
    rows = torch.arange(B, device=feats.device).repeat_interleave(K)  # row -> image
    state = tuple(s[rows] for s in state)
    if memory is not None:
        memory = tuple(m[rows] for m in memory)

    start, end = 1, 2
    banned = torch.tensor([0, 1, 3], device=feats.device)  # <pad>, <start>, <unk> are never generated
    words = torch.full((B * K,), start, dtype=torch.long, device=feats.device)
    scores = torch.full((B, K), float("-inf"), device=feats.device)
    scores[:, 0] = 0.0                       # all beams start identical: keep one alive
    lengths = torch.zeros(B, K, device=feats.device)
    done = torch.zeros(B, K, dtype=torch.bool, device=feats.device)
    tokens = torch.zeros(B, K, 0, dtype=torch.long, device=feats.device)
    alphas = None
    for _ in range(max_len + 1):
        logits, state, alpha = dec.step(words, state, memory)
        logp = logits.float().log_softmax(-1)
        logp[:, banned] = float("-inf")
        logp = logp.view(B, K, vocab_size)
        # a finished beam may only continue with <end> at no cost
        fin = torch.full_like(logp[0, 0], float("-inf"))
        fin[end] = 0.0
        logp = torch.where(done.unsqueeze(2), fin, logp)
        cand = (scores.unsqueeze(2) + logp).view(B, K * vocab_size)
        scores, idx = cand.topk(K, dim=1)
        origin, word = idx // vocab_size, idx % vocab_size
        gather = (origin + torch.arange(B, device=feats.device).unsqueeze(1) * K).view(-1)
        state = tuple(s[gather] for s in state)
        prev_done = done.gather(1, origin)
        lengths = lengths.gather(1, origin) + (~prev_done).float()
        tokens = torch.cat([tokens.gather(1, origin.unsqueeze(2).expand_as(tokens)),
                            word.unsqueeze(2)], 2)
        if alpha is not None:
            a = alpha.view(B, K, 1, -1)
            alphas = a if alphas is None else torch.cat(
                [alphas.gather(1, origin.view(B, K, 1, 1).expand_as(alphas)), a], 2)
        done = prev_done | (word == end)
        words = word.view(-1)
        if bool(done.all()):
            break

    norm = scores / lengths.clamp(min=1).pow(length_penalty)
    order = norm.argsort(dim=1, descending=True)
    results = []
    for b in range(B):
        hyps = []
        for k in order[b, :n_best].tolist():
            seq = tokens[b, k].tolist()
            n = seq.index(end) if end in seq else len(seq)
            att = alphas[b, k, :n].cpu() if alphas is not None else None
            hyps.append(Hypothesis(seq[:n], float(scores[b, k]), float(norm[b, k]), att))
        results.append(hyps)
    return results
