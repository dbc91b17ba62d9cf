"""What the search costs the process that drives a GPU: tensor operations and host reads per word.

    python benchmarks/bench_search_ops.py --baseline 3ffa762 --photos 64 --json runs/bench_search_ops.json

On a GPU every tensor operation of the beam search is a kernel launched by one Python process, and every
value read back (``bool(t)``, ``int(t)``, ``nonzero``) makes that process wait until the GPU has drained, so
the GPU idles while the next operations are launched.  With a batch of hundreds of images the kernels are
short and these counts, not the arithmetic, set the pace.  This script counts them, before (``--baseline``,
a git revision, its ``src/`` unpacked into a temporary folder) and after (this checkout), in one run, on the
torch back-end (``--device``: cpu here; cuda where there is one):

* aten operations dispatched per decoder step: the search's own, and the decoder step's (the network);
* host reads per step (``is_nonzero``, ``_local_scalar_dense``, ``nonzero``: each a wait on a GPU);
* the search's wall time per step, one image at a time (batch 1: overhead, not arithmetic, dominates,
  as on a GPU) and at ``--batch``;
* whether every caption and alt text is the same.

The counts come from ``torch.utils._python_dispatch.TorchDispatchMode`` (every aten call, views included:
not all of them launch a kernel).  The photos are Flickr8k test photos (``../shared/flickr8k``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_cores import DATA, baseline_tree, env_for, report, test_photos

# aten operations that return a value to Python: on a GPU each waits for the queue to drain
READS = {"is_nonzero", "_local_scalar_dense", "item", "nonzero", "nonzero_numpy", "nonzero_static"}
VIEWS = {"view", "reshape", "_unsafe_view", "slice", "select", "unsqueeze", "squeeze", "expand", "permute",
         "transpose", "t", "alias", "detach", "split", "chunk", "unbind", "as_strided", "lift_fresh",
         "resolve_conj", "resolve_neg"}


def child(photos: int, batch: int, device: str) -> dict:
    """In a process whose ``captioner`` is the tree under test: the counts, timings and captions."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from captioner import search
    from captioner.api import Captioner

    torch.set_num_threads(1)

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.search, self.step, self.reads = Counter(), Counter(), 0
            self.in_step = False

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            (self.step if self.in_step else self.search)[name] += 1
            if not self.in_step and name in READS:
                self.reads += 1
            return func(*args, **(kwargs or {}))

    cap = Captioner(backend="torch", device=device, threads=1)
    paths = test_photos(DATA, photos)
    batches = [(idx, x) for _, idx, x in cap._batches(paths, batch)]
    steps, counter = Counter(), Count()   # the counter counts only while it is entered (below)
    for decoding in cap.experts:
        dec = decoding.decoder

        def counted(*a, _plain=dec.step, **k):
            steps["n"] += 1
            counter.in_step = True
            try:
                return _plain(*a, **k)
            finally:
                counter.in_step = False
        dec.step = counted

    generate, search_s = search._generate, [0.0]

    def timed(*a, **k):
        sync()
        t = time.perf_counter()
        try:
            return generate(*a, **k)
        finally:
            sync()
            search_s[0] += time.perf_counter() - t

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    search._generate = timed
    cap.caption_tensors(batches[0][1], 3)   # warm-up
    out = {}
    # the counts: one pass over every batch under the dispatch counter
    steps.clear()
    with counter:
        for _, x in batches:
            cap.caption_tensors(x, 3)
    n = steps["n"]
    own = sum(counter.search.values())
    own_views = sum(v for k, v in counter.search.items() if k in VIEWS)
    out["steps"] = n
    out["search_ops_per_step"] = round(own / n, 1)
    out["search_ops_per_step_not_views"] = round((own - own_views) / n, 1)
    out["step_ops_per_step"] = round(sum(counter.step.values()) / n, 1)
    out["host_reads_per_step"] = round(counter.reads / n, 2)
    out["search_top_ops"] = dict(Counter({k: round(v / n, 1) for k, v in counter.search.items()}).most_common(12))
    # the timings: the search (the step included) per step, at --batch and one image at a time
    for label, size in ((f"batch {batch}", None), ("batch 1", 1)):
        first = batches[0][1]   # {input size: images}
        runs = batches if size is None else [(None, {s: a[i:i + 1] for s, a in first.items()})
                                             for i in range(min(16, len(batches[0][0])))]
        best = float("inf")
        for _ in range(3):   # the fastest of three: other work on the machine only ever adds
            steps.clear()
            search_s[0] = 0.0
            for _, x in runs:
                cap.caption_tensors(x, 3)
            best = min(best, search_s[0] / steps["n"])
        out[f"search_ms_per_step, {label}"] = round(1e3 * best, 3)
    out["captions"] = [[c.text, c.alt_text, c.score, c.guided] for _, x in batches for c in cap.caption_tensors(x, 3)]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default=None, help="git revision to compare against (default: none, after only)")
    ap.add_argument("--photos", type=int, default=64, help="Flickr8k test photos (default 64)")
    ap.add_argument("--batch", type=int, default=64, help="images per batch for the counts (default 64)")
    ap.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.photos, args.batch, args.device)))
        return 0
    out = {"photos": args.photos, "batch": args.batch, "device": args.device}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"after": ROOT / "src"}
        if args.baseline:
            trees = {"before": baseline_tree(args.baseline, Path(tmp) / "base"), **trees}
        for name, src in trees.items():
            r = subprocess.run([sys.executable, __file__, "--child", "--photos", str(args.photos), "--batch",
                                str(args.batch), "--device", args.device], capture_output=True, text=True,
                               env=env_for(src), cwd=ROOT, check=False)
            if r.returncode:
                raise SystemExit(f"{name} failed:\n{r.stderr[-3000:]}")
            out[name] = json.loads(r.stdout.strip().splitlines()[-1])
    if "before" in out:
        a, b = out["after"].pop("captions"), out["before"].pop("captions")
        out["identical_captions"] = f"{sum(x == y for x, y in zip(a, b))} of {len(a)}"
    else:
        out["after"].pop("captions")
    report(out, args.json)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
