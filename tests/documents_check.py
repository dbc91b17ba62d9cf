"""What the document-format tests share: the proof that a write changed only alt text (each edit alone,
then all together), and the field's checkers (markdownlint's MD045, axe-core's image-alt) run on files.

    python -m pytest -q tests/test_documents_html.py tests/test_documents_markdown.py
"""
from __future__ import annotations

import json
import shutil
import subprocess
from html import unescape
from pathlib import Path

# on PATH, or installed beside axe-core (npm install --prefix tests/browser markdownlint-cli2)
_BESIDE_AXE = Path(__file__).resolve().parent / "browser" / "node_modules" / ".bin" / "markdownlint-cli2"
MARKDOWNLINT = (shutil.which("markdownlint-cli2") or shutil.which("markdownlint")
                or (str(_BESIDE_AXE) if _BESIDE_AXE.is_file() else None))


def changed(before: bytes, after: bytes) -> tuple[bytes, bytes]:
    """The one differing stretch of two byte strings: (old bytes, new bytes) between the common prefix and suffix."""
    p = 0
    n = min(len(before), len(after))
    while p < n and before[p] == after[p]:
        p += 1
    s = 0
    while s < n - p and before[len(before) - 1 - s] == after[len(after) - 1 - s]:
        s += 1
    return before[p:len(before) - s], after[p:len(after) - s]


def assert_only_alts(fmt, document: str, data: bytes, new_alt, encoding: str = "utf-8", unescape_new=unescape):
    """Set each reference's alt alone and check that the only bytes that changed are that alt's (what differs
    between before and after, read back, is part of the new alt or of the attribute that holds it); then set
    them all at once and check it equals the single edits applied one after another (last first)."""
    refs = fmt.read(document, data)
    assert refs, f"{document}: no image references"
    alts = {}
    for i, ref in enumerate(refs):
        alt = alts[ref.key] = new_alt(i, ref)
        out = fmt.write(document, data, {ref.key: alt})
        old, new = changed(data, out)
        new_texts = {unescape_new(new.decode(encoding)).strip(), unescape(new.decode(encoding)).strip()}
        holders = [alt, f' alt="{alt}"', f" alt='{alt}'", f' ALT="{alt}"', f'="{alt}"', f'"{alt}"',
                   f"{alt}][{ref.alt}]"]
        assert any(t in h for t in new_texts for h in holders), (document, ref.key, old, new)
        assert unescape_new(old.decode(encoding)) in (ref.alt or "") + "]", (document, ref.key, old, new)
        again = fmt.read(document, out)
        assert [r.alt for r in again] == [alt if r.key == ref.key else r.alt for r in refs]
    together = fmt.write(document, data, alts)
    one_by_one = data
    for ref in reversed(refs):
        one_by_one = fmt.write(document, one_by_one, {ref.key: alts[ref.key]})
    assert together == one_by_one
    assert [r.alt for r in fmt.read(document, together)] == [alts[r.key] for r in refs]
    return together


def md045(folder: Path, names: list[str]) -> set[tuple[str, int, int]]:
    """markdownlint's MD045 findings in ``folder``'s files: {(file name, line, column)}."""
    (folder / ".markdownlint.json").write_text(json.dumps({"default": False, "MD045": True}))
    run = subprocess.run([MARKDOWNLINT, *names], cwd=folder, capture_output=True, text=True, timeout=120)
    found = set()
    for line in (run.stdout + run.stderr).splitlines():
        if "MD045" not in line:
            continue
        where = line.split(" ", 1)[0].split(":")         # "file.md:12:5" (markdownlint-cli2 and -cli)
        found.add((where[0], int(where[1]), int(where[2]) if len(where) > 2 and where[2].isdigit() else 0))
    return found
