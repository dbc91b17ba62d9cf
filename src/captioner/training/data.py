"""Captioning datasets: parsing the public layouts, the split, text normalisation.

``load_dataset(path)`` takes a folder or a file (auto-detected, or forced with ``layout=``):
  * ``kaggle``    - a folder with ``Images/`` + ``captions.txt`` (CSV ``image,caption``); split from
                    ``Flickr8k_text/Flickr_8k.{train,dev,test}Images.txt`` when present.
  * ``original``  - a folder with ``Flickr8k_text/Flickr8k.token.txt`` (``NAME.jpg#K<TAB>caption``) +
                    the split files.
  * ``karpathy``  - Karpathy's JSON (``images[].filename/split/sentences[].raw``, with ``filepath``
                    for COCO), the format of his Flickr8k, Flickr30k and COCO splits: a folder holding
                    ``dataset_*.json`` or the file itself.  An image is at ``DIR/<filepath>/<filename>``
                    (DIR: the JSON's folder, or its ``Images/`` or ``flickr30k-images/`` sub-folder
                    where the images are there); ``restval`` counts as train, ``val`` as dev.
  * ``csv`` / ``jsonl`` - your own captions: a CSV file with a header, or a JSON-lines file, with
                    ``image`` (a path relative to that file) and ``caption``, one caption per row,
                    and optionally ``split`` (train / dev / test, or val for dev).  Without a split
                    column every image gets a deterministic 90 / 5 / 5 split from a hash of its path
                    (``Dataset.assigned_split``; ``captioner train`` writes it to the run folder).

Image keys are paths relative to ``Dataset.image_dir``.  Nothing is dropped silently: every unusable
entry (malformed key, caption of a missing image, empty caption, duplicate) is counted in
``Dataset.skipped`` and reported by ``summary()``.
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "dev", "test")
_TOKEN_RE = re.compile(r"[a-z0-9]+")
_IMAGE_NAME_RE = re.compile(r"^[^/\\]+\.(jpe?g|png)$", re.IGNORECASE)
# relative paths in sub-folders (COCO's train2014/..., your own data): no absolute path, no "..";
# any format the image reader takes
_IMAGE_PATH_RE = re.compile(r"^(?![/\\])(?!.*(^|[/\\])\.\.([/\\]|$))[^\x00]+\.(jpe?g|png|webp|bmp|gif|tiff?)$",
                            re.IGNORECASE)
SPLIT_NAMES = {"train": "train", "restval": "train", "val": "dev", "validation": "dev", "dev": "dev", "test": "test"}


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
    assigned_split: bool = False              # the split was assigned by hash (no split column)

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
        if self.assigned_split:
            parts.append("no split column: split 90/5/5 by a hash of each image path")
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


def _add(captions, skipped, image_dir, name, caption, where, pattern=_IMAGE_NAME_RE):
    """Add one caption after checking it; count instead of crashing on anything unusable."""
    caption = (caption or "").strip()
    if not isinstance(name, str) or not pattern.match(name):
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


def _karpathy_image_dir(path: Path, images: list) -> Path:
    """Where a Karpathy JSON's images are: its folder, or the usual sub-folders, whichever holds
    the first image the file names."""
    first = next((img for img in images if isinstance(img, dict) and img.get("filename")), None)
    candidates = [path.parent, path.parent / "Images", path.parent / "flickr30k-images"]
    if first:
        rel = Path(first.get("filepath") or "") / first["filename"]
        for d in candidates:
            if (d / rel).is_file():
                return d
    return next((d for d in candidates[1:] if d.is_dir()), path.parent)


def read_karpathy(path: Path, image_dir: Path | None = None) -> tuple[Path, dict, dict, Counter]:
    """-> (image folder, captions, split, skipped); COCO's ``filepath`` becomes part of the key."""
    try:
        data = json.loads(_open_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: expected a Karpathy-format object with an 'images' list")
    image_dir = image_dir or _karpathy_image_dir(path, data["images"])
    captions, split_of, skipped = {}, {}, Counter()
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict):
            skipped["malformed entry"] += 1
            continue
        name = img.get("filename", "")
        if img.get("filepath"):
            name = f"{img['filepath']}/{name}"
        for sent in img.get("sentences", []):
            raw = sent.get("raw") or " ".join(sent.get("tokens", []))
            _add(captions, skipped, image_dir, name, raw, f"{path}: images[{i}]", _IMAGE_PATH_RE)
        if name in captions and img.get("split") in SPLIT_NAMES:
            split_of[name] = SPLIT_NAMES[img["split"]]
    return image_dir, captions, split_of, skipped


def hash_split(name: str) -> str:
    """A deterministic 90 / 5 / 5 train / dev / test split by image path."""
    bucket = int(hashlib.sha1(name.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "train" if bucket < 90 else "dev" if bucket < 95 else "test"


def _rows_csv(path: Path):
    rows = csv.DictReader(_open_text(path).splitlines())
    fields = [f.strip().lower() for f in rows.fieldnames or []]
    if "image" not in fields or "caption" not in fields:
        raise ValueError(f"{path}:1: expected a header with the columns 'image' and 'caption' "
                         f"(and optionally 'split'), got {rows.fieldnames!r}")
    rows.fieldnames = fields
    for lineno, row in enumerate(rows, start=2):
        yield lineno, row


def _rows_jsonl(path: Path):
    for lineno, line in enumerate(_open_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not valid JSON: {e.msg}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{lineno}: expected an object with 'image' and 'caption'")
        yield lineno, row


def read_own(path: Path, layout: str) -> tuple[dict, dict, Counter, bool]:
    """Your own CSV or JSON-lines captions -> (captions, split, skipped, split assigned by hash)."""
    captions, split_of, skipped = {}, {}, Counter()
    has_split = None
    for lineno, row in (_rows_csv(path) if layout == "csv" else _rows_jsonl(path)):
        name, caption = row.get("image"), row.get("caption")
        name = name.strip().replace("\\", "/") if isinstance(name, str) else name
        split = row.get("split")
        if has_split is None:
            has_split = split is not None
        if has_split and split is not None and str(split).strip().lower() not in SPLIT_NAMES:
            raise ValueError(f"{path}:{lineno}: split {split!r}: expected train, dev (or val) or test")
        if has_split and (split is None or not str(split).strip()):
            raise ValueError(f"{path}:{lineno}: no split, though earlier rows have one")
        before = len(captions.get(name, [])) if isinstance(name, str) else 0
        _add(captions, skipped, path.parent, name, caption if isinstance(caption, str) else "",
             f"{path}:{lineno}", _IMAGE_PATH_RE)
        if has_split and isinstance(name, str) and len(captions.get(name, [])) > before:
            s = SPLIT_NAMES[str(split).strip().lower()]
            if split_of.setdefault(name, s) != s:
                raise ValueError(f"{path}:{lineno}: {name} is in split '{split_of[name]}' on an earlier row "
                                 f"and '{s}' here")
    if not has_split:
        split_of = {n: hash_split(n) for n in captions}
    return captions, split_of, skipped, not has_split


FILE_LAYOUTS = {".json": "karpathy", ".csv": "csv", ".jsonl": "jsonl"}


def detect_layout(root: Path) -> str:
    if root.is_file():
        if root.suffix.lower() in FILE_LAYOUTS:
            return FILE_LAYOUTS[root.suffix.lower()]
        raise ValueError(f"{root}: a dataset file must be a Karpathy .json, a .csv or a .jsonl")
    if (root / "captions.txt").is_file():
        return "kaggle"
    if (root / "Flickr8k_text" / "Flickr8k.token.txt").is_file():
        return "original"
    if list(root.glob("dataset_*.json")):
        return "karpathy"
    raise FileNotFoundError(f"{root}: no dataset found (expected captions.txt, Flickr8k_text/Flickr8k.token.txt "
                            f"or dataset_*.json in it, or a .json, .csv or .jsonl file)")


LAYOUTS = ("kaggle", "original", "karpathy", "csv", "jsonl")


def load_dataset(root: str | Path, layout: str | None = None) -> Dataset:
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"{root}: dataset folder or file not found")
    layout = layout or detect_layout(root)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout '{layout}'; choose {', '.join(LAYOUTS)}")
    assigned = False
    if root.is_file() or layout in ("csv", "jsonl"):
        if not root.is_file():
            raise ValueError(f"{root}: the {layout} layout is a file, not a folder")
        if layout == "karpathy":
            image_dir, captions, split_of, skipped = read_karpathy(root)
        elif layout in ("csv", "jsonl"):
            image_dir = root.parent
            captions, split_of, skipped, assigned = read_own(root, layout)
        else:
            raise ValueError(f"{root}: the {layout} layout is a folder, not a file")
    elif layout == "karpathy":
        files = sorted(root.glob("dataset_*.json"))
        if not files:
            raise FileNotFoundError(f"{root}: no dataset_*.json file")
        image_dir, captions, split_of, skipped = read_karpathy(files[0])
    else:
        image_dir = root / "Images"
        if not image_dir.is_dir():
            raise FileNotFoundError(f"{image_dir}: image folder not found")
        text_dir = root / "Flickr8k_text"
        if layout == "kaggle":
            captions, skipped = read_kaggle(root, image_dir)
        else:
            captions, skipped = read_token_file(text_dir / "Flickr8k.token.txt", image_dir)
        split_of = _read_split_files(text_dir)
    if not captions:
        raise ValueError(f"{root}: no usable captions found ({layout} layout)")
    for name in list(split_of):
        if name not in captions:
            del split_of[name]
            skipped["split entry without captions"] += 1
    return Dataset(root, image_dir, captions, split_of, layout, skipped, assigned)
