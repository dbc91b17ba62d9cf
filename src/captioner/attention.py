"""Attention maps drawn over the photo: the strip of ``captioner caption --plot`` and the app's
overlay.  Matplotlib is imported when a map is drawn, not before.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _mpl():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return matplotlib, plt


def plot_attention(image, words: list[str], attention, path: str | Path, cols: int = 5) -> None:
    """A strip of small maps: the image with the attention of each generated word on top.

    ``attention`` is [len(words), L] with L = grid side squared."""
    _, plt = _mpl()
    att = np.asarray(attention, dtype=np.float32)
    side = int(round(att.shape[1] ** 0.5))
    n = len(words) + 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows))
    axes = np.atleast_1d(axes).ravel()
    img = np.asarray(image.convert("RGB"))
    for ax in axes:
        ax.axis("off")
    axes[0].imshow(img), axes[0].set_title("input", fontsize=9)
    for i, w in enumerate(words):
        m = att[i].reshape(side, side)
        axes[i + 1].imshow(img)
        axes[i + 1].imshow(m / (m.max() + 1e-8), cmap="jet", alpha=0.45,
                           extent=(0, img.shape[1], img.shape[0], 0), interpolation="bilinear")
        axes[i + 1].set_title(w, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def attention_overlay(image, attention_row, alpha: float = 0.5):
    """One word's attention [L] drawn over the image as a heat map -> PIL image (for the app)."""
    from PIL import Image

    matplotlib, _ = _mpl()
    att = np.asarray(attention_row, dtype=np.float32)
    side = int(round(att.shape[0] ** 0.5))
    m = att.reshape(side, side)
    m = m / (m.max() + 1e-8)
    img = image.convert("RGB")
    heat = Image.fromarray((m * 255).astype(np.uint8)).resize(img.size, Image.BILINEAR)
    colours = (matplotlib.colormaps["jet"](np.asarray(heat) / 255.0)[..., :3] * 255).astype(np.uint8)
    return Image.blend(img, Image.fromarray(colours), alpha)
