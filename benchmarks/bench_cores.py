"""Throughput that grows with the cores: the CLI before and after, in one run, on this machine.

    python benchmarks/bench_cores.py --photos 1000 --json runs/bench_cores.json            # ~15 min on 2 cores
    python benchmarks/bench_cores.py --photos 1000 --repeats 3 --json runs/bench_cores.json   # on a noisy machine
    python benchmarks/bench_cores.py --photos 100 --profile-n 64 --json /tmp/quick.json    # a quick look

"Before" is the code of ``--baseline`` (default 3522a2b, the commit the speed work started from),
unpacked with ``git archive`` into a temporary folder and run with the same Python; "after" is this
worktree.  Each CLI run is a fresh process (start-up and model loading included), pinned with
``taskset`` to the first core, then to every core this script may use, on the first ``--photos``
photos of the Flickr8k test split:

1. ``captioner caption --from-list L --format jsonl``, before and after, on 1 core and on all;
   ``--output`` library runs, before and after, on all cores; a Python program's
   ``Captioner().caption_paths(paths)`` with its defaults, before and after, on all cores;
2. the ideal: N independent processes, each pinned to its own core with one thread
   (``--processes 1 --threads 1``), each captioning 1/N of the photos, all at once;
3. the records: after's, on all cores, against before's on one core (identical, bit for bit, is the aim);
4. a profile of one single-thread process (before and after) on ``--profile-n`` photos: CPU time
   inside ONNX Runtime's encoder and decoder runs against the whole; per-image cost outside the
   models; the knowledge's parts (colour statistics, ImageNet tags, domain distance) timed alone,
   old code against new, on the same arrays; the models-alone rate (encoder + search on
   preprocessed arrays) against captioning from files;
5. what the pool's parent costs per image, and a projection to 16 and 64 cores from these per-core
   costs (see ``project``).

Everything goes into one JSON file and a summary is printed.  The Flickr8k test photos are only
captioned here, never trained on.
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
# ../shared/flickr8k from the project's root (a worktree one level deeper: ../../shared/flickr8k)
DATA = next((d for d in (ROOT.parent / "shared" / "flickr8k", ROOT.parent.parent / "shared" / "flickr8k")
             if d.is_dir()), ROOT.parent / "shared" / "flickr8k")


def test_photos(data: Path, n: int) -> list[str]:
    names = (data / "Flickr8k_text" / "Flickr_8k.testImages.txt").read_text().split()
    return [str(data / "Images" / name) for name in names[:n]]


def baseline_tree(ref: str, into: Path) -> Path:
    """``ref``'s src/ unpacked into ``into`` (no worktree, nothing in the repository changes)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def report(out: dict, path: Path | str | None) -> None:
    """The summary as JSON on stdout, and in ``path`` where one is given."""
    text = json.dumps(out, indent=1)
    print(text)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")


def env_for(src: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env["PYTHONPATH"] = str(src)
    return env


def cli(src: Path, cpus: list[int], args: list[str], out: Path | None = None, cwd: Path | None = None) -> float:
    """One ``captioner caption`` in a fresh process pinned to ``cpus`` -> wall seconds (start included)."""
    cmd = ["taskset", "-c", ",".join(map(str, cpus)), sys.executable, "-m", "captioner", "caption", *args]
    t = time.perf_counter()
    with open(out or os.devnull, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, text=True, env=env_for(src), cwd=cwd)
    wall = time.perf_counter() - t
    if r.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return wall


def ideal(src: Path, cpus: list[int], photos: list[str], work: Path) -> float:
    """N single-thread processes, one per core, each on its share, all at once -> wall seconds."""
    procs = []
    t = time.perf_counter()
    for i, c in enumerate(cpus):
        share = work / f"share{i}.txt"
        share.write_text("\n".join(photos[i::len(cpus)]) + "\n")
        cmd = ["taskset", "-c", str(c), sys.executable, "-m", "captioner", "caption", "--from-list", str(share),
               "--format", "jsonl", "--processes", "1", "--threads", "1"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env_for(src)))
    for p in procs:
        _, err = p.communicate()
        if p.returncode not in (0, 1):
            raise SystemExit(err.decode()[-3000:])
    return time.perf_counter() - t


# a Python program's own use: Captioner().caption_paths with its defaults, records written as the CLI does
PYTHON_API = r'''
import json, sys
from captioner import Captioner
from captioner.library.results import record
if __name__ == "__main__":
    paths = open(sys.argv[1]).read().split()
    with open(sys.argv[2], "w") as out:
        for path, res in Captioner().caption_paths(paths):
            out.write(json.dumps(record(path, res)) + "\n")
'''


def python_api(src: Path, cpus: list[int], listing: Path, out: Path, work: Path) -> float:
    """``Captioner().caption_paths`` over the photos in a fresh process pinned to ``cpus`` -> wall seconds."""
    script = work / "python_api.py"   # a file, not -c: the pool's spawned workers import the main module
    script.write_text(PYTHON_API)
    cmd = ["taskset", "-c", ",".join(map(str, cpus)), sys.executable, str(script), str(listing), str(out)]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env_for(src), check=False)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t


def same_records(a: Path, b: Path) -> dict:
    ra = [json.loads(line) for line in a.read_text().splitlines()]
    rb = [json.loads(line) for line in b.read_text().splitlines()]
    captions = sum(x.get("caption") == y.get("caption") for x, y in zip(ra, rb))
    return {"records": len(ra), "identical_records": sum(x == y for x, y in zip(ra, rb)),
            "identical_captions": captions, "same_count": len(ra) == len(rb)}


# ---------------------------------------------------------------------------- profile (a subprocess)
PROFILE = r'''
import inspect, json, sys, time
import numpy as np
import captioner.api as api
from captioner.knowledge.bundle import Knowledge
from captioner.knowledge.tags import Tagger
from captioner.images import open_image
paths = sys.argv[1].split("\n")
cap = api.Captioner(threads=1)
spent = {}
def timer(part, f):
    def timed(*a, **k):
        t = time.process_time()
        try:
            return f(*a, **k)
        finally:
            spent[part] = spent.get(part, 0.0) + time.process_time() - t
    return timed
# the parts, each timed where it is called (CPU time of this one-thread process)
for name, sess in cap.model.sessions.items():
    sess.run = timer("encoder" if name == "encoder" else "decoder steps", sess.run)
api.generate = timer("search + decoder steps", api.generate)
api.kinds.colour_features = timer("colour statistics", api.kinds.colour_features)
api.Captioner._load = timer("open + decode + preprocess", api.Captioner._load)
Knowledge.assess_routed = timer("tags probabilities + domain distance", Knowledge.assess_routed)
Knowledge.confidence = timer("confidence", Knowledge.confidence)
Tagger.top = timer("top-5 tags", Tagger.top)
api.alttext.compose = timer("alt text", api.alttext.compose)
kw = {"processes": 1} if "processes" in inspect.signature(cap.caption_paths).parameters else {}
from captioner.library.results import record
list(cap.caption_paths(paths[:16], 16, **kw))                  # warm up
spent.clear()
t0, w0 = time.process_time(), time.perf_counter()
n = 0
for p, r in cap.caption_paths(paths, 16, **kw):
    json.dumps(record(p, r)); n += 1
total, wall = time.process_time() - t0, time.perf_counter() - w0
parts = dict(spent)
search = parts.pop("search + decoder steps")
parts["search (around the steps)"] = search - parts["decoder steps"]
models = parts["encoder"] + search
parts["the rest (batching, records, Python)"] = total - sum(parts.values())
x = {s: np.stack([cap.preprocessed(open_image(p))[s] for p in paths]) for s in cap.sizes}
t1 = time.perf_counter()
for lo in range(0, len(paths), 16):   # the models alone: encoder + search on preprocessed arrays
    g = cap.model.encode(x[cap.sizes[0]][lo:lo + 16])
    api.generate(cap.decoding, api._sequence(g), cap.beam_size, length_penalty=cap.length_penalty,
                 no_repeat_ngram=cap.no_repeat_ngram)
alone = time.perf_counter() - t1
decode = parts["open + decode + preprocess"]
print(json.dumps({"images": n, "cpu_s": total, "wall_s": wall,
                  "ms_per_image": {k: round(1e3 * v / n, 3) for k, v in parts.items()},
                  "models_share": models / total, "models_share_without_jpeg_decoding": models / (total - decode),
                  "outside_models_ms_per_image": 1e3 * (total - models) / n,
                  "outside_models_and_decoding_ms_per_image": 1e3 * (total - models - decode) / n,
                  "cpu_ms_per_image": 1e3 * total / n, "images_per_s_from_files": n / wall,
                  "images_per_s_models_alone": n / alone, "ratio_to_models_alone": (n / wall) / (n / alone)}))
'''

PARTS = r'''
import json, sys, time
import numpy as np
from captioner import modelfile
from captioner.knowledge.bundle import Knowledge
from captioner.knowledge import kind
from captioner.preprocess import to_array, to_pixels
from captioner.images import open_image
paths = sys.argv[1].split("\n")[:64]
x = np.stack([to_array(open_image(p)) for p in paths])
mf = modelfile.read(None)
kn = Knowledge.from_file(*mf.knowledge(), mf.vocab)
rng = np.random.default_rng(0)
pooled = np.abs(rng.normal(0, 1, (len(paths), 1280))).astype(np.float32)
def per_image(f, reps=3):
    best = 1e9
    for _ in range(reps):
        t = time.process_time()
        for lo in range(0, len(paths), 16):
            f(lo)
        best = min(best, time.process_time() - t)
    return 1e3 * best / len(paths)
sl = lambda lo: slice(lo, lo + 16)
import inspect
new = "mean" in inspect.signature(kind.colour_features).parameters
from captioner.preprocess import IMAGENET_MEAN as M, IMAGENET_STD as S
colour = (lambda lo: kind.colour_features(x[sl(lo)], M, S)) if new else (lambda lo: kind.colour_features(to_pixels(x[sl(lo)])))
probs = kn.tagger.probs(pooled)
print(json.dumps({"colour_statistics_ms": per_image(colour),
                  "tags_ms": per_image(lambda lo: kn.tagger.top(kn.tagger.probs(pooled[sl(lo)]), 5)),
                  "domain_ms": per_image(lambda lo: kn.experts[0].domain.distance(pooled[sl(lo)])),
                  "colour_features": kind.colour_features(to_pixels(x[:16])).tolist()}))
'''


def python_json(src: Path, code: str, arg: str, cpus: list[int]) -> dict:
    cmd = ["taskset", "-c", ",".join(map(str, cpus)), sys.executable, "-c", code, arg]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env_for(src))
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def parent_cost(photos: list[str], processes: int) -> dict:
    """CPU seconds per image of the pool's parent (ordering, unpickling, records) while workers caption."""
    sys.path.insert(0, str(ROOT / "src"))
    from captioner import parallel
    from captioner.library.results import record

    plan = parallel.plan(processes, 1)
    with parallel.CaptionPool({}, plan) as pool:
        t, w = time.process_time(), time.perf_counter()
        n = sum(len(json.dumps(record(p, r))) > 0 for p, r in pool.caption_paths(photos, 16, attention=False))
        cpu, wall = time.process_time() - t, time.perf_counter() - w
    return {"images": n, "parent_cpu_ms_per_image": 1e3 * cpu / n, "images_per_s": n / wall}


def worker_rss_mb(photos: list[str]) -> float:
    """Peak resident memory of one single-thread captioning process over ``photos`` (batches of 16, as a
    worker takes them), in MB: ONNX Runtime's arena grows with the shapes it meets, so a batch of real
    photos, not one image (benchmarks/bench_pool_memory.py follows a whole run)."""
    code = ("import resource, sys; from captioner.api import Captioner; c = Captioner(threads=1); "
            "list(c.caption_paths(open(sys.argv[1]).read().split(), 16, processes=1)); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as listing:
        listing.write("\n".join(photos) + "\n")
        listing.flush()
        r = subprocess.run([sys.executable, "-c", code, listing.name], capture_output=True, text=True,
                           env=env_for(ROOT / "src"), check=True)
    return float(r.stdout.strip().splitlines()[-1])


def project(per_image_cpu_ms: float, parent_ms: float, efficiency: float, rss_mb: float, cores: int) -> dict:
    """Images/s on ``cores`` cores, on paper: each worker process captions at 1000 / per-image CPU ms,
    scaled by the efficiency measured here (the pool against N independent processes); the parent,
    one process, caps the rate at 1000 / its per-image ms (it shares a core with a worker, which the
    ``cores - 1`` below assumes it takes whole once the cap is near)."""
    workers = cores if parent_ms * cores * 1000 / per_image_cpu_ms < 500 else cores - 1
    rate = min(workers * 1000 / per_image_cpu_ms * efficiency, 1000 / parent_ms)
    return {"cores": cores, "workers": workers, "images_per_s": round(rate, 1),
            "memory_gb": round(workers * rss_mb / 1024, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=1000, help="Flickr8k test photos to caption in each CLI run")
    ap.add_argument("--profile-n", type=int, default=300, help="photos for the single-process profile")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each CLI configuration, taking turns; the best counts")
    ap.add_argument("--baseline", default="3522a2b", help="the commit to compare against")
    ap.add_argument("--data", default=str(DATA), help="the Flickr8k folder")
    ap.add_argument("--json", required=True, help="where to write every number")
    args = ap.parse_args()

    cpus = sorted(os.sched_getaffinity(0))
    photos = test_photos(Path(args.data), args.photos)
    work = Path(tempfile.mkdtemp(prefix="bench_cores_"))
    out: dict = {"photos": len(photos), "cpus": cpus, "baseline": args.baseline, "python": sys.version.split()[0]}
    try:
        trees = {"before": baseline_tree(args.baseline, work / "base"), "after": ROOT / "src"}
        listing = work / "photos.txt"
        listing.write_text("\n".join(photos) + "\n")
        one, every = cpus[:1], cpus
        runs: dict = {}

        def note(key: str, wall: float) -> None:
            runs.setdefault(key, {"walls_s": []})["walls_s"].append(round(wall, 2))
            print(f"{key}: {len(photos) / wall:6.1f} images/s ({wall:.1f} s)", flush=True)

        # the configurations take turns, --repeats times, and each keeps its best: a slower repeat is
        # another job's noise, never the code's
        for rep in range(args.repeats):
            for label, src in trees.items():
                for name, use in (("1 core", one), (f"{len(every)} cores", every)):
                    res = work / f"{label}_{len(use)}.jsonl"
                    note(f"{label}, {name}", cli(src, use, ["--from-list", str(listing), "--format", "jsonl"], res))
                lib = work / f"{label}_library.jsonl"
                lib.unlink(missing_ok=True)
                note(f"{label}, library run, {len(every)} cores",
                     cli(src, every, ["--from-list", str(listing), "--output", str(lib)]))
                note(f"{label}, Python caption_paths, {len(every)} cores",
                     python_api(src, every, listing, work / f"{label}_python.jsonl", work))
            for n in sorted({1, len(every)}):
                note(f"ideal, {n} independent single-thread processes", ideal(trees["after"], every[:n], photos, work))
        for v in runs.values():
            v["wall_s"] = min(v["walls_s"])
            v["images_per_s"] = round(len(photos) / v["wall_s"], 2)
        out["runs"] = runs
        rate = {k: v["images_per_s"] for k, v in runs.items()}
        n = len(every)
        out["goals"] = {
            "after, N cores / ideal N processes (goal >= 0.9)":
                round(rate[f"after, {n} cores"] / rate[f"ideal, {n} independent single-thread processes"], 3),
            "after, N cores / after, 1 core (goal >= 1.7 on 2 cores)":
                round(rate[f"after, {n} cores"] / rate["after, 1 core"], 3),
            "before, N cores / before, 1 core": round(rate[f"before, {n} cores"] / rate["before, 1 core"], 3),
            "after / before, N cores": round(rate[f"after, {n} cores"] / rate[f"before, {n} cores"], 3),
            "Python caption_paths after / before, N cores":
                round(rate[f"after, Python caption_paths, {n} cores"] / rate[f"before, Python caption_paths, {n} cores"], 3),
            "library after / before, N cores": round(rate[f"after, library run, {n} cores"]
                                                     / rate[f"before, library run, {n} cores"], 3)}
        out["identical"] = {"after N cores vs before 1 core": same_records(work / f"after_{n}.jsonl",
                                                                            work / "before_1.jsonl"),
                            "after 1 core vs before 1 core": same_records(work / "after_1.jsonl",
                                                                           work / "before_1.jsonl"),
                            "Python caption_paths, after vs before": same_records(work / "after_python.jsonl",
                                                                                  work / "before_python.jsonl")}
        lib_a = [json.loads(x) for x in (work / "after_library.jsonl").read_text().splitlines()]
        lib_b = [json.loads(x) for x in (work / "before_library.jsonl").read_text().splitlines()]
        out["identical"]["library after vs before"] = {"records": len(lib_a), "identical_records":
                                                       sum(a == b for a, b in zip(lib_a, lib_b))}
        # part 2: where one process's CPU time goes
        sample = "\n".join(photos[:args.profile_n])
        out["profile"] = {k: python_json(src, PROFILE, sample, one) for k, src in trees.items()}
        parts = {k: python_json(src, PARTS, sample, one) for k, src in trees.items()}
        out["colour_features_identical"] = parts["before"].pop("colour_features") == parts["after"].pop("colour_features")
        out["knowledge_parts_ms_per_image"] = parts
        for k, p in out["profile"].items():
            print(f"profile {k:6s}: models {100 * p['models_share']:.1f} % of CPU, outside the models "
                  f"{p['outside_models_ms_per_image']:.2f} ms/image, from files / models alone "
                  f"{p['ratio_to_models_alone']:.2f}", flush=True)
        # part 1, on paper: 16 and 64 cores from the per-core costs measured here
        pc = parent_cost(photos[:min(len(photos), 320)], len(every))
        rss = worker_rss_mb(photos[:args.profile_n])
        per_image = out["profile"]["after"]["cpu_ms_per_image"]
        eff = out["goals"]["after, N cores / ideal N processes (goal >= 0.9)"]
        out["per_core_costs"] = {"worker_cpu_ms_per_image": round(per_image, 2), **pc, "worker_rss_mb": round(rss)}
        out["projection"] = [project(per_image, pc["parent_cpu_ms_per_image"], min(eff, 1.0), rss, c) for c in (16, 64)]
        for p in out["projection"]:
            print(f"on paper, {p['cores']} cores: {p['images_per_s']} images/s, {p['memory_gb']} GB", flush=True)
        print(json.dumps(out["goals"], indent=1))
        print(json.dumps(out["identical"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
