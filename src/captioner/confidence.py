"""How sure the model is: the probability that a caption is *acceptable*, calibrated on dev.

Acceptable (per image): the caption's CIDEr-D against the image's references is at least that
of the weakest of the image's own human captions, each human caption scored against the other
four and the model's caption averaged over the same five leave-one-out reference sets, so both
are scored against four references.  Every one of the five human captions was written and kept
as a description of the photo; a caption that the consensus measure ranks level with one of them
is inside the range of human descriptions.  (The stricter "at least the median human caption"
holds for only 30 % of the shipped model's dev captions; README.)

The confidence is a logistic regression, fitted on the dev split, on what the model knows at
run time: the caption's length-normalised log-probability, its length, the out-of-domain
distance (``domain.py``) and the ImageNet head's top probability (``tags.py``).  The distance
enters as it is, so photos far outside the training photos extrapolate to low confidence.

Also here: the measures of a confidence's quality reported in the README (expected calibration
error, reliability bins, risk-coverage).
"""
from __future__ import annotations

import torch

from .metrics import CiderD

FEATURES = ("score", "length", "distance", "tag_prob")


# An image with one reference has no second human caption to compare with (a library's own captions,
# one per photo): its caption is acceptable when its CIDEr-D against that reference reaches this
# threshold, the one that best reproduces the five-reference labels on Flickr8k dev with a single
# reference kept per image (python benchmarks/single_reference.py: agreement 68.2 %, each of the five
# references in turn 65.9-70.4 %, against 65.1 % for calling every caption acceptable; 64.1 % acceptable
# under it, 65.1 % with five).  One reference is a weak judge; the confidence fitted on it is weaker too.
SINGLE_REFERENCE_THRESHOLD = 0.13


def per_image_quality(cands: list[list[str]], refs: list[list[list[str]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (the caption's leave-one-out CIDEr-D, the weakest human caption's), per image; the
    document frequencies come from all the references of the evaluated set, as coco-caption's.
    An image with a single reference gets its caption's CIDEr-D against it and, as the human level,
    ``SINGLE_REFERENCE_THRESHOLD``."""
    scorer = CiderD(refs)
    model, human = [], []
    for i, (c, rs) in enumerate(zip(cands, refs)):
        if len(rs) < 2:
            model.append(scorer.score(c, i))
            human.append(SINGLE_REFERENCE_THRESHOLD)
            continue
        model.append(sum(scorer.score(c, i, leave_out=j) for j in range(len(rs))) / len(rs))
        human.append(min(scorer.score(r, i, leave_out=j) for j, r in enumerate(rs)))
    return torch.tensor(model), torch.tensor(human)


def features(score, length, distance, tag_prob) -> torch.Tensor:
    return torch.stack([torch.as_tensor(x, dtype=torch.float32) for x in (score, length, distance, tag_prob)], 1)


class Calibrator:
    """P(acceptable | features) = sigmoid(w . (x - mean) / std + b)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, weight: torch.Tensor, bias: float):
        self.mean, self.std, self.weight, self.bias = mean.float(), std.float(), weight.float(), float(bias)

    @classmethod
    def fit(cls, x: torch.Tensor, y: torch.Tensor, l2: float = 1e-3) -> "Calibrator":
        """Maximum likelihood with a small L2 penalty (L-BFGS; a convex problem)."""
        mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
        z, y = (x - mean) / std, y.float()
        w = torch.zeros(x.size(1), requires_grad=True)
        b = torch.zeros(1, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * w.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return cls(mean, std, w.detach(), float(b.detach()))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((x.float() - self.mean) / self.std @ self.weight + self.bias)

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "mean": self.mean.tolist(), "std": self.std.tolist(),
                "weight": self.weight.tolist(), "bias": self.bias}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibrator":
        if d.get("features") != list(FEATURES):
            raise ValueError(f"calibration uses features {d.get('features')}, this version {list(FEATURES)}")
        return cls(torch.tensor(d["mean"]), torch.tensor(d["std"]), torch.tensor(d["weight"]), d["bias"])


def reliability(p: torch.Tensor, y: torch.Tensor, bins: int = 10) -> list[tuple[float, float, int]]:
    """(mean confidence, observed rate, count) per equal-width confidence bin with members."""
    out = []
    edges = torch.linspace(0, 1, bins + 1)
    for i in range(bins):
        m = (p >= edges[i]) & ((p < edges[i + 1]) if i < bins - 1 else (p <= 1))
        if m.any():
            out.append((float(p[m].mean()), float(y[m].float().mean()), int(m.sum())))
    return out


def expected_calibration_error(p: torch.Tensor, y: torch.Tensor, bins: int = 10) -> float:
    return sum(n * abs(c - r) for c, r, n in reliability(p, y, bins)) / len(p)


def risk_coverage(conf: torch.Tensor, quality: torch.Tensor, steps: int = 10) -> list[tuple[float, float]]:
    """(coverage, mean quality of the most confident ``coverage`` share), coverage 1/steps ... 1."""
    order = conf.argsort(descending=True)
    q = quality[order]
    return [(k / steps, float(q[: max(1, round(len(q) * k / steps))].mean())) for k in range(1, steps + 1)]
