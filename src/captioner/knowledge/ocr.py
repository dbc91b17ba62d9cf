"""Reading the text in an image, offline: RapidOCR 3.10 (Apache-2.0) on ONNX Runtime, with the
PP-OCRv6 small detector, its recogniser and the PP-OCR direction classifier that its wheel ships.
No torch; every model path is given explicitly, so nothing is ever downloaded (any other RapidOCR
configuration fetches its models on first use, which fails offline).

    from captioner.knowledge.ocr import TextReader
    text = TextReader().read(pil_image)          # ImageText: .lines (reading order), .text
    for line in text.lines:
        print(line.text, line.confidence, line.box)   # box: 4 corner points, pixels of the image

Why RapidOCR: measured on the held-out screenshots, pages and charts (``benchmarks/bench_text.py``;
docs/text.md) it reads nearly every word, from a pip install with its models inside (33 MB);
Tesseract misses a quarter of the words on the same kinds of images (as reported; not rerun here).

What is kept of the engine's output (``filter_lines``):
  * script: the recogniser also reads Chinese and other scripts; a line is kept only when at least
    half of its visible characters are Latin letters or digits and it holds no CJK character
    (the captioner writes English);
  * confidence: at least ``min_confidence`` (0.5, the engine's own default);
  * on photos (``photo=True``) much more strictly, because leaves, fences and textures read as
    glyphs there ("GAKES"): confidence >= 0.9, at least three letters, a box at least 2 % of the
    image's height and not taller than it is wide. The false-text rate this leaves on Flickr8k
    photos is measured in docs/text.md.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path


ENGINE = "rapidocr==3.10.0"
MODEL_FILES = {"Det.model_path": "PP-OCRv6_det_small.onnx", "Rec.model_path": "PP-OCRv6_rec_small.onnx",
               "Cls.model_path": "ch_ppocr_mobile_v2.0_cls_mobile.onnx"}
MIN_CONFIDENCE = 0.5
PHOTO_MIN_CONFIDENCE = 0.9
PHOTO_MIN_LETTERS = 3
PHOTO_MIN_HEIGHT = 0.02      # of the image's height


class TextReaderError(RuntimeError):
    """The text reader is missing or broken; ``str()`` says what to do."""


@dataclass
class TextLine:
    text: str
    confidence: float
    box: list[list[int]]          # four (x, y) corners, clockwise from top left

    @property
    def height(self) -> float:
        ys = [p[1] for p in self.box]
        xs = [p[0] for p in self.box]
        return min(max(ys) - min(ys), max(xs) - min(xs))   # a vertical line's height is its width

    @property
    def vertical(self) -> bool:
        ys = [p[1] for p in self.box]
        xs = [p[0] for p in self.box]
        return (max(ys) - min(ys)) > 1.5 * (max(xs) - min(xs)) and len(self.text) > 1

    def to_dict(self) -> dict:
        return {"text": self.text, "confidence": round(self.confidence, 4), "box": self.box}


@dataclass
class ImageText:
    lines: list[TextLine] = field(default_factory=list)   # reading order
    width: int = 0
    height: int = 0

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    def __bool__(self) -> bool:
        return bool(self.lines)

    def to_dict(self) -> dict:
        return {"text": self.text, "lines": [line.to_dict() for line in self.lines]}


_CJK = re.compile(r"[\u3000-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")


def latin(text: str) -> bool:
    """At least half the visible characters are Latin letters or digits, and none is CJK."""
    chars = [c for c in text if not c.isspace()]
    if not chars or _CJK.search(text):
        return False
    good = sum(c.isdigit() or (c.isalpha() and "LATIN" in unicodedata.name(c, "")) for c in chars)
    return good >= len(chars) / 2


def filter_lines(lines: list[TextLine], image_height: int, photo: bool = False,
                 min_confidence: float = MIN_CONFIDENCE) -> list[TextLine]:
    out = []
    for line in lines:
        t = line.text.strip()
        if not t or not latin(t) or line.confidence < min_confidence:
            continue
        if photo:
            xs = [p[0] for p in line.box]
            ys = [p[1] for p in line.box]
            if (line.confidence < PHOTO_MIN_CONFIDENCE or sum(c.isalpha() for c in t) < PHOTO_MIN_LETTERS
                    or (max(ys) - min(ys)) < PHOTO_MIN_HEIGHT * image_height
                    or (max(ys) - min(ys)) > (max(xs) - min(xs))):
                continue
        out.append(TextLine(t, line.confidence, line.box))
    return out


def reading_order(lines: list[TextLine]) -> list[TextLine]:
    """Rows top to bottom (lines whose vertical spans overlap by half the smaller height share a
    row), left to right within a row."""
    def span(line):
        ys = [p[1] for p in line.box]
        return min(ys), max(ys)

    rows: list[list[TextLine]] = []
    for line in sorted(lines, key=lambda l: span(l)[0]):
        top, bottom = span(line)
        for row in rows:
            rt, rb = span(row[0])
            if min(bottom, rb) - max(top, rt) > 0.5 * min(bottom - top, rb - rt):
                row.append(line)
                break
        else:
            rows.append([line])
    return [l for row in rows for l in sorted(row, key=lambda l: min(p[0] for p in l.box))]


def _extent(line: TextLine) -> tuple[int, int, int, int]:
    xs = [p[0] for p in line.box]
    ys = [p[1] for p in line.box]
    return min(xs), min(ys), max(xs), max(ys)


def same_row(a: TextLine, b: TextLine, height_ratio: float = 0.75) -> bool:
    """Two horizontal lines of one size on one baseline: their vertical extents overlap by most of
    the smaller one, and the smaller is at least ``height_ratio`` of the larger."""
    _, at, _, ab = _extent(a)
    _, bt, _, bb = _extent(b)
    ha, hb = ab - at, bb - bt
    if min(ha, hb) <= 0 or min(ha, hb) < height_ratio * max(ha, hb):
        return False
    return min(ab, bb) - max(at, bt) >= 0.6 * min(ha, hb)


def join_fragments(lines: list[TextLine], max_gap: float = 1.0) -> list[list[TextLine]]:
    """The lines of type the detector read as several boxes, grouped: a title as wide as a chart's
    plot comes back as "Visitors to the", "museum per day".  Horizontal lines on one baseline
    (``same_row``) whose gap is at most ``max_gap`` times their height (a word space is about a
    third of it; a legend's entries, apart by a colour swatch, are further) form one group, left to
    right; every other line is a group of its own.  -> the groups in the reading order of their
    first fragments (``joined`` makes one line of a group)."""
    groups: list[list[TextLine]] = []
    for line in sorted(lines, key=lambda l: _extent(l)[0]):
        if not line.vertical:
            x0 = _extent(line)[0]
            for g in groups:
                last = g[-1]
                lx1 = _extent(last)[2]
                if not last.vertical and same_row(last, line) and -0.5 * line.height <= x0 - lx1 <= max_gap * max(line.height, last.height):
                    g.append(line)
                    break
            else:
                groups.append([line])
        else:
            groups.append([line])
    order = {id(l): i for i, l in enumerate(reading_order([g[0] for g in groups]))}
    return sorted(groups, key=lambda g: order[id(g[0])])


def joined(group: list[TextLine]) -> TextLine:
    """One line of a group of fragments (``join_fragments``): their texts left to right, the lowest
    confidence, the box round them all."""
    if len(group) == 1:
        return group[0]
    x0 = min(_extent(l)[0] for l in group)
    y0 = min(_extent(l)[1] for l in group)
    x1 = max(_extent(l)[2] for l in group)
    y1 = max(_extent(l)[3] for l in group)
    return TextLine(" ".join(l.text for l in group), min(l.confidence for l in group),
                    [[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


class TextReader:
    """One OCR engine, loaded on first use and reused.  ``threads``: ONNX Runtime threads (None:
    all cores)."""

    def __init__(self, threads: int | None = None, min_confidence: float = MIN_CONFIDENCE):
        self.threads, self.min_confidence = threads, min_confidence
        self._engine = None

    def engine(self):
        if self._engine is None:
            try:
                import rapidocr
                from rapidocr import RapidOCR
            except Exception as e:   # missing, or a broken install (an import error inside it)
                raise TextReaderError(f"text reading needs RapidOCR: pip install '{ENGINE}' "
                                      f"({type(e).__name__}: {e})") from None
            models = Path(rapidocr.__file__).parent / "models"
            missing = [f for f in MODEL_FILES.values() if not (models / f).is_file()]
            if missing:
                raise TextReaderError(f"RapidOCR's bundled models are missing ({', '.join(missing)} in {models}); "
                                      f"reinstall it: pip install --force-reinstall '{ENGINE}'")
            params = {k: str(models / f) for k, f in MODEL_FILES.items()}
            params.update({"Global.log_level": "error", "Global.text_score": self.min_confidence})
            if self.threads:
                params["EngineConfig.onnxruntime.intra_op_num_threads"] = int(self.threads)
            try:
                self._engine = RapidOCR(params=params)
            except Exception as e:
                raise TextReaderError(f"RapidOCR could not start ({type(e).__name__}: {e})") from None
        return self._engine

    def read(self, image, photo: bool = False) -> ImageText:
        """A PIL image (RGB) -> the text in it, filtered (``filter_lines``), in reading order.
        Raises TextReaderError if the engine is missing or fails."""
        engine = self.engine()
        try:
            out = engine(image.convert("RGB"))
        except Exception as e:
            raise TextReaderError(f"RapidOCR failed on this image ({type(e).__name__}: {e})") from None
        lines = []
        if out is not None and getattr(out, "boxes", None) is not None and out.txts:
            for box, txt, score in zip(out.boxes, out.txts, out.scores):
                lines.append(TextLine(str(txt), float(score), [[int(round(x)), int(round(y))] for x, y in box]))
        kept = filter_lines(lines, image.height, photo, self.min_confidence)
        return ImageText(reading_order(kept), image.width, image.height)
