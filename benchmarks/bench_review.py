"""How the review of a big library scales, and how fast the page takes decisions (issue 23).

    python benchmarks/bench_review.py --photos 1000000 --out runs/bench_review.json
    python benchmarks/bench_review.py --photos 10000 --browser-decisions 200   # quicker

1. **Index**: a results file of ``--photos`` synthetic records (the fields a library run writes, with
   varied kinds, confidences and text) is indexed into the review database the first time, then again
   after a run appended 1 % more, then reopened with nothing new (what ``captioner review`` does on
   start).  Then the queries the page makes on each load: the first page in review order, the count and
   a page under each filter, a text search, the summary counts.
2. **Decisions by keyboard** (``--browser-decisions``, needs Chromium and Playwright): the real server on
   a 300-photo library of real images, driven by key presses in headless Chromium, a pattern of accept
   (A), decorative (D), skip (S) and edit (E, a typed text, Ctrl+Enter), each waiting until the page
   has moved to the next photo; -> decisions per minute.  This is the page's own speed (the time a person
   reads is not in it), so it is the ceiling a reviewer works under, not a person's pace.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from captioner.library.decisions import ReviewStore  # noqa: E402

WORDS = ("dog cat man woman child beach grass water ball street bike red blue black white running jumping "
         "sitting snow mountain car boat tree field park shirt group crowd people table food sign").split()


def record(i: int, rng: random.Random) -> dict:
    kind = rng.choices(["photo", "screenshot", "document", "chart", "drawing"], [80, 8, 5, 4, 3])[0]
    cap = "a " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 10)))
    if rng.random() < 0.01:
        return {"image": f"photos/{i // 1000:04d}/img_{i:07d}.jpg", "error": "cannot identify image file"}
    text = None if kind == "photo" else {"text": " ".join(rng.choice(WORDS) for _ in range(30)), "lines": []}
    return {"image": f"photos/{i // 1000:04d}/img_{i:07d}.jpg", "caption": cap, "score": -0.8,
            "alt_text": cap.capitalize() + ".", "in_domain": rng.random() > 0.05,
            "confidence": round(rng.random(), 4), "tags": [{"name": rng.choice(WORDS), "prob": 0.5}],
            "guided": None, "domain_distance": 0.3, "kind": kind, "kind_probability": 0.9, "chart_type": None,
            "text": text, "long_description": None}


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t0, 4)


def bench_index(n: int, folder: Path) -> dict:
    rng = random.Random(0)
    results = folder / "captions.jsonl"
    t0 = time.perf_counter()
    with open(results, "w") as f:
        for i in range(n):
            f.write(json.dumps(record(i, rng)) + "\n")
    out = {"photos": n, "results_mb": round(results.stat().st_size / 2**20, 1),
           "write_results_s": round(time.perf_counter() - t0, 1)}
    with ReviewStore(results) as s:
        added, out["first_index_s"] = timed(s.index)
        assert added == n
    with open(results, "a") as f:                              # a run appends 1 % more
        for i in range(n, n + n // 100):
            f.write(json.dumps(record(i, rng)) + "\n")
    with ReviewStore(results) as s:
        added, out["index_after_1pct_appended_s"] = timed(s.index)
        assert added == n // 100
    t0 = time.perf_counter()
    with ReviewStore(results) as s:                            # a restart: open, nothing new
        s.index()
        out["reopen_s"] = round(time.perf_counter() - t0, 4)
        first = s.page(0, 100)[0]["record"]["image"]
        for k in range(50):
            s.decide(first if k == 0 else s.page(k, 1)[0]["record"]["image"], "accept", reviewer="bench")
        q = {}
        q["first_page"] = timed(lambda: s.page(0, 100))[1]
        q["deep_page_offset_500k"] = timed(lambda: s.page(min(500_000, n - 1), 100))[1]
        q["counts"] = timed(s.counts)[1]
        q["kinds"] = timed(s.kinds)[1]
        for status in ("failed", "out of domain", "reviewed", "unreviewed"):
            q[f"count+page {status}"] = timed(lambda: (s.count(status=status), s.page(0, 100, status=status)))[1]
        q["count+page kind=chart"] = timed(lambda: (s.count(kind="chart"), s.page(0, 100, kind="chart")))[1]
        q["count+page search 'snow mountain'"] = timed(lambda: (s.count(query="snow mountain"),
                                                                s.page(0, 100, query="snow mountain")))[1]
        out["queries_s"] = q
    out["database_mb"] = round(sum(p.stat().st_size for p in folder.glob("captions.jsonl.review.sqlite*")) / 2**20, 1)
    return out


def bench_keyboard(decisions: int, folder: Path) -> dict:
    from playwright.sync_api import expect, sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    photos = folder / "photos"
    photos.mkdir()
    examples = sorted((ROOT / "src" / "captioner" / "examples").glob("*.jpg"))
    rng = random.Random(1)
    recs = []
    for i in range(decisions + 20):
        name = f"photo_{i:04d}.jpg"
        shutil.copy(examples[i % len(examples)], photos / name)
        recs.append({**record(i, rng), "image": f"photos/{name}", "kind": "photo"})
        recs[-1].pop("error", None)
        recs[-1].setdefault("alt_text", "A photo.")
    (folder / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    import socket

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "captioner", "review", "r.jsonl", "--port", str(port),
                             "--reviewer", "bench"], cwd=folder, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/summary", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            pos = page.locator("#position")
            expect(pos).to_contain_text("1 of ")
            pattern = "AAAAADAAES"   # mostly accept, some decorative, an edit, a skip
            t0 = time.perf_counter()
            for k in range(decisions):
                key = pattern[k % len(pattern)]
                if key == "E":
                    page.keyboard.press("e")
                    page.locator("#edit-text").fill(f"A person's own description number {k}.")
                    page.keyboard.press("Control+Enter")
                else:
                    page.keyboard.press(key.lower())
                expect(pos).to_contain_text(f"{k + 2:,} of ")
            seconds = time.perf_counter() - t0
            browser.close()
    finally:
        proc.terminate()
        proc.wait(10)
    with ReviewStore(folder / "r.jsonl") as s:
        saved = len(s.db.execute("SELECT id FROM decisions").fetchall())
    return {"decisions": decisions, "saved": saved, "seconds": round(seconds, 2),
            "decisions_per_minute": round(60 * decisions / seconds), "ms_per_decision": round(1000 * seconds / decisions, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=1_000_000, help="records in the synthetic results file")
    ap.add_argument("--browser-decisions", type=int, default=200, help="decisions by keyboard in Chromium (0: skip)")
    ap.add_argument("--out", default=None, help="write the figures to this JSON file")
    ap.add_argument("--keep", default=None, help="work in this folder (kept) instead of a temporary one")
    args = ap.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_review_"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        out = {"cpu_count": os.cpu_count()}
        if args.photos:
            (folder / "index").mkdir(exist_ok=True)
            out["index"] = bench_index(args.photos, folder / "index")
            print(json.dumps(out["index"], indent=1), flush=True)
        if args.browser_decisions:
            (folder / "keys").mkdir(exist_ok=True)
            out["keyboard"] = bench_keyboard(args.browser_decisions, folder / "keys")
            print(json.dumps(out["keyboard"], indent=1), flush=True)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(out, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
