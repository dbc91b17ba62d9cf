"""What kind of image it is: photo, screenshot, document, chart (bar, line, pie, scatter) or drawing
(illustration, clip art, icon, logo), with a probability.  numpy only.

The decision uses only what captioning already computed, so it costs well under a millisecond an
image and can decide, before any text is read, which images are worth reading (``api.py``):

  * the encoder's pooled features (the 1,280 numbers the ImageNet head and the domain check read);
  * colour statistics of the preprocessed image (``colour_features``): the share of pixels in the
    1, 4 and 16 most common colours (graphics are flat; photos are not), distinct colours,
    saturation, near-white and near-black shares, and how much of the image is flat or edge.

A multinomial logistic regression on the standardised features (``KindClassifier``), fitted by
``python -m captioner.training.kind_train`` on the labelled set that ``tools/kind_dataset.py`` assembles
(every source listed there), is stored in ``weights/kind.safetensors`` with the digest of the encoder
whose features it read.  A model with another encoder (one you trained) gets the colour-only
classifier stored beside it, which is weaker (docs/text.md gives both held-out accuracies).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KIND_FILE = Path(__file__).parent.parent / "weights" / "kind.safetensors"
CLASSES = ("photo", "screenshot", "document", "chart:bar", "chart:line", "chart:pie", "chart:scatter", "drawing")
KINDS = ("photo", "screenshot", "document", "chart", "drawing")
QUANT = 16          # levels per channel when counting colours (16^3 bins)


def colour_features(images: np.ndarray, mean=None, std=None) -> np.ndarray:
    """Images [B, 3, H, W] in [0, 1] -> [B, 12] colour statistics (``colour_stats`` of each).  With
    ``mean`` and ``std``, the images are the normalised arrays the encoder read, taken back to [0, 1]
    plane by plane exactly as ``preprocess.to_pixels`` does (without a second copy of the batch)."""
    x = np.asarray(images, dtype=np.float32)
    if not len(x):
        return np.zeros((0, 12), np.float32)
    work = _Workspace(x.shape[-2:])
    return np.stack([colour_stats(im, mean, std, work) for im in x])


class _Workspace:
    """The buffers of one image's statistics, reused image after image: a fresh array this size per
    step would be a fresh mapping of memory each time (most of the cost, measured)."""

    def __init__(self, shape):
        h, w = shape
        self.px, self.q = np.empty((3, h, w), np.float32), np.empty((3, h, w), np.float32)
        self.mx, self.mn, self.sat, self.den, self.lum, self.dev = (np.empty((h, w), np.float32) for _ in range(6))
        self.gy, self.gx = np.empty((h - 1, w), np.float32), np.empty((h, w - 1), np.float32)
        self.grad = np.empty((h - 1, w - 1), np.float32)
        self.codes = np.empty((h, w), np.intp)


_ZERO, _ONE, _TINY, _TOP, _INF = (np.float32(v) for v in (0.0, 1.0, 1e-6, QUANT - 1, np.inf))


def _mean(a: np.ndarray) -> np.float32:
    """``a.reshape(1, -1).mean(1)[0]`` by numpy's own steps: a float32 sum along the row, divided in
    place by the count (a float32 result; divided out of place it would be float64)."""
    total = np.add.reduce(a.reshape(1, -1), axis=1)
    return np.true_divide(total, np.intp(a.size), out=total, casting="unsafe")[0]


def _std(a: np.ndarray, dev: np.ndarray) -> np.float32:
    """``a.reshape(1, -1).std(1)[0]`` by numpy's steps, with the deviations in ``dev`` (no new array)."""
    row, n = a.reshape(1, -1), np.intp(a.size)
    mean = np.add.reduce(row, axis=1, keepdims=True)
    np.true_divide(mean, n, out=mean, casting="unsafe")
    d = dev.reshape(1, -1)
    np.subtract(row, mean, out=d)
    np.square(d, out=d)
    var = np.add.reduce(d, axis=1)
    np.true_divide(var, n, out=var, casting="unsafe")
    return np.sqrt(var, out=var)[0]


def colour_stats(image: np.ndarray, mean=None, std=None, work: _Workspace | None = None) -> np.ndarray:
    """One image [3, H, W] in [0, 1] (or normalised, with ``mean`` and ``std``) -> its 12 colour statistics.

    Computed image by image in buffers that are reused and stay in the cache, with the channel
    maximum, minimum and mean taken element-wise rather than as reductions over the channel axis
    (numpy's strided reductions were the slowest part), and bounds applied with ``clip`` (numpy's
    maximum and minimum against a scalar take a slow path, three times ``clip``'s time): the same
    float32 operations in the same order as the batch version the kind model was fitted with, so
    the same numbers bit for bit (tests/test_parallel.py) and the classifier reads exactly what it
    was trained on."""
    x = np.asarray(image, dtype=np.float32)
    w = work if work is not None and work.px.shape == x.shape else _Workspace(x.shape[-2:])
    px = w.px
    if mean is not None:   # x * std + mean in float32, as to_pixels computes it
        m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        for c in range(3):
            np.multiply(x[c], s[c], out=px[c])
            np.add(px[c], m[c], out=px[c])
        np.clip(px, _ZERO, _ONE, out=px)
    else:
        np.clip(x, _ZERO, _ONE, out=px)
    r, g, b = px[0], px[1], px[2]
    # colour codes: floor(x * 16) capped at 15 per channel (exact in float32: x * 16 only shifts the
    # exponent, and the codes are whole numbers below 4,096), then r * 256 + g * 16 + b
    q = w.q
    np.multiply(px, QUANT, out=q)
    np.floor(q, out=q)
    np.clip(q, _ZERO, _TOP, out=q)
    np.multiply(q[0], QUANT, out=q[0])
    np.add(q[0], q[1], out=q[0])
    np.multiply(q[0], QUANT, out=q[0])
    np.add(q[0], q[2], out=q[0])
    codes = w.codes
    np.copyto(codes, q[0], casting="unsafe")
    n = codes.size
    out = np.zeros(12, np.float32)
    mx, mn, sat, lum = w.mx, w.mn, w.sat, w.lum
    np.maximum(r, g, out=mx)
    np.maximum(mx, b, out=mx)
    np.minimum(r, g, out=mn)
    np.minimum(mn, b, out=mn)
    np.subtract(mx, mn, out=sat)
    np.clip(mx, _TINY, _INF, out=w.den)     # max(mx, 1e-6)
    np.divide(sat, w.den, out=sat)
    np.add(r, g, out=lum)                   # x.mean(axis=0) in float32: ((r + g) + b) / 3
    np.add(lum, b, out=lum)
    np.divide(lum, np.float32(3), out=lum)
    gy, gx, grad = w.gy, w.gx, w.grad
    np.subtract(lum[1:], lum[:-1], out=gy)
    np.abs(gy, out=gy)
    np.subtract(lum[:, 1:], lum[:, :-1], out=gx)
    np.abs(gx, out=gx)
    np.add(gx[:-1, :], gy[:, :-1], out=grad)
    # the colours' pixel counts, largest first; only the colours present (sorting the 4,096 bins,
    # mostly empty for a photo, cost more than counting them)
    counts = np.bincount(codes.ravel(), minlength=QUANT ** 3)
    counts = np.sort(counts[counts > 0].astype(np.int32))[::-1]
    out[0] = counts[0] / n
    out[1] = counts[:4].sum() / n
    out[2] = counts[:16].sum() / n
    out[3] = np.log1p(counts.size) / np.log(QUANT ** 3)
    # a share of pixels: the count over n, as the mean of the 0/1 mask in float64 is (its sum is exact)
    m = grad.size
    out[4] = _mean(sat)
    out[5] = np.count_nonzero(sat < 0.08) / n                                # grey share
    out[6] = np.count_nonzero(mn > 0.92) / n                                 # near white
    out[7] = np.count_nonzero(mx < 0.08) / n                                 # near black
    out[8] = _std(lum, w.dev)
    out[9] = np.count_nonzero(grad < 0.01) / m                               # flat
    out[10] = np.count_nonzero(grad > 0.25) / m                              # sharp edges
    out[11] = _mean(grad)
    return out


@dataclass
class Kind:
    name: str                     # one of KINDS
    probability: float
    chart_type: str | None = None  # bar, line, pie or scatter, for a chart
    probabilities: dict | None = None   # every class of CLASSES


class KindClassifier:
    """Standardise, then softmax(x W^T + b)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, mean: np.ndarray, std: np.ndarray,
                 classes=CLASSES, uses_pooled: bool = True):
        self.weight, self.bias = np.asarray(weight, np.float32), np.asarray(bias, np.float32)
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.classes, self.uses_pooled = tuple(classes), uses_pooled

    def features(self, pooled: np.ndarray | None, colour: np.ndarray) -> np.ndarray:
        return np.concatenate([pooled, colour], 1) if self.uses_pooled else colour

    def probs(self, pooled: np.ndarray | None, colour: np.ndarray) -> np.ndarray:
        return self.probs_of(self.features(pooled, colour))

    def probs_of(self, features: np.ndarray) -> np.ndarray:
        """Features as ``features()`` lays them out -> class probabilities [B, len(classes)]."""
        z = (features - self.mean) / self.std
        logits = z @ self.weight.T + self.bias
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)

    def decide(self, probs: np.ndarray) -> list[Kind]:
        out = []
        for row in probs:
            per_kind = {k: 0.0 for k in KINDS}
            for c, p in zip(self.classes, row):
                per_kind[c.split(":")[0]] += float(p)
            name = max(per_kind, key=per_kind.get)
            chart = None
            if name == "chart":
                subs = {c.split(":")[1]: float(p) for c, p in zip(self.classes, row) if c.startswith("chart:")}
                best = max(subs, key=subs.get)
                chart = best if subs[best] >= 0.5 * per_kind["chart"] else None   # only where it can tell
            out.append(Kind(name, per_kind[name], chart, {c: round(float(p), 4) for c, p in zip(self.classes, row)}))
        return out


def load(encoder_digest: str | None, path: Path = KIND_FILE) -> tuple[KindClassifier, dict] | None:
    """-> (the classifier for this encoder, the file's information), or None if there is no file.
    The full classifier where ``encoder_digest`` is the one it was fitted on, else the colour-only one."""
    if not Path(path).is_file():
        return None
    from safetensors.numpy import load_file
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        info = json.loads(f.metadata()["kind"])
    t = load_file(str(path))
    which = "full" if encoder_digest and encoder_digest == info.get("encoder_digest") else "colour"
    clf = KindClassifier(t[f"{which}.weight"], t[f"{which}.bias"], t[f"{which}.mean"], t[f"{which}.std"],
                         info["classes"], uses_pooled=which == "full")
    return clf, {**info, "used": which}


def save(path: Path, classifiers: dict[str, KindClassifier], info: dict) -> None:
    """Write ``{"full": ..., "colour": ...}`` and ``info`` (JSON) as one safetensors file, atomically."""
    import os

    from safetensors.numpy import save_file

    tensors = {}
    for name, c in classifiers.items():
        tensors.update({f"{name}.weight": c.weight, f"{name}.bias": c.bias, f"{name}.mean": c.mean,
                        f"{name}.std": c.std})
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}, str(tmp),
              metadata={"kind": json.dumps(info)})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
