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
# chosen on the dev split with the shipped model, beam 3 (off / 4 / 3 / 2 -> dev CIDEr-D
# 0.523 / 0.527 / 0.527 / 0.534; README): a word may not repeat a bigram of its own caption
DEFAULT_NO_REPEAT_NGRAM = 2
NEVER_GENERATED = (0, 1, 3)  # <pad>, <start>, <unk>


@dataclass
class Hypothesis:
    tokens: list[int]            # word ids, without <start>/<end>
    logprob: float               # sum of log-probabilities, <end> included
    score: float                 # length-normalised score used for ranking
    attention: torch.Tensor | None  # [len(tokens), L] or None for the plain decoder


def block_repeats(logp: torch.Tensor, tokens: torch.Tensor, n: int) -> None:
    """In place: -inf for every word that would complete an n-gram already in its row.
    ``logp`` [N, K, V], ``tokens`` [N, K, t]; vectorised over rows."""
    t = tokens.size(2)
    if t < n:
        return
    grams = tokens.unfold(2, n, 1)                                  # [N, K, t-n+1, n]
    prefix = tokens[:, :, t - n + 1:].unsqueeze(2)                  # the last n-1 words
    hit = (grams[..., :-1] == prefix).all(-1)                       # earlier n-grams with that start
    if bool(hit.any()):
        i, k, j = hit.nonzero(as_tuple=True)
        logp[i, k, grams[i, k, j, -1]] = float("-inf")


@torch.inference_mode()
def generate(model, feats: torch.Tensor, beam_size: int = 3, max_len: int | None = None,
             length_penalty: float = DEFAULT_LENGTH_PENALTY, n_best: int = 1,
             no_repeat_ngram: int = DEFAULT_NO_REPEAT_NGRAM) -> list[list[Hypothesis]]:
    """feats [B, L, D] (``model.encode(images)``) -> for each image its ``n_best`` hypotheses;
    for an ``ensemble.Ensemble``, a list with one such grid per member.
    ``no_repeat_ngram=n`` forbids any word that would repeat an n-gram of the same caption."""
    dec, vocab_size = model.decoder, model.cfg.vocab_size
    max_len = max_len or model.cfg.max_len
    dtype = next(dec.parameters()).dtype  # the decoder's precision (runtime.py)
    if isinstance(feats, (list, tuple)):
        feats = [f.to(dtype) for f in feats]
        first = feats[0]
    else:
        feats = first = feats.to(dtype)
    B, K, device = first.size(0), beam_size, first.device
    n_best = min(n_best, K)
    state, memory = dec.init_state(feats)
    rows = torch.arange(B, device=device).repeat_interleave(K)  # row -> image
    state = tuple(s[rows] for s in state)  # memory stays one entry per image, shared by its beams

    start, end = 1, 2
    banned = torch.tensor(NEVER_GENERATED, device=device)
    words = torch.full((B * K,), start, dtype=torch.long, device=device)
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0                       # all beams start identical: keep one alive
    lengths = torch.zeros(B, K, device=device)
    done = torch.zeros(B, K, dtype=torch.bool, device=device)
    tokens = torch.zeros(B, K, 0, dtype=torch.long, device=device)
    alphas = None
    images = torch.arange(B)                 # original index of each image still being decoded
    final = [None] * B                       # (scores, lengths, tokens, alphas) once an image is done
    recorded = torch.zeros(B, dtype=torch.bool)
    for step in range(max_len + 1):
        n = images.numel()
        logits, state, alpha = dec.step(words, state, memory)
        logp = logits.float().log_softmax(-1)
        logp[:, banned] = float("-inf")
        logp = logp.view(n, K, vocab_size)
        if no_repeat_ngram:
            block_repeats(logp, tokens, no_repeat_ngram)
        # a finished beam may only continue with <end> at no cost
        fin = torch.full_like(logp[0, 0], float("-inf"))
        fin[end] = 0.0
        logp = torch.where(done.unsqueeze(2), fin, logp)
        cand = (scores.unsqueeze(2) + logp).view(n, K * vocab_size)
        scores, idx = cand.topk(K, dim=1)
        origin, word = idx // vocab_size, idx % vocab_size
        gather = (origin + torch.arange(n, device=device).unsqueeze(1) * K).view(-1)
        state = tuple(s[gather] for s in state)
        prev_done = done.gather(1, origin)
        lengths = lengths.gather(1, origin) + (~prev_done).float()
        tokens = torch.cat([tokens.gather(1, origin.unsqueeze(2).expand_as(tokens)),
                            word.unsqueeze(2)], 2)
        if alpha is not None:
            a = alpha.view(n, K, 1, -1)
            alphas = a if alphas is None else torch.cat(
                [alphas.gather(1, origin.view(n, K, 1, 1).expand_as(alphas)), a], 2)
        done = prev_done | (word == end)
        words = word.view(-1)
        finished = done.all(1) if step < max_len else torch.ones(n, dtype=torch.bool)
        for j in (finished & ~recorded).nonzero().flatten().tolist():
            final[int(images[j])] = (scores[j], lengths[j], tokens[j], alphas[j] if alphas is not None else None)
        recorded = finished
        if bool(recorded.all()):
            break
        if int(recorded.sum()) * 4 >= n:
            # images whose beams have all ended leave the batch, so later words cost only the images
            # still being decoded; done in bulk (a quarter at a time) because copying the memory is
            # itself a cost
            keep = ~recorded
            rows = keep.repeat_interleave(K)
            images, scores, lengths, done, tokens = images[keep], scores[keep], lengths[keep], done[keep], tokens[keep]
            alphas = alphas[keep] if alphas is not None else None
            state = tuple(s[rows] for s in state)
            memory = tuple(m[keep] for m in memory) if memory is not None else None
            words, recorded = words[rows], recorded[keep]

    results = []
    for b in range(B):
        sc, ln, tk, al = final[b]
        norm = sc / ln.clamp(min=1).pow(length_penalty)
        hyps = []
        for k in norm.argsort(descending=True)[:n_best].tolist():
            seq = tk[k].tolist()
            m = seq.index(end) if end in seq else len(seq)
            att = al[k, :m].float().cpu() if al is not None else None
            hyps.append(Hypothesis(seq[:m], float(sc[k]), float(norm[k]), att))
        results.append(hyps)
    return results
