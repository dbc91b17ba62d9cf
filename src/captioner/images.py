"""Opening images the way users send them: any path, any PIL-readable format, with one
clear error (``ImageError``) that names the input instead of a traceback.  ``Blob``: an image file's bytes
with the name it is known by (a picture inside a Word file or an e-book, a ``data:`` URI, an upload),
opened, batched and captioned wherever a path is."""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

# The most pixels an image may decode to (decompression bombs, and a worker's memory: 268 MB of RGB):
# Pillow's own default warning limit.  A larger JPEG (a 100-megapixel camera's) is decoded at half or a
# quarter of its size instead (libjpeg's DCT scaling: less memory and time than decoding it whole);
# anything else larger is refused, naming its size and the limit.
MAX_PIXELS = 89_478_485
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _jpeg_scale(img: Image.Image, at_least: int | None) -> None:
    """Have libjpeg decode ``img`` at 1/2, 1/4 or 1/8 of its size (DCT scaling, ``draft``): the smallest
    scale whose shorter side keeps ``at_least`` pixels (None: full size), then smaller still while it
    holds more than MAX_PIXELS.  A phone's 4,032 x 3,024 photo for a 224-pixel model (``at_least`` 448)
    decodes at 1/4, 1,008 x 756: a sixteenth of the pixels, in a quarter of the time with the resize
    (benchmarks/bench_large_photos.py)."""
    w, h = img.size
    k = 1
    while at_least and k < 8 and min(w, h) // (2 * k) >= at_least:
        k *= 2
    while k < 8 and -(-w // k) * -(-h // k) > MAX_PIXELS:
        k *= 2
    if k > 1:
        img.draft(img.mode, (-(-w // k), -(-h // k)))


@dataclass(frozen=True)
class Blob:
    """An image file's bytes and its name (the name is what messages and results show)."""

    name: str
    data: bytes

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:   # never the bytes
        return f"Blob({self.name!r}, {len(self.data)} bytes)"


class ImageError(ValueError):
    """An input that cannot be captioned; ``str()`` is a one-line message naming it."""


def open_image(source, name: str | None = None, at_least: int | None = None) -> Image.Image:
    """Open a path, ``Blob``, file object or PIL image as an upright RGB image.

    EXIF orientation is applied, animations give their first frame, transparency is
    composited onto white, and any mode (palette, 16-bit, CMYK, grayscale) becomes RGB.
    ``at_least``: the caller needs no more than this many pixels on the shorter side, so a JPEG may be
    decoded at 1/2, 1/4 or 1/8 of its size as long as that side keeps them (``_jpeg_scale``).
    """
    name = name or str(source)
    if isinstance(source, Blob):
        if not source.data:
            raise ImageError(f"{name}: empty file")
        source = io.BytesIO(source.data)
    if isinstance(source, Image.Image):
        img = source
    elif not isinstance(source, (str, os.PathLike)) and not hasattr(source, "read"):
        raise TypeError(f"{name!r}: give a path, a file object or a PIL image, not {type(source).__name__}")
    else:
        if isinstance(source, (str, Path)):
            p = Path(source)
            if not p.exists():
                raise ImageError(f"{name}: no such file")
            if p.is_dir():
                raise ImageError(f"{name}: is a directory with no images in it")
            if p.stat().st_size == 0:
                raise ImageError(f"{name}: empty file")
        try:
            with warnings.catch_warnings():
                # the size is checked here, against MAX_PIXELS, after a large JPEG is scaled down
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(source)
                if img.format == "JPEG":
                    _jpeg_scale(img, at_least)
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise ImageError(f"{name}: image too large ({w}x{h}, {w * h / 1e6:.1f} megapixels; "
                                     f"the limit is {MAX_PIXELS / 1e6:.1f})")
                img.seek(0)
                img.load()
        except ImageError:
            raise
        except Image.DecompressionBombError:   # Pillow's hard limit, twice its warning's: refused unread
            raise ImageError(f"{name}: image too large (over {2 * MAX_PIXELS / 1e6:.0f} megapixels; the limit is "
                             f"{MAX_PIXELS / 1e6:.1f})") from None
        except Image.UnidentifiedImageError:
            raise ImageError(f"{name}: not an image file (unrecognised format)") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageError(f"{name}: corrupt or truncated image ({e})") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block should not stop captioning the pixels
        pass
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    if img.mode.startswith("I"):  # 32-bit and 16-bit integer modes ("I", "I;16", "I;16B", ...)
        img = img.point(lambda v: v / 256).convert("L")
    if img.mode != "RGB":
        img = img.convert("RGB")
    if min(img.size) < 1:
        raise ImageError(f"{name}: image has no pixels")
    return img


def _walk(folder: Path) -> list[str]:
    """The images under ``folder``, recursively, sorted; hidden files and folders (names starting
    with ".": thumbnails, caches, temporary files) skipped; symbolic links to folders not followed,
    so a link loop cannot run forever."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files)
                  if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return found


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files, folders (their images with the suffixes in ``IMAGE_SUFFIXES``, any letter case,
    recursively) and globs -> a list of paths, in order, each once.  A name that matches nothing is
    kept so the caller reports it as missing."""
    import glob

    out = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(_walk(p) or [item])  # an empty folder is reported, not skipped silently
        elif not p.exists() and any(c in item for c in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            out.extend(matches if matches else [item])
        else:
            out.append(item)
    return list(dict.fromkeys(out))


def read_path_list(path: str | Path) -> list[str]:
    """``--from-list FILE``: one path a line (UTF-8; blank lines and lines starting with # skipped),
    for lists too long for a shell.  Relative paths are taken from the current folder, as on the
    command line; folders and globs are expanded the same way."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"--from-list {path}: no such file") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"--from-list {path}: not UTF-8 text ({e})") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
