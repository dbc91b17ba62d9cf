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

Written once for every back-end against the Python array API (``array-api-compat``): the same code
runs on the numpy arrays ONNX Runtime returns and on torch tensors (CPU or GPU), so inference,
training's dev evaluation and SCST's beam candidates share it.  What a back-end provides is a model
with ``cfg`` (``vocab_size``, ``max_len``) and a ``decoder`` with ``init_state(feats)`` and
``step(words, state, memory) -> (logits, state, attention)`` (``backends/``; ``ensemble.py`` for
several models).  Two operations the standard lacks, top-k and log-softmax, are the small helpers
below; everything else is the standard's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device as device_of, is_torch_namespace, to_device

# chosen on the dev split (0.7 / 1.0 / 1.5 -> dev CIDEr-D 0.515 / 0.517 / 0.512; README)
DEFAULT_LENGTH_PENALTY = 1.0
# chosen on the dev split with the shipped model, beam 3 (off / 4 / 3 / 2 -> dev CIDEr-D
# 0.523 / 0.527 / 0.527 / 0.534; README): a word may not repeat a bigram of its own caption
DEFAULT_NO_REPEAT_NGRAM = 2
NEVER_GENERATED = (0, 1, 3)  # <pad>, <start>, <unk>
NINF = float("-inf")


@dataclass
class Hypothesis:
    tokens: list[int]            # word ids, without <start>/<end>
    logprob: float               # sum of log-probabilities, <end> included
    score: float                 # length-normalised score used for ranking
    attention: Any = None        # [len(tokens), L] numpy array on the CPU, or None for the plain decoder


def log_softmax(x, xp=None):
    """Over the last axis, in float32 (torch's own kernel on tensors, so the torch path keeps its
    arithmetic)."""
    xp = xp or array_namespace(x)
    if is_torch_namespace(xp):
        return x.float().log_softmax(-1)
    x = xp.astype(x, xp.float32)
    m = xp.max(x, axis=-1, keepdims=True)
    z = x - m
    return z - xp.log(xp.sum(xp.exp(z), axis=-1, keepdims=True))


def topk(x, k: int, xp=None):
    """The ``k`` largest values of the last axis and their indices, largest first."""
    xp = xp or array_namespace(x)
    if is_torch_namespace(xp):
        return x.topk(k, dim=-1)
    if k > 16:
        return _topk_select(x, k)
    # k passes of argmax (SIMD in numpy) beat argpartition's selection about 20 times over the
    # beams x vocabulary of a search step (benchmarks/bench_cores.py profiles the search), and 2
    # times for the domain check's 10 nearest of 6,000; equal values come lowest index first
    flat = np.array(x, copy=True).reshape(-1, x.shape[-1])
    rows = np.arange(flat.shape[0])
    idx = np.empty((flat.shape[0], k), np.intp)
    short = np.zeros(flat.shape[0], bool)     # rows whose maximum was -inf already (taken, or never finite)
    for j in range(k):
        i = np.argmax(flat, axis=-1)
        idx[:, j] = i
        short |= np.isneginf(flat[rows, i])
        flat[rows, i] = NINF
    vals = np.take_along_axis(x.reshape(flat.shape), idx, axis=-1)
    if short.any():   # fewer than k finite values: argmax would repeat an index; select among distinct ones
        vals[short], idx[short] = _topk_select(x.reshape(flat.shape)[short], k)
    return vals.reshape(*x.shape[:-1], k), idx.reshape(*x.shape[:-1], k)


def _topk_select(x, k: int):
    part = np.argpartition(-x, k - 1, axis=-1)[..., :k]        # unordered top k, then ordered
    vals = np.take_along_axis(x, part, axis=-1)
    order = np.argsort(-vals, axis=-1, kind="stable")
    return np.take_along_axis(vals, order, axis=-1), np.take_along_axis(part, order, axis=-1)


def take_rows(x, index, xp=None):
    """Rows ``index`` (non-negative integers, an array on ``x``'s device) of ``x``, along the first axis."""
    xp = xp or array_namespace(x)
    if is_torch_namespace(xp):
        # array-api-compat's take wraps the index in three more kernels (for negative indices,
        # which never occur here): on a GPU, launches the search's driving process waits on
        return x.index_select(0, index)
    return xp.take(x, index, axis=0)


def block_repeats(logp, tokens, n: int, xp=None) -> None:
    """In place: -inf for every word that would complete an n-gram already in its row.
    ``logp`` [N, K, V], ``tokens`` [N, K, t]; vectorised over rows."""
    xp = xp or array_namespace(logp)
    t = tokens.shape[2]
    if t < n:
        return
    grams = xp.stack([tokens[:, :, i:t - n + 1 + i] for i in range(n)], axis=-1)   # [N, K, t-n+1, n]
    prefix = tokens[:, :, t - n + 1:][:, :, None, :]                                # the last n-1 words
    hit = xp.all(grams[..., :-1] == prefix, axis=-1)                                # earlier n-grams with that start
    if not is_torch_namespace(xp) and not xp.any(hit):
        return   # (on a GPU this test would be one more wait for the device; nonzero below is one already)
    i, k, j = xp.nonzero(hit)
    logp[i, k, grams[i, k, j, n - 1]] = NINF


def generate(model, feats, beam_size: int = 3, max_len: int | None = None,
             length_penalty: float = DEFAULT_LENGTH_PENALTY, n_best: int = 1,
             no_repeat_ngram: int = DEFAULT_NO_REPEAT_NGRAM,
             required: list | None = None, also_unconstrained: bool = False):
    """feats [B, L, D] (the encoder's grid as a sequence) -> for each image its ``n_best``
    hypotheses; for an ensemble (``ensemble.py``), a list with one such grid per member.
    ``no_repeat_ngram=n`` forbids any word that would repeat an n-gram of the same caption.
    ``required``: per image, None or a collection of word ids one of which the caption must
    contain (constrained beam search); an image whose constraint cannot be met within
    ``max_len`` words gets an empty list.  ``also_unconstrained=True`` runs the plain beam search
    in the same pass, as a third automaton state that ignores the constraint, and returns
    ``(plain results, constrained results)``: the plain ones are exactly what a call without
    ``required`` gives, for the cost of one decoding pass with more rows instead of two passes.
    On torch tensors it runs under ``inference_mode`` (no graph is recorded: SCST re-scores its
    beams with one teacher-forced pass)."""
    first = feats[0] if isinstance(feats, (list, tuple)) else feats
    if is_torch_namespace(array_namespace(first)):
        import torch   # already imported by whoever made the tensors

        with torch.inference_mode():
            return _generate(model, feats, beam_size, max_len, length_penalty, n_best, no_repeat_ngram,
                             required, also_unconstrained)
    return _generate(model, feats, beam_size, max_len, length_penalty, n_best, no_repeat_ngram,
                     required, also_unconstrained)


def _generate(model, feats, beam_size, max_len, length_penalty, n_best, no_repeat_ngram, required,
              also_unconstrained):
    dec, vocab_size = model.decoder, model.cfg.vocab_size
    max_len = max_len or model.cfg.max_len
    first = feats[0] if isinstance(feats, (list, tuple)) else feats
    xp = array_namespace(first)
    B, K, dev = first.shape[0], beam_size, device_of(first)
    f32, i64 = xp.float32, xp.int64
    n_best = min(n_best, K)
    start, end = 1, 2
    # the constraint automaton: S states of K beams each, rows image-major [image, state, beam]
    constrained = required is not None and any(r for r in required)
    free = int(constrained and also_unconstrained)   # a state that ignores the constraint: plain beam search
    N, D = free, free + 1                    # the "not yet" and "done" states
    S = free + 2 if constrained else 1
    R = S * K                                # rows per image
    trans = has_req = None                   # [n, S_from, S_to, V]: 0 where a word moves between states
    if constrained:
        # made on the host and copied once (one small copy per image would each wait on a GPU)
        req_host = np.zeros((B, vocab_size), dtype=bool)
        for b, r in enumerate(required):
            if r:
                req_host[b, sorted(r)] = True
        req = xp.asarray(req_host, device=dev)
        has_req = xp.any(req, axis=1)
        zero, ninf = xp.zeros((B, vocab_size), dtype=f32, device=dev), xp.full((B, vocab_size), NINF, dtype=f32, device=dev)
        trans = xp.full((B, S, S, vocab_size), NINF, dtype=f32, device=dev)
        if free:
            trans[:, 0, 0, :] = 0.0                     # the free state keeps to itself
        trans[:, N, N, :] = xp.where(req, ninf, zero)   # "not yet" stays with any other word
        trans[:, N, D, :] = xp.where(req, zero, ninf)   # a required word moves it to "done"
        trans[:, D, D, :] = 0.0                         # "done" stays done
    state, memory = dec.init_state(feats)
    rows = xp.repeat(xp.arange(B, dtype=i64, device=dev), R)   # row -> image
    state = tuple(take_rows(s, rows, xp) for s in state)  # memory stays one entry per image, shared by its beams

    banned = xp.asarray(NEVER_GENERATED, dtype=i64, device=dev)
    words = xp.full((B * R,), start, dtype=i64, device=dev)
    scores = xp.full((B, R), NINF, dtype=f32, device=dev)
    scores[:, 0] = 0.0                       # all beams start identical: keep one alive
    if free:
        scores[:, N * K] = 0.0               # and one in "not yet"
    lengths = xp.zeros((B, R), dtype=f32, device=dev)
    done = xp.zeros((B, R), dtype=xp.bool, device=dev)
    tokens = xp.zeros((B, R, 0), dtype=i64, device=dev)
    alphas = None
    images = xp.arange(B, dtype=i64, device=dev)  # original index of each image still being decoded
    final = [None] * B                       # (scores, lengths, tokens, alphas) once an image is done
    recorded = xp.zeros((B,), dtype=xp.bool, device=dev)
    fin = xp.full((vocab_size,), NINF, dtype=f32, device=dev)
    fin[end] = 0.0                           # a finished beam may only continue with <end> at no cost
    for step in range(max_len + 1):
        n = images.shape[0]
        logits, state, alpha = dec.step(words, state, memory)
        logp = log_softmax(logits, xp)
        logp[:, banned] = NINF
        logp = xp.reshape(logp, (n, R, vocab_size))
        if no_repeat_ngram:
            block_repeats(logp, tokens, no_repeat_ngram, xp)
        if constrained:
            # a caption may not end before it has met its constraint
            ny = logp[:, N * K:(N + 1) * K, end]
            logp[:, N * K:(N + 1) * K, end] = xp.where(has_req[:, None], xp.full_like(ny, NINF), ny)
        logp = xp.where(done[:, :, None], fin, logp)
        total = scores[:, :, None] + logp                                  # [n, R, V]
        if constrained:
            # each target state chooses its K beams among every (source beam, word) that leads to it
            total = xp.reshape(total, (n, S, 1, K, vocab_size)) + trans[:, :, :, None, :]   # [n, S_from, S_to, K, V]
            cand = xp.reshape(xp.permute_dims(total, (0, 2, 1, 3, 4)), (n, S, R * vocab_size))
        else:
            cand = xp.reshape(total, (n, 1, R * vocab_size))
        scores, idx = topk(cand, K, xp)                                    # [n, S, K]
        scores, idx = xp.reshape(scores, (n, R)), xp.reshape(idx, (n, R))
        origin, word = idx // vocab_size, idx % vocab_size                 # source row within the image
        gather = xp.reshape(origin + xp.arange(n, dtype=i64, device=dev)[:, None] * R, (-1,))
        state = tuple(take_rows(s, gather, xp) for s in state)
        prev_done = xp.reshape(take_rows(xp.reshape(done, (-1,)), gather, xp), (n, R))
        lengths = xp.reshape(take_rows(xp.reshape(lengths, (-1,)), gather, xp), (n, R)) + xp.astype(~prev_done, f32)
        t = tokens.shape[2]
        tokens = xp.concat([xp.reshape(take_rows(xp.reshape(tokens, (n * R, t)), gather, xp), (n, R, t)),
                            word[:, :, None]], axis=2)
        if alpha is not None:
            a = xp.reshape(alpha, (n, R, 1, -1))
            if alphas is None:
                alphas = a
            else:
                ta, L = alphas.shape[2], alphas.shape[3]
                alphas = xp.concat([xp.reshape(take_rows(xp.reshape(alphas, (n * R, ta, L)), gather, xp), (n, R, ta, L)),
                                    a], axis=2)
        done = prev_done | (word == end)
        words = xp.reshape(word, (-1,))
        # rows with no live hypothesis (a "done" state not reached yet) do not hold an image back
        settled = done | xp.isinf(scores)
        finished = xp.all(settled, axis=1)
        if constrained:
            # a constrained image is done once its "done" state holds only ended beams: its
            # "not yet" beams may not end and would otherwise run to max_len
            met = xp.all(settled[:, D * K:], axis=1) & xp.any(xp.isfinite(scores[:, D * K:]), axis=1)
            if free:
                met = met & xp.all(settled[:, :K], axis=1)     # and the plain search has ended too
            finished = xp.where(has_req, met, finished)
        if step == max_len:
            finished = xp.ones((n,), dtype=xp.bool, device=dev)
        # how many images end here and how many have ended: one read from the device for both
        new = finished & ~recorded
        n_new, n_ended = np.asarray(to_device(xp.stack([xp.sum(xp.astype(new, i64)),
                                                        xp.sum(xp.astype(finished, i64))]), "cpu")).tolist()
        if n_new:
            ended = xp.nonzero(new)[0]
            # the images that ended at this step, brought to the CPU together: one copy per array, where
            # an index read and four copies per image each waited for a GPU
            got = [np.asarray(to_device(take_rows(x, ended, xp), "cpu")) if x is not None else None
                   for x in (images, scores, lengths, tokens, alphas)]
            for j, b in enumerate(got[0].tolist()):
                final[b] = tuple(x[j] if x is not None else None for x in got[1:])
        recorded = finished
        if n_ended == n:
            break
        if n_ended * 4 >= n:
            # images whose beams have all ended leave the batch, so later words cost only the images
            # still being decoded; done in bulk (a quarter at a time) because copying the memory is
            # itself a cost
            keep = xp.nonzero(~recorded)[0]
            rows = xp.reshape(keep[:, None] * R + xp.arange(R, dtype=i64, device=dev)[None, :], (-1,))
            images, scores, lengths, done, tokens = (take_rows(x, keep, xp) for x in (images, scores, lengths, done, tokens))
            alphas = take_rows(alphas, keep, xp) if alphas is not None else None
            trans = take_rows(trans, keep, xp) if trans is not None else None
            has_req = take_rows(has_req, keep, xp) if constrained else None
            state = tuple(take_rows(s, rows, xp) for s in state)
            memory = tuple(take_rows(m, keep, xp) for m in memory) if memory is not None else None
            words, recorded = take_rows(words, rows, xp), take_rows(recorded, keep, xp)

    def best(b: int, sl: slice) -> list[Hypothesis]:
        sc, ln, tk, al = (t[sl] if t is not None else None for t in final[b])
        sc, ln = np.asarray(sc, dtype=np.float32), np.asarray(ln, dtype=np.float32)
        norm = sc / np.maximum(ln, 1.0) ** length_penalty
        hyps = []
        for k in np.argsort(-norm, kind="stable")[:n_best].tolist():
            if not np.isfinite(sc[k]):
                continue                     # the constraint was never met
            seq = tk[k].tolist()
            m = seq.index(end) if end in seq else len(seq)
            att = np.asarray(al[k, :m], dtype=np.float32) if al is not None else None
            hyps.append(Hypothesis(seq[:m], float(sc[k]), float(norm[k]), att))
        return hyps

    if not constrained:
        return [best(b, slice(0, K)) for b in range(B)]
    # an image with a constraint answers from "done"; one without, from the plain rows
    met = [best(b, slice(D * K, R)) if required[b] else None for b in range(B)]
    if free:
        return [best(b, slice(0, K)) for b in range(B)], [m or [] for m in met]
    return [m if m is not None else best(b, slice(N * K, D * K)) for b, m in enumerate(met)]
