"""A toy document format for the orchestration tests (tests/test_documents_*.py): one JSON object per line
for an image ({"src", "alt", "context": {...}, "embedded"}), any other line is text.  It implements
``formats.Format`` the way the real formats must (write changes only the named alts and proves it), so the
walking, resolving, captioning-once, review and atomic-write logic is tested apart from HTML's syntax.

    register(monkeypatch)        # .toy files are read by this format in this test
"""
from __future__ import annotations

import json

from captioner.documents.formats import DocumentError
from captioner.documents.refs import Context, ImageRef


class ToyFormat:
    name = "toy"

    def _lines(self, path, data):
        try:
            return data.decode("utf-8").splitlines(keepends=True)
        except UnicodeDecodeError:
            raise DocumentError(path, "not UTF-8") from None

    def read(self, path, data):
        refs = []
        for n, line in enumerate(self._lines(path, data), 1):
            if not line.startswith("{"):
                if line.startswith("BROKEN"):
                    raise DocumentError(path, f"line {n}: broken on purpose")
                continue
            obj = json.loads(line)
            refs.append(ImageRef(path, {"line": n, "column": 1}, obj["src"], obj.get("alt"), f"L{n}",
                                 decorative=obj.get("alt") == "", embedded=obj.get("embedded"),
                                 context=Context(**obj.get("context", {}))))
        return refs

    def write(self, path, data, alts):
        lines = self._lines(path, data)
        for n, line in enumerate(lines, 1):
            if f"L{n}" in alts:
                obj = json.loads(line)
                obj["alt"] = alts[f"L{n}"]
                lines[n - 1] = json.dumps(obj) + line[len(line.rstrip("\r\n")):]
        out = "".join(lines).encode("utf-8")
        before, after = self.read(path, data), self.read(path, out)
        if [r.key for r in before] != [r.key for r in after] or any(
                b.alt != alts.get(a.key, a.alt) for a, b in zip(before, after)):
            raise DocumentError(path, "write changed more than the alt text")
        return out

    def image_bytes(self, path, data, member):
        return bytes.fromhex(member.split(":", 1)[1]) if member.startswith("hex:") else b""


def register(monkeypatch):
    from captioner.documents import formats

    real = formats.format_for
    monkeypatch.setitem(formats.SUFFIXES, ".toy", "toy")
    toy = ToyFormat()

    def format_for(path):
        return toy if str(path).lower().endswith(".toy") else real(path)

    monkeypatch.setattr(formats, "format_for", format_for)
    return toy


def line(src, alt=None, **context):
    """One image line of a toy document (alt None: no alt text at all)."""
    obj = {"src": src, "context": context}
    if alt is not None:
        obj["alt"] = alt
    return json.dumps(obj) + "\n"
