"""The HTTP API on every core: photos/s through ``captioner serve``, before and after, in one run.

    python benchmarks/bench_serve_cores.py --baseline 3522a2b --requests 444 --concurrency 8 --json runs/bench_serve_cores.json

Each server is a fresh ``captioner serve`` on loopback, pinned with ``taskset`` to the cores under test, its
``captioner`` taken from ``--baseline`` (a git revision, its ``src/`` unpacked by ``git archive``) or from this
checkout; ``--concurrency`` client threads in this process (not pinned) post ``--requests`` full-size Flickr8k
originals (``../shared/flickr8k/originals``, real uploads as users send them) and the rate is taken from the
first request to the last answer, after one warm-up request; the server's memory is sampled all the while
(peak PSS of the server and its worker processes, and of the server's own process:
``bench_pool_memory.Sampler``). Runs: before and after on all the cores this process may use, and on one
core; after with ``--processes 1`` (one process, as before) on all cores. Every answer must be a 200, and
the captions of the same photo the same in every run.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_cores import DATA, baseline_tree, env_for, report
from bench_pool_memory import Sampler
from load_test import post_json


def serve(src: Path, cpus: list[int], processes: int | None):
    """A server pinned to ``cpus`` -> (process, base URL) once /health answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = ["taskset", "-c", ",".join(map(str, cpus)), sys.executable, "-m", "captioner", "serve",
           "--port", str(port), *(["--processes", str(processes)] if processes else [])]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env_for(src), cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(480):
        if server.poll() is not None:
            raise SystemExit(f"{' '.join(cmd)} exited:\n{server.stderr.read().decode()[-3000:]}")
        try:
            urllib.request.urlopen(base + "/health", timeout=1)
            return server, base
        except OSError:
            time.sleep(0.25)
    server.kill()
    raise SystemExit(f"{' '.join(cmd)}: no answer on /health in 2 minutes")


def run(src: Path, cpus: list[int], processes: int | None, photos: list[Path], requests: int,
        concurrency: int) -> dict:
    server, base = serve(src, cpus, processes)
    sampler = Sampler(server.pid)
    sampler.start()
    try:
        jobs = [photos[i % len(photos)] for i in range(requests)]
        code, _ = post_json(base + "/caption", "image", jobs[0].name, jobs[0].read_bytes())   # warm-up
        if code != 200:
            raise SystemExit(f"warm-up answered {code}")
        # the workers may still be loading their models: a second round of warm-ups, one per client
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(lambda p: post_json(base + "/caption", "image", p.name, p.read_bytes()),
                          jobs[:concurrency]))
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            answers = list(pool.map(lambda p: post_json(base + "/caption", "image", p.name, p.read_bytes()), jobs))
        wall = time.perf_counter() - t0
    finally:
        sampler.stop.set()
        sampler.join()
        server.terminate()
        server.wait(30)
    bad = [c for c, _ in answers if c != 200]
    if bad:
        raise SystemExit(f"{len(bad)} answers were not 200: {sorted(set(map(str, bad)))}")
    captions = {}
    for p, (_, body) in zip(jobs, answers):
        captions.setdefault(p.name, set()).add(body["alt_text"])
    return {"photos_per_s": round(requests / wall, 2), "seconds": round(wall, 2),
            "peak_pss_mb_all_processes": round(sampler.pss / 1024),
            "peak_pss_mb_server_process": round(sampler.parent / 1024),
            "captions": {k: sorted(v) for k, v in captions.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="3522a2b", help="git revision to compare against (default 3522a2b)")
    ap.add_argument("--requests", type=int, default=300, help="uploads per run (default 300)")
    ap.add_argument("--concurrency", type=int, default=8, help="client threads posting at once (default 8)")
    ap.add_argument("--photos", type=Path, default=DATA / "originals", help="folder of JPEG photos to upload")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = ap.parse_args()
    photos = sorted(args.photos.glob("*.jpg"))
    if not photos:
        raise SystemExit(f"--photos {args.photos}: no .jpg files there")
    cpus = sorted(os.sched_getaffinity(0))
    n = len(cpus)
    out = {"cores": n, "requests": args.requests, "concurrency": args.concurrency, "photos": len(photos),
           "baseline": args.baseline}
    with tempfile.TemporaryDirectory() as tmp:
        before = baseline_tree(args.baseline, Path(tmp) / "base")
        runs = {f"before, {n} cores": (before, cpus, None), "before, 1 core": (before, cpus[:1], None),
                f"after, {n} cores": (ROOT / "src", cpus, None), "after, 1 core": (ROOT / "src", cpus[:1], None),
                f"after, {n} cores, --processes 1": (ROOT / "src", cpus, 1)}
        got = {}
        for name, (src, use, processes) in runs.items():
            print(f"[bench_serve_cores] {name}", file=sys.stderr, flush=True)
            got[name] = run(src, use, processes, photos, args.requests, args.concurrency)
    out["photos_per_s"] = {k: v["photos_per_s"] for k, v in got.items()}
    out["peak_pss_mb"] = {k: {"all processes": v["peak_pss_mb_all_processes"],
                              "the server's own process": v["peak_pss_mb_server_process"]} for k, v in got.items()}
    rate = out["photos_per_s"]
    out["ratios"] = {"after, N cores / after, 1 core": round(rate[f"after, {n} cores"] / rate["after, 1 core"], 3),
                     "after / before, N cores": round(rate[f"after, {n} cores"] / rate[f"before, {n} cores"], 3),
                     "before, N cores / before, 1 core": round(rate[f"before, {n} cores"] / rate["before, 1 core"], 3)}
    reference = got[f"before, {n} cores"]["captions"]
    out["same_captions"] = {k: all(v["captions"][p] == reference[p] for p in reference) for k, v in got.items()}
    report(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
