"""Alt text where it is read: web pages, Markdown, Word and PowerPoint files, e-books.

    captioner check docs/                                   # every image reference and its status
    captioner fill docs/ --output proposals.jsonl           # caption what needs alt text, once per image
    captioner review proposals.jsonl                        # a person decides, with each image's context
    captioner fill docs/ --write --from proposals.jsonl     # put the (reviewed) alt text into the documents

The library functions behind them (the CLI only parses and prints):

- ``check(paths, root=None) -> [ImageRef]``: walk folders for the suffixes of ``formats.SUFFIXES``
  (hidden names skipped, sorted), read each document with its format, resolve each ``src``
  (``paths.py``) and give each reference its status (``refs.status``).  A document that cannot be read
  is one error (``.errors``) and the others go on.  Never opens an image, never loads the model.
- ``fill(paths, captioner=None, output=None, root=None, ...) -> [record]``: the proposals: one record per
  DISTINCT image (by content hash, however many documents use it), captioned once, unless a context rule
  (``context.py``) decides its alt text without the model; each record lists its references with their
  document (and its sha256), location, context, proposed alt text and the rule that decided it.  With
  ``output``: appended to a results file (``library/results.py``) that ``captioner review`` opens.
- ``write(paths, from_=None, reviewed_only=False, overwrite=False, diff=False, root=None, ...)``: the alt
  text into the documents, straight from a fresh ``fill`` or from a proposals file and its review
  decisions.  Only missing and suspicious alt text is filled unless ``overwrite``; a document changed since
  its proposals were made is refused; every problem is found before anything is written (a read-only or
  changed document: nothing is written at all); each document is replaced atomically (``_replace``).

The formats (html, markdown, ooxml, epub) implement ``formats.Format``; nothing here knows a format's
syntax, and no format knows of captioning.
"""
from __future__ import annotations

import difflib
import hashlib
import io
import json
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from captioner.documents import context as rules
from captioner.documents.formats import SUFFIXES, DocumentError, format_for
from captioner.documents.paths import REMOTE, ImageUnavailable, allowed_folders, image_bytes, inside, resolve
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


# ------------------------------------------------------------------ reading
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
        fmt = format_for(path)
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
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    if workers > 1 and len(docs) >= PARALLEL_FROM and sys.platform == "linux":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # fork: the workers see the formats this process was given (and start in milliseconds)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            for got in pool.map(_read_in_worker, docs, [keep_data] * len(docs), chunksize=16):
                if isinstance(got, tuple):
                    yield DocumentError(*got)
                else:
                    got.fmt = format_for(got.path)
                    yield got
        return
    for path in docs:
        try:
            yield read_document(path, keep_data)
        except DocumentError as e:
            yield e


def _documents(paths, root, errors: list, keep_data: bool = False, workers: int | None = None):
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
    for doc in _documents(paths, root, errors, workers=workers):
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


# ------------------------------------------------------------------ images
@dataclass
class Image:
    """A resolved image as ``fill`` knows it: its content hash and pixels' facts, or why it has none."""
    id: str                         # ref.image: a path, DOC!/member, data:TYPE;sha256=…
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    one_colour: bool = False
    error: str | None = None
    in_memory: bool = False         # data: URI, embedded picture or rendered SVG: captioned from bytes
    refs: list = field(default_factory=list)


def _load_image(ref: ImageRef, doc: Document) -> tuple[Image, bytes | None]:
    from PIL import Image as PILImage

    from captioner.images import ImageError, open_image

    img = Image(ref.image)
    try:
        data = image_bytes(ref, doc.fmt, doc.data)
    except (ImageUnavailable, ValueError) as e:
        img.error = str(e)
        return img, None
    img.sha256 = hashlib.sha256(data).hexdigest()
    img.in_memory = bool(ref.embedded) or ref.image.startswith("data:") or not _same_file_bytes(ref.image, data)
    try:
        pil = open_image(io.BytesIO(data), name=ref.image)
    except ImageError as e:
        img.error = str(e)
        return img, data
    img.width, img.height = pil.size
    small = pil if max(pil.size) <= 256 else pil.resize((64, 64), PILImage.NEAREST)
    img.one_colour = small.getcolors(1) is not None
    return img, data


def _same_file_bytes(path: str, data: bytes) -> bool:
    """Whether ``data`` is the file itself (not an SVG rendered from it), so the file can be captioned by path."""
    try:
        return os.path.getsize(path) == len(data)
    except OSError:
        return False


# ------------------------------------------------------------------ fill
class Proposals(list):
    """``fill``'s records, with what it did: ``captioned`` images, ``by_rule`` references decided by a
    context rule, ``skipped`` images already in the output file, ``errors`` (documents not read)."""
    captioned = 0
    by_rule = 0
    skipped = 0
    documents = 0

    def __init__(self, recs=(), errors=None):
        super().__init__(recs)
        self.errors: list[DocumentError] = errors if errors is not None else []


def _target_title(ref: ImageRef, titles: dict[str, str], allowed: list[str]) -> str | None:
    """The title of the local document ``ref``'s link points to, when that document was read."""
    from urllib.parse import unquote, urlsplit

    href = ref.context.link_href or ""
    parts = urlsplit(href)
    if parts.scheme or href.startswith("//") or not parts.path:
        return None
    target = os.path.realpath(os.path.join(os.path.dirname(ref.document), unquote(parts.path)))
    if os.path.isdir(target):
        for name in ("index.html", "index.md", "README.md"):
            if os.path.join(target, name) in titles:
                return titles[os.path.join(target, name)]
    return titles.get(target)


def _reference(ref: ImageRef, doc: Document, decision, machine_alt: str | None) -> dict:
    proposed = decision.alt if decision else machine_alt
    return {"document": ref.document, "document_sha256": doc.sha256, "location": ref.location, "key": ref.key,
            "src": ref.src if not ref.src.startswith("data:") else ref.src[:40] + "…", "alt": ref.alt,
            "status": ref.status, "context": ref.context.to_dict(), "proposed": proposed,
            "rule": decision.rule if decision else ("caption" if machine_alt is not None else None),
            "why": decision.why if decision else ("the model's alt text" if machine_alt is not None else None)}


def fill(paths, captioner=None, output=None, root=None, model_args: dict | None = None, overwrite: bool = False,
         batch_size: int = 16) -> Proposals:
    """The proposals for ``paths`` (see the module docstring).  ``captioner``: an ``api.Captioner``; else one is
    made from ``model_args`` (its keyword arguments) when, and only when, some image needs captioning.
    ``overwrite``: propose for every reference, not only the missing and suspicious ones.
    ``output``: a ``.jsonl`` results file the records are appended to (images already there are skipped)."""
    from captioner.library.results import key as result_key, open_results, record

    if output is not None and Path(output).suffix != ".jsonl":
        raise ValueError(f"--output {output}: proposals are a JSON-lines results file: name a .jsonl file")
    errors: list = []
    docs = list(_documents(paths, root, errors))
    allowed = allowed_folders(paths, root)
    titles = {os.path.realpath(d.path): r.context.page_title for d in docs for r in d.refs[:1] if r.context.page_title}
    # every resolved image once: its bytes hashed and its pixels measured (the repeated rule counts all pages)
    images: dict[str, Image] = {}
    memory: dict[str, bytes] = {}            # sha256 -> bytes, for images captioned from memory
    for doc in docs:
        for r in doc.refs:
            if r.image is None:
                continue
            if r.image not in images:
                img, data = _load_image(r, doc)
                images[r.image] = img
                if data is not None and img.in_memory and img.error is None:
                    memory.setdefault(img.sha256, data)
            images[r.image].refs.append((r, doc))
    pages: dict[str, set] = {}
    for img in images.values():
        if img.sha256:
            pages.setdefault(img.sha256, set()).update(d.path for _, d in img.refs)
    wanted = [(r, d) for d in docs for r in d.refs if overwrite or r.status in NEEDS_ALT]
    # group the wanted references by what they show: content hash, else the unresolved image or src
    groups: dict[str, dict] = {}
    for r, d in wanted:
        img = images.get(r.image) if r.image else None
        unresolved = r.src.strip() if r.problem == REMOTE else f"{r.document}#{r.key}"
        gid = img.sha256 if img and img.sha256 else (r.image or unresolved)
        g = groups.setdefault(gid, {"image": r.image or unresolved, "img": img, "refs": []})
        if img is not None and g["img"] is not None and g["img"].in_memory and not img.in_memory:
            g["image"], g["img"] = r.image, img    # a file rather than bytes: captioned and shown as it is
        facts = rules.Facts(img.width if img else None, img.height if img else None, bool(img and img.one_colour),
                            len(pages.get(img.sha256, ())) if img and img.sha256 else 1, len(docs),
                            _target_title(r, titles, allowed))
        g["refs"].append((r, d, facts, _writable(rules.decide(r, facts, rules.BEFORE_CAPTION), r, d)))
    store = open_results(output) if output is not None else None
    out = Proposals(errors=errors)
    out.documents = len(docs)
    try:
        if store is not None:
            before = len(groups)
            groups = {k: g for k, g in groups.items() if result_key(g["image"]) not in store.done}
            out.skipped = before - len(groups)
        to_caption = [g for g in groups.values()
                      if g["img"] is not None and g["img"].error is None and any(dec is None for *_, dec in g["refs"])]
        captions = {}
        if to_caption:
            if captioner is None:
                from captioner.api import Captioner

                captioner = Captioner(**(model_args or {}))
            captions = _caption(captioner, to_caption, memory, batch_size)
            out.captioned = sum(not isinstance(v, str) for v in captions.values())
        for gid, g in groups.items():
            res = captions.get(g["image"])
            img = g["img"]
            if res is not None:
                rec = record(g["image"], res)
            elif img is not None and img.error:
                rec = {"image": g["image"], "error": img.error}
            elif g["img"] is None and any(dec is None for *_, dec in g["refs"]):
                rec = {"image": g["image"], "error": g["refs"][0][0].problem or "no image"}
            else:
                rec = {"image": g["image"]}
            machine = rec.get("alt_text") if "error" not in rec else None
            refs = []
            for r, d, facts, dec in g["refs"]:
                if dec is None and machine is not None:
                    facts.machine_alt = machine
                    dec = _writable(rules.decide(r, facts, rules.AFTER_CAPTION), r, d)
                out.by_rule += dec is not None
                refs.append(_reference(r, d, dec, machine))
            if "alt_text" not in rec and "error" not in rec:   # decided by rules alone: the first rule's text
                rec["alt_text"] = refs[0]["proposed"]
            if "error" in rec and all(x["proposed"] is not None for x in refs):
                del rec["error"]                             # every reference was decided without the image
                rec["alt_text"] = refs[0]["proposed"]
            rec.update({"sha256": img.sha256 if img else None, "references": refs})
            out.append(rec)
        if store is not None:
            store.append(list(out))
    finally:
        if store is not None:
            store.close()
    return out


def _writable(decision, ref: ImageRef, doc: Document):
    """``decision``, unless it marks ``ref`` decorative where its format cannot say so (Markdown's ``![](x.png)``
    reads as missing): then None, and the image is described instead.  Asked of the format itself, by a write
    that is thrown away; only decorative decisions pay for it."""
    if decision is None or decision.alt != "":
        return decision
    try:
        with open(doc.path, "rb") as f:
            doc.fmt.write(doc.path, f.read(), {ref.key: ""})
    except (DocumentError, OSError):
        return None
    return decision


def _caption(captioner, groups: list[dict], memory: dict[str, bytes], batch_size: int) -> dict:
    """Caption each group's image once -> {image id: Caption or an error message}; files by path through
    ``Captioner.caption_paths`` (batched, one bad file never stops a batch), the rest from their bytes."""
    from captioner.images import ImageError, open_image

    out = {}
    files = [g["image"] for g in groups if not g["img"].in_memory]
    for path, res in captioner.caption_paths(files, batch_size):
        out[path] = res
    for g in groups:
        if g["img"].in_memory:
            try:
                out[g["image"]] = captioner.caption(open_image(io.BytesIO(memory[g["img"].sha256]), name=g["image"]))
            except ImageError as e:
                out[g["image"]] = str(e)
    return out


# ------------------------------------------------------------------ write
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
          captioner=None, model_args: dict | None = None) -> Written:
    """The alt text into the documents under ``paths`` (see the module docstring) -> what was done."""
    if reviewed_only and from_ is None:
        raise ValueError("--reviewed-only needs --from PROPOSALS (the review's decisions are kept beside it)")
    done = Written()
    if from_ is not None:
        plan = planned_alts(read_proposals(from_), _finals(from_), reviewed_only)
    else:
        props = fill(paths, captioner, None, root, model_args, overwrite)
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
        _replace(document, fmt, old, new, alts)
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
    text = "".join(difflib.unified_diff(a, b, f"a/{document}", f"b/{document}"))
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
    """The same references in the same order, only the asked alt texts changed (raises DocumentError)."""
    before, after = fmt.read(document, old), fmt.read(document, new)
    if [r.key for r in before] != [r.key for r in after]:
        raise DocumentError(document, "the written copy does not list the same images (nothing was replaced)")
    for a, b in zip(before, after):
        want = alts.get(a.key, a.alt)
        if b.alt != want and not (want == "" and b.decorative):
            raise DocumentError(document, f"the written copy has alt {b.alt!r} for {a.key}, not {want!r} "
                                          "(nothing was replaced)")


def image_for_review(record: dict) -> bytes:
    """The bytes of a proposals record's image that is not a plain file (a picture inside a zip document, a
    ``data:`` URI, an SVG): read again from the first document that shows it.  Raises ImageUnavailable."""
    for ref in record.get("references") or []:
        document = ref.get("document")
        if not document or format_for(document) is None:
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

