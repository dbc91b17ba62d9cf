"""Library runs on this machine: the local engine against Ray Data, and the per-photo costs a
scaled-out run is made of.

    python benchmarks/bench_library.py --n 1000 --out runs/library_bench      # about 10 minutes on 2 cores

1. Engines: ``captioner caption DIR --output F`` as a user runs it (a fresh process each, model
   loading and, for Ray, ``ray.init`` and the actors' start included), on ``--n`` photos and on
   ``--n-small`` photos; the difference gives the steady rate, the intercept the fixed start-up.
2. Per-photo costs on one core: reading + decoding + resizing a photo (what each worker's CPU does
   in front of the model), writing a record to the results file (the driver's share), writing
   metadata with ExifTool (embedded and sidecar; on copies).
Everything goes to ``OUT/report.json``; the README's table comes from it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_run(args: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "captioner", "caption", *args], capture_output=True, text=True, cwd=cwd)
    wall = time.perf_counter() - t
    if r.returncode not in (0, 1):
        raise SystemExit(r.stderr[-3000:])
    print(f"  {' '.join(args)}: {wall:.1f} s   ({r.stderr.strip().splitlines()[-1]})", flush=True)
    return wall


def engines(photos: list[Path], n_small: int, reps: int, work: Path) -> dict:
    out = {}
    for n in (n_small, len(photos)):
        d = work / f"photos{n}"
        if not d.exists():
            d.mkdir(parents=True)
            for p in photos[:n]:
                os.symlink(p, d / p.name)
    for engine in ("local", "ray"):
        walls = {}
        for n in (n_small, len(photos)):
            walls[n] = []
            for rep in range(reps):
                res = work / f"{engine}{n}_{rep}.jsonl"
                res.unlink(missing_ok=True)
                walls[n].append(timed_run([f"photos{n}", "--output", res.name, "--engine", engine], work))
        big, small = min(walls[len(photos)]), min(walls[n_small])
        rate = (len(photos) - n_small) / (big - small)
        out[engine] = {"walls": {str(k): v for k, v in walls.items()}, "steady_photos_per_s": rate,
                       "startup_s": small - n_small / rate, "photos_per_s_whole_run": len(photos) / big}
        print(f"{engine}: steady {rate:.1f} photos/s, start-up {out[engine]['startup_s']:.1f} s", flush=True)
    return out


def per_photo_costs(photos: list[Path], work: Path) -> dict:
    import torch

    from captioner.api import _Files
    from captioner.training.checkpoint import load_model
    from captioner.library.metadata import MetadataWriter
    from captioner.library.results import open_results

    torch.set_num_threads(1)
    model, _, _ = load_model(None)
    files = _Files(photos, model.preprocess)
    t = time.perf_counter()
    for i in range(len(files)):
        files[i]
    decode_ms = 1000 * (time.perf_counter() - t) / len(files)
    runs = sorted(work.glob("local*_0.jsonl"))   # a real record, as large as the run's
    rec = json.loads(runs[-1].read_text().splitlines()[0])
    with open_results(work / "append_bench.jsonl") as store:
        t = time.perf_counter()
        for i in range(200):
            store.append([dict(rec, image=f"{i}_{j}.jpg") for j in range(16)])
        append_ms = 1000 * (time.perf_counter() - t) / (200 * 16)
    meta = {}
    for mode in ("embed", "sidecar"):
        d = work / f"meta_{mode}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        copies = [Path(shutil.copyfile(p, d / p.name)) for p in photos[:200]]   # writable copies
        with MetadataWriter(mode) as w:
            t = time.perf_counter()
            for p in copies:
                w.write(p, "A dog runs through the grass.")
            meta[mode] = 1000 * (time.perf_counter() - t) / len(copies)
    return {"decode_resize_ms_per_photo_1core": decode_ms, "results_append_ms_per_record": append_ms,
            "metadata_ms_per_photo": meta}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default=str(ROOT.parent / "shared" / "flickr8k" / "Images"),
                    help="folder of photos (the first --n, sorted by name, are used)")
    ap.add_argument("--originals", default=str(ROOT.parent / "shared" / "flickr8k" / "originals"),
                    help="full-size photos for the per-photo costs (decoding and metadata)")
    ap.add_argument("--n", type=int, default=1000, help="photos in the large run")
    ap.add_argument("--n-small", type=int, default=100, help="photos in the small run")
    ap.add_argument("--reps", type=int, default=2, help="runs of each size and engine (the fastest counts)")
    ap.add_argument("--out", default="runs/library_bench", help="folder for the runs and report.json")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    photos = sorted(Path(args.photos).glob("*.jpg"))[:args.n]
    originals = sorted(Path(args.originals).glob("*.jpg"))
    report = {"cpus": os.cpu_count(), "n": len(photos), "n_small": args.n_small}
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        report["engines"] = engines(photos, args.n_small, args.reps, Path(tmp))
        report["costs_224px"] = per_photo_costs(photos[:200], Path(tmp))
        report["costs_originals"] = per_photo_costs(originals, Path(tmp))
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
