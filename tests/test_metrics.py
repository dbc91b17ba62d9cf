"""Our pure-Python metrics against the coco-caption reference implementation (pycocoevalcap)."""
import random

import pytest

from captioner.training.data import load_dataset, tokenize
from captioner.training.metrics import bleu, cider_d, rouge_l, score_all
from conftest import SHARED, needs_shared

coco = pytest.importorskip("pycocoevalcap")
from pycocoevalcap.bleu.bleu import Bleu  # noqa: E402
from pycocoevalcap.cider.cider import Cider  # noqa: E402
from pycocoevalcap.rouge.rouge import Rouge  # noqa: E402


def reference_scores(cands, refs):
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(c)] for i, c in enumerate(cands)}
    b, _ = Bleu(4).compute_score(gts, res, verbose=0)
    r, _ = Rouge().compute_score(gts, res)
    c, _ = Cider().compute_score(gts, res)
    return b, r, c


def check(cands, refs):
    b, r, c = reference_scores(cands, refs)
    assert bleu(cands, refs) == pytest.approx(b, rel=1e-9, abs=1e-12)
    assert rouge_l(cands, refs) == pytest.approx(r, rel=1e-9)
    assert cider_d(cands, refs) == pytest.approx(c, rel=1e-9)


def test_small_handmade_set():
    refs = [[s.split() for s in ["a dog runs on the grass", "a brown dog is running", "dog on grass"]],
            [s.split() for s in ["two people ride bikes", "people riding bicycles on a road"]],
            [s.split() for s in ["a child jumps into a pool", "a kid swimming"]]]
    cands = [s.split() for s in ["a dog runs on grass", "two people riding bikes on a road", "a man"]]
    check(cands, refs)


def test_perfect_and_empty_overlap():
    refs = [[["a", "b", "c", "d", "e"]], [["f", "g", "h", "i"]]]
    s = score_all([["a", "b", "c", "d", "e"], ["f", "g", "h", "i"]], refs)
    assert s["BLEU-4"] == pytest.approx(1.0) and s["ROUGE-L"] == pytest.approx(1.0)
    assert score_all([["x"], ["y"]], refs)["BLEU-1"] < 1e-6


@needs_shared
def test_real_captions_against_pycocoevalcap():
    """Score one reference of each of 300 dev images against the other four (a human baseline)."""
    ds = load_dataset(SHARED)
    names = random.Random(0).sample(ds.images("dev"), 300)
    cands = [tokenize(ds.captions[n][0]) for n in names]
    refs = [[tokenize(c) for c in ds.captions[n][1:]] for n in names]
    check(cands, refs)
