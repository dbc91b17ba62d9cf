"""Batched caption generation: greedy (beam size 1), beam search and constrained beam search,
one code path.

Every image of a batch carries ``beam_size`` rows through ``decoder.step()``; finished
beams keep their score and only emit <end>.  Hypotheses are ranked by
``log P / length ** length_penalty`` (0 = raw log-probability, 1 = mean per word, the default).
The attention weights of each kept word are returned for plotting.

Constrained beam search (Anderson et al. 2017, "Guided Open Vocabulary Image Captioning with
Constrained Beam Search"; the nocaps baseline's decoder): ``required[b]`` is a set of word ids of
which image b's caption must contain one (a word and its plural, say).  The constraint is a
finite-state machine with two states, "not yet" and "done"; each state keeps its own
``beam_size`` beams, a beam moves to "done" by emitting a required word, and the caption comes
from the best finished beam of "done".  Without constraints there is one state and the search
is plain beam search, the same arithmetic as before.
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
             no_repeat_ngram: int = DEFAULT_NO_REPEAT_NGRAM,
             required: list | None = None, also_unconstrained: bool = False):
    """feats [B, L, D] (``model.encode(images)``) -> for each image its ``n_best`` hypotheses;
    for an ``ensemble.Ensemble``, a list with one such grid per member.
    ``no_repeat_ngram=n`` forbids any word that would repeat an n-gram of the same caption.
    ``required``: per image, None or a collection of word ids one of which the caption must
    contain (constrained beam search); an image whose constraint cannot be met within
    ``max_len`` words gets an empty list.  ``also_unconstrained=True`` runs the plain beam search
    in the same pass, as a third automaton state that ignores the constraint, and returns
    ``(plain results, constrained results)``: the plain ones are exactly what a call without
    ``required`` gives, for the cost of one decoding pass with more rows instead of two passes."""
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
    start, end = 1, 2
    # the constraint automaton: S states of K beams each, rows image-major [image, state, beam]
    constrained = required is not None and any(r for r in required)
    free = int(constrained and also_unconstrained)   # a state that ignores the constraint: plain beam search
    N, D = free, free + 1                    # the "not yet" and "done" states
    S = free + 2 if constrained else 1
    R = S * K                                # rows per image
    trans = None                             # [n, S_from, S_to, V]: 0 where a word moves between states
    if constrained:
        req = torch.zeros(B, vocab_size, dtype=torch.bool, device=device)
        for b, r in enumerate(required):
            if r:
                req[b, list(r)] = True
        has_req = req.any(1)
        ninf = float("-inf")
        trans = torch.full((B, S, S, vocab_size), ninf, device=device)
        if free:
            trans[:, 0, 0] = 0.0                        # the free state keeps to itself
        trans[:, N, N] = torch.where(req, ninf, 0.0)   # "not yet" stays with any other word
        trans[:, N, D] = torch.where(req, 0.0, ninf)   # a required word moves it to "done"
        trans[:, D, D] = 0.0                            # "done" stays done
    state, memory = dec.init_state(feats)
    rows = torch.arange(B, device=device).repeat_interleave(R)  # row -> image
    state = tuple(s[rows] for s in state)  # memory stays one entry per image, shared by its beams

    banned = torch.tensor(NEVER_GENERATED, device=device)
    words = torch.full((B * R,), start, dtype=torch.long, device=device)
    scores = torch.full((B, R), float("-inf"), device=device)
    scores[:, 0] = 0.0                       # all beams start identical: keep one alive
    if free:
        scores[:, N * K] = 0.0               # and one in "not yet"
    lengths = torch.zeros(B, R, device=device)
    done = torch.zeros(B, R, dtype=torch.bool, device=device)
    tokens = torch.zeros(B, R, 0, dtype=torch.long, device=device)
    alphas = None
    images = torch.arange(B, device=device)  # original index of each image still being decoded
    final = [None] * B                       # (scores, lengths, tokens, alphas) once an image is done
    recorded = torch.zeros(B, dtype=torch.bool, device=device)
    for step in range(max_len + 1):
        n = images.numel()
        logits, state, alpha = dec.step(words, state, memory)
        logp = logits.float().log_softmax(-1)
        logp[:, banned] = float("-inf")
        logp = logp.view(n, R, vocab_size)
        if no_repeat_ngram:
            block_repeats(logp, tokens, no_repeat_ngram)
        if constrained:
            # a caption may not end before it has met its constraint
            ny = slice(N * K, (N + 1) * K)
            logp[:, ny, end] = torch.where(has_req.unsqueeze(1), float("-inf"), logp[:, ny, end])
        # a finished beam may only continue with <end> at no cost
        fin = torch.full_like(logp[0, 0], float("-inf"))
        fin[end] = 0.0
        logp = torch.where(done.unsqueeze(2), fin, logp)
        total = scores.unsqueeze(2) + logp                                 # [n, R, V]
        if constrained:
            # each target state chooses its K beams among every (source beam, word) that leads to it
            total = total.view(n, S, 1, K, vocab_size) + trans.unsqueeze(3)   # [n, S_from, S_to, K, V]
            cand = total.transpose(1, 2).reshape(n, S, R * vocab_size)
        else:
            cand = total.view(n, 1, R * vocab_size)
        scores, idx = cand.topk(K, dim=2)                                  # [n, S, K]
        scores, idx = scores.view(n, R), idx.view(n, R)
        origin, word = idx // vocab_size, idx % vocab_size                 # source row within the image
        gather = (origin + torch.arange(n, device=device).unsqueeze(1) * R).view(-1)
        state = tuple(s[gather] for s in state)
        prev_done = done.gather(1, origin)
        lengths = lengths.gather(1, origin) + (~prev_done).float()
        tokens = torch.cat([tokens.gather(1, origin.unsqueeze(2).expand_as(tokens)),
                            word.unsqueeze(2)], 2)
        if alpha is not None:
            a = alpha.view(n, R, 1, -1)
            alphas = a if alphas is None else torch.cat(
                [alphas.gather(1, origin.view(n, R, 1, 1).expand_as(alphas)), a], 2)
        done = prev_done | (word == end)
        words = word.view(-1)
        # rows with no live hypothesis (a "done" state not reached yet) do not hold an image back
        settled = done | torch.isinf(scores)
        finished = settled.all(1)
        if constrained:
            # a constrained image is done once its "done" state holds only ended beams: its
            # "not yet" beams may not end and would otherwise run to max_len
            met = settled[:, D * K:].all(1) & torch.isfinite(scores[:, D * K:]).any(1)
            if free:
                met &= settled[:, :K].all(1)     # and the plain search has ended too
            finished = torch.where(has_req, met, finished)
        if step == max_len:
            finished = torch.ones(n, dtype=torch.bool, device=device)
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
            rows = keep.repeat_interleave(R)
            images, scores, lengths, done, tokens = images[keep], scores[keep], lengths[keep], done[keep], tokens[keep]
            alphas = alphas[keep] if alphas is not None else None
            trans = trans[keep] if trans is not None else None
            has_req = has_req[keep] if constrained else None
            state = tuple(s[rows] for s in state)
            memory = tuple(m[keep] for m in memory) if memory is not None else None
            words, recorded = words[rows], recorded[keep]

    def best(b: int, rows: slice) -> list[Hypothesis]:
        sc, ln, tk, al = (t[rows] if t is not None else None for t in final[b])
        norm = sc / ln.clamp(min=1).pow(length_penalty)
        hyps = []
        for k in norm.argsort(descending=True)[:n_best].tolist():
            if not torch.isfinite(sc[k]):
                continue                     # the constraint was never met
            seq = tk[k].tolist()
            m = seq.index(end) if end in seq else len(seq)
            att = al[k, :m].float().cpu() if al is not None else None
            hyps.append(Hypothesis(seq[:m], float(sc[k]), float(norm[k]), att))
        return hyps

    if not constrained:
        return [best(b, slice(0, K)) for b in range(B)]
    # an image with a constraint answers from "done"; one without, from the plain rows
    met = [best(b, slice(D * K, R)) if required[b] else None for b in range(B)]
    if free:
        return [best(b, slice(0, K)) for b in range(B)], [m or [] for m in met]
    return [m if m is not None else best(b, slice(N * K, D * K)) for b, m in enumerate(met)]
