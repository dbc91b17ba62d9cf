"""Caption metrics computed as the coco-caption toolkit computes them, in pure Python.

* BLEU-1..4: corpus level; n-gram counts clipped per sentence and summed over the corpus;
  brevity penalty from the reference length closest to each candidate ("closest").
* ROUGE-L: LCS-based F-measure with beta = 1.2, max over references, averaged per image.
* CIDEr-D: TF-IDF n-gram vectors (n = 1..4) with document frequencies over the references
  of the whole evaluated set, candidate counts clipped to the reference's, Gaussian length
  penalty sigma = 6, times 10, averaged over n and references.
* METEOR: only through the coco-caption jar (pycocoevalcap) where Java is installed.

Inputs are lists of lowercase word tokens (``data.tokenize``).
"""
from __future__ import annotations

import math
import shutil
from collections import Counter, defaultdict


def _ngrams(tokens, n):
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu(cands: list[list[str]], refs: list[list[list[str]]], max_n: int = 4) -> list[float]:
    match, total = [0] * max_n, [0] * max_n
    c_len = r_len = 0
    for cand, rs in zip(cands, refs):
        c_len += len(cand)
        r_len += min((abs(len(r) - len(cand)), len(r)) for r in rs)[1]
        for n in range(1, max_n + 1):
            c = _ngrams(cand, n)
            max_ref = Counter()
            for r in rs:
                for g, k in _ngrams(r, n).items():
                    max_ref[g] = max(max_ref[g], k)
            match[n - 1] += sum(min(k, max_ref[g]) for g, k in c.items())
            total[n - 1] += max(len(cand) - n + 1, 0)
    tiny, small = 1e-15, 1e-9  # coco-caption's smoothing constants
    bp = 1.0 if c_len >= r_len else math.exp(1 - r_len / max(c_len, small))
    out, logsum = [], 0.0
    for n in range(max_n):
        logsum += math.log((match[n] + tiny) / (total[n] + small))
        out.append(bp * math.exp(logsum / (n + 1)))
    return out


def _lcs(a, b):
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(cands, refs, beta: float = 1.2) -> float:
    scores = []
    for cand, rs in zip(cands, refs):
        precs, recs = [], []
        for r in rs:
            lcs = _lcs(r, cand)
            precs.append(lcs / max(len(cand), 1))
            recs.append(lcs / max(len(r), 1))
        p, r = max(precs), max(recs)
        scores.append(((1 + beta ** 2) * p * r) / (r + beta ** 2 * p) if p and r else 0.0)
    return sum(scores) / len(scores)


class CiderD:
    """CIDEr-D against a fixed list of reference sets: document frequencies and reference
    vectors are computed once, so scoring many candidates (self-critical training samples
    thousands per batch) costs only the candidate's own n-grams."""

    def __init__(self, refs: list[list[list[str]]], n: int = 4, sigma: float = 6.0):
        self.n, self.sigma = n, sigma
        df = defaultdict(float)
        for rs in refs:
            for g in set(g for r in rs for k in range(1, n + 1) for g in _ngrams(r, k)):
                df[g] += 1
        self.df = dict(df)
        self.log_n = math.log(float(len(refs)))
        self.refs = [[self._vec(r) for r in rs] for rs in refs]

    def _vec(self, tokens):
        v = [dict() for _ in range(self.n)]
        norm = [0.0] * self.n
        for k in range(1, self.n + 1):
            for g, tf in _ngrams(tokens, k).items():
                w = tf * (self.log_n - math.log(max(1.0, self.df.get(g, 0.0))))
                v[k - 1][g] = w
                norm[k - 1] += w * w
        return v, [math.sqrt(x) for x in norm], len(tokens)

    def score(self, cand: list[str], i: int, leave_out: int | None = None) -> float:
        """CIDEr-D of one candidate against reference set ``i`` (without its reference
        ``leave_out``: how a human caption is scored against the others)."""
        vc, nc, lc = self._vec(cand)
        rs = [r for j, r in enumerate(self.refs[i]) if j != leave_out]
        score = [0.0] * self.n
        for vr, nr, lr in rs:
            penalty = math.exp(-((lc - lr) ** 2) / (2 * self.sigma ** 2))
            for k in range(self.n):
                ref = vr[k]
                val = sum(min(w, ref.get(g, 0.0)) * ref.get(g, 0.0) for g, w in vc[k].items())
                if nc[k] and nr[k]:
                    val /= nc[k] * nr[k]
                score[k] += val * penalty
        return sum(score) / self.n / len(rs) * 10.0


def cider_d(cands, refs, n: int = 4, sigma: float = 6.0) -> float:
    """Corpus CIDEr-D; document frequencies over the evaluated set's references, as coco-caption."""
    scorer = CiderD(refs, n, sigma)
    return sum(scorer.score(c, i) for i, c in enumerate(cands)) / len(cands)


def meteor(cands, refs) -> float | None:
    """METEOR 1.5 via pycocoevalcap's jar; None where Java or the package is missing."""
    if shutil.which("java") is None:
        return None
    try:
        from pycocoevalcap.meteor.meteor import Meteor
    except ImportError:
        return None
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(c)] for i, c in enumerate(cands)}
    scorer = Meteor()
    try:
        return float(scorer.compute_score(gts, res)[0])
    finally:
        scorer.close() if hasattr(scorer, "close") else None


def score_all(cands: list[list[str]], refs: list[list[list[str]]], with_meteor: bool = False) -> dict:
    if len(cands) != len(refs) or not cands:
        raise ValueError(f"need one candidate per image and at least one image, got {len(cands)} "
                         f"candidates for {len(refs)} reference sets")
    b = bleu(cands, refs)
    out = {f"BLEU-{i + 1}": b[i] for i in range(4)}
    out["ROUGE-L"] = rouge_l(cands, refs)
    out["CIDEr-D"] = cider_d(cands, refs)
    if with_meteor:
        m = meteor(cands, refs)
        if m is not None:
            out["METEOR"] = m
    return out
