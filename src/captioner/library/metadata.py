"""Alt text written where photo tools read it, through ExifTool (Debian ``libimage-exiftool-perl``,
driven by PyExifTool's one long-running process): nothing here builds XMP by hand.

    captioner caption photos/ --output results.jsonl --write-metadata sidecar   # photo.xmp beside each photo
    captioner caption photos/ --output results.jsonl --write-metadata embed     # into the photo itself

Fields written (IPTC Photo Metadata 2021.1): ``Iptc4xmpCore:AltTextAccessibility`` ("Alt Text
(Accessibility)"), ``dc:description`` and ``photoshop:CaptionWriter`` ("Description Writer":
``captioner``, which is how a later run recognises its own text); when embedding, also EXIF
``ImageDescription``; where text was read in the image, its long description (all the text, or a
chart's parts) as ``Iptc4xmpCore:ExtDescrAccessibility`` ("Extended Description (Accessibility)").

Safety, for every photo:
  * A description a person wrote (any of those fields, in the photo or its sidecar, not signed by
    captioner) is kept unless ``overwrite``.
  * Read-only files, files ExifTool cannot parse and photos whose sidecar name another photo shares
    (``a.jpg`` and ``a.png`` both map to ``a.xmp``) get an error and are left untouched.
  * The write goes to a hidden copy beside the file (``.NAME.captioner-tmp<pid>.EXT``), which is then
    checked - the new fields read back, every other tag unchanged, for embedding the decoded pixels
    identical - and only then renamed over the original (atomic); any failure removes the copy.
    A kill during a write can leave that hidden copy behind, never a half-written photo.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from pathlib import Path

from captioner.images import IMAGE_SUFFIXES

MODES = ("sidecar", "embed")
WRITER = "captioner"
ALT, DESC, CAPTION_WRITER, EXIF_DESC = ("XMP-iptcCore:AltTextAccessibility", "XMP-dc:Description",
                                        "XMP-photoshop:CaptionWriter", "IFD0:ImageDescription")
EXT_DESC = "XMP-iptcCore:ExtDescrAccessibility"
def _structural(tag: str) -> bool:
    """Tags that a correct write may change without touching content: the file system's, ExifTool's,
    derived ones, the container's description (a WebP becomes "Extended WEBP" once it holds
    metadata) and byte offsets (a TIFF's strips move to make room)."""
    group, _, name = tag.partition(":")
    return tag == "SourceFile" or group in ("System", "File", "ExifTool", "Composite") or tag == "XMP-x:XMPToolkit" \
        or name.endswith(("Offset", "Offsets"))

class MetadataError(ValueError):
    """A photo whose metadata was not written; ``str()`` names it and says why.  The file is untouched."""


def _pixels(path: Path) -> str:
    """A digest of every frame's decoded pixels (and mode and size)."""
    from PIL import Image, ImageSequence

    h = hashlib.sha256()
    with warnings.catch_warnings():   # a photo this large was captioned already (images.MAX_PIXELS)
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            for frame in ImageSequence.Iterator(im):
                h.update(f"{frame.mode}{frame.size}".encode())
                h.update(frame.tobytes())
    return h.hexdigest()


def check(mode: str) -> None:
    """Raise ValueError, saying what to do, unless ``mode`` can be written here (ExifTool installed)."""
    if mode not in MODES:
        raise ValueError(f"--write-metadata {mode}: choose {' or '.join(MODES)}")
    if shutil.which("exiftool") is None:
        raise ValueError("--write-metadata needs ExifTool: apt install libimage-exiftool-perl "
                         "(Debian/Ubuntu), brew install exiftool (macOS), or see exiftool.org")


class MetadataWriter:
    """One ExifTool process for a run (or a Ray worker); ``write(path, text)`` per photo."""

    def __init__(self, mode: str, overwrite: bool = False):
        check(mode)
        import exiftool

        self.mode, self.overwrite = mode, overwrite
        self.et = exiftool.ExifToolHelper(common_args=["-G1", "-n"])
        self.et.run()

    def close(self) -> None:
        self.et.terminate()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ reading

    def _tags(self, path: Path, what: str) -> dict:
        import exiftool.exceptions

        try:
            return self.et.execute_json("-a", str(path))[0]
        except exiftool.exceptions.ExifToolExecuteError as e:
            msg = (e.stderr or e.stdout or str(e)).strip().splitlines()
            raise MetadataError(f"{path}: ExifTool cannot read {what} ({msg[-1] if msg else 'unknown error'}); "
                                "left untouched") from None

    @staticmethod
    def _human_text(tags: dict) -> str | None:
        """A description not written by captioner, if the tags hold one."""
        if str(tags.get(CAPTION_WRITER, "")).startswith(WRITER):
            return None
        for t in (ALT, DESC, EXIF_DESC):
            v = tags.get(t)
            if v is not None and str(v).strip():
                return str(v)
        return None

    # ------------------------------------------------------------ writing

    def write(self, photo: str | Path, text: str, long_description: str = "", writer: str = WRITER) -> dict:
        """Write ``text`` (and a ``long_description``, where there is one) for ``photo`` -> what was
        done, for the results file.  ``writer``: who wrote the text, for ``photoshop:CaptionWriter``
        (a reviewer's name for a person's decision; ``captioner`` for the machine's).  Raises MetadataError."""
        photo = Path(photo)
        text = " ".join(str(text).split())   # one line: ExifTool's argument lists are line-based
        # its lines joined by " / ": one argument line, and the line breaks still readable
        long_description = " / ".join(" ".join(l.split()) for l in str(long_description or "").splitlines() if l.strip())
        if not text:
            raise MetadataError(f"{photo}: no text to write")
        target = photo if self.mode == "embed" else photo.with_suffix(".xmp")
        if self.mode == "sidecar":
            others = [s for s in IMAGE_SUFFIXES | {s.upper() for s in IMAGE_SUFFIXES}
                      if s != photo.suffix and photo.with_suffix(s).is_file()]
            if others:
                raise MetadataError(f"{photo}: its sidecar {target.name} would be shared with "
                                    f"{photo.with_suffix(others[0]).name}; use --write-metadata embed for these")
        for p in (target, target.parent):
            # the mode bits too: root may write anything, but a file marked read-only is meant to stay so
            if p.exists() and (not os.access(p, os.W_OK) or (p.is_file() and not p.stat().st_mode & 0o222)):
                raise MetadataError(f"{p}: read-only; {photo} left untouched")
        photo_tags = self._tags(photo, "the photo")
        old = self._tags(target, "its sidecar") if target != photo and target.exists() else {}
        human = self._human_text(photo_tags) or self._human_text(old)
        mine = writer != WRITER and str((old or photo_tags).get(CAPTION_WRITER, "")) == writer
        if human is not None and not self.overwrite and not (mine and human == text):
            return {"metadata": {self.mode: str(target), "status": "kept existing description",
                                 "existing": human}}
        if target == photo:
            old = photo_tags
        new = {ALT: text, DESC: text, CAPTION_WRITER: writer}
        if long_description:
            new[EXT_DESC] = long_description
        if self.mode == "embed":
            new[EXIF_DESC] = text
        if all(str(old.get(k)) == v for k, v in new.items()) and (long_description or EXT_DESC not in old):
            # already says exactly this (a rerun): the file is not touched
            return {"metadata": {self.mode: str(target), "status": "unchanged"}}
        tmp = target.with_name(f".{target.stem}.captioner-tmp{os.getpid()}{target.suffix}")
        try:
            if target.exists():
                shutil.copy2(target, tmp)   # keeps permissions and times
            self._set(tmp, new, target)
            self._verify(target, tmp, old, new)
            if target.exists():
                os.replace(tmp, target)
            else:
                os.link(tmp, target)         # a new sidecar never replaces one that appeared meanwhile
                tmp.unlink()
        except MetadataError:
            raise
        except (OSError, ValueError) as e:
            raise MetadataError(f"{photo}: metadata not written ({e}); left untouched") from None
        finally:
            if tmp.exists():
                tmp.unlink()
        return {"metadata": {self.mode: str(target), "status": "written"}}

    def write_record(self, rec: dict) -> dict:
        """A captioned record (``results.record``) -> what ``write`` did with its alt text and long
        description.  Any failure, ExifTool's own included, is a MetadataError naming the photo, so a
        run records it and goes on (a later run retries it)."""
        try:
            return self.write(rec["image"], rec.get("alt_text") or rec["caption"], rec.get("long_description") or "")
        except MetadataError:
            raise
        except Exception as e:
            raise MetadataError(f"{rec['image']}: metadata not written ({type(e).__name__}: {e}); left untouched") from None

    def _set(self, path: Path, tags: dict, target: Path) -> None:
        import exiftool.exceptions

        args = ["-overwrite_original", "-P", *(f"-{k}={v}" for k, v in tags.items()), str(path)]
        try:
            self.et.execute(*args)
        except exiftool.exceptions.ExifToolExecuteError as e:
            msg = (e.stderr or e.stdout or str(e)).strip().splitlines()
            msg = (msg[-1] if msg else "unknown error").replace(str(path), str(target))
            raise MetadataError(f"{target}: ExifTool could not write it ({msg}); left untouched") from None
        if "error" in (self.et.last_stderr or "").lower():
            msg = self.et.last_stderr.strip().replace(str(path), str(target))
            raise MetadataError(f"{target}: ExifTool: {msg}; left untouched")

    def _verify(self, target: Path, tmp: Path, old: dict, new: dict) -> None:
        """The written copy holds the new fields, every other tag as before and, for a photo, the
        same pixels; else MetadataError."""
        got = self._tags(tmp, "the written copy")
        for k, v in new.items():
            if str(got.get(k)) != v:
                raise MetadataError(f"{target}: {k} read back as {got.get(k)!r}, not the text written; left untouched")
        lost = {k for k in old if not _structural(k) and k not in new and old[k] != got.get(k)}
        if lost:
            raise MetadataError(f"{target}: writing would change {', '.join(sorted(lost)[:5])}; left untouched")
        if self.mode == "embed" and _pixels(target) != _pixels(tmp):
            raise MetadataError(f"{target}: pixels would change; left untouched")


class MetadataWriters:
    """Several ``MetadataWriter``s, each with its own ExifTool process and driven by its own thread, so that
    photos are written side by side: a write is ExifTool's work and, when embedding, two decodings of the
    photo's pixels for the check (about 230 ms for a 12-megapixel JPEG), all outside Python's lock.  A
    pooled library run and ``captioner write-metadata`` use one per core; a single process (a Ray actor)
    one.  Each photo is still written and checked by one writer, as the ``MetadataWriter`` docstring says."""

    def __init__(self, mode: str, overwrite: bool = False, n: int = 1):
        import queue
        from concurrent.futures import ThreadPoolExecutor

        self.writers: list[MetadataWriter] = []
        try:
            for _ in range(max(n, 1)):
                self.writers.append(MetadataWriter(mode, overwrite))
        except BaseException:
            self.close()
            raise
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        for w in self.writers:
            self._idle.put(w)
        self._threads = ThreadPoolExecutor(len(self.writers), "captioner-metadata") if len(self.writers) > 1 else None

    def map(self, fn, items) -> list:
        """``fn(writer, item)`` for each item, on free writers -> the results, in the items' order."""
        def run(item):
            w = self._idle.get()
            try:
                return fn(w, item)
            finally:
                self._idle.put(w)

        items = list(items)
        if self._threads is None or len(items) < 2:
            return [run(item) for item in items]
        return list(self._threads.map(run, items))

    def close(self) -> None:
        if getattr(self, "_threads", None) is not None:
            self._threads.shutdown()
        for w in self.writers:
            w.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
