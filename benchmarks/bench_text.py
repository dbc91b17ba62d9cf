"""Issue 21's measurements: kinds, text reading, alt text per kind, photos, cost, install size.

    python tools/kind_dataset.py --out runs/kinds                     # the labelled set (once)
    python benchmarks/bench_text.py --heldout runs/kinds --out runs/bench_text/heldout.json
    python benchmarks/bench_text.py --photos --out runs/bench_text/photos.json       # 1,000 test photos, read
    python benchmarks/bench_text.py --speed --out runs/bench_text/speed.json         # default path vs before
    python benchmarks/bench_text.py --install-size

``--heldout``: on the held-out split (sources unlike the training ones; tools/kind_dataset.py) the kind
confusion table, chart-type accuracy, word recall and precision of the text read against the words
drawn, the share of alt texts that hold every key word (a chart's or page's title, a screenshot's
heading) and the cost of reading per kind.  ``--photos``: on Flickr8k's 1,000 test photos, the share
classed photo, and - reading every photo (``read_text="always"``) - the share whose alt text gains text,
with every such text listed for judging by eye, and the cost of reading a photo.  ``--speed``: images/s of
captioning the test photos with the default path (``read_text="auto"``) against the code before issue 21
(``--before REV``, run from a git worktree) and against ``read_text="never"``, alternating, in one run;
the kind decision's own cost; peak memory.  ``--install-size``: the disk the text reader's packages add.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "flickr8k"


def norm_words(text: str) -> list[str]:
    return [w.lower() for w in re.findall(r"[A-Za-z0-9]+", text or "")]


def heldout(folder: Path) -> dict:
    from captioner.knowledge import kind as kinds
    from captioner.api import Captioner

    recs = [json.loads(l) for l in (folder / "manifest.jsonl").read_text().splitlines() if l.strip()]
    recs = [r for r in recs if r["split"] == "heldout"]
    cap = Captioner()
    confusion = {t: Counter() for t in kinds.KINDS}
    chart_ok = chart_n = 0
    per_kind = {k: {"tp": 0, "truth": 0, "read": 0, "key_ok": 0, "key_n": 0, "seconds": []} for k in kinds.KINDS}
    examples = []
    for r in recs:
        path = folder / r["path"]
        t0 = time.perf_counter()
        c = cap.caption(str(path))
        seconds = time.perf_counter() - t0
        confusion[r["kind"]][c.kind] += 1
        if r["kind"] == "chart" and c.kind == "chart":
            chart_n += 1
            chart_ok += c.chart_type == r["subtype"]
        k = per_kind[r["kind"]]
        if c.image_text is not None:
            k["seconds"].append(seconds)
        if r.get("words"):
            truth = Counter(norm_words(" ".join(r["words"])))
            read = Counter(norm_words(c.image_text.text if c.image_text else ""))
            if r["kind"] == "chart":   # the drawn words list no tick values: numbers are left out on both sides
                truth = Counter({w: n for w, n in truth.items() if not w.isdigit()})
                read = Counter({w: n for w, n in read.items() if not w.isdigit()})
            k["tp"] += sum((truth & read).values())
            k["truth"] += sum(truth.values())
            k["read"] += sum(read.values())
        if r.get("key"):
            k["key_n"] += 1
            alt = set(norm_words(c.alt_text))
            k["key_ok"] += all(w.lower() in alt for w in r["key"])
        if len(examples) < 400:
            examples.append({"path": r["path"], "source": r["source"], "truth": r["kind"], "kind": c.kind,
                             "chart_type": c.chart_type, "alt_text": c.alt_text,
                             "text": c.image_text.text if c.image_text else None})
    n = len(recs)
    out = {"images": n,
           "kind_accuracy": sum(confusion[t][t] for t in confusion) / n,
           "confusion": {t: dict(confusion[t]) for t in kinds.KINDS},
           "chart_type_accuracy": chart_ok / max(chart_n, 1), "charts_classed_chart": chart_n,
           "per_kind": {k: {"word_recall": v["tp"] / v["truth"] if v["truth"] else None,
                            "word_precision": v["tp"] / v["read"] if v["read"] else None,
                            "alt_text_holds_key_words": v["key_ok"] / v["key_n"] if v["key_n"] else None,
                            "images_with_key_words": v["key_n"],
                            "seconds_per_read_image": statistics.median(v["seconds"]) if v["seconds"] else None}
                        for k, v in per_kind.items()},
           "examples": examples}
    tp = sum(v["tp"] for v in per_kind.values())
    out["word_recall"] = tp / max(sum(v["truth"] for v in per_kind.values()), 1)
    out["word_precision"] = tp / max(sum(v["read"] for v in per_kind.values()), 1)
    kn = sum(v["key_n"] for v in per_kind.values())
    out["alt_text_holds_key_words"] = sum(v["key_ok"] for v in per_kind.values()) / max(kn, 1)
    print(f"held-out: {n} images, kind accuracy {out['kind_accuracy']:.3f}, chart type {out['chart_type_accuracy']:.3f}, "
          f"word recall {out['word_recall']:.3f}, precision {out['word_precision']:.3f}, "
          f"key words in alt text {out['alt_text_holds_key_words']:.3f}")
    print("| truth \\ got | " + " | ".join(kinds.KINDS) + " |")
    for t in kinds.KINDS:
        print(f"| {t} | " + " | ".join(str(confusion[t][g]) for g in kinds.KINDS) + " |")
    for k, v in out["per_kind"].items():
        print(k, {a: (round(b, 3) if isinstance(b, float) else b) for a, b in v.items()})
    return out


def test_photos() -> list[Path]:
    names = (SHARED / "Flickr8k_text" / "Flickr_8k.testImages.txt").read_text().split()
    return [SHARED / "Images" / n for n in names]


def photos(limit: int | None) -> dict:
    from captioner.api import Captioner

    paths = test_photos()[:limit]
    auto = Captioner()
    kinds = Counter()
    for _, c in auto.caption_paths(paths):
        kinds[c.kind] += 1
    always = Captioner(read_text="always")
    with_text, seconds = [], []
    t0 = time.perf_counter()
    for p, c in always.caption_paths(paths, batch_size=16):
        if c.image_text:
            with_text.append({"image": p.name, "text": c.image_text.text, "alt_text": c.alt_text,
                              "confidences": [round(l.confidence, 3) for l in c.image_text.lines]})
    seconds = time.perf_counter() - t0
    out = {"photos": len(paths), "kinds": dict(kinds), "share_photo": kinds["photo"] / len(paths),
           "read_every_photo": {"with_text_in_alt_text": len(with_text), "share": len(with_text) / len(paths),
                                "seconds_per_photo_with_reading": seconds / len(paths), "texts": with_text}}
    print(f"test photos: {len(paths)}, classed photo {out['share_photo']:.3f} ({dict(kinds)}); read always: "
          f"{len(with_text)} alt texts gain text ({out['read_every_photo']['share']:.3f}); "
          f"{seconds / len(paths):.3f} s per photo with reading")
    for t in with_text:
        print("  ", t["image"], repr(t["text"]), t["confidences"])
    return out


RUNNER = r"""
import sys, time, json, resource
sys.path.insert(0, sys.argv[1])
from captioner.api import Captioner
paths = [l for l in open(sys.argv[2]).read().split("\n") if l]
kw = json.loads(sys.argv[3])
cap = Captioner(**kw)
list(cap.caption_paths(paths[:32]))            # warm: ONNX session, caches
t0 = time.perf_counter()
n = sum(1 for _ in cap.caption_paths(paths, batch_size=16))
dt = time.perf_counter() - t0
print(json.dumps({"images": n, "seconds": dt, "images_per_s": n / dt,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def speed(before: str, limit: int, repeats: int) -> dict:
    import numpy as np

    paths = [str(p) for p in test_photos()[:limit]]
    tmp = Path(tempfile.mkdtemp(prefix="bench_text_"))
    (tmp / "paths.txt").write_text("\n".join(paths))
    (tmp / "run.py").write_text(RUNNER)
    old = tmp / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), before], check=True,
                   capture_output=True)
    try:
        arms = {"before issue 21 (" + before + ")": (str(old / "src"), {}),
                "default (read_text=auto)": (str(ROOT / "src"), {}),
                "read_text=never": (str(ROOT / "src"), {"read_text": "never"})}
        runs = {k: [] for k in arms}
        for _ in range(repeats):
            for name, (src, kw) in arms.items():
                r = subprocess.run([sys.executable, str(tmp / "run.py"), src, str(tmp / "paths.txt"), json.dumps(kw)],
                                   capture_output=True, text=True, check=True)
                runs[name].append(json.loads(r.stdout.strip().splitlines()[-1]))
                print(name, runs[name][-1], flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)
    summary = {k: {"images_per_s": statistics.median(r["images_per_s"] for r in v),
                   "peak_rss_mb": max(r["peak_rss_mb"] for r in v), "runs": v} for k, v in runs.items()}
    base = summary[next(iter(arms))]["images_per_s"]
    for k, v in summary.items():
        v["ratio_to_before"] = v["images_per_s"] / base
        print(f"| {k} | {v['images_per_s']:.1f} | {v['ratio_to_before']:.3f} | {v['peak_rss_mb']:.0f} MB |")
    # the kind decision alone, on a batch of 16 (colour statistics + the classifier)
    from captioner.knowledge import kind as kinds
    from captioner.api import Captioner

    cap = Captioner(read_text="never")
    x = np.random.default_rng(0).random((16, 3, 224, 224), dtype=np.float32)
    pooled = np.random.default_rng(1).standard_normal((16, 1280)).astype(np.float32)
    t0 = time.perf_counter()
    for _ in range(20):
        cap.kinds.decide(cap.kinds.probs(pooled, kinds.colour_features(x)))
    summary["kind_decision_ms_per_image"] = (time.perf_counter() - t0) / (20 * 16) * 1000
    print(f"kind decision: {summary['kind_decision_ms_per_image']:.3f} ms per image")
    return summary


def install_size() -> dict:
    """Disk taken by RapidOCR and the packages only it needs (from the installed files' records)."""
    from importlib import metadata

    only_ocr = ["rapidocr", "opencv-python-headless", "shapely", "pyclipper", "omegaconf", "antlr4-python3-runtime",
                "antlr4_python3_runtime", "colorlog"]
    sizes = {}
    for name in only_ocr:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        total = 0
        for f in dist.files or []:
            p = Path(dist.locate_file(f))
            if p.is_file():
                total += p.stat().st_size
        sizes[name] = round(total / 2**20, 1)
    sizes["total_mb"] = round(sum(sizes.values()), 1)
    print(json.dumps(sizes))
    return sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heldout", default=None, metavar="DIR", help="the folder tools/kind_dataset.py wrote")
    ap.add_argument("--photos", action="store_true", help="Flickr8k's test photos: kinds, and text when every photo is read")
    ap.add_argument("--limit", type=int, default=None, help="only the first N test photos")
    ap.add_argument("--speed", action="store_true", help="images/s against the code before issue 21, in one run")
    ap.add_argument("--before", default="6bb5c01", help="git revision of the code before issue 21")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs of each arm (--speed)")
    ap.add_argument("--install-size", action="store_true", help="disk the text reader's packages take")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    out = {}
    if args.heldout:
        out["heldout"] = heldout(Path(args.heldout))
    if args.photos:
        out["photos"] = photos(args.limit)
    if args.speed:
        out["speed"] = speed(args.before, args.limit or 1000, args.repeats)
    if args.install_size:
        out["install_size_mb"] = install_size()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
