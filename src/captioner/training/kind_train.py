"""Fit the kind classifier (``knowledge/kind.py``) on the labelled set of ``tools/kind_dataset.py`` and write
``weights/kind.safetensors``.

    python tools/kind_dataset.py --out runs/kinds
    python -m captioner.training.kind_train --data runs/kinds --report runs/kinds/report.json

Only the ``train`` split is fitted and chooses anything: the L2 strength by 5-fold cross-validation
on it (folds drawn by source group, so near-copies of one template never sit on both sides).  The
``heldout`` split, drawn from other sources, is scored once at the end and only reported.  Two
classifiers are fitted: one on the shipped encoder's pooled features plus the colour statistics, and
a colour-only one for models with another encoder.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from captioner.knowledge import kind as kinds

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def fit_softmax(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float, weights: np.ndarray | None = None,
                steps: int = 200) -> kinds.KindClassifier:
    """Multinomial logistic regression on standardised features, by L-BFGS (full batch)."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = torch.from_numpy((x - mean) / std).float()
    t = torch.from_numpy(y).long()
    w = torch.from_numpy(weights if weights is not None else np.ones(len(y))).float()
    lin = torch.nn.Linear(z.shape[1], n_classes)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (torch.nn.functional.cross_entropy(lin(z), t, reduction="none") * w).sum() / w.sum()
        loss = loss + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return kinds.KindClassifier(lin.weight.detach().numpy(), lin.bias.detach().numpy(), mean, std,
                                kinds.CLASSES, uses_pooled=True)


def class_weights(y: np.ndarray) -> np.ndarray:
    """Each class weighs the same in the loss, however many images it has."""
    counts = np.bincount(y, minlength=len(kinds.CLASSES)).astype(np.float64)
    return (len(y) / (len(counts[counts > 0]) * np.maximum(counts, 1)))[y]


def kind_accuracy(clf: kinds.KindClassifier, x: np.ndarray, truth: list[str]) -> float:
    got = [d.name for d in clf.decide(clf.probs_of(x))]
    return float(np.mean([g == t for g, t in zip(got, truth)]))


def choose_l2(x, y, groups, kind_truth, folds: int = 5, seed: int = 0) -> tuple[float, dict]:
    rng = np.random.default_rng(seed)
    uniq = np.array(sorted(set(groups)))
    fold_of = dict(zip(uniq, rng.permutation(len(uniq)) % folds))
    f = np.array([fold_of[g] for g in groups])
    scores = {}
    for l2 in L2_GRID:
        accs = []
        for k in range(folds):
            tr, te = f != k, f == k
            if te.sum() == 0:
                continue
            clf = fit_softmax(x[tr], y[tr], len(kinds.CLASSES), l2, class_weights(y[tr]))
            accs.append(kind_accuracy(clf, x[te], [kind_truth[i] for i in np.flatnonzero(te)]))
        scores[l2] = float(np.mean(accs))
    return max(scores, key=lambda k: (scores[k], k)), scores


def group(rec: dict) -> str:
    """Cross-validation groups: one per template or style (a photo or stamp is its own group)."""
    src = rec["source"]
    return src if src.startswith(("flickr8k", "tuxpaint")) else src.rsplit(":", 1)[0] + ":" + (rec.get("subtype") or "")


def label(rec: dict) -> str:
    return f"chart:{rec['subtype']}" if rec["kind"] == "chart" else rec["kind"]


def features(cap, root: Path, recs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    pooled, colour = [], []
    for path, got in cap.kind_inputs([str(root / r["path"]) for r in recs]):
        if isinstance(got, str):
            raise ValueError(f"{path}: {got}")
        pooled.append(got[0])
        colour.append(got[1])
    return np.stack(pooled), np.stack(colour)


def confusion(truth: list[str], got: list[str]) -> dict:
    return {t: {g: sum(1 for a, b in zip(truth, got) if a == t and b == g) for g in kinds.KINDS} for t in kinds.KINDS}


def main(argv=None) -> int:
    from captioner.api import Captioner

    ap = argparse.ArgumentParser(prog="python -m captioner.training.kind_train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the folder tools/kind_dataset.py wrote (manifest.jsonl)")
    ap.add_argument("--model", default=None, help="the captioning model whose encoder is read (default: shipped)")
    ap.add_argument("--out", default=str(kinds.KIND_FILE), help="the classifier file to write")
    ap.add_argument("--report", default=None, help="also write the held-out scores and confusion tables (JSON)")
    args = ap.parse_args(argv)
    t0 = time.time()
    root = Path(args.data)
    recs = [json.loads(l) for l in (root / "manifest.jsonl").read_text().splitlines() if l.strip()]
    train = [r for r in recs if r["split"] == "train"]
    held = [r for r in recs if r["split"] == "heldout"]
    cap = Captioner(args.model, knowledge=False, read_text="never")
    digest = cap.model.digest   # the encoder digest the model file records (backends/)
    ptr, ctr = features(cap, root, train)
    pho, cho = features(cap, root, held)
    y = np.array([kinds.CLASSES.index(label(r)) for r in train])
    truth_tr = [r["kind"] for r in train]
    groups = [group(r) for r in train]
    report = {"train_images": len(train), "heldout_images": len(held), "encoder_digest": digest}
    out = {}
    for name, xtr, xho in (("full", np.concatenate([ptr, ctr], 1), np.concatenate([pho, cho], 1)),
                           ("colour", ctr, cho)):
        l2, cv = choose_l2(xtr, y, groups, truth_tr)
        clf = fit_softmax(xtr, y, len(kinds.CLASSES), l2, class_weights(y))
        clf.uses_pooled = name == "full"
        out[name] = clf
        p = clf.probs(pho if name == "full" else None, cho)
        decided = clf.decide(p)
        got = [d.name for d in decided]
        truth = [r["kind"] for r in held]
        charts = [(r["subtype"], d.chart_type) for r, d in zip(held, decided) if r["kind"] == "chart" and d.name == "chart"]
        report[name] = {"l2": l2, "cv_accuracy": cv, "heldout_accuracy": float(np.mean([a == b for a, b in zip(truth, got)])),
                        "heldout_confusion": confusion(truth, got),
                        "heldout_chart_type_accuracy": (float(np.mean([a == b for a, b in charts])) if charts else None),
                        "heldout_chart_type_undecided": sum(b is None for _, b in charts),
                        "heldout_errors": [{"path": r["path"], "source": r["source"], "truth": a, "got": b}
                                           for r, a, b in zip(held, truth, got) if a != b]}
        print(f"{name}: l2 {l2} (cv {cv[l2]:.3f}); held-out kind accuracy {report[name]['heldout_accuracy']:.3f}")
    sources = sorted({r["source"].split(":")[0] for r in recs})
    info = {"classes": list(kinds.CLASSES), "encoder_digest": digest, "fitted_on": len(train),
            "sources": sources, "l2": {k: report[k]["l2"] for k in out},
            "heldout_accuracy": {k: round(report[k]["heldout_accuracy"], 4) for k in out},
            "builder": "tools/kind_dataset.py; python -m captioner.training.kind_train"}
    kinds.save(Path(args.out), out, info)
    report["seconds"] = round(time.time() - t0, 1)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
