"""Reading documents for ``check``, ``fill`` and ``write``: walking folders, each document read by its format
(in worker processes when there are many), each ``src`` resolved (``paths.py``) and given its status.

    python -c "import captioner.documents as d; print(len(d.check(['docs/'])))"
"""
from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from captioner.documents import formats
from captioner.documents.formats import SUFFIXES, DocumentError
from captioner.documents.paths import allowed_folders, inside, resolve
from captioner.documents.refs import ImageRef, status

NEEDS_ALT = ("missing", "suspicious")
ZIP_SUFFIXES = (".docx", ".pptx", ".epub")


class Checked(list):
    """``check``'s references, in document order, with ``errors``: the documents that could not be read."""

    def __init__(self, refs=(), errors=None, documents: int = 0):
        super().__init__(refs)
        self.errors: list[DocumentError] = errors if errors is not None else []
        self.documents = documents


@dataclass
class Document:
    path: str
    fmt: object
    sha256: str
    refs: list
    data: bytes | None = None     # kept only where an embedded picture needs it


def walk(paths, errors: list) -> list[str]:
    """PATHs -> the documents: files as given, folders walked (sorted, hidden names skipped, links to folders
    not followed), each once.  A path that is missing, not a document, or a link leading outside the folder
    given is one error in ``errors``."""
    out = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            top = os.path.realpath(p)
            for base, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    if f.startswith(".") or Path(f).suffix.lower() not in SUFFIXES:
                        continue
                    doc = os.path.join(base, f)
                    if not inside(os.path.realpath(doc), [top]):
                        errors.append(DocumentError(doc, "refused: a link leading outside the folder given"))
                    else:
                        out.append(doc)
        elif p.is_file():
            if p.suffix.lower() in SUFFIXES:
                out.append(str(item))
            else:
                errors.append(DocumentError(item, "not a document captioner reads (" + " ".join(SUFFIXES) + ")"))
        else:
            errors.append(DocumentError(item, "no such file or folder"))
    return list(dict.fromkeys(out))


def read_document(path: str, keep_data: bool = False) -> Document:
    """One document, read by its format.  Raises DocumentError naming it (never a traceback)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DocumentError(path, f"cannot be read ({e.strerror or e})") from None
    try:
        fmt = formats.format_for(path)
    except ImportError as e:    # a format this install lacks (its module or a library it needs)
        raise DocumentError(path, f"cannot be read here: {e.msg if hasattr(e, 'msg') else e}") from None
    try:
        refs = fmt.read(path, data)
    except DocumentError:
        raise
    except RecursionError:
        raise DocumentError(path, "nested too deeply to read") from None
    except Exception as e:   # a format's slip must not stop the other documents; say which document
        raise DocumentError(path, f"could not be read ({type(e).__name__}: {e})") from None
    embedded = any(r.embedded for r in refs)
    return Document(path, fmt, hashlib.sha256(data).hexdigest(), refs, data if keep_data or embedded else None)


PARALLEL_FROM = 200      # documents: below this, worker processes cost more than they save


def _read_in_worker(path: str, keep_data: bool):
    """A worker process's read: the document without its format object (made again in the parent), or its error."""
    try:
        doc = read_document(path, keep_data)
    except DocumentError as e:
        return e.document, e.problem
    doc.fmt = None
    return doc


def _read_all(docs: list[str], keep_data: bool, workers: int | None):
    """Each document read, in order: in worker processes (the parsing is the whole cost of ``check``) when there
    are many documents and more than one CPU, else here.  Yields Documents or DocumentErrors."""
    from captioner.parallel import cores, exit_with_parent

    workers = min(cores(), 8) if workers is None else workers   # the cores this process may use
    if workers > 1 and len(docs) >= PARALLEL_FROM and sys.platform == "linux":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # fork: the workers see the formats this process was given (and start in milliseconds); they
        # end with this process even if it is killed
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                 initializer=exit_with_parent) as pool:
            for got in pool.map(_read_in_worker, docs, [keep_data] * len(docs), chunksize=16):
                if isinstance(got, tuple):
                    yield DocumentError(*got)
                else:
                    got.fmt = formats.format_for(got.path)
                    yield got
        return
    for path in docs:
        try:
            yield read_document(path, keep_data)
        except DocumentError as e:
            yield e


def read_documents(paths, root, errors: list, keep_data: bool = False, workers: int | None = None):
    allowed = allowed_folders(paths, root)
    for doc in _read_all(walk(paths, errors), keep_data, workers):
        if isinstance(doc, DocumentError):
            errors.append(doc)
            continue
        for r in doc.refs:
            resolve(r, allowed, root)
            r.status = status(r)
        yield doc


def check(paths, root=None, workers: int | None = None) -> Checked:
    """Every image reference under ``paths`` with its status (see the module docstring).  ``workers``: processes
    that parse documents (default: one per CPU, at most 8, from ``PARALLEL_FROM`` documents on; 1: none)."""
    errors: list = []
    out, n = Checked(errors=errors), 0
    for doc in read_documents(paths, root, errors, workers=workers):
        out.extend(doc.refs)
        n += 1
    out.documents = n
    return out


def location_text(ref: ImageRef) -> str:
    """``12:5`` for a text document, ``word/document.xml:wp:docPr id=4`` for an Office one,
    ``EPUB/text/ch001.xhtml:162:1`` for an e-book's page."""
    loc = ref.location or {}
    parts = [str(loc[k]) for k in ("part", "element") if k in loc]
    if "line" in loc:
        parts += [str(loc["line"]), str(loc.get("column", 1))]
    return ":".join(parts) or "?"


