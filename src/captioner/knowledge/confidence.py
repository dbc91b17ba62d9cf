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
error, reliability bins, risk-coverage).  Fitting (and scoring dev captions for acceptability) is
training's: ``training/calibrate.py``.
"""
from __future__ import annotations

import numpy as np

FEATURES = ("score", "length", "distance", "tag_prob")


def features(score, length, distance, tag_prob) -> np.ndarray:
    return np.stack([np.asarray(x, dtype=np.float32) for x in (score, length, distance, tag_prob)], 1)


class Calibrator:
    """P(acceptable | features) = sigmoid(w . (x - mean) / std + b)."""

    def __init__(self, mean, std, weight, bias: float):
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.weight, self.bias = np.asarray(weight, np.float32), float(bias)

    def __call__(self, x) -> np.ndarray:
        z = (np.asarray(x, np.float32) - self.mean) / self.std @ self.weight + np.float32(self.bias)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "mean": self.mean.tolist(), "std": self.std.tolist(),
                "weight": self.weight.tolist(), "bias": self.bias}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibrator":
        if d.get("features") != list(FEATURES):
            raise ValueError(f"calibration uses features {d.get('features')}, this version {list(FEATURES)}")
        return cls(d["mean"], d["std"], d["weight"], d["bias"])


def reliability(p, y, bins: int = 10) -> list[tuple[float, float, int]]:
    """(mean confidence, observed rate, count) per equal-width confidence bin with members."""
    p, y = np.asarray(p, np.float32), np.asarray(y, np.float32)
    out = []
    edges = np.linspace(0, 1, bins + 1, dtype=np.float32)
    for i in range(bins):
        m = (p >= edges[i]) & ((p < edges[i + 1]) if i < bins - 1 else (p <= 1))
        if m.any():
            out.append((float(p[m].mean()), float(y[m].mean()), int(m.sum())))
    return out


def expected_calibration_error(p, y, bins: int = 10) -> float:
    return sum(n * abs(c - r) for c, r, n in reliability(p, y, bins)) / len(p)


def risk_coverage(conf, quality, steps: int = 10) -> list[tuple[float, float]]:
    """(coverage, mean quality of the most confident ``coverage`` share), coverage 1/steps ... 1."""
    conf, quality = np.asarray(conf, np.float32), np.asarray(quality, np.float32)
    q = quality[np.argsort(-conf, kind="stable")]
    return [(k / steps, float(q[: max(1, round(len(q) * k / steps))].mean())) for k in range(1, steps + 1)]
