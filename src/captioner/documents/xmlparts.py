"""XML parts of zip documents (.docx, .pptx, .epub packages): parsed safely, edited in place.

``parse(document, part, data)`` reads a part with lxml configured against hostile input: no DTD loaded,
no entity resolved, no network, no huge-tree mode (libxml2's own size limits stay on); a part that
declares a DTD or entities at all (the "billion laughs" bomb and its kin) is refused with a
``DocumentError``.

Edits change only the bytes asked for.  lxml reports an element's line, not its byte offset, so
``start_tags`` scans the part's bytes with a small tokenizer (a state machine over ``<``…``>``, never
a regular expression) that counts start tags in document order: the n-th start tag it meets is the
n-th element of ``root.iter()``, which ``element_indices`` gives.  Each tag comes back with the byte
spans of its attribute values and of its end tag, so a caller replaces one attribute value, adds
an attribute, or inserts an element and leaves every other byte as it was.

    python -m captioner.documents.xmlparts FILE.xml     # counts the start tags the tokenizer sees
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

from lxml import etree

from captioner.documents.formats import DocumentError

_WHITE = b" \t\r\n"
# characters XML 1.0 cannot carry at all (an attribute value with them would not parse again)
_FORBIDDEN = {c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)} | {0xFFFE, 0xFFFF}


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False,
                           dtd_validation=False, remove_blank_text=False, collect_ids=False)


def parse(document: str, part: str, data: bytes, doctype: bool = False) -> etree._Element:
    """The part's root element; a DocumentError for malformed XML or any DTD / entity declaration.
    ``doctype``: a bare document type declaration (XHTML's ``<!DOCTYPE html>``, or one naming an external
    DTD, which is never loaded) is allowed; declarations inside it still are not."""
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise DocumentError(document, f"{part} is not well-formed XML ({exc})") from None
    except (ValueError, TypeError) as exc:
        raise DocumentError(document, f"{part} cannot be read as XML ({exc})") from None
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None and (not doctype or any(True for _ in dtd.iterentities()) or
                            any(True for _ in dtd.iterelements())):
        raise DocumentError(document, f"{part} declares a DTD or entities (refused: entity expansion bombs "
                                      "hide there, and documents need none)")
    return root


def element_indices(root: etree._Element, targets) -> dict:
    """Each target element -> its 0-based position among the part's elements in document order."""
    wanted = set(targets)
    found = {}
    for i, el in enumerate(root.iter(etree.Element)):
        if el in wanted:
            found[el] = i
            if len(found) == len(wanted):
                break
    return found


@dataclass
class StartTag:
    """Where one element's tags lie in the part's bytes: half-open [start, end) spans."""
    name: str
    start: int
    end: int
    attrs: dict[str, tuple[int, int, bytes]] = field(default_factory=dict)   # name -> value span, quote
    self_closing: bool = False
    close: tuple[int, int] | None = None                                     # its end tag, unless self-closing


def _find(document: str, part: str, data: bytes, what: bytes, at: int) -> int:
    pos = data.find(what, at)
    if pos < 0:
        raise DocumentError(document, f"{part}: unterminated markup at byte {at}")
    return pos


def _name_end(data: bytes, at: int) -> int:
    end = at
    while end < len(data) and data[end] not in b" \t\r\n/>=":
        end += 1
    return end


def _skip_white(data: bytes, at: int) -> int:
    while at < len(data) and data[at] in _WHITE:
        at += 1
    return at


def _start_tag(document: str, part: str, data: bytes, lt: int) -> StartTag:
    """Tokenize the start tag opening at ``lt``: its name, attribute value spans and where it ends."""
    end = _name_end(data, lt + 1)
    tag = StartTag(data[lt + 1:end].decode("utf-8"), lt, 0)
    at = end
    while True:
        at = _skip_white(data, at)
        if data.startswith(b"/>", at):
            tag.end, tag.self_closing = at + 2, True
            return tag
        if data.startswith(b">", at):
            tag.end = at + 1
            return tag
        name_end = _name_end(data, at)
        if name_end == at:
            raise DocumentError(document, f"{part}: malformed start tag at byte {lt}")
        name = data[at:name_end].decode("utf-8")
        at = _skip_white(data, name_end)
        if not data.startswith(b"=", at):
            raise DocumentError(document, f"{part}: attribute without a value at byte {at}")
        at = _skip_white(data, at + 1)
        quote = data[at:at + 1]
        if quote not in (b'"', b"'"):
            raise DocumentError(document, f"{part}: unquoted attribute value at byte {at}")
        close = _find(document, part, data, quote, at + 1)
        tag.attrs[name] = (at + 1, close, quote)
        at = close + 1


def start_tags(document: str, part: str, data: bytes, wanted) -> dict[int, StartTag]:
    """The tags of the elements at the ``wanted`` document-order positions; stops once all are closed."""
    wanted = set(wanted)
    found: dict[int, StartTag] = {}
    open_: list[tuple[int, str]] = []
    index, pos, pending = -1, 0, len(wanted)
    while pending:
        lt = data.find(b"<", pos)
        if lt < 0:
            break
        if data.startswith(b"<?", lt):
            pos = _find(document, part, data, b"?>", lt + 2) + 2
        elif data.startswith(b"<!--", lt):
            pos = _find(document, part, data, b"-->", lt + 4) + 3
        elif data.startswith(b"<![CDATA[", lt):
            pos = _find(document, part, data, b"]]>", lt + 9) + 3
        elif data.startswith(b"<!", lt):
            raise DocumentError(document, f"{part} declares a DTD or entities (refused)")
        elif data.startswith(b"</", lt):
            gt = _find(document, part, data, b">", lt + 2)
            name = data[lt + 2:gt].strip().decode("utf-8")
            if not open_ or open_[-1][1] != name:
                raise DocumentError(document, f"{part}: end tag </{name}> does not match (byte {lt})")
            i, _ = open_.pop()
            if i in found:
                found[i].close = (lt, gt + 1)
                pending -= 1
            pos = gt + 1
        else:
            index += 1
            tag = _start_tag(document, part, data, lt)
            if index in wanted:
                found[index] = tag
                if tag.self_closing:
                    pending -= 1
            if not tag.self_closing:
                open_.append((index, tag.name))
            pos = tag.end
    if len(found) != len(wanted):
        raise DocumentError(document, f"{part}: the tokenizer and the XML parser disagree on its elements")
    return found


def check_tag(document: str, part: str, tag: StartTag, element: etree._Element) -> None:
    """Refuse an edit when the tokenizer's tag is not the parser's element (a safety net, never expected)."""
    qname = etree.QName(element)
    expected = f"{element.prefix}:{qname.localname}" if element.prefix else qname.localname
    if tag.name != expected:
        raise DocumentError(document, f"{part}: expected <{expected}> at byte {tag.start}, found <{tag.name}>")


def escape(value: str, quote: bytes = b'"') -> bytes:
    """``value`` as the bytes of an XML attribute value (UTF-8) that parses back to exactly ``value``."""
    if any(ord(c) in _FORBIDDEN for c in value):
        raise ValueError("a control character XML cannot carry")
    out = (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
           .replace("\t", "&#9;").replace("\n", "&#10;").replace("\r", "&#13;"))
    out = out.replace('"', "&quot;") if quote == b'"' else out.replace("'", "&apos;")
    return out.encode("utf-8")


def set_attribute(tag: StartTag, name: str, value: str) -> tuple[int, int, bytes]:
    """The edit (start, end, new bytes) that gives ``tag`` attribute ``name`` = ``value``: the old value's
    bytes replaced in its own quotes, or the attribute added after the last one."""
    if name in tag.attrs:
        start, end, quote = tag.attrs[name]
        return start, end, escape(value, quote)
    at = tag.end - (2 if tag.self_closing else 1)
    return at, at, b" " + name.encode("utf-8") + b'="' + escape(value) + b'"'


def apply(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """``data`` with non-overlapping edits applied (each replaces [start, end) with its bytes)."""
    out, pos = [], 0
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1])):
        if start < pos:
            raise ValueError("overlapping edits")
        out += [data[pos:start], new]
        pos = end
    out.append(data[pos:])
    return b"".join(out)


if __name__ == "__main__":
    try:
        for arg in sys.argv[1:]:
            with open(arg, "rb") as fh:
                raw = fh.read()
            n = sum(1 for _ in parse(arg, arg, raw).iter(etree.Element))
            print(arg, n, "elements;", len(start_tags(arg, arg, raw, range(n))), "start tags")
    except DocumentError as err:
        sys.exit(f"captioner: {err}")
