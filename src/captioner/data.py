"""Flickr8k-style datasets: parsing the three public layouts, the split, text normalisation.

Layouts read by ``load_dataset(root)`` (auto-detected, or forced with ``layout=``):
  * ``kaggle``    - ``Images/`` + ``captions.txt`` (CSV ``image,caption``); split from
                    ``Flickr8k_text/Flickr_8k.{train,dev,test}Images.txt`` when present.
  * ``original``  - ``Flickr8k_text/Flickr8k.token.txt`` (``NAME.jpg#K<TAB>caption``) +
                    the split files.
  * ``karpathy``  - a ``dataset_*.json`` (``images[].filename/split/sentences[].raw``), the
                    format Flickr30k and COCO use; Karpathy's ``restval`` counts as train.

Nothing is dropped silently: every unusable entry (malformed key, caption of a missing image,
empty caption, duplicate) is counted in ``Dataset.skipped`` and reported by ``summary()``.
"""
from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "dev", "test")
_TOKEN_RE = re.compile(r"[a-z0-9]+")
_IMAGE_NAME_RE = re.compile(r"^[^/\\]+\.(jpe?g|png)$", re.IGNORECASE)


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens with punctuation removed: the normalisation used for the
    vocabulary, for training targets and for the references every metric sees."""
    return _TOKEN_RE.findall(text.lower().replace("'", ""))


@dataclass
class Dataset:
    root: Path
    image_dir: Path
    captions: dict[str, list[str]]            # image file name -> raw captions
    split_of: dict[str, str]                  # image file name -> train/dev/test
    layout: str
    skipped: Counter = field(default_factory=Counter)

    def images(self, split: str | None = None) -> list[str]:
        names = sorted(self.captions)
        if split is None:
            return names
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
        return [n for n in names if self.split_of.get(n) == split]

    def references(self, split: str) -> dict[str, list[list[str]]]:
        return {n: [tokenize(c) for c in self.captions[n]] for n in self.images(split)}

    def summary(self) -> str:
        counts = Counter(self.split_of.get(n, "none") for n in self.captions)
        n_caps = sum(len(v) for v in self.captions.values())
        parts = [f"{self.layout} layout at {self.root}: {len(self.captions)} images, {n_caps} captions",
                 "split " + ", ".join(f"{s} {counts.get(s, 0)}" for s in (*SPLITS, "none"))]
        if self.skipped:
            parts.append("skipped " + ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())))
        return "; ".join(parts)


def _read_split_files(text_dir: Path) -> dict[str, str]:
    split_of = {}
    for split in SPLITS:
        f = text_dir / f"Flickr_8k.{split}Images.txt"
        if f.is_file():
            for line in f.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    split_of[line.strip()] = split
    return split_of


def _add(captions, skipped, image_dir, name, caption, where):
    """Add one caption after checking it; count instead of crashing on anything unusable."""
    caption = (caption or "").strip()
    if not _IMAGE_NAME_RE.match(name):
        skipped["malformed image name"] += 1
        return
    if not tokenize(caption):
        skipped["empty caption"] += 1
        return
    if name not in captions and not (image_dir / name).is_file():
        skipped["caption of a missing image"] += 1
        return
    captions.setdefault(name, []).append(caption)


def _open_text(path: Path):
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}): {e.reason}") from None


def read_kaggle(root: Path, image_dir: Path) -> tuple[dict, Counter]:
    captions, skipped = {}, Counter()
    path = root / "captions.txt"
    rows = csv.reader(_open_text(path).splitlines())
    header = next(rows, None)
    if header is None or [h.strip().lower() for h in header[:2]] != ["image", "caption"]:
        raise ValueError(f"{path}:1: expected the header 'image,caption', got {header!r}")
    for lineno, row in enumerate(rows, start=2):
        if len(row) < 2:
            skipped["malformed line"] += 1
            continue
        _add(captions, skipped, image_dir, row[0].strip(), ",".join(row[1:]), f"{path}:{lineno}")
    return captions, skipped


def read_token_file(path: Path, image_dir: Path) -> tuple[dict, Counter]:
    captions, skipped, seen = {}, Counter(), set()
    for lineno, line in enumerate(_open_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, caption = line.partition("\t")
        name, hash_, k = key.rpartition("#")
        if not sep or not hash_ or not k.isdigit():
            skipped["malformed line"] += 1
            continue
        if key in seen:
            skipped["duplicate key"] += 1
            continue
        seen.add(key)
        _add(captions, skipped, image_dir, name, caption, f"{path}:{lineno}")
    return captions, skipped


def read_karpathy(path: Path, image_dir: Path) -> tuple[dict, dict, Counter]:
    try:
        data = json.loads(_open_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: expected a Karpathy-format object with an 'images' list")
    captions, split_of, skipped = {}, {}, Counter()
    split_names = {"train": "train", "restval": "train", "val": "dev", "dev": "dev", "test": "test"}
    for i, img in enumerate(data["images"]):
        name = img.get("filename", "")
        for sent in img.get("sentences", []):
            raw = sent.get("raw") or " ".join(sent.get("tokens", []))
            _add(captions, skipped, image_dir, name, raw, f"{path}: images[{i}]")
        if name in captions and img.get("split") in split_names:
            split_of[name] = split_names[img["split"]]
    return captions, split_of, skipped


def detect_layout(root: Path) -> str:
    if (root / "captions.txt").is_file():
        return "kaggle"
    if (root / "Flickr8k_text" / "Flickr8k.token.txt").is_file():
        return "original"
    if list(root.glob("dataset_*.json")):
        return "karpathy"
    raise FileNotFoundError(f"{root}: no Flickr8k data found (expected captions.txt, "
                            f"Flickr8k_text/Flickr8k.token.txt or dataset_*.json)")


def load_dataset(root: str | Path, layout: str | None = None) -> Dataset:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    layout = layout or detect_layout(root)
    image_dir = root / "Images"
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{image_dir}: image folder not found")
    text_dir = root / "Flickr8k_text"
    if layout == "kaggle":
        captions, skipped = read_kaggle(root, image_dir)
        split_of = _read_split_files(text_dir)
    elif layout == "original":
        captions, skipped = read_token_file(text_dir / "Flickr8k.token.txt", image_dir)
        split_of = _read_split_files(text_dir)
    elif layout == "karpathy":
        files = sorted(root.glob("dataset_*.json"))
        if not files:
            raise FileNotFoundError(f"{root}: no dataset_*.json file")
        captions, split_of, skipped = read_karpathy(files[0], image_dir)
    else:
        raise ValueError(f"unknown layout '{layout}'; choose kaggle, original or karpathy")
    if not captions:
        raise ValueError(f"{root}: no usable captions found ({layout} layout)")
    for name in list(split_of):
        if name not in captions:
            del split_of[name]
            skipped["split entry without captions"] += 1
    return Dataset(root, image_dir, captions, split_of, layout, skipped)
