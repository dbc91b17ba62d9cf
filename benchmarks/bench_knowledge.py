"""Measure what the model knows of its limits (issue 7): the out-of-domain flag, guided
captions, the confidence's calibration and the alt text, on the Flickr8k test split and on the
out-of-domain set of ``ood_set.py``.  Every number in the README's "Knowing its world" section.

    python benchmarks/ood_set.py --out runs/ood
    python benchmarks/bench_knowledge.py --ood runs/ood --out runs/knowledge --figure docs/knowledge.png

About 3 minutes on 2 CPU cores.  Writes ``OUT/report.json`` (every number and every caption)
and the figure; prints the tables.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from captioner.api import Captioner, _sequence
from captioner.knowledge.confidence import expected_calibration_error, reliability, risk_coverage
from captioner.training.calibrate import per_image_quality
from captioner.training.data import load_dataset, tokenize
from captioner.search import generate
from captioner.images import open_image
from captioner.training.metrics import CiderD, score_all

PERSON = {"man", "men", "woman", "women", "boy", "boys", "girl", "girls", "person", "people", "child",
          "children", "kid", "kids", "lady", "guy", "player", "players", "baby", "crowd", "skier", "biker"}
DOG = {"dog", "dogs", "puppy", "puppies"}
ANIMAL = DOG | {"animal", "animals"}


def words(text: str) -> set[str]:
    return set(tokenize(text))


def invents(text: str, person: bool, dog: bool) -> bool:
    """Names a person or a dog that is not there."""
    w = words(text)
    return bool((w & PERSON and not person) or (w & DOG and not dog))


def names(text: str, objects: list[str]) -> bool:
    w = words(text)
    return any(o in w or o + "s" in w or o + "es" in w for o in objects)


def auroc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """P(a positive scores above a negative), ties counted half."""
    diff = pos.view(-1, 1) - neg.view(1, -1)
    return float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean())


def branch(c) -> str:
    if c.alt_text.startswith("No reliable"):
        return "no description"
    if c.in_domain is False:
        return "tags"
    return "caption" if not c.alt_text.startswith("Image may show") else "hedged caption"


def caption_all(cap: Captioner, paths) -> list:
    out = []
    for path, res in cap.caption_paths(paths, batch_size=32):
        if isinstance(res, str):
            raise SystemExit(res)
        out.append(res)
    return out


def guided_everywhere(cap: Captioner, paths) -> list[str | None]:
    """The experiment the product does not run: guide every photo whose top class is confident
    and maps to a word the caption lacks, in domain or not."""
    kn, out = cap.knowledge, []
    for i in range(0, len(paths), 16):
        x = np.stack([cap.preprocess(open_image(p)) for p in paths[i:i + 16]])
        with torch.inference_mode():
            g = cap._grids(x)[0]
            feats = _sequence(g)
            probs, _, _ = kn.assess(g.mean((2, 3)))
            req = kn.candidates(probs, np.ones(len(probs), dtype=bool))
            if any(req):
                plain, guided = generate(cap.decoding, feats, cap.beam_size, no_repeat_ngram=cap.no_repeat_ngram,
                                         required=req, also_unconstrained=True)
            else:
                plain = guided = [[] for _ in req]
        for r, p, pl, gd in zip(req, probs, plain, guided):
            use = r and gd and not kn.already_named(p, pl[0].tokens)
            out.append(" ".join(cap.vocab.decode(gd[0].tokens)) if use else None)
    return out


def sweep(cap: Captioner, ds) -> list[dict]:
    """Where guidance is used, chosen on the dev split: dev BLEU-4 and CIDEr-D for each minimum
    tag probability, maximum log-probability loss, and in domain only vs everywhere."""
    kn = cap.knowledge
    names = ds.images("dev")
    refs = ds.references("dev")
    rows = []
    for i in range(0, len(names), 32):
        x = np.stack([cap.preprocess(open_image(ds.image_dir / n)) for n in names[i:i + 32]])
        with torch.inference_mode():
            g = cap._grids(x)[0]
            feats = _sequence(g)
            probs, _, in_dom = kn.assess(g.mean((2, 3)))
            # every mappable top class, whatever its probability or the domain: filtered below
            req = [set(kn.tagger.words[c]) if kn.tagger.words[c] else None for c in probs.argmax(1).tolist()]
            plain, guided = generate(cap.decoding, feats, cap.beam_size, no_repeat_ngram=cap.no_repeat_ngram,
                                     required=req, also_unconstrained=True)
        for j, (r, p, gd) in enumerate(zip(req, plain, guided)):
            ok = bool(r and gd and not kn.already_named(probs[j], p[0].tokens))
            rows.append({"image": names[i + j], "plain": p[0], "guided": gd[0] if ok else None,
                         "p1": float(probs[j].max()), "in_domain": bool(in_dom[j])})
    R = [refs[r["image"]] for r in rows]
    out = []
    for zone in ("in domain", "everywhere"):
        for tau in (0.5, 0.7, 0.9):
            for delta in (0.02, 0.05, 0.1, 0.2):
                use = [r["guided"] is not None and r["p1"] >= tau and (r["in_domain"] or zone == "everywhere")
                       and r["guided"].score >= r["plain"].score - delta for r in rows]
                cands = [cap.vocab.decode((r["guided"] if u else r["plain"]).tokens) for r, u in zip(rows, use)]
                s = score_all(cands, R)
                out.append({"zone": zone, "min_prob": tau, "max_loss": delta, "guided": sum(use),
                            "BLEU-4": s["BLEU-4"], "CIDEr-D": s["CIDEr-D"]})
    base = score_all([cap.vocab.decode(r["plain"].tokens) for r in rows], R)
    print(f"\n## guidance sweep on dev (unguided: BLEU-4 {base['BLEU-4']:.4f}, CIDEr-D {base['CIDEr-D']:.4f})")
    print("| guided where | min tag prob | max log-prob loss | guided | BLEU-4 | CIDEr-D |")
    print("| --- | --- | --- | --- | --- | --- |")
    for o in out:
        print(f"| {o['zone']} | {o['min_prob']} | {o['max_loss']} | {o['guided']} | {o['BLEU-4']:.4f} | {o['CIDEr-D']:.4f} |")
    return [{"unguided": base}, *out]


def compare_scores(cap: Captioner, ds, ood_paths) -> list[dict]:
    """The out-of-domain scores the shipped one was chosen against, on the same pooled features:
    AUROC test vs the set, and false alarms / detection at the dev split's 95th percentile."""
    import torch.nn.functional as F

    def pooled(paths):
        return torch.as_tensor(np.stack([p for _, p in cap.pooled_features(paths)]))   # numpy since issue 22

    X = pooled([ds.image_dir / n for n in ds.images("train")])
    dev, test = (pooled([ds.image_dir / n for n in ds.images(s)]) for s in ("dev", "test"))
    ood = pooled(ood_paths)
    Xn = F.normalize(X, dim=1)

    def knn(bank, k=10):
        b = F.normalize(bank, dim=1)
        return lambda q: 1 - (F.normalize(q, dim=1) @ b.T).topk(k, 1).values.mean(1)

    def proj_knn(dims, k=10):
        _, _, v = torch.linalg.svd(Xn, full_matrices=False)
        P = v[:dims].T
        Z = Xn @ P
        return lambda q: 1 - (F.normalize(q, dim=1) @ P @ Z.T).topk(k, 1).values.mean(1)

    mu = X.mean(0)
    Xc = X - mu
    _, S, V = torch.linalg.svd(Xc, full_matrices=False)

    def maha_pca(dims, residual=False):
        P, var = V[:dims].T, S[:dims] ** 2 / (len(X) - 1)
        rest = (S[dims:] ** 2).sum() / (len(X) - 1)

        def f(q):
            z = (q - mu) @ P
            m = (z ** 2 / var).sum(1)
            if residual:
                m = m / dims + ((q - mu) - z @ P.T).pow(2).sum(1) / rest
            return m
        return f

    def maha_full(shrink):
        cov = Xc.T @ Xc / (len(X) - 1)
        C = (1 - shrink) * cov + shrink * torch.eye(X.size(1)) * cov.diagonal().mean()
        Ci = torch.linalg.inv(C)
        return lambda q: ((q - mu) @ Ci * (q - mu)).sum(1)

    g = torch.Generator().manual_seed(0)
    sub = torch.randperm(len(X), generator=g)[:500]
    scores = {"k-NN, k=10, 64-d projection (shipped)": proj_knn(64),
              "k-NN, k=10, 128-d projection": proj_knn(128),
              "k-NN, k=10, full 1,280-d features": knn(X),
              "k-NN, k=10, full features, 500 training photos": knn(X[sub]),
              "k-NN, k=1, full features": knn(X, 1),
              "Mahalanobis, full covariance shrunk 1 %": maha_full(0.01),
              "Mahalanobis, 256-d PCA": maha_pca(256),
              "Mahalanobis, 256-d PCA + residual": maha_pca(256, True)}
    out = []
    print("\n## out-of-domain scores compared (threshold: dev 95th percentile)")
    print("| score | AUROC test vs set | test false alarms | set detected |")
    print("| --- | --- | --- | --- |")
    for name, f in scores.items():
        d, t, o = f(dev), f(test), f(ood)
        thr = torch.quantile(d, 0.95)
        row = {"score": name, "auroc": auroc(o, t), "false_alarms": float((t > thr).float().mean()),
               "detected": float((o > thr).float().mean())}
        out.append(row)
        print(f"| {name} | {row['auroc']:.3f} | {row['false_alarms']:.3f} | {row['detected']:.3f} |")
    return out


def figure(path: Path, test_d, ood_d, threshold, rel, rc):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    bins = torch.linspace(min(test_d.min(), ood_d.min()).item(), max(test_d.max(), ood_d.max()).item(), 40).numpy()
    ax[0].hist(test_d.numpy(), bins=bins, alpha=0.6, label="Flickr8k test", density=True)
    ax[0].hist(ood_d.numpy(), bins=bins, alpha=0.6, label="out-of-domain set", density=True)
    ax[0].axvline(threshold, color="k", ls="--", label="threshold (dev 95 %)")
    ax[0].set(xlabel="distance to the 10 nearest training photos", ylabel="density", title="Out-of-domain flag")
    ax[0].legend()
    conf = [c for c, _, _ in rel]
    ax[1].plot([0, 1], [0, 1], "k:", label="perfect calibration")
    ax[1].plot(conf, [r for _, r, _ in rel], "o-", label="test split")
    for c, r, n in rel:
        ax[1].annotate(str(n), (c, r), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax[1].set(xlabel="confidence", ylabel="share of acceptable captions", title="Reliability (test)",
              xlim=(0, 1), ylim=(0, 1))
    ax[1].legend()
    ax[2].plot([c * 100 for c, _ in rc], [q for _, q in rc], "o-")
    ax[2].set(xlabel="most confident share of test captions (%)", ylabel="mean per-image CIDEr-D",
              title="Risk-coverage (test)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/flickr8k", help="dataset root (its test split is scored)")
    ap.add_argument("--ood", default="runs/ood", help="folder written by ood_set.py")
    ap.add_argument("--model", default=None, help="calibrated model file; default: the shipped model")
    ap.add_argument("--out", default="runs/knowledge", help="folder for report.json")
    ap.add_argument("--figure", default=None, help="write the three-panel figure here (PNG)")
    ap.add_argument("--sweep", action="store_true", help="also the dev-split sweep that chose where to guide")
    ap.add_argument("--compare-scores", action="store_true",
                    help="also the out-of-domain scores the shipped one was chosen against (encodes the training split)")
    args = ap.parse_args()

    cap = Captioner(args.model)
    plain = Captioner(args.model, guidance=False, backend=cap.backend, precision=cap.precision)
    if cap.knowledge is None:
        raise SystemExit(f"{cap.path}: not calibrated (python -m captioner.training.calibrate)")
    kn = cap.knowledge
    ds = load_dataset(args.data)
    test = ds.images("test")
    refs = ds.references("test")
    R = [refs[n] for n in test]
    paths = [ds.image_dir / n for n in test]
    prod = caption_all(cap, paths)
    base = caption_all(plain, paths)
    s_prod = score_all([c.words for c in prod], R)
    s_base = score_all([c.words for c in base], R)
    print(f"## test split ({len(test)} images), guided where the product guides vs never guided")
    for k in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr-D"):
        print(f"{k}: {s_prod[k]:.4f} vs {s_base[k]:.4f} ({s_prod[k] - s_base[k]:+.4f})")
    n_guided = sum(c.guided is not None for c in prod)
    print(f"guided captions: {n_guided} / {len(test)}")

    test_d = torch.tensor([c.domain_distance for c in prod])
    flagged = sum(not c.in_domain for c in prod)
    print(f"\n## out-of-domain flag\nthreshold {kn.domain.threshold:.4f}; test false alarms {flagged}/{len(test)} "
          f"= {flagged / len(test):.3f}")

    labels = json.loads((Path(args.ood) / "labels.json").read_text())
    opaths = [Path(args.ood) / lab["image"] for lab in labels]
    ood = caption_all(cap, opaths)
    ood_d = torch.tensor([c.domain_distance for c in ood])
    detected = sum(not c.in_domain for c in ood)
    print(f"out-of-domain set: {detected}/{len(ood)} flagged = {detected / len(ood):.3f}; "
          f"AUROC (test vs set) {auroc(ood_d, test_d):.3f}")
    by_kind: dict[str, list[int]] = {}
    for lab, c in zip(labels, ood):
        by_kind.setdefault(lab["kind"], [0, 0])
        by_kind[lab["kind"]][0] += not c.in_domain
        by_kind[lab["kind"]][1] += 1
    print("by kind: " + ", ".join(f"{k} {a}/{n}" for k, (a, n) in sorted(by_kind.items())))

    # guidance on the out-of-domain set: before, guided everywhere, and what the product says
    ood_base = caption_all(plain, opaths)
    everywhere = guided_everywhere(cap, opaths)
    rows = []
    for lab, b, g, c in zip(labels, ood_base, everywhere, ood):
        rows.append({"image": lab["image"], "kind": lab["kind"], "unguided": b.text, "guided": g,
                     "alt_text": c.alt_text, "in_domain": c.in_domain, "confidence": c.confidence,
                     "tag": c.tags[0].name, "tag_prob": c.tags[0].prob, "distance": c.domain_distance,
                     "objects": lab["objects"], "person": lab["person"], "dog": lab["dog"]})
    n = len(rows)

    def share(fn):
        return sum(map(fn, rows)) / n

    table = {
        "unguided caption": (share(lambda r: names(r["unguided"], r["objects"])),
                             share(lambda r: invents(r["unguided"], r["person"], r["dog"]))),
        "guided everywhere (experiment)": (share(lambda r: names(r["guided"] or r["unguided"], r["objects"])),
                                           share(lambda r: invents(r["guided"] or r["unguided"], r["person"], r["dog"]))),
        "product alt text": (share(lambda r: names(r["alt_text"], r["objects"])),
                             share(lambda r: invents(r["alt_text"], r["person"], r["dog"]))),
    }
    n_ever = sum(r["guided"] is not None for r in rows)
    print(f"\n## out-of-domain set ({n} images): names its main object / invents a person or dog "
          f"(guided everywhere changed {n_ever} captions)")
    for k, (a, b) in table.items():
        print(f"{k}: {a:.3f} / {b:.3f}")
    judged = Path(__file__).resolve().parents[1] / "docs" / "ood" / "tag_judgments.json"
    if judged.is_file():
        j = json.loads(judged.read_text())["judgments"]
        shown = [r for r, c in zip(rows, ood) if branch(c) == "tags"]
        known = [r for r in shown if r["image"] in j and j[r["image"]]["tag"] == r["tag"]]
        good = sum(j[r["image"]]["correct"] for r in known)
        print(f"alt texts made of tags: {len(shown)}; judged by hand {len(known)}, right {good} "
              f"({good / max(1, len(known)):.3f}); so {good}/{n} = {good / n:.3f} of the set's alt texts name "
              f"their main object correctly")
    ever = [r for r in rows if r["guided"]]
    if ever:
        print(f"among the {len(ever)} guided ones: unguided invents {sum(invents(r['unguided'], r['person'], r['dog']) for r in ever)}, "
              f"guided invents {sum(invents(r['guided'], r['person'], r['dog']) for r in ever)}")

    # confidence on the test split
    model_q, human_q = per_image_quality([c.words for c in prod], R)
    y = model_q >= human_q
    conf = torch.tensor([c.confidence for c in prod])
    scorer = CiderD(R)
    cider = torch.tensor([scorer.score(c.words, i) for i, c in enumerate(prod)])
    rel = reliability(conf, y)
    rc = risk_coverage(conf, cider)
    ece = expected_calibration_error(conf, y)
    print(f"\n## confidence (test): acceptable {float(y.float().mean()):.3f}, mean confidence {float(conf.mean()):.3f}, "
          f"ECE {ece:.4f}")
    print("reliability: " + ", ".join(f"{c:.2f}->{r:.2f} (n={k})" for c, r, k in rel))
    print("risk-coverage (mean per-image CIDEr-D of the most confident share): "
          + ", ".join(f"{c:.0%} {q:.3f}" for c, q in rc))
    ood_conf = torch.tensor([r["confidence"] for r in rows])
    print(f"mean confidence: test {float(conf.mean()):.3f}, out-of-domain set {float(ood_conf.mean()):.3f} "
          f"(flagged ones {float(ood_conf[[not r['in_domain'] for r in rows]].mean()):.3f})")

    # alt text
    inv_test_cap = [invents(c.text, any(words(' '.join(r)) & PERSON for r in rs), any(words(' '.join(r)) & ANIMAL for r in rs))
                    for c, rs in zip(prod, R)]
    branches_test = [branch(c) for c in prod]
    branches_ood = [branch(c) for c in ood]
    print("\n## alt text")
    for name, br in (("test", branches_test), ("out-of-domain set", branches_ood)):
        counts = {b: br.count(b) for b in ("caption", "hedged caption", "tags", "no description")}
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for b in ("caption", "hedged caption"):
        idx = [i for i, x in enumerate(branches_test) if x == b]
        if idx:
            print(f"test captions given as {b}: {len(idx)}, acceptable {float(y[idx].float().mean()):.3f}, "
                  f"invent a person or dog no reference names {sum(inv_test_cap[i] for i in idx) / len(idx):.3f}")
    longest = max(len(c.alt_text) for c in prod + ood)
    print(f"longest alt text: {longest} characters")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"test": {"product": s_prod, "unguided": s_base, "guided": n_guided, "false_alarms": flagged,
                       "acceptable": float(y.float().mean()), "ece": ece, "reliability": rel, "risk_coverage": rc,
                       "alt_text_branches": {b: branches_test.count(b) for b in set(branches_test)}},
              "ood": {"flagged": detected, "images": n, "auroc": auroc(ood_d, test_d), "by_kind": by_kind,
                      "table": table, "rows": rows},
              "threshold": kn.domain.threshold}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'report.json'}")
    if args.compare_scores:
        report["scores_compared"] = compare_scores(cap, ds, opaths)
        (out / "report.json").write_text(json.dumps(report, indent=1))
    if args.sweep:
        report["dev_sweep"] = sweep(cap, ds)
        (out / "report.json").write_text(json.dumps(report, indent=1))
    if args.figure:
        figure(Path(args.figure), test_d, ood_d, kn.domain.threshold, rel, rc)


if __name__ == "__main__":
    main()
