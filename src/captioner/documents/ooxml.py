"""Word (.docx) and PowerPoint (.pptx) documents: each picture's alt text (its description) and context.

Word: a picture is a ``wp:inline`` or ``wp:anchor`` whose ``a:graphic`` holds a ``pic:pic`` with an
``a:blip``; its alt text is the ``descr`` attribute of the drawing's ``wp:docPr``.  The main document,
its headers, footers, footnotes and endnotes are read.  PowerPoint: a picture is a ``p:pic``; its alt
text is ``descr`` on ``p:nvPicPr/p:cNvPr``; every slide is read, in the order ``presentation.xml``
gives.  Pictures in ``mc:Fallback`` (a copy of the ``mc:Choice`` for old readers), pictures used as a
shape's fill, slide layouts/masters and old VML pictures (``v:imagedata``) are not listed.

Alt text as Office's accessibility checker sees it: ``descr`` absent -> ``alt`` None (missing);
``descr=""`` on a picture not marked decorative is flagged as missing too, so it reads as None; a
picture carrying Office's decorative mark (``adec:decorative val="1"`` in the ``a:extLst`` of its
docPr/cNvPr) is ``decorative`` with ``alt`` "" whatever its descr says.

Context: the object's ``name`` and ``title``, the size (EMU -> pixels at 96 dpi), a hyperlink on the
picture (``a:hlinkClick``, or a Word ``w:hyperlink`` around it) -> ``link_href``, in Word the paragraph's
text (the previous paragraph's when the picture stands alone) and the next paragraph when its style is a
caption style -> ``figure_caption``; in PowerPoint the slide's title placeholder -> ``page_title`` and the
slide's other text -> ``nearby_text``; ``docProps/core.xml``'s ``dc:title`` -> ``page_title`` otherwise.

``write`` sets only ``descr`` on the named docPr/cNvPr: the attribute value's bytes are replaced (or the
attribute added) in place, every other byte of the part and every other zip member stay as they were.
``""`` marks the picture decorative: Office's decorative extension is inserted in the docPr/cNvPr (and an
existing descr emptied, for readers that do not know the mark); text on a decorative picture turns its
mark off (``val="0"``).  The result is read again and must give the same pictures with only those alt
texts changed.

    python -m captioner.documents.ooxml FILE.docx|FILE.pptx     # lists the pictures and their alt text
"""
from __future__ import annotations

import posixpath
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from lxml import etree

from captioner.documents import xmlparts
from captioner.documents.formats import DocumentError, verify_rewrite
from captioner.documents.refs import Context, ImageRef
from captioner.documents.zipfiles import EmbeddedPictures, SafeZip

NS = {
    "w": "http://schemas.openxmlformats.org/wordprocessingml/2006/main",
    "wp": "http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing",
    "a": "http://schemas.openxmlformats.org/drawingml/2006/main",
    "pic": "http://schemas.openxmlformats.org/drawingml/2006/picture",
    "p": "http://schemas.openxmlformats.org/presentationml/2006/main",
    "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    "mc": "http://schemas.openxmlformats.org/markup-compatibility/2006",
    "rel": "http://schemas.openxmlformats.org/package/2006/relationships",
    "dc": "http://purl.org/dc/elements/1.1/",
    "adec": "http://schemas.microsoft.com/office/drawing/2017/decorative",
}
DECORATIVE_URI = "{C183D7F6-B498-43B3-948B-1728B52AA6E4}"
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/"
_WORD_PARTS = ("header", "footer", "footnotes", "endnotes")   # relationship types read besides the body
_CAPTION_STYLES = {"caption", "imagecaption", "figurecaption"}    # style ids/names of caption paragraphs
EMU_PER_PIXEL = 9525          # 914400 EMU per inch / 96 pixels per inch
NEARBY_CHARS = 300


def _q(prefix: str, local: str) -> str:
    return f"{{{NS[prefix]}}}{local}"


def _text(element, tag: str) -> str:
    return " ".join("".join(element.itertext(tag)).split()) if element is not None else ""


def _clip(text: str) -> str:
    return text if len(text) <= NEARBY_CHARS else text[:NEARBY_CHARS - 1].rsplit(" ", 1)[0] + "…"


def _pixels(emu: str | None) -> int | None:
    try:
        return round(int(emu) / EMU_PER_PIXEL) if emu is not None else None
    except ValueError:
        return None


@dataclass
class Relationship:
    target: str           # the member it names (internal) or the URL as written (external)
    written: str          # the Target attribute as written
    external: bool
    type: str


class Package:
    """An Office package: its zip, its parts parsed on demand (once), their relationships."""

    def __init__(self, document: str, data: bytes):
        self.document = document
        self.zip = SafeZip(document, data)
        self._roots: dict[str, etree._Element] = {}
        self._rels: dict[str, dict[str, Relationship]] = {}

    def bytes(self, part: str) -> bytes:
        if part not in self.zip:
            raise DocumentError(self.document, f"the package has no part {part!r}")
        return self.zip.read(part)

    def root(self, part: str) -> etree._Element:
        if part not in self._roots:
            self._roots[part] = xmlparts.parse(self.document, part, self.bytes(part))
        return self._roots[part]

    def rels(self, part: str) -> dict[str, Relationship]:
        """The relationships of ``part`` ("" for the package's own), targets resolved to member names."""
        if part not in self._rels:
            folder, name = posixpath.split(part)
            rels_part = posixpath.join(folder, "_rels", name + ".rels")
            found = {}
            if rels_part in self.zip:
                for rel in self.root(rels_part).iter(_q("rel", "Relationship")):
                    written = rel.get("Target", "")
                    external = rel.get("TargetMode") == "External"
                    target = written if external else self._resolve(folder, written, rels_part)
                    found[rel.get("Id", "")] = Relationship(target, written, external, rel.get("Type", ""))
            self._rels[part] = found
        return self._rels[part]

    def _resolve(self, folder: str, target: str, rels_part: str) -> str:
        path = unquote(target.split("#", 1)[0])
        joined = path.lstrip("/") if path.startswith("/") else posixpath.join(folder, path)
        member = posixpath.normpath(joined) if joined else ""
        if member.startswith("../") or member == "..":
            raise DocumentError(self.document, f"{rels_part} points outside the package ({target!r})")
        return member

    def main_part(self) -> str:
        for rel in self.rels("").values():
            if rel.type.endswith("/officeDocument") and not rel.external:
                return rel.target
        raise DocumentError(self.document, "not an Office document (no main part in _rels/.rels)")

    def relationship(self, part: str, rid: str | None, what: str) -> Relationship:
        rel = self.rels(part).get(rid or "")
        if rel is None:
            raise DocumentError(self.document, f"{part}: {what} names relationship {rid!r}, which is not in "
                                               "its relationships part (a damaged document)")
        if not rel.external and rel.target not in self.zip:
            raise DocumentError(self.document, f"{part}: {what} points to {rel.target!r}, which is not in the "
                                               "package (a damaged document)")
        return rel

    def title(self) -> str | None:
        if "docProps/core.xml" not in self.zip:
            return None
        title = _text(self.root("docProps/core.xml").find(_q("dc", "title")), etree.Element)
        return title or None


@dataclass
class Picture:
    """One picture found: its ImageRef and the element that carries its alt text."""
    ref: ImageRef
    part: str
    props: etree._Element     # wp:docPr / p:cNvPr


def _decorative_mark(props: etree._Element) -> etree._Element | None:
    for ext in props.iterfind(f"{_q('a', 'extLst')}/{_q('a', 'ext')}"):
        if ext.get("uri") == DECORATIVE_URI:
            mark = ext.find(_q("adec", "decorative"))
            if mark is not None:
                return mark
    return None


def _is_decorative(props: etree._Element) -> bool:
    mark = _decorative_mark(props)
    return mark is not None and mark.get("val", "").lower() in ("1", "true")


def _decorative_ext(prefix: str) -> bytes:
    """Office's decorative mark, as an ``a:ext`` written with the drawingML prefix in scope."""
    return (f'<{prefix}ext uri="{DECORATIVE_URI}"><adec:decorative xmlns:adec="{NS["adec"]}" val="1"/>'
            f'</{prefix}ext>').encode()


def _in_fallback(element: etree._Element) -> bool:
    return any(True for _ in element.iterancestors(_q("mc", "Fallback")))


class OoxmlFormat(EmbeddedPictures):
    """.docx and .pptx (the kind the file's suffix names; a package of the other kind is refused)."""

    def __init__(self, kind: str):
        self.kind = kind
        self.name = kind

    # -- reading -------------------------------------------------------------------------------------
    def read(self, path: str, data: bytes) -> list[ImageRef]:
        return [p.ref for p in self.pictures(Package(str(path), data))]

    def pictures(self, pkg: Package) -> list[Picture]:
        main = pkg.main_part()
        root = pkg.root(main) if main in pkg.zip else None
        kinds = {_q("w", "document"): "docx", _q("p", "presentation"): "pptx"}
        kind = kinds.get(root.tag) if root is not None else None
        if kind is None and root is not None and root.tag.startswith("{http://purl.oclc.org/ooxml/"):
            raise DocumentError(pkg.document, "saved as Strict Open XML, which is not read (save it as an "
                                              "ordinary Word document or PowerPoint presentation)")
        if kind is None:
            raise DocumentError(pkg.document, f"not a Word or PowerPoint document (main part {main!r})")
        if kind != self.kind:
            names = {"docx": "a Word document (.docx)", "pptx": "a PowerPoint presentation (.pptx)"}
            raise DocumentError(pkg.document, f"is {names[kind]}, not {names[self.kind]} as its name says")
        return self._word(pkg, main) if kind == "docx" else self._slides(pkg, main)

    def _picture(self, pkg: Package, part: str, index: int, props, blip, context: Context) -> Picture:
        rid_embed, rid_link = blip.get(_q("r", "embed")), blip.get(_q("r", "link"))
        props_name = f"{props.prefix}:{etree.QName(props).localname}" if props.prefix else props.tag
        rel = pkg.relationship(part, rid_embed or rid_link, f"the picture of <{props_name} id={props.get('id')}>")
        hlink = props.find(_q("a", "hlinkClick"))
        if hlink is not None and hlink.get(_q("r", "id")):
            context.link_href = pkg.relationship(part, hlink.get(_q("r", "id")), "a picture's link").written
        decorative = _is_decorative(props)
        descr = props.get("descr")
        alt = "" if decorative else (descr or None)
        context.name = props.get("name") or None
        context.title = props.get("title") or None
        ref = ImageRef(document=pkg.document,
                       location={"part": part, "element": f"{props_name} id={props.get('id')}", "index": index},
                       src=rel.written, alt=alt, key=f"{part}#{index}", decorative=decorative,
                       embedded=None if rel.external else rel.target, context=context)
        return Picture(ref, part, props)

    def _word(self, pkg: Package, main: str) -> list[Picture]:
        parts = [main] + [r.target for r in pkg.rels(main).values()
                          if not r.external and r.type.startswith(_REL) and r.type[len(_REL):] in _WORD_PARTS]
        title = pkg.title()
        captions = None
        found = []
        for part in parts:
            if part not in pkg.zip:
                raise DocumentError(pkg.document, f"{main}'s relationships name {part!r}, which is not in the "
                                                  "package (a damaged document)")
            index = 0
            for drawing in pkg.root(part).iter(_q("wp", "inline"), _q("wp", "anchor")):
                props = drawing.find(_q("wp", "docPr"))
                blip = drawing.find(f"{_q('a', 'graphic')}/{_q('a', 'graphicData')}/{_q('pic', 'pic')}/"
                                    f"{_q('pic', 'blipFill')}/{_q('a', 'blip')}")
                if props is None or blip is None or _in_fallback(drawing):
                    continue
                if captions is None:
                    captions = self._caption_styles(pkg)
                index += 1
                found.append(self._picture(pkg, part, index, props, blip,
                                           self._word_context(pkg, part, drawing, captions, title)))
        return found

    def _caption_styles(self, pkg: Package) -> set[str]:
        """Ids of the paragraph styles that are captions (by id, or by a name such as Word's "caption")."""
        styles = set(_CAPTION_STYLES)
        rel = next((r for r in pkg.rels(pkg.main_part()).values() if r.type == _REL + "styles"), None)
        if rel is not None and rel.target in pkg.zip:
            for style in pkg.root(rel.target).iter(_q("w", "style")):
                name = style.find(_q("w", "name"))
                if name is not None and name.get(_q("w", "val"), "").lower() in _CAPTION_STYLES:
                    styles.add(style.get(_q("w", "styleId"), "").lower())
        return styles

    def _word_context(self, pkg: Package, part: str, drawing, captions: set[str], title) -> Context:
        extent = drawing.find(_q("wp", "extent"))
        context = Context(page_title=title)
        if extent is not None:
            context.width, context.height = _pixels(extent.get("cx")), _pixels(extent.get("cy"))
        paragraph = next(drawing.iterancestors(_q("w", "p")), None)
        wt = _q("w", "t")
        if paragraph is not None:
            text = _text(paragraph, wt)
            if not text:
                before = paragraph.getprevious()
                text = _text(before, wt) if before is not None and before.tag == _q("w", "p") else ""
            context.nearby_text = _clip(text)
            after = paragraph.getnext()
            if after is not None and after.tag == _q("w", "p"):
                style = after.find(f"{_q('w', 'pPr')}/{_q('w', 'pStyle')}")
                if style is not None and style.get(_q("w", "val"), "").lower() in captions:
                    context.figure_caption = _clip(_text(after, wt))
        link = next(drawing.iterancestors(_q("w", "hyperlink")), None)
        if link is not None:
            rid, anchor = link.get(_q("r", "id")), link.get(_q("w", "anchor"))
            if rid:
                context.link_href = pkg.relationship(part, rid, "a hyperlink").written
            elif anchor:
                context.link_href = "#" + anchor
            context.link_text = _clip(_text(link, wt))
        return context

    def _slides(self, pkg: Package, main: str) -> list[Picture]:
        order = [pkg.relationship(main, s.get(_q("r", "id")), "the slide list").target
                 for s in pkg.root(main).iter(_q("p", "sldId"))]
        slides = []
        for part in order:
            root = pkg.root(part)
            slide_title, centre_title, other = [], [], []
            for shape in root.iter(_q("p", "sp")):
                ph = shape.find(f"{_q('p', 'nvSpPr')}/{_q('p', 'nvPr')}/{_q('p', 'ph')}")
                kind = ph.get("type") if ph is not None else None
                text = " ".join(_text(para, _q("a", "t")) for para in shape.iter(_q("a", "p"))).strip()
                (slide_title if kind in ("title", "ctrTitle") else other).append(text)
                if kind == "ctrTitle":
                    centre_title.append(text)
            slides.append((part, root, " ".join(t for t in slide_title if t), " ".join(t for t in centre_title
                                                                                     if t), other))
        # the deck's title: docProps' dc:title, else the title slide's centred title
        title = pkg.title() or next((centre for *_, centre, _ in slides if centre), None)
        found = []
        for number, (part, root, slide_title, _, other) in enumerate(slides, 1):
            page_title = slide_title or title
            nearby = _clip(" ".join(t for t in other if t))
            index = 0
            for pic in root.iter(_q("p", "pic")):
                props = pic.find(f"{_q('p', 'nvPicPr')}/{_q('p', 'cNvPr')}")
                blip = pic.find(f"{_q('p', 'blipFill')}/{_q('a', 'blip')}")
                if props is None or blip is None or _in_fallback(pic):
                    continue
                index += 1
                ext = pic.find(f"{_q('p', 'spPr')}/{_q('a', 'xfrm')}/{_q('a', 'ext')}")
                context = Context(page_title=page_title, nearby_text=nearby)
                if ext is not None:
                    context.width, context.height = _pixels(ext.get("cx")), _pixels(ext.get("cy"))
                picture = self._picture(pkg, part, index, props, blip, context)
                picture.ref.location["slide"] = number
                found.append(picture)
        return found

    # -- writing -------------------------------------------------------------------------------------
    def write(self, path: str, data: bytes, alts: dict[str, str]) -> bytes:
        pkg = Package(str(path), data)
        pictures = self.pictures(pkg)
        by_key = {p.ref.key: p for p in pictures}
        unknown = [k for k in alts if k not in by_key]
        if unknown:
            raise DocumentError(pkg.document, f"no picture {unknown[0]!r} in the document")
        changes = {k: v for k, v in alts.items() if by_key[k].ref.alt != v or by_key[k].ref.decorative != (v == "")}
        if not changes:
            return data
        replacements = {}
        for part in dict.fromkeys(by_key[k].part for k in changes):
            mine = {k: v for k, v in changes.items() if by_key[k].part == part}
            replacements[part] = self._edit_part(pkg, part, {by_key[k].props: v for k, v in mine.items()})
        result = pkg.zip.rewrite(replacements)
        after = self.read(path, result)
        verify_rewrite(pkg.document, [p.ref for p in pictures], after, changes)
        if [(r.key, r.location, r.context) for r in after] != [(p.ref.key, p.ref.location, p.ref.context)
                                                               for p in pictures]:
            raise DocumentError(pkg.document, "the rewrite changed a picture's context; nothing written")
        return result

    def _edit_part(self, pkg: Package, part: str, wanted: dict) -> bytes:
        data = pkg.bytes(part)
        root = pkg.root(part)
        encoding = (root.getroottree().docinfo.encoding or "UTF-8").upper().replace("_", "-")
        if encoding not in ("UTF-8", "UTF8") or data.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise DocumentError(pkg.document, f"{part} is encoded in {encoding}; only UTF-8 parts are written")
        elements = list(wanted)
        for props in wanted:
            mark, extlst = _decorative_mark(props), props.find(_q("a", "extLst"))
            elements += [e for e in (mark, extlst) if e is not None]
        indices = xmlparts.element_indices(root, elements)
        tags = xmlparts.start_tags(pkg.document, part, data, indices.values())
        for element, i in indices.items():
            xmlparts.check_tag(pkg.document, part, tags[i], element)
        edits = []
        try:
            for props, alt in wanted.items():
                edits += self._edits(pkg.document, part, props, alt, indices, tags)
        except ValueError as exc:
            raise DocumentError(pkg.document, f"{part}: the alt text holds {exc}") from None
        return xmlparts.apply(data, edits)

    def _edits(self, document, part, props, alt: str, indices, tags) -> list:
        tag = tags[indices[props]]
        mark = _decorative_mark(props)
        edits = []
        if alt:
            edits.append(xmlparts.set_attribute(tag, "descr", alt))
            if mark is not None and _is_decorative(props):
                edits.append(xmlparts.set_attribute(tags[indices[mark]], "val", "0"))
            return edits
        if "descr" in tag.attrs:
            edits.append(xmlparts.set_attribute(tag, "descr", ""))
        if _is_decorative(props):
            return edits
        if mark is not None:           # a mark that says val="0": turn it on
            edits.append(xmlparts.set_attribute(tags[indices[mark]], "val", "1"))
            return edits
        extlst = props.find(_q("a", "extLst"))
        if extlst is not None:         # the extension list ends the element: add ours at its end
            ext_tag = tags[indices[extlst]]
            if ext_tag.self_closing:
                raise DocumentError(document, f"{part}: cannot mark <{tag.name} id={props.get('id')}> decorative "
                                              "(an empty a:extLst); Office's decorative mark is not written")
            prefix = ext_tag.name.rpartition(":")[0]
            edits.append((ext_tag.close[0], ext_tag.close[0], _decorative_ext(prefix + ":" if prefix else "")))
            return edits
        block = f'<a:extLst xmlns:a="{NS["a"]}">'.encode() + _decorative_ext("a:") + b"</a:extLst>"
        if tag.self_closing:           # <wp:docPr .../> -> <wp:docPr ...>EXT</wp:docPr>
            edits.append((tag.end - 2, tag.end, b">" + block + f"</{tag.name}>".encode()))
        else:
            edits.append((tag.close[0], tag.close[0], block))
        return edits


def format_for(path) -> OoxmlFormat:
    return OoxmlFormat("pptx" if Path(path).suffix.lower() == ".pptx" else "docx")


if __name__ == "__main__":
    from captioner.documents.formats import main

    sys.exit(main(sys.argv[1:]))
