"""The review decisions store (library/decisions.py): incremental index, audit trail, order and
search as queries, concurrent writers and kill -9 lose nothing acknowledged."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from captioner.library.decisions import ReviewStore


def rec(image, conf=0.5, in_domain=True, kind="photo", alt=None, **kw):
    r = {"image": image, "caption": f"caption of {image}", "alt_text": alt or f"Alt of {image}.", "confidence": conf,
         "in_domain": in_domain, "kind": kind, **kw}
    return r


def write(path, recs, mode="w", tail=""):
    with open(path, mode) as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
        f.write(tail)


def test_index_is_incremental_and_whole_lines_only(tmp_path):
    res = tmp_path / "captions.jsonl"
    write(res, [rec("a.jpg"), rec("b.jpg")])
    with ReviewStore(res) as s:
        assert s.index() == 2 and s.index() == 0
        partial = json.dumps(rec("d.jpg"))
        write(res, [rec("c.jpg")], "a", tail=partial[:20])          # a run still appending
        assert s.index() == 1
        with open(res, "a") as f:
            f.write(partial[20:] + "\n")
        assert s.index() == 1 and s.counts() == {"photos": 4, "reviewed": 0}
    assert res.read_text().count("\n") == 4                        # the results file is never rewritten


def test_decisions_are_an_audit_trail_and_the_latest_wins(tmp_path):
    res = tmp_path / "captions.jsonl"
    write(res, [rec("a.jpg"), rec("b.jpg")])
    with ReviewStore(res) as s:
        s.index()
        s.decide("a.jpg", "accept", reviewer="ana")
        s.decide("a.jpg", "edit", "  A red   kite. ", reviewer="ben")
        s.decide("a.jpg", "skip", reviewer="ana")                   # looked at again, decided nothing
        s.decide("b.jpg", "decorative", "ignored", reviewer="ana")
        assert s.final("a.jpg")["action"] == "edit" and s.final("a.jpg")["text"] == "A red kite."
        assert s.final("a.jpg")["reviewer"] == "ben"
        assert [d["action"] for d in s.history("a.jpg")] == ["accept", "edit", "skip"]
        assert s.final("b.jpg")["text"] == ""
        assert set(s.finals()) == {"a.jpg", "b.jpg"} and s.counts()["reviewed"] == 2
        for bad, msg in ((("a.jpg", "approve"), "action 'approve'"), (("a.jpg", "edit", " "), "needs a text"),
                         (("zzz.jpg", "accept"), "not a photo of")):
            with pytest.raises(ValueError, match=msg):
                s.decide(*bad, reviewer="ana")
        with pytest.raises(ValueError, match="reviewer"):
            s.decide("a.jpg", "accept", reviewer=" ")


def test_order_filters_and_search_are_queries(tmp_path):
    res = tmp_path / "captions.jsonl"
    write(res, [rec("sure.jpg", 0.9), rec("unsure.jpg", 0.2), rec("far.jpg", 0.7, in_domain=False),
                {"image": "broken.jpg", "error": "broken.jpg: corrupt"},
                rec("shot.png", 0.1, kind="screenshot", alt='Screenshot: <b>Renew</b> "loans"')])
    with ReviewStore(res) as s:
        s.index()
        assert [p["record"]["image"] for p in s.page()] == ["broken.jpg", "far.jpg", "shot.png", "unsure.jpg", "sure.jpg"]
        assert [p["record"]["image"] for p in s.page(kind="screenshot")] == ["shot.png"]
        assert [p["record"]["image"] for p in s.page(status="failed")] == ["broken.jpg"]
        assert [p["record"]["image"] for p in s.page(query='renew "loans')] == ["shot.png"]   # words, not FTS syntax
        s.decide("sure.jpg", "accept", reviewer="ana")
        assert [p["record"]["image"] for p in s.page(status="reviewed")] == ["sure.jpg"]
        assert len(s.page(status="unreviewed")) == 4 and s.page(offset=4, limit=1)[0]["decision"]["action"] == "accept"


WRITER = textwrap.dedent("""
    import sys
    from captioner.library.decisions import ReviewStore
    s = ReviewStore(sys.argv[1])
    for i in range(int(sys.argv[3])):
        n = s.decide(f"p{i % 20}.jpg", "edit", f"{sys.argv[2]} text {i}", reviewer=sys.argv[2])
        print(n, flush=True)                     # acknowledged: committed before this line
""")


def test_two_writers_at_once_lose_nothing(tmp_path):
    res = tmp_path / "captions.jsonl"
    write(res, [rec(f"p{i}.jpg") for i in range(20)])
    ReviewStore(res).index()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(res), who, "150"], stdout=subprocess.PIPE, text=True)
             for who in ("ana", "ben")]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    with ReviewStore(res) as s:
        got = s.db.execute("SELECT reviewer, COUNT(*) FROM decisions GROUP BY reviewer").fetchall()
        assert dict(got) == {"ana": 150, "ben": 150} and sum(len(o) for o in outs) == 300


def test_kill_9_loses_no_acknowledged_decision(tmp_path):
    res = tmp_path / "captions.jsonl"
    write(res, [rec(f"p{i}.jpg") for i in range(20)])
    ReviewStore(res).index()
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(res), "ana", "100000"], stdout=subprocess.PIPE, text=True)
    acked = [int(p.stdout.readline()) for _ in range(200)]
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    with ReviewStore(res) as s:
        ids = {r[0] for r in s.db.execute("SELECT id FROM decisions")}
    assert set(acked) <= ids


def test_export_final_reviewed_training_csv_and_decisions(tmp_path):
    from captioner.cli import main
    from captioner.training.data import load_dataset

    photos = tmp_path / "photos"
    photos.mkdir()
    from PIL import Image

    for n in ("a", "b", "c", "d"):
        Image.new("RGB", (8, 8), "red").save(photos / f"{n}.jpg")
    res = tmp_path / "captions.jsonl"
    write(res, [rec(str(photos / f"{n}.jpg")) for n in "abcd"] + [{"image": str(photos / "e.jpg"), "error": "x"}])
    with ReviewStore(res) as s:
        s.index()
        s.decide(str(photos / "a.jpg"), "accept", reviewer="ana")
        s.decide(str(photos / "b.jpg"), "edit", "A red square on a wall.", reviewer="ana")
        s.decide(str(photos / "c.jpg"), "decorative", reviewer="ben")
    assert main(["export", str(res), "--out", str(tmp_path / "final.jsonl")]) == 0
    final = {r["image"].rsplit("/", 1)[-1]: r for r in map(json.loads, (tmp_path / "final.jsonl").read_text().splitlines())}
    assert set(final) == {"a.jpg", "b.jpg", "c.jpg", "d.jpg"}                      # failures have no text
    assert final["b.jpg"]["alt_text"] == "A red square on a wall." and final["b.jpg"]["reviewer"] == "ana"
    assert final["c.jpg"]["alt_text"] == "" and final["d.jpg"]["source"] == "machine"
    assert main(["export", str(res), "--reviewed", "--out", str(photos / "train.csv")]) == 0
    assert (photos / "train.csv").read_text().splitlines() == ["image,caption", "a.jpg,caption of " + str(photos / "a.jpg"),
                                                              "b.jpg,A red square on a wall."]
    ds = load_dataset(str(photos / "train.csv"))                                   # captioner train --data reads it
    assert sorted(ds.captions) == ["a.jpg", "b.jpg"]
    assert main(["export", str(res), "--decisions", "--out", str(tmp_path / "d.jsonl")]) == 0
    assert [json.loads(x)["action"] for x in (tmp_path / "d.jsonl").read_text().splitlines()] == ["accept", "edit", "decorative"]
    assert main(["export", str(res), "--reviewed", "--out", str(tmp_path / "elsewhere" / "t.csv")]) == 2   # not above the photos


def test_a_database_of_the_first_layout_keeps_its_decisions(tmp_path):
    """Session 10's layout (text index keyed by path) is rebuilt on open; the decisions stay."""
    import sqlite3

    res = tmp_path / "captions.jsonl"
    write(res, [rec("a.jpg", 0.9), rec("b.jpg", 0.2)])
    db = sqlite3.connect(str(res) + ".review.sqlite")
    db.executescript("""
        CREATE TABLE photos (image TEXT PRIMARY KEY, rec TEXT NOT NULL, failed INTEGER NOT NULL, in_domain INTEGER,
            confidence REAL, kind TEXT, alt_text TEXT, rank_group INTEGER NOT NULL, rank_conf REAL NOT NULL);
        CREATE VIRTUAL TABLE photos_text USING fts5 (image, alt_text, caption, text);
        CREATE TABLE decisions (id INTEGER PRIMARY KEY AUTOINCREMENT, image TEXT NOT NULL REFERENCES photos (image),
            action TEXT NOT NULL, text TEXT, reviewer TEXT NOT NULL, at REAL NOT NULL);
        CREATE TABLE indexed (source TEXT PRIMARY KEY, position INTEGER NOT NULL);
        INSERT INTO photos VALUES ('a.jpg', '{"image": "a.jpg"}', 0, 1, 0.9, 'photo', 'A dog.', 2, 0.9);
        INSERT INTO decisions (image, action, text, reviewer, at) VALUES ('a.jpg', 'edit', 'A wet dog.', 'ana', 1.0);
        INSERT INTO indexed VALUES ('x', 99999);""")
    db.commit()
    db.close()
    with ReviewStore(res) as s:
        assert s.index() == 2                                  # the derived index is rebuilt from the file
        assert s.final("a.jpg")["text"] == "A wet dog." and s.counts() == {"photos": 2, "reviewed": 1}
        assert [p["record"]["image"] for p in s.page(query="caption of")] == ["b.jpg", "a.jpg"]


def test_a_retried_photo_keeps_its_row_and_its_new_text_is_searched(tmp_path):
    res = tmp_path / "captions.jsonl"
    write(res, [rec("a.jpg", 0.9), {"image": "b.jpg", "error": "b.jpg: corrupt"}])
    with ReviewStore(res) as s:
        assert s.index() == 2 and s.page(status="failed")[0]["record"]["image"] == "b.jpg"
        write(res, [rec("b.jpg", 0.4, alt="A zebra crossing.")], mode="a")       # --retry-errors captioned it
        assert s.index() == 1 and s.counts()["photos"] == 2 and not s.page(status="failed")
        assert [p["record"]["image"] for p in s.page(query="zebra")] == ["b.jpg"]
        assert not s.page(query="corrupt") and s.page()[0]["record"]["alt_text"] == "A zebra crossing."
