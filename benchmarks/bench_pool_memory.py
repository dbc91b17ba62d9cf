"""Memory of a run on every core: does it stay bounded as the photo list grows?

    python benchmarks/bench_pool_memory.py --photos 1000 8091 --json runs/bench_pool_memory.json   # ~10 min, 2 cores
    python benchmarks/bench_pool_memory.py --photos 200 1000 --json /tmp/quick.json                 # a quick look
    python benchmarks/bench_pool_memory.py --folder src/captioner/examples --photos 8 --passes 40 --json runs/text.json
    python benchmarks/bench_pool_memory.py --backend torch --photos 300 1000 --json runs/bench_pool_memory_torch.json

Each run is a fresh ``captioner caption --from-list L --output F.jsonl`` (a library run, the way a
photo library is captioned) on every core this script may use, on the first N Flickr8k photos in the
order of ``Images/`` (every split: the photos are only captioned here, never trained on; ``--passes K``
takes them K times, through links, for a longer run), then the
same with ``--processes 1`` (one process, the path before the pool) on the smallest N.  Every 0.25 s
the script walks the run's process tree (the CLI and its worker processes) through ``/proc`` and
sums each process's proportional set size (PSS: shared pages counted once across the processes,
which RSS would count in every worker) and resident set size.  It reports, per run, the peak of
each sum, the peak of the parent alone and the number of processes; images/s as a by-product.

The pool keeps at most two batches per worker in flight and writes each record as it comes, so the
peak should not grow with N; a growing peak is a leak or an unbounded queue.  Linux only.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cores import DATA, ROOT, baseline_tree, env_for, report  # noqa: E402

sys.path.insert(0, str(ROOT / "src"))
from captioner.images import IMAGE_SUFFIXES  # noqa: E402


def children() -> dict[int, list[int]]:
    """Every process's children, from /proc/*/stat (the parent pid is the 4th field after the name)."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:   # ended while we looked
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(root: int) -> list[int]:
    tree, out, todo = children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(tree.get(pid, []))
    return out


def kb(pid: int, field: str) -> int:
    """One ``field`` (``Pss:``, ``Rss:``) of /proc/PID/smaps_rollup in kB; 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class Sampler(threading.Thread):
    """The peaks of a process tree's summed PSS and RSS, and of its root's PSS, sampled every ``every`` s."""

    def __init__(self, root: int, every: float = 0.25):
        super().__init__(daemon=True)
        self.root, self.every, self.stop = root, every, threading.Event()
        self.pss = self.rss = self.parent = self.procs = self.samples = 0
        self.timeline: list[tuple[float, int]] = []   # (seconds, summed PSS MB) every ~5 s: growth or plateau
        self.t0 = time.perf_counter()

    def run(self):
        while not self.stop.is_set():
            pids = descendants(self.root)
            pss = [kb(p, "Pss:") for p in pids]
            self.pss = max(self.pss, sum(pss))
            self.rss = max(self.rss, sum(kb(p, "Rss:") for p in pids))
            self.parent = max(self.parent, pss[0])
            self.procs = max(self.procs, len(pids))
            self.samples += 1
            if self.samples % 20 == 1:
                self.timeline.append((round(time.perf_counter() - self.t0, 1), round(sum(pss) / 1024)))
            self.stop.wait(self.every)


def sampled(cmd: list[str], env: dict) -> tuple[int, str, float, Sampler]:
    """Run ``cmd`` while its process tree's memory is sampled -> (exit status, stderr, seconds, the sampler
    with the peaks)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    sampler = Sampler(proc.pid)
    sampler.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t
    sampler.stop.set()
    sampler.join()
    return proc.returncode, err, wall, sampler


def run(src: Path, photos: list[str], work: Path, extra: list[str]) -> dict:
    """One library run of the code in ``src`` on ``photos`` -> its peaks, rate and records."""
    listing, out = work / "list.txt", work / "out.jsonl"
    listing.write_text("\n".join(photos) + "\n")
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "captioner", "caption", "--from-list", str(listing), "--output", str(out), *extra]
    returncode, err, wall, sampler = sampled(cmd, env_for(src))
    if returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    records = sorted((json.loads(line) for line in out.open()), key=lambda r: r["image"])
    return {"records_digest": hashlib.sha256(json.dumps(records).encode()).hexdigest(),
            "photos": len(photos), "records": len(records), "options": " ".join(extra) or "(defaults)",
            "seconds": round(wall, 1), "images_per_s": round(len(photos) / wall, 1),
            "peak_pss_mb_all_processes": round(sampler.pss / 1024),
            "peak_rss_mb_all_processes": round(sampler.rss / 1024),
            "peak_pss_mb_parent": round(sampler.parent / 1024), "processes": sampler.procs, "samples": sampler.samples,
            "pss_mb_timeline": sampler.timeline}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, nargs="+", default=[1000, 8091],
                    help="photo counts to run, smallest first (Flickr8k has 8,091)")
    ap.add_argument("--data", type=Path, default=DATA, help="the Flickr8k folder (with Images/)")
    ap.add_argument("--folder", type=Path, default=None,
                    help="caption the images of this folder instead of Flickr8k's (e.g. src/captioner/examples: "
                         "screenshots, a page and a chart, whose text is read)")
    ap.add_argument("--passes", type=int, default=1,
                    help="caption the photos this many times in each run, each pass through its own link to "
                         "the folder (distinct paths, so a library run keeps every record): a longer run")
    ap.add_argument("--backend", default=None, choices=["onnx", "torch"],
                    help="caption with this back-end (default: the CLI's own, ONNX Runtime)")
    ap.add_argument("--model", action="append", default=None,
                    help="caption with this model file; repeat for an ensemble (default: the shipped model)")
    ap.add_argument("--baseline", default=None,
                    help="also run this commit's code (git archive), each run right after this tree's")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    folder = (args.folder or args.data / "Images").resolve()
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    counts = sorted(args.photos)
    if counts[-1] > len(names):
        raise SystemExit(f"--photos {counts[-1]}: {folder} holds {len(names)} images")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_pool_memory_") as tmp:
        folders = [folder]
        for k in range(1, args.passes):
            folders.append(Path(tmp) / f"pass{k}")
            folders[-1].symlink_to(folders[0], target_is_directory=True)
        # each count's photos, then the same photos again through each link
        photos = {n: [str(f / name) for f in folders for name in names[:n]] for n in counts}
        trees = {"after": ROOT / "src"}
        if args.baseline:
            trees["before"] = baseline_tree(args.baseline, Path(tmp) / "base")
        backend = (["--backend", args.backend] if args.backend else []) + [
            a for m in args.model or [] for a in ("--model", str(Path(m).resolve()))]
        for n, extra in [(n, []) for n in counts] + [(counts[0], ["--processes", "1"])]:
            for code, src in trees.items():
                results.append({"code": code, **run(src, photos[n], Path(tmp), backend + extra)})
                print({k: v for k, v in results[-1].items() if k != "pss_mb_timeline"}, file=sys.stderr, flush=True)
    out = {"cores": len(os.sched_getaffinity(0)), "baseline": args.baseline, "passes": args.passes, "runs": results}
    for code in trees:
        pooled = [r for r in results if r["code"] == code and "--processes" not in r["options"]]
        out[f"{code}: peak PSS growth, smallest to largest run (MB)"] = (pooled[-1]["peak_pss_mb_all_processes"]
                                                                        - pooled[0]["peak_pss_mb_all_processes"])
    if args.baseline:   # the same records from both trees, run by run
        pairs = zip(results[0::2], results[1::2])
        out["records identical to the baseline's, every run"] = all(a["records_digest"] == b["records_digest"]
                                                                     for a, b in pairs)
    report(out, args.json)


if __name__ == "__main__":
    main()
