"""Shared fixtures: the real dataset in ../shared (tests skip where it is absent) and tiny
synthetic datasets in each public layout, made on the fly."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "flickr8k"
needs_shared = pytest.mark.skipif(not (SHARED / "Images").is_dir(), reason="../shared/flickr8k is absent")

WORDS = {"red": "a red square on a white wall", "blue": "a blue square in the sky",
         "green": "a green field with grass"}
COLOURS = {"red": (220, 30, 30), "blue": (30, 40, 220), "green": (30, 200, 40)}


def make_dataset(root: Path, n_per_colour: int = 6, size: int = 64) -> dict:
    """A tiny dataset whose captions depend on the image (colour) so a model can learn it.
    Writes images and the three layouts; returns {name: (colour, split)}."""
    rng = random.Random(0)
    (root / "Images").mkdir(parents=True)
    (root / "Flickr8k_text").mkdir()
    info = {}
    for colour, rgb in COLOURS.items():
        for i in range(n_per_colour):
            name = f"{colour}_{i}.jpg"
            px = tuple(min(255, max(0, c + rng.randint(-20, 20))) for c in rgb)
            Image.new("RGB", (size, size), px).save(root / "Images" / name)
            split = "test" if i == n_per_colour - 1 else "dev" if i == n_per_colour - 2 else "train"
            info[name] = (colour, split)
    caps = {n: [WORDS[c] + " .", WORDS[c].capitalize(), f"{c} colour", f"A {c} thing .", WORDS[c]]
            for n, (c, _) in info.items()}
    with open(root / "captions.txt", "w") as f:
        f.write("image,caption\n")
        for n, cs in caps.items():
            for c in cs:
                f.write(f'{n},"{c}"\n' if "," in c else f"{n},{c}\n")
    with open(root / "Flickr8k_text" / "Flickr8k.token.txt", "w") as f:
        for n, cs in caps.items():
            for k, c in enumerate(cs):
                f.write(f"{n}#{k}\t{c}\n")
    for split in ("train", "dev", "test"):
        (root / "Flickr8k_text" / f"Flickr_8k.{split}Images.txt").write_text(
            "".join(f"{n}\n" for n, (_, s) in info.items() if s == split))
    karpathy = {"images": [{"filename": n, "split": {"dev": "val"}.get(s, s),
                            "sentences": [{"raw": c, "tokens": c.lower().split()} for c in caps[n]]}
                           for n, (_, s) in info.items()]}
    (root / "dataset_tiny.json").write_text(json.dumps(karpathy))
    return info


@pytest.fixture
def tiny_data(tmp_path):
    root = tmp_path / "tiny"
    make_dataset(root)
    return root
