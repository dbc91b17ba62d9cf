"""Resolving an image reference's ``src`` to the image it names, without ever leaving the folder given.

``resolve(ref, allowed, root)`` sets ``ref.image`` (a file path, ``DOC!/member`` for a picture inside a zip
document, ``data:TYPE;sha256=…`` for a ``data:`` URI) or ``ref.problem`` (why there is no image):

- remote (``http:``, ``https:``, ``//host/…``, any other scheme): not fetched, captioner stays offline;
- ``data:`` URIs: decoded (base64 or percent-encoded), at most ``MAX_DATA_BYTES``;
- paths: URL-decoded, query and fragment dropped, taken relative to the document; site-absolute ones
  (``/img/x.png``) relative to ``root`` (``--root DIR``), refused without one;
- the candidate's real path (symbolic links followed) must lie inside one of the ``allowed`` folders
  (the folders given on the command line, and ``root``): checked BEFORE anything opens the file, so
  ``../../``, absolute paths and links pointing out are refused and never opened;
- a missing file: "not found".

``image_bytes(ref, fmt, data)`` then gives the bytes of a resolved image (SVG rendered to PNG with
resvg, when resvg-py is installed).  Nothing here parses markup: a ``src`` is a URL, taken apart with
urllib.

    python -m captioner.documents.paths DOCUMENT SRC [ROOT]     # prints what SRC resolves to
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
import sys
from pathlib import Path
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from captioner.documents.refs import ImageRef

MAX_DATA_BYTES = 20 << 20        # a data: URI decoded to more than this is refused (20 MB)
MAX_IMAGE_BYTES = 200 << 20      # an image file larger than this is not read
REMOTE = "remote image, not fetched (captioner stays offline)"
SVG_UNAVAILABLE = "SVG not captioned (install resvg-py to render SVG images)"


class ImageUnavailable(ValueError):
    """A resolved image whose bytes cannot be had; ``str()`` says why."""


def allowed_folders(paths, root=None) -> list[str]:
    """The folders a reference may resolve into: each folder given, each file's own folder, and ``root``
    (real paths, so a link named on the command line counts where it points)."""
    out = []
    for p in list(paths) + ([root] if root else []):
        p = Path(p)
        folder = p if p.is_dir() else p.parent
        out.append(os.path.realpath(folder))
    return list(dict.fromkeys(out))


def inside(path: str, folders: list[str]) -> bool:
    """Whether the real path ``path`` lies in one of ``folders`` (real paths too)."""
    return any(path == f or path.startswith(f.rstrip(os.sep) + os.sep) for f in folders)


def parse_data_uri(src: str) -> tuple[str, bytes]:
    """``data:[type][;base64],payload`` -> (media type, decoded bytes).  Raises ValueError."""
    head, sep, payload = src[5:].partition(",")
    if not sep:
        raise ValueError("a data: URI without a comma")
    params = [p.strip() for p in head.split(";")]
    media = (params[0] or "text/plain").lower()
    if len(payload) > MAX_DATA_BYTES * 2:   # checked before decoding: even percent-encoding is at most 3x
        raise ValueError(f"a data: URI over {MAX_DATA_BYTES >> 20} MB")
    if "base64" in (p.lower() for p in params[1:]):
        try:
            data = base64.b64decode("".join(unquote(payload).split()), validate=True)
        except ValueError as e:
            raise ValueError(f"a data: URI with broken base64 ({e})") from None
    else:
        data = unquote_to_bytes(payload)
    if len(data) > MAX_DATA_BYTES:
        raise ValueError(f"a data: URI over {MAX_DATA_BYTES >> 20} MB")
    return media, data


def resolve(ref: ImageRef, allowed: list[str], root: str | None = None) -> ImageRef:
    """Set ``ref.image`` or ``ref.problem`` (see the module docstring) -> ``ref``.  Opens nothing."""
    ref.image, ref.problem = None, None
    src = (ref.src or "").strip()
    if ref.embedded:
        ref.image = f"{ref.document}!/{ref.embedded}"
        return ref
    if not src:
        ref.problem = "no src"
        return ref
    if src[:5].lower() == "data:":
        try:
            media, data = parse_data_uri(src)
        except ValueError as e:
            ref.problem = str(e)
            return ref
        ref.image = f"data:{media};sha256={hashlib.sha256(data).hexdigest()[:16]}"
        return ref
    parts = urlsplit(src)
    if parts.scheme and len(parts.scheme) > 1 or src.startswith("//"):   # one letter: a Windows drive, not a scheme
        ref.problem = REMOTE if parts.scheme.lower() in ("http", "https", "ftp", "") else \
            f"a {parts.scheme}: URL, not an image file captioner reads"
        return ref
    rel = unquote(parts.path)
    if not rel:
        ref.problem = "no path in src"
        return ref
    if "\x00" in rel:
        ref.problem = "refused: a NUL byte in the path"
        return ref
    if rel.startswith("/"):
        if root is None:
            ref.problem = f"a site-absolute path; give --root DIR to resolve {rel}"
            return ref
        candidate = os.path.join(root, rel.lstrip("/"))
    else:
        candidate = os.path.join(os.path.dirname(ref.document), rel)
    real = os.path.realpath(candidate)
    if not inside(real, allowed):
        ref.problem = f"refused: {rel} leads outside the folder given ({real}); not opened"
        return ref
    if not os.path.isfile(real):
        ref.problem = "not found" if not os.path.exists(real) else "not a file"
        return ref
    ref.image = os.path.normpath(candidate)
    return ref


MAX_SVG_SIDE = 2048     # px: an SVG is rendered no larger (a declared 100000×100000 would take gigabytes)
_UNITS = {"": 1.0, "px": 1.0, "pt": 96 / 72, "pc": 16.0, "in": 96.0, "cm": 96 / 2.54, "mm": 96 / 25.4}


def _length(value: str | None) -> float | None:
    """An SVG length ("527pt", "20", "3in") in CSS pixels; None for a percentage or nonsense."""
    v = (value or "").strip().lower()
    unit = v[len(v.rstrip("abcdefghijklmnopqrstuvwxyz%")):]
    try:
        return float(v[:len(v) - len(unit)]) * _UNITS[unit]
    except (ValueError, KeyError):
        return None


def svg_size(data: bytes) -> tuple[float, float] | None:
    """The root element's width and height in pixels (or its viewBox's), read with defusedxml (entities and
    DTDs refused), or None."""
    from defusedxml import ElementTree

    try:
        for _, el in ElementTree.iterparse(io.BytesIO(data), events=("start",), forbid_dtd=True):
            w, h = _length(el.get("width")), _length(el.get("height"))
            box = (el.get("viewBox") or "").replace(",", " ").split()
            if (w is None or h is None) and len(box) == 4:
                bw, bh = float(box[2]), float(box[3])
                w, h = (w or (bw if h is None else h * bw / bh)), (h or (bh if w is None else w * bh / bw))
            return (w, h) if w and h else None
    except Exception:      # malformed, or refused by defusedxml: resvg will say what it makes of it
        return None
    return None


def render_svg(data: bytes, name: str) -> bytes:
    """An SVG's bytes -> PNG bytes (resvg at 96 dpi, white background, at most ``MAX_SVG_SIDE`` a side).
    Raises ImageUnavailable."""
    try:
        import resvg_py
    except ImportError:
        raise ImageUnavailable(SVG_UNAVAILABLE) from None
    if data[:2] == b"\x1f\x8b":
        raise ImageUnavailable("SVG not captioned (compressed .svgz)")
    size = svg_size(data)
    zoom = min(1.0, MAX_SVG_SIDE / max(size)) if size else None
    try:
        return bytes(resvg_py.svg_to_bytes(svg_string=data.decode("utf-8"), background="#ffffff", dpi=96.0,
                                           zoom=zoom, skip_system_fonts=False))
    except (ValueError, UnicodeDecodeError) as e:
        raise ImageUnavailable(f"SVG not captioned: {name}: {e}") from None


def _is_svg(name: str, data: bytes) -> bool:
    head = data[:512].lstrip().lower()
    return name.lower().endswith((".svg", "image/svg+xml")) or head.startswith(b"<svg") or \
        (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower())


def image_bytes(ref: ImageRef, fmt=None, document_data: bytes | None = None) -> bytes:
    """The bytes of ``ref``'s resolved image (an SVG rendered to PNG).  ``fmt``/``document_data``: the
    document's format and bytes, for a picture embedded in it.  Raises ImageUnavailable."""
    if ref.image is None:
        raise ImageUnavailable(ref.problem or "not resolved")
    name = ref.image
    if ref.embedded:
        if fmt is None or not hasattr(fmt, "image_bytes") or document_data is None:
            raise ImageUnavailable(f"{ref.document}: cannot read the embedded {ref.embedded}")
        try:
            data = fmt.image_bytes(ref.document, document_data, ref.embedded)
        except Exception as e:   # the format's DocumentError, or a zip it now refuses
            raise ImageUnavailable(str(e)) from None
        name = ref.embedded
    elif ref.image.startswith("data:"):
        media, data = parse_data_uri(ref.src.strip())
        name = media
    else:
        try:
            size = os.path.getsize(ref.image)
            if size > MAX_IMAGE_BYTES:
                raise ImageUnavailable(f"{ref.image}: over {MAX_IMAGE_BYTES >> 20} MB, not read")
            with open(ref.image, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ImageUnavailable(f"{ref.image}: {e.strerror or e}") from None
    if _is_svg(name, data):
        return render_svg(data, name)
    return data


if __name__ == "__main__":
    doc, src, *rest = sys.argv[1:]
    r = resolve(ImageRef(doc, {}, src, None, "cli"), allowed_folders([doc], rest[0] if rest else None),
                rest[0] if rest else None)
    print(r.image or f"no image: {r.problem}")
