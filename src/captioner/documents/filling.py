"""``fill``: the proposals for the images of documents that need alt text: each distinct image (by content)
captioned once, unless a context rule (``context.py``) decides its alt text without the model.

    captioner fill docs/ --output proposals.jsonl
"""
from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from captioner.documents import context as rules
from captioner.documents.formats import DocumentError
from captioner.documents.paths import REMOTE, ImageUnavailable, allowed_folders, image_bytes
from captioner.documents.reading import NEEDS_ALT, Document, read_documents
from captioner.documents.refs import ImageRef
from captioner.parallel import cores

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
    """-> the image's facts, and its bytes where it is captioned from them (``in_memory``): a file is
    captioned by its path, and its bytes are not kept."""
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
        # the facts need the pixel size and whether the image is one colour: a large JPEG (a phone's photo in a
        # Word file) is decoded at 1/2 to 1/8 of its size for them, its size read from its header
        pil = open_image(io.BytesIO(data), name=ref.image, at_least=FACTS_SIDE)
    except ImageError as e:
        img.error = str(e)
        return img, None
    img.width, img.height = _full_size(data, pil)
    small = pil if max(pil.size) <= 256 else pil.resize((FACTS_SIDE, FACTS_SIDE), PILImage.NEAREST)
    img.one_colour = small.getcolors(1) is not None
    return img, (data if img.in_memory else None)


# the side of the copy whose colours are counted (the one-colour rule: spacers)
FACTS_SIDE = 64


def _full_size(data: bytes, opened) -> tuple[int, int]:
    """The image's pixel size as it is shown (upright): its header's, turned as ``opened`` (``open_image``'s
    upright image, perhaps decoded at a smaller scale) is turned."""
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(data)) as head:
        w, h = head.size
    turned = (w > h and opened.width < opened.height) or (w < h and opened.width > opened.height)
    return (h, w) if turned else (w, h)


def _same_file_bytes(path: str, data: bytes) -> bool:
    """Whether ``data`` is the file itself (not an SVG rendered from it), so the file can be captioned by path."""
    try:
        return os.path.getsize(path) == len(data)
    except OSError:
        return False


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
         batch_size: int = 16, processes: int | None = None, threads: int | None = None) -> Proposals:
    """The proposals for ``paths`` (see the module docstring).  ``captioner``: an ``api.Captioner``; else the
    model given by ``model_args`` (its keyword arguments) captions when, and only when, some image needs it, as
    the CLI's ``caption`` does: in worker processes where ``parallel.plan`` has several (``processes``,
    ``threads``: as ``--processes`` and ``--threads`` take them), the model then never loaded here.
    ``overwrite``: propose for every reference, not only the missing and suspicious ones.
    ``output``: a ``.jsonl`` results file the records are appended to (images already there are skipped)."""
    from captioner.library.results import key as result_key, open_results, record

    if output is not None and Path(output).suffix != ".jsonl":
        raise ValueError(f"--output {output}: proposals are a JSON-lines results file: name a .jsonl file")
    errors: list = []
    docs = list(read_documents(paths, root, errors))
    allowed = allowed_folders(paths, root)
    titles = {os.path.realpath(d.path): r.context.page_title for d in docs for r in d.refs[:1] if r.context.page_title}
    # every resolved image once: its bytes hashed and its pixels measured (the repeated rule counts all pages),
    # on every core (hashing and Pillow's decoding run outside Python's lock)
    first = {}
    for doc in docs:
        for r in doc.refs:
            if r.image is not None:
                first.setdefault(r.image, (r, doc))
    with ThreadPoolExecutor(cores()) as pool:
        loaded = dict(zip(first, pool.map(lambda found: _load_image(*found), first.values())))
    images: dict[str, Image] = {}
    memory: dict[str, bytes] = {}            # sha256 -> bytes, for images captioned from memory
    for doc in docs:
        for r in doc.refs:
            if r.image is None:
                continue
            if r.image not in images:
                img, data = loaded[r.image]
                images[r.image] = img
                if data is not None:
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
            if captioner is not None:
                results = captioner.caption_paths(_sources(to_caption, memory), batch_size)
            else:
                from captioner import parallel

                results = parallel.caption_paths(model_args or {}, _sources(to_caption, memory), batch_size,
                                                 processes, threads)
            captions = {g["image"]: res for g, (_, res) in zip(to_caption, results)}
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


def _sources(groups: list[dict], memory: dict[str, bytes]) -> list:
    """What to caption for each group's image, all in one call of ``caption_paths`` (batched, on every core,
    one bad image never stops a batch): a file by its path, anything else (a picture inside a document, a
    ``data:`` URI, a rendered SVG) from its bytes, as an ``images.Blob`` named by the image's id."""
    from captioner.images import Blob

    return [Blob(g["image"], memory[g["img"].sha256]) if g["img"].in_memory else g["image"] for g in groups]
