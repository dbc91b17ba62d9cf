"""documents/__init__.py: check, fill (each distinct image captioned once, context rules, proposals for the
review), write (atomic, verified, only missing/suspicious alt text, refused on changed or read-only documents,
--diff, a rerun writes nothing, kill -9 leaves each document old or new), on a toy format (documents_toy.py)
so the orchestration is tested apart from any format's syntax."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

import captioner.documents as documents
from documents_toy import line, register

ROOT = Path(__file__).resolve().parents[1]


class FakeCaptioner:
    """Counts what it is asked to caption; the alt text names the image's colour."""

    def __init__(self):
        self.asked = []

    def _caption(self, img):
        from captioner.api import Caption

        r, g, b = img.convert("RGB").getpixel((img.width // 2, img.height // 2))
        name = "red" if r > 150 else "green" if g > 150 else "blue"
        return Caption(text=f"a {name} square", words=[], score=0.0, alt_text=f"A {name} square on white.",
                       confidence=0.9, in_domain=True)

    def caption_paths(self, paths, batch_size=16, workers=0):
        from captioner.images import open_image

        for p in paths:
            self.asked.append(p)
            yield p, self._caption(open_image(p))


def _png(path, colour, size=(64, 48)):
    Image.new("RGB", size, colour).save(path)
    # a dot of another colour, so the image is not "one colour" (the spacer rule)
    im = Image.open(path).convert("RGB")
    im.putpixel((0, 0), (0, 0, 0))
    im.save(path)


@pytest.fixture
def site(tmp_path, monkeypatch):
    register(monkeypatch)
    s = tmp_path / "site"
    (s / "img").mkdir(parents=True)
    _png(s / "img" / "red.png", (220, 20, 20))
    _png(s / "img" / "green.png", (20, 220, 20))
    (s / "img" / "red-copy.png").write_bytes((s / "img" / "red.png").read_bytes())
    (s / "a.toy").write_text("# page a\n" + line("img/red.png") + line("img/green.png", "A green field.")
                             + line("img/green.png", "IMG_1234.jpg"))
    (s / "b.toy").write_text(line("img/red-copy.png", "") + line("img/red.png")
                             + line("img/nope.png") + line("https://example.com/x.png"))
    (s / "c.toy").write_text(line("img/green.png", link_href="a.toy") + line("../outside.png"))
    (s / ".hidden.toy").write_text(line("img/red.png"))
    (s / "notes.txt").write_text("not a document")
    monkeypatch.chdir(tmp_path)
    return Path("site")


def test_check_lists_each_reference_with_its_status(site):
    refs = documents.check([str(site)])
    assert refs.errors == [] and refs.documents == 3
    got = [(Path(r.document).name, r.location["line"], r.status, r.problem) for r in refs]
    assert got == [("a.toy", 2, "missing", None), ("a.toy", 3, "ok", None), ("a.toy", 4, "suspicious", None),
                   ("b.toy", 1, "decorative", None), ("b.toy", 2, "missing", None),
                   ("b.toy", 3, "missing", "not found"),
                   ("b.toy", 4, "missing", "remote image, not fetched (captioner stays offline)"),
                   ("c.toy", 1, "missing", None), ("c.toy", 2, "missing", got[-1][3])]
    assert got[-1][3].startswith("refused")


def test_a_broken_document_is_one_error_and_the_others_go_on(site):
    (site / "bad.toy").write_text("BROKEN\n")
    refs = documents.check([str(site), "site/nothing-here"])
    assert sorted(str(e) for e in refs.errors) == ["site/bad.toy: line 1: broken on purpose",
                                                   "site/nothing-here: no such file or folder"]
    assert len(refs) == 9


def test_fill_captions_each_distinct_image_once_and_applies_the_context_rules(site, tmp_path):
    cap = FakeCaptioner()
    props = documents.fill([str(site)], cap, output="proposals.jsonl")
    assert cap.asked == ["site/img/red.png", "site/img/green.png"]   # each once, however many references
    recs = {r["image"]: r for r in props}
    red = recs["site/img/red.png"]
    assert red["alt_text"] == "A red square on white." and red["sha256"]
    assert sorted((Path(x["document"]).name, x["key"]) for x in red["references"]) == [("a.toy", "L2"), ("b.toy", "L2")]
    green = recs["site/img/green.png"]
    by_doc = {Path(x["document"]).name: x for x in green["references"]}
    # c.toy's green image is a link's only content: the name of the page it goes to (a.toy has no title)
    assert (by_doc["c.toy"]["rule"], by_doc["c.toy"]["proposed"]) == ("link_only", "A")
    assert (by_doc["a.toy"]["status"], by_doc["a.toy"]["rule"]) == ("suspicious", "caption")
    failed = [r for r in props if "error" in r]
    assert {r["error"].split(":")[0] for r in failed} >= {"not found", "remote image, not fetched (captioner stays offline)"}
    # the file is a results file the review opens; a rerun adds nothing and captions nothing
    lines = Path("proposals.jsonl").read_text().splitlines()
    assert len(lines) == len(props)
    again = FakeCaptioner()
    props2 = documents.fill([str(site)], again, output="proposals.jsonl")
    assert again.asked == [] and len(props2) == 0 and props2.skipped == len(props)


def test_write_fills_only_missing_and_suspicious_and_a_rerun_writes_nothing(site):
    before = {p: p.read_bytes() for p in site.glob("*.toy")}
    mode = 0o640
    os.chmod(site / "a.toy", mode)
    done = documents.write([str(site)], captioner=FakeCaptioner())
    assert done.errors == []
    assert sorted(Path(d).name for d in done.written) == ["a.toy", "b.toy", "c.toy"]
    a = [json.loads(x) for x in (site / "a.toy").read_text().splitlines()[1:]]
    assert [x.get("alt") for x in a] == ["A red square on white.", "A green field.", "A green square on white."]
    assert (site / "a.toy").stat().st_mode & 0o777 == mode
    b = [json.loads(x) for x in (site / "b.toy").read_text().splitlines()]
    assert b[0]["alt"] == "" and b[1]["alt"] == "A red square on white." and "alt" not in b[2] and "alt" not in b[3]
    assert not list(site.glob(".*.tmp"))
    # a rerun: nothing left to fill
    again = documents.write([str(site)], captioner=FakeCaptioner())
    assert again.written == [] and again.errors == []
    # only the alt lines changed
    for p, old in before.items():
        new = p.read_bytes().splitlines()
        for o, n in zip(old.splitlines(), new):
            if o != n:
                assert json.loads(o)["src"] == json.loads(n)["src"]


def test_write_from_reviewed_proposals_respects_the_decisions(site):
    from captioner.library.decisions import ReviewStore

    documents.fill([str(site)], FakeCaptioner(), output="proposals.jsonl")
    with ReviewStore("proposals.jsonl") as store:
        store.index()
        store.decide("site/img/red.png", "edit", "A red tile.", reviewer="ana")
    only = documents.write([str(site)], from_="proposals.jsonl", reviewed_only=True, diff=True)
    assert only.errors == [] and only.written == [] and "A red tile." in only.diff and "A green square" not in only.diff
    assert "alt" not in json.loads((site / "a.toy").read_text().splitlines()[1])    # --diff wrote nothing
    documents.write([str(site)], from_="proposals.jsonl")
    a = [json.loads(x) for x in (site / "a.toy").read_text().splitlines()[1:]]
    assert a[0]["alt"] == "A red tile." and a[2]["alt"] == "A green square on white."
    assert documents.write([str(site)], from_="proposals.jsonl").written == []     # a rerun writes nothing


def test_a_persons_alt_text_is_replaced_only_with_overwrite(site):
    (site / "d.toy").write_text(line("img/red.png", "Our red logo"))
    assert documents.write([str(site / "d.toy")], captioner=FakeCaptioner()).written == []
    done = documents.write([str(site / "d.toy")], captioner=FakeCaptioner(), overwrite=True)
    assert json.loads((site / "d.toy").read_text())["alt"] == "A red square on white." and done.alts == 1


def test_a_document_changed_since_its_proposals_is_refused_and_nothing_is_written(site):
    documents.fill([str(site)], FakeCaptioner(), output="proposals.jsonl")
    with open(site / "b.toy", "a") as f:
        f.write("an edit made after the proposals\n")
    before = (site / "a.toy").read_bytes()
    done = documents.write([str(site)], from_="proposals.jsonl")
    assert done.written == [] and len(done.errors) == 1
    assert "b.toy: changed since its proposals were made" in str(done.errors[0])
    assert (site / "a.toy").read_bytes() == before


def test_a_read_only_document_is_a_clear_error_and_nothing_is_written(site):
    os.chmod(site / "b.toy", 0o444)
    before = {p: p.read_bytes() for p in site.glob("*.toy")}
    done = documents.write([str(site)], captioner=FakeCaptioner())
    assert [str(e) for e in done.errors] == ["site/b.toy: read-only: cannot write the alt text (nothing was written)"]
    assert {p: p.read_bytes() for p in site.glob("*.toy")} == before


def test_a_document_that_fails_on_disk_is_one_error_and_the_others_are_written(site, monkeypatch):
    """A failure found only when the copy is on disk (here its read-back check) leaves that document as it
    was, is reported, and does not stop the others (before: a traceback, the rest not written)."""
    from captioner.documents import writing
    from captioner.documents.formats import DocumentError

    check = writing._verify

    def verify(document, *args):
        if Path(document).name == "b.toy":
            raise DocumentError(document, "the written copy reads back wrong (nothing was replaced)")
        return check(document, *args)

    monkeypatch.setattr(writing, "_verify", verify)
    before = (site / "b.toy").read_bytes()
    done = documents.write([str(site)], captioner=FakeCaptioner())
    assert [str(e) for e in done.errors] == ["site/b.toy: the written copy reads back wrong (nothing was replaced)"]
    assert sorted(Path(d).name for d in done.written) == ["a.toy", "c.toy"]
    assert (site / "b.toy").read_bytes() == before and not list(site.glob(".*.tmp"))


def test_images_inside_documents_are_captioned_from_memory(site):
    buf = io.BytesIO()
    im = Image.new("RGB", (40, 30), (20, 20, 220))
    im.putpixel((0, 0), (0, 0, 0))          # not one colour (the spacer rule would decide it)
    im.save(buf, "PNG")
    blue = buf.getvalue()
    import base64

    (site / "e.toy").write_text(line("media/image1.png") .replace('"context"', f'"embedded": "hex:{blue.hex()}", "context"')
                                + line("data:image/png;base64," + base64.b64encode(blue).decode()))
    cap = FakeCaptioner()
    props = documents.fill([str(site / "e.toy")], cap)
    # one image, from its bytes (images.Blob), in the same batched call as files
    assert [(type(p).__name__, p.data) for p in cap.asked] == [("Blob", blue)]
    assert len(props) == 1 and len(props[0]["references"]) == 2
    assert props[0]["alt_text"] == "A blue square on white."
    assert documents.image_for_review(props[0]) == blue


WRITER = """
import sys, pytest
sys.path.insert(0, {tests!r})
from documents_toy import register
import captioner.documents as documents
mp = pytest.MonkeyPatch(); register(mp)
print("ready", flush=True)
for i in range(1000):
    done = documents.write([{site!r}], from_={props!r})
    if not done.written:
        break
"""


def test_kill_9_mid_write_leaves_each_document_old_or_new(tmp_path, monkeypatch):
    register(monkeypatch)
    site = tmp_path / "many"
    site.mkdir()
    _png(tmp_path / "many" / "red.png", (220, 20, 20))
    body = "text line that stays exactly as it is\n" * 200
    for i in range(300):
        (site / f"p{i:03}.toy").write_text(body + line("red.png") + body)
    monkeypatch.chdir(tmp_path)
    documents.fill(["many"], FakeCaptioner(), output="props.jsonl")
    old = (site / "p000.toy").read_bytes()
    new = None
    for attempt in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER.format(tests=str(ROOT / "tests"), site="many",
                                                                      props="props.jsonl")],
                                cwd=tmp_path, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.05 + 0.1 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        states = [(site / f"p{i:03}.toy").read_bytes() for i in range(300)]
        done_now = [s for s in states if s != old]
        if done_now:
            new = new or done_now[0]
        assert all(s == old or s == new for s in states), "a torn document"
        if 0 < len(done_now) < 300:
            break
    # the same image on every page: the repeated rule marks it decorative
    assert new is not None and new.count(b'"alt": ""') == 1
    assert 0 < len(done_now) < 300, "the kill never landed mid-run; the test proved nothing"


def test_decorative_where_markdown_cannot_say_it(tmp_path, monkeypatch):
    """Markdown's ![](x.png) reads as missing, so a rule's "decorative" becomes a description there, an HTML
    page gets alt="", and a person's "decorative" on a Markdown image is left as it was, with a warning."""
    from captioner.library.decisions import ReviewStore

    site = tmp_path / "md"
    site.mkdir()
    _png(site / "logo.png", (220, 20, 20))
    for i in range(4):
        (site / f"p{i}.md").write_text(f"# Page {i}\n\n![](logo.png)\n\nSome text.\n")
    (site / "p4.html").write_text('<!doctype html><title>P</title><p><img src="logo.png"></p>\n')
    monkeypatch.chdir(tmp_path)
    props = documents.fill(["md"], FakeCaptioner(), output="props.jsonl")
    (rec,) = props
    by_doc = {Path(x["document"]).suffix: x for x in rec["references"]}
    assert (by_doc[".html"]["rule"], by_doc[".html"]["proposed"]) == ("repeated", "")
    assert (by_doc[".md"]["rule"], by_doc[".md"]["proposed"]) == ("caption", "A red square on white.")
    with ReviewStore("props.jsonl") as store:
        store.index()
        store.decide(rec["image"], "decorative", reviewer="ana")
    done = documents.write(["md"], from_="props.jsonl")
    assert done.errors == [] and done.written == ["md/p4.html"]
    assert len(done.not_decorative) == 4 and (site / "p0.md").read_text().count("![](logo.png)") == 1
    assert [r.status for r in documents.check(["md/p4.html"])] == ["decorative"]


def test_a_document_linked_from_outside_the_folder_is_refused(site, tmp_path):
    (tmp_path / "elsewhere.toy").write_text(line("img/red.png"))
    os.symlink(tmp_path / "elsewhere.toy", site / "linked.toy")
    refs = documents.check([str(site)])
    assert [str(e) for e in refs.errors] == ["site/linked.toy: refused: a link leading outside the folder given"]
    assert "linked.toy" not in {Path(r.document).name for r in refs}


def test_site_absolute_paths_resolve_under_root(site):
    (site / "sub").mkdir()
    (site / "sub" / "f.toy").write_text(line("/img/red.png"))
    (ref,) = documents.check([str(site / "sub")])
    assert ref.image is None and "--root" in ref.problem
    (ref,) = documents.check([str(site / "sub")], root=str(site))
    assert ref.image == os.path.normpath(site / "img" / "red.png")


def test_a_large_photos_facts_come_from_a_scaled_decode_and_its_header():
    """A phone's photo inside a document: its pixel size (upright, as shown) and colours are found without
    decoding every pixel (a JPEG at 1/8 of its size here), and the size is still the photo's own."""
    from captioner.documents import filling
    from captioner.images import open_image

    exif = Image.Exif()
    exif[0x0112] = 6                         # "rotate 90° to show": 2400 x 1600 stored, 1600 x 2400 shown
    buf = io.BytesIO()
    Image.new("RGB", (2400, 1600), (200, 40, 40)).save(buf, "JPEG", exif=exif.tobytes())
    data = buf.getvalue()
    opened = open_image(io.BytesIO(data), at_least=filling.FACTS_SIDE)
    assert opened.size == (200, 300)         # decoded at 1/8, upright
    assert filling._full_size(data, opened) == (1600, 2400)
    assert filling._full_size(data, open_image(io.BytesIO(data))) == (1600, 2400)   # as a full decode says
