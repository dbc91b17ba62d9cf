"""Alt text in photo metadata (metadata.py), read back with exiftool itself: sidecars created and
merged, embedding in JPEG / PNG / WebP / TIFF with every other tag and every pixel kept, a person's
description kept, read-only, corrupt and clashing files left untouched with an error."""
import json
import os
import random
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from captioner.training.checkpoint import DEFAULT_MODEL
from captioner.library.metadata import MetadataError, MetadataWriter, MetadataWriters, _pixels
from conftest import SHARED, needs_shared

pytestmark = pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed")
FORMATS = ("jpg", "png", "webp", "tiff")
ALT, DESC, EXIF = "XMP-iptcCore:AltTextAccessibility", "XMP-dc:Description", "IFD0:ImageDescription"


def exif(path, *tags):
    """Tags as exiftool reads them (-G1: family 1 groups)."""
    r = subprocess.run(["exiftool", "-json", "-G1", "-a", *[f"-{t}" for t in tags], str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]


def photo(folder, fmt, artist="Jane Roe"):
    """A small photo in ``fmt`` carrying an EXIF Artist and an XMP subject of its own."""
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"photo_{fmt}.{fmt}"
    rng = __import__("random").Random(fmt)
    img = Image.new("RGB", (64, 48))
    img.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(64 * 48)])
    img.save(p)
    subprocess.run(["exiftool", "-q", "-overwrite_original", f"-EXIF:Artist={artist}", "-XMP-dc:Subject=holiday",
                    str(p)], check=True)
    return p


@pytest.fixture(scope="module")
def writers():
    with MetadataWriter("embed") as embed, MetadataWriter("sidecar") as sidecar:
        yield {"embed": embed, "sidecar": sidecar}


@pytest.mark.parametrize("fmt", FORMATS)
def test_embed_writes_the_fields_keeps_other_tags_and_pixels(writers, tmp_path, fmt):
    p = photo(tmp_path, fmt)
    before, pixels, mode = exif(p), _pixels(p), os.stat(p).st_mode
    done = writers["embed"].write(p, "A dog runs through the grass.")
    assert done == {"metadata": {"embed": str(p), "status": "written"}}
    after = exif(p)
    for tag in (ALT, DESC, EXIF):
        assert after[tag] == "A dog runs through the grass.", (tag, after)
    assert after["XMP-photoshop:CaptionWriter"] == "captioner"
    assert after["IFD0:Artist"] == "Jane Roe" and after["XMP-dc:Subject"] == "holiday"
    ours = {ALT, DESC, EXIF, "XMP-photoshop:CaptionWriter", "XMP-x:XMPToolkit"}
    for k, v in before.items():   # every other tag as it was (file-system facts and byte offsets aside)
        if k.split(":")[0] not in ("System", "File", "ExifTool", "Composite", "SourceFile") \
                and not k.endswith(("Offset", "Offsets")) and k not in ours:
            assert after.get(k) == v, (k, v, after.get(k))
    assert _pixels(p) == pixels and os.stat(p).st_mode == mode
    assert sorted(os.listdir(tmp_path)) == [p.name]            # no temporary copy left behind
    # a second run (a newer model) may replace its own text
    writers["embed"].write(p, "A brown dog.")
    assert exif(p, ALT)[ALT] == "A brown dog." and _pixels(p) == pixels


@pytest.mark.parametrize("fmt", FORMATS)
def test_sidecar_beside_each_format_leaves_the_photo_as_it_was(writers, tmp_path, fmt):
    p = photo(tmp_path, fmt)
    before = p.read_bytes()
    assert writers["sidecar"].write(p, "A red car.") == {"metadata": {"sidecar": str(p.with_suffix(".xmp")),
                                                                      "status": "written"}}
    got = exif(p.with_suffix(".xmp"))
    assert got[ALT] == got[DESC] == "A red car." and got["XMP-photoshop:CaptionWriter"] == "captioner"
    assert p.read_bytes() == before and sorted(os.listdir(tmp_path)) == sorted([p.name, p.stem + ".xmp"])


def test_sidecar_created_then_merged_without_losing_other_fields(writers, tmp_path):
    p = photo(tmp_path, "jpg")
    before = p.read_bytes()
    writers["sidecar"].write(p, "A child on a swing.")
    xmp = p.with_suffix(".xmp")
    got = exif(xmp)
    assert got[ALT] == got[DESC] == "A child on a swing." and p.read_bytes() == before   # the photo untouched
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-xmp:Rating=4", "-XMP-dc:Creator=Jane Roe",
                    str(xmp)], check=True)                                                # another tool adds fields
    writers["sidecar"].write(p, "A girl on a swing.")
    got = exif(xmp)
    assert got[ALT] == "A girl on a swing." and got["XMP-xmp:Rating"] == 4 and got["XMP-dc:Creator"] == "Jane Roe"


@pytest.mark.parametrize("mode", ["embed", "sidecar"])
def test_a_description_a_person_wrote_is_kept_unless_overwrite(writers, tmp_path, mode):
    p = photo(tmp_path, "jpg")
    target = p if mode == "embed" else p.with_suffix(".xmp")
    subprocess.run(["exiftool", "-q", "-overwrite_original", f"-{ALT}=Grandma's 90th birthday cake", str(target)],
                   check=True)
    before = target.read_bytes()
    done = writers[mode].write(p, "A cake on a table.")
    assert done["metadata"]["status"] == "kept existing description" and target.read_bytes() == before
    with MetadataWriter(mode, overwrite=True) as w:
        assert w.write(p, "A cake on a table.")["metadata"]["status"] == "written"
    assert exif(target, ALT)[ALT] == "A cake on a table."


def test_read_only_corrupt_and_clashing_files_are_left_untouched(writers, tmp_path):
    ro = photo(tmp_path / "ro", "jpg")
    ro.chmod(0o444)
    before = ro.read_bytes()
    with pytest.raises(MetadataError, match="read-only"):
        writers["embed"].write(ro, "text")
    assert ro.read_bytes() == before
    bad = tmp_path / "bad" / "broken.jpg"          # a JPEG header, then noise: ExifTool refuses to write it
    bad.parent.mkdir()
    # fixed bytes: random ones made this test flaky, since ExifTool finds an MP3 frame header in about 1 in
    # 50 random files (6 of 300 tried), reads such a file and only fails at the write
    rng = random.Random(8)
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + rng.randbytes(300))
    noise = bad.with_name("noise.tiff")             # not parseable at all: not even a sidecar is made
    noise.write_bytes(b"\x00" + rng.randbytes(399))
    before = {p: p.read_bytes() for p in (bad, noise)}
    with pytest.raises(MetadataError, match=r"broken.jpg: ExifTool could not write it .*left untouched"):
        writers["embed"].write(bad, "text")
    for mode in ("embed", "sidecar"):
        with pytest.raises(MetadataError, match=r"noise.tiff: ExifTool cannot read the photo .*left untouched"):
            writers[mode].write(noise, "text")
    assert {p: p.read_bytes() for p in (bad, noise)} == before
    assert sorted(os.listdir(bad.parent)) == ["broken.jpg", "noise.tiff"]
    a = photo(tmp_path / "clash", "jpg")
    shutil.copy(a, a.with_suffix(".png"))
    with pytest.raises(MetadataError, match="would be shared with"):
        writers["sidecar"].write(a, "text")
    assert not a.with_suffix(".xmp").exists()


@needs_shared
@pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no shipped model")
def test_command_line_embeds_alt_text_in_every_format_and_reports_failures(tmp_path):
    src = Image.open(sorted((SHARED / "originals").glob("*.jpg"))[0]).convert("RGB")
    folder = tmp_path / "photos"
    folder.mkdir()
    for fmt in FORMATS:
        src.save(folder / f"p.{fmt}")
    (folder / "truncated.jpg").write_bytes((folder / "p.jpg").read_bytes()[:2000])
    ro = folder / "readonly.jpg"
    shutil.copy(folder / "p.jpg", ro)
    ro.chmod(0o444)
    untouched = {n: (folder / n).read_bytes() for n in ("truncated.jpg", "readonly.jpg")}
    pixels = {fmt: _pixels(folder / f"p.{fmt}") for fmt in FORMATS}
    out = tmp_path / "r.jsonl"
    r = subprocess.run([sys.executable, "-m", "captioner", "caption", str(folder), "--output", str(out),
                        "--write-metadata", "embed"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr
    recs = {os.path.basename(x["image"]): x for x in map(json.loads, out.read_text().splitlines())}
    assert set(recs) == {"p.jpg", "p.png", "p.webp", "p.tiff", "truncated.jpg", "readonly.jpg"}
    for fmt in FORMATS:
        rec = recs[f"p.{fmt}"]
        assert "error" not in rec and rec["metadata"]["status"] == "written"
        got = exif(folder / f"p.{fmt}", ALT, EXIF)
        assert got[ALT] == got[EXIF] == rec["alt_text"]
        assert _pixels(folder / f"p.{fmt}") == pixels[fmt]
    # the read-only photo was captioned: only its metadata failed, and that is what the run says
    ro_rec = recs["readonly.jpg"]
    assert "error" not in ro_rec and ro_rec["alt_text"] and ro_rec["metadata"]["status"] == "failed"
    assert "read-only" in ro_rec["metadata"]["error"] and recs["truncated.jpg"]["error"]
    assert f"captioner: error: captioned, metadata not written: {ro}: read-only" in r.stderr
    assert f"captioner: error: {folder / 'truncated.jpg'}: " in r.stderr
    assert "6 photos: 5 captioned (1 with metadata not written), 1 failed" in r.stderr
    assert f"captioner write-metadata {out} embed" in r.stderr
    for n, data in untouched.items():
        assert (folder / n).read_bytes() == data


@needs_shared
@pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no shipped model")
def test_a_read_only_photo_is_captioned_its_metadata_failure_named_and_written_later(tmp_path):
    """Only the metadata failed: the caption is kept and counted as captioned, the failure is named on
    stderr as such, the exit status is 1 (the metadata was asked for), and `write-metadata` writes
    it once the photo is writable, without captioning again."""
    folder = tmp_path / "photos"
    folder.mkdir()
    ro = folder / "readonly.jpg"
    shutil.copy(sorted((SHARED / "originals").glob("*.jpg"))[0], ro)
    ro.chmod(0o444)
    before = ro.read_bytes()
    out = tmp_path / "r.jsonl"
    r = subprocess.run([sys.executable, "-m", "captioner", "caption", str(folder), "--output", str(out),
                        "--write-metadata", "embed"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr
    assert f"captioner: error: captioned, metadata not written: {ro}: read-only" in r.stderr
    assert "1 photo: 1 captioned (1 with metadata not written), 0 failed" in r.stderr
    assert "Traceback" not in r.stderr and ro.read_bytes() == before
    rec = json.loads(out.read_text())
    assert "error" not in rec and rec["alt_text"] and rec["metadata"]["status"] == "failed"
    ro.chmod(0o644)                                  # the user makes it writable, and writes the metadata
    r = subprocess.run([sys.executable, "-m", "captioner", "write-metadata", str(out), "embed"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "1 written" in r.stderr, r.stderr
    assert exif(ro, ALT)[ALT] == rec["alt_text"]


def test_several_writers_write_side_by_side_in_order(tmp_path):
    """MetadataWriters: each photo written by one of several ExifTool processes at once, the results in the
    photos' order, a failure kept as that photo's result."""
    import threading

    photos = [photo(tmp_path / f"lib{i}", fmt) for i, fmt in enumerate(FORMATS * 2)]
    photos[5].chmod(0o444)
    both_busy = threading.Barrier(2, timeout=30)   # the first two photos wait for each other
    used = []

    def write(writer, item):
        i, p = item
        used.append(writer)
        if i < 2:
            both_busy.wait()
        try:
            return writer.write(p, f"Photo number {i}.")["metadata"]["status"]
        except MetadataError as e:
            return str(e)

    with MetadataWriters("embed", n=2) as writers:
        got = writers.map(write, enumerate(photos))
    assert len({id(w) for w in used}) == 2
    assert got[:5] + got[6:] == ["written"] * 7 and "read-only" in got[5]
    for i, p in enumerate(photos):
        assert exif(p, ALT).get(ALT) == (None if i == 5 else f"Photo number {i}.")


def test_write_metadata_from_a_results_file_writes_only_what_changed(tmp_path):
    """`captioner write-metadata RESULTS embed|sidecar`: no captioning; a rerun touches nothing; a
    changed record is written again; a person's text is kept."""
    photos = [photo(tmp_path / "lib", fmt) for fmt in ("jpg", "png")]
    human = photo(tmp_path / "lib2", "jpg")
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-dc:Description=My grandmother's garden",
                    str(human)], check=True)
    results = tmp_path / "results.jsonl"
    recs = [{"image": str(photos[0]), "caption": "a dog runs", "alt_text": "A dog runs.", "long_description": ""},
            {"image": str(photos[1]), "caption": "a chart", "alt_text": "Bar chart: Sales.",
             "long_description": "Bar chart: Sales.\nLabels: North, South."},
            {"image": str(human), "caption": "a man", "alt_text": "A man."},
            {"image": str(tmp_path / "gone.jpg"), "error": "gone.jpg: no such file"}]
    results.write_text("".join(json.dumps(r) + "\n" for r in recs))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "captioner", "write-metadata", str(results), *args],
                              capture_output=True, text=True, timeout=300)

    r = run("embed")
    assert r.returncode == 0, r.stderr
    assert "3 photos: 2 written, 1 kept existing description" in r.stderr
    assert exif(photos[0], ALT)[ALT] == "A dog runs."
    got = exif(photos[1], ALT, "XMP-iptcCore:ExtDescrAccessibility")
    assert got[ALT] == "Bar chart: Sales." and got["XMP-iptcCore:ExtDescrAccessibility"] == "Bar chart: Sales. / Labels: North, South."
    assert exif(human, DESC)[DESC] == "My grandmother's garden"
    before = [p.stat().st_mtime_ns for p in photos]
    r = run("embed")                       # nothing changed: nothing rewritten
    assert r.returncode == 0 and "2 unchanged, 1 kept existing description" in r.stderr, r.stderr
    assert [p.stat().st_mtime_ns for p in photos] == before
    recs[0]["alt_text"] = "A brown dog runs."   # a changed record: only that photo is written
    results.write_text("".join(json.dumps(r) + "\n" for r in recs))
    r = run("embed")
    assert "1 written, 1 unchanged" in r.stderr and exif(photos[0], ALT)[ALT] == "A brown dog runs."
    assert photos[1].stat().st_mtime_ns == before[1]
    r = run("sidecar")
    assert r.returncode == 0 and exif(photos[1].with_suffix(".xmp"), ALT)[ALT] == "Bar chart: Sales."
    results.unlink()
    r = run("embed")
    assert r.returncode == 2 and "no such results file" in r.stderr and "Traceback" not in r.stderr


def test_write_metadata_takes_the_reviewers_decisions_and_signs_them(tmp_path):
    """A person's decision (review database beside the results) is written as the final text, signed
    with the reviewer's name; --reviewed-only writes only decided photos; decorative is left alone; a
    rerun touches nothing."""
    from captioner.library.decisions import ReviewStore

    photos = [photo(tmp_path / f"lib{i}", "jpg") for i in range(4)]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps({"image": str(p), "caption": f"a dog {i}", "alt_text": f"A dog {i}."}) + "\n"
                               for i, p in enumerate(photos)))
    with ReviewStore(results) as s:
        s.index()
        s.decide(str(photos[0]), "edit", "My dog Rex on the beach.", reviewer="Ana Lima")
        s.decide(str(photos[1]), "accept", reviewer="Ben")
        s.decide(str(photos[2]), "decorative", reviewer="Ben")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "captioner", "write-metadata", str(results), *args],
                              capture_output=True, text=True, timeout=300)

    r = run("embed", "--reviewed-only")
    assert r.returncode == 0 and "3 photos: 2 written, 1 decorative, not written" in r.stderr, r.stderr
    w = "XMP-photoshop:CaptionWriter"
    got = exif(photos[0], ALT, w)
    assert got[ALT] == "My dog Rex on the beach." and got[w] == "Ana Lima"
    assert exif(photos[1], ALT, w) == {**exif(photos[1], ALT, w), ALT: "A dog 1.", w: "Ben"}
    assert ALT not in exif(photos[2], ALT) and ALT not in exif(photos[3], ALT)
    before = [p.stat().st_mtime_ns for p in photos]
    r = run("embed", "--reviewed-only")
    assert "2 unchanged, 1 decorative, not written" in r.stderr, r.stderr
    assert [p.stat().st_mtime_ns for p in photos] == before
    r = run("embed")                                   # all photos: the undecided one gets the machine's text
    assert "1 written, 2 unchanged, 1 decorative" in r.stderr, r.stderr
    assert exif(photos[3], ALT, w)[w] == "captioner"
