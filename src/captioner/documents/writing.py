"""``write``: the alt text into the documents, from a fresh ``fill`` or a reviewed proposals file: only what
was asked changes, every problem is found before anything is written, and each document is replaced
atomically after its format proved the new bytes (``_replace``).

    captioner fill docs/ --write --from proposals.jsonl [--diff]
"""
from __future__ import annotations

import difflib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from captioner.documents import formats
from captioner.documents.filling import fill
from captioner.documents.formats import DocumentError, verify_rewrite
from captioner.documents.paths import ImageUnavailable, image_bytes
from captioner.documents.reading import NEEDS_ALT, ZIP_SUFFIXES, location_text, read_document, walk
from captioner.documents.refs import status

@dataclass
class Written:
    """What ``write`` did (or, with ``diff``, would do)."""
    written: list = field(default_factory=list)      # documents replaced
    unchanged: int = 0                               # documents with nothing to change
    alts: int = 0                                    # alt texts set
    kept: int = 0                                    # a person's alt text kept (no overwrite)
    diff: str = ""                                   # the unified diff / per-reference summary
    errors: list = field(default_factory=list)       # DocumentErrors; when any, nothing was written
    not_decorative: list = field(default_factory=list)   # (document, location) its format cannot mark decorative


def read_proposals(path) -> list[dict]:
    """A proposals file's records (``fill --output``); raises ValueError naming it."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--from {path}: no such proposals file")
    recs = []
    with open(p, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except ValueError as e:
                raise ValueError(f"--from {path} line {n}: not JSON ({e})") from None
            if not isinstance(r, dict) or not isinstance(r.get("references"), list):
                raise ValueError(f"--from {path} line {n}: not a proposals record (made by captioner fill --output)")
            recs.append(r)
    return recs


def _finals(path) -> dict[str, dict]:
    from captioner.library.decisions import ReviewStore, default_path

    if not default_path(path).exists():      # never created here: only `captioner review` makes one
        return {}
    with ReviewStore(path) as store:
        return store.finals()


def planned_alts(records: list[dict], finals: dict[str, dict], reviewed_only: bool) -> dict[str, dict]:
    """Proposals and decisions -> {document: {"sha256", "alts": {key: alt}}}.  A person's decision on an image
    applies to every reference of it: ``edit`` -> their text, ``decorative`` -> "", ``accept`` -> each
    reference's proposal (the model's text, or the context rule's)."""
    plan: dict[str, dict] = {}
    for rec in records:
        d = finals.get(rec.get("image"))
        if reviewed_only and d is None:
            continue
        for ref in rec["references"]:
            if d is not None and d["action"] == "edit":
                alt = d["text"]
            elif d is not None and d["action"] == "decorative":
                alt = ""
            else:
                alt = ref.get("proposed")
            if alt is None:
                continue
            entry = plan.setdefault(ref["document"], {"sha256": ref.get("document_sha256"), "alts": {}})
            entry["alts"][ref["key"]] = alt
    return plan


def write(paths, from_=None, reviewed_only: bool = False, overwrite: bool = False, diff: bool = False, root=None,
          captioner=None, model_args: dict | None = None, processes: int | None = None,
          threads: int | None = None) -> Written:
    """The alt text into the documents under ``paths`` (see the module docstring) -> what was done.
    ``processes``, ``threads``: as ``fill`` takes them."""
    if reviewed_only and from_ is None:
        raise ValueError("--reviewed-only needs --from PROPOSALS (the review's decisions are kept beside it)")
    done = Written()
    if from_ is not None:
        plan = planned_alts(read_proposals(from_), _finals(from_), reviewed_only)
    else:
        props = fill(paths, captioner, None, root, model_args, overwrite, processes=processes, threads=threads)
        done.errors += props.errors
        plan = planned_alts(list(props), {}, False)
    scope = {os.path.realpath(p) for p in walk(paths, [])}
    changes = []
    for document, entry in plan.items():
        if os.path.realpath(document) not in scope:
            continue                     # a proposal for a document not named this time
        try:
            change = _prepare(document, entry, overwrite, done, from_)
        except DocumentError as e:
            done.errors.append(e)
            continue
        if change is None:
            done.unchanged += 1
        else:
            changes.append(change)
    if done.errors:
        return done                      # every problem is found first: nothing is written
    if diff:
        done.diff = "".join(_diff(*c) for c in changes)
        return done
    for document, fmt, old, new, alts in changes:
        try:
            _replace(document, fmt, old, new, alts)
        except DocumentError as e:   # found only on disk (a full disk, a copy that reads back wrong):
            done.errors.append(e)    # this document stays as it was; the others are still written
            done.alts -= len(alts)
            continue
        done.written.append(document)
    return done


def _prepare(document: str, entry: dict, overwrite: bool, done: Written, from_) -> tuple | None:
    """-> (document, format, old bytes, new bytes, alts set) or None when nothing changes.  Raises DocumentError."""
    doc = read_document(document, keep_data=True)
    data = doc.data
    alts = {}
    by_key = {r.key: r for r in doc.refs}
    for k, alt in entry["alts"].items():
        r = by_key.get(k)
        if r is None:
            raise DocumentError(document, f"changed since its proposals were made ({from_}): no image reference "
                                          f"{k!r} any more; run captioner fill again (nothing was written)")
        if r.alt == alt and not (alt == "" and not r.decorative and r.alt is None):
            continue
        if status(r) not in NEEDS_ALT and not overwrite:
            done.kept += 1
            continue
        alts[k] = alt
    if not alts:
        return None         # already as proposed (a rerun), or nothing asked: whatever changed, nothing to write
    if from_ is not None and entry["sha256"] and doc.sha256 != entry["sha256"]:
        raise DocumentError(document, f"changed since its proposals were made ({from_}); run captioner fill "
                                      "again to make new ones (nothing was written)")
    real = os.path.realpath(document)
    # a file without any write permission bit is read-only by its owner's choice, even to root
    if not os.access(real, os.W_OK) or not os.stat(real).st_mode & 0o222 \
            or not os.access(os.path.dirname(real), os.W_OK):
        raise DocumentError(document, "read-only: cannot write the alt text (nothing was written)")
    try:
        try:
            new = doc.fmt.write(document, data, alts)
        except DocumentError:
            empty = [k for k, a in alts.items() if a == ""]
            if not empty:
                raise
            # a person's "decorative" where the format cannot say it (Markdown image syntax): left as it is, said
            new = doc.fmt.write(document, data, {k: a for k, a in alts.items() if a != ""})
            done.not_decorative += [(document, location_text(by_key[k])) for k in empty]
            alts = {k: a for k, a in alts.items() if a != ""}
    except DocumentError:
        raise
    except Exception as e:
        raise DocumentError(document, f"could not be written ({type(e).__name__}: {e})") from None
    if new == data:
        return None
    done.alts += len(alts)
    return document, doc.fmt, data, new, alts


def _diff(document: str, fmt, old: bytes, new: bytes, alts: dict) -> str:
    """A unified diff for a text document; for a zip one, a line per reference changed."""
    if Path(document).suffix.lower() in ZIP_SUFFIXES:
        before = {r.key: r for r in fmt.read(document, old)}
        lines = [f"{document}: {location_text(before[k])}: {before[k].alt!r} -> {alt!r}\n" for k, alt in alts.items()]
        return "".join(lines)
    a = old.decode("utf-8", "surrogateescape").splitlines(keepends=True)
    b = new.decode("utf-8", "surrogateescape").splitlines(keepends=True)
    # a last line without its newline is marked as diff and patch mark it, not run into the next file's header
    text = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                   for line in difflib.unified_diff(a, b, f"a/{document}", f"b/{document}"))
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _replace(document: str, fmt, old: bytes, new: bytes, alts: dict) -> None:
    """Replace ``document`` by ``new`` atomically: a temporary file in the same folder, flushed to disk, read
    back and parsed by its format (the same references, only ``alts`` changed), given the document's mode,
    then renamed over it (a link is followed: its target is replaced).  A kill at any moment leaves the old
    document or the new one, never a mix."""
    real = os.path.realpath(document)
    folder, name = os.path.split(real)
    tmp = os.path.join(folder, f".{name}.captioner-{os.getpid()}.tmp")
    mode = stat.S_IMODE(os.stat(real).st_mode)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(new)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        with open(tmp, "rb") as f:
            back = f.read()
        if back != new:
            raise DocumentError(document, "the copy on disk differs from what was written (nothing was replaced)")
        _verify(document, fmt, old, back, alts)
        os.chmod(tmp, mode)
        os.replace(tmp, real)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)             # the rename itself survives a power cut
    finally:
        os.close(dfd)


def _verify(document: str, fmt, old: bytes, new: bytes, alts: dict) -> None:
    """The same references in the same order, only the asked alt texts changed (raises DocumentError):
    ``formats.verify_rewrite``, which matches references by position, as an edit may shift a column
    that a key holds (a page on one line)."""
    verify_rewrite(document, fmt.read(document, old), fmt.read(document, new), alts)


def image_for_review(record: dict) -> bytes:
    """The bytes of a proposals record's image that is not a plain file (a picture inside a zip document, a
    ``data:`` URI, an SVG): read again from the first document that shows it.  Raises ImageUnavailable."""
    for ref in record.get("references") or []:
        document = ref.get("document")
        if not document or formats.format_for(document) is None:
            continue
        try:
            doc = read_document(document, keep_data=True)
        except DocumentError as e:
            raise ImageUnavailable(str(e)) from None
        for r in doc.refs:
            if r.key == ref.get("key"):
                if r.embedded:
                    r.image = f"{r.document}!/{r.embedded}"
                elif r.src.strip().startswith("data:"):
                    r.image = "data:"
                elif record.get("image") and os.path.isfile(record["image"]):
                    r.image = record["image"]
                else:
                    raise ImageUnavailable("not an image inside the document")
                return image_bytes(r, doc.fmt, doc.data)
    raise ImageUnavailable("no document of this proposal shows it any more")


