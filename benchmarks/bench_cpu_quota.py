"""Captioning inside a CPU quota, as in a container started with ``--cpus N``: before and after, in one run.

    python benchmarks/bench_cpu_quota.py --cpus 1 --photos 500 --json runs/bench_cpu_quota.json

A quota gives a group of processes N CPUs' worth of time on a machine whose cores they all may run on:
``os.sched_getaffinity`` still lists every core, so a plan made from it alone starts one worker per core
and gives one process's ONNX Runtime session a thread per core, and the kernel then throttles them all to
N cores' time.  ``parallel.cores()`` now also reads the quota.

Makes a child control group of this process's own (``cgroup.py``; root, or delegated controllers) with a
CPU quota of ``--cpus`` and runs, for ``--baseline``'s code (``git archive``) and this tree, inside it:

1. the plan each one makes there (``parallel.plan()``);
2. a library run, ``captioner caption --from-list L --output F.jsonl`` on the first ``--photos``
   Flickr8k test photos (only captioned): exit status, records, images/s (process start included), the
   group's peak memory, seconds held back by the quota;
3. one photo at a time in one process (``Captioner().caption(path)``, model loaded, after a warm-up),
   the latency a user of the Python API or of one server process sees, back to back and with a pause of
   0.3 s before each photo (occasional requests, which leave the quota's time unused): mean, median
   and p90 ms;

and compares the two runs' records.  The group is removed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cores import DATA, ROOT, baseline_tree, env_for, report, same_records, test_photos  # noqa: E402
from cgroup import Group, library_run  # noqa: E402

PLAN = "from captioner import parallel; import json; p = parallel.plan(); print(json.dumps(p.__dict__))"
LATENCY = """
import json, statistics, sys, time
from captioner import Captioner
gap, paths = float(sys.argv[1]), sys.argv[2:]
cap = Captioner()
cap.caption(paths[0])
ms = []
for p in paths:
    time.sleep(gap)
    t = time.perf_counter(); cap.caption(p); ms.append((time.perf_counter() - t) * 1000)
ms.sort()
print(json.dumps({"n": len(ms), "mean_ms": round(statistics.mean(ms), 1), "median_ms": round(statistics.median(ms), 1),
                  "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 1)}))
"""
# a pause before each photo, as between a server's occasional requests: the quota's time is then not
# used up, and a session with more threads than the quota finishes one photo sooner
GAP_S = 0.3


def in_group(group: Group, src: Path, cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, text=True, env=env_for(src), preexec_fn=group.enter, check=False, **kw)


def python_json(group: Group, src: Path, code: str, args: list[str]) -> dict:
    r = in_group(group, src, [sys.executable, "-c", code, *args], capture_output=True)
    if r.returncode:
        raise SystemExit(f"{code[:40]!r} failed in the group:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpus", type=float, default=1.0, help="the group's CPU quota, in CPUs' worth of time")
    ap.add_argument("--photos", type=int, default=500, help="Flickr8k test photos for the library run")
    ap.add_argument("--single", type=int, default=40, help="photos captioned one at a time for the latency")
    ap.add_argument("--baseline", default="769665f", help="the commit to compare against (cores from the mask alone)")
    ap.add_argument("--data", default=str(DATA), help="the Flickr8k folder")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    photos = test_photos(Path(args.data), args.photos)
    group = Group(cpus=args.cpus)
    out: dict = {"cpus_quota": args.cpus, "cores_in_mask": len(os.sched_getaffinity(0)), "photos": len(photos),
                 "baseline": args.baseline, "cgroup": "v2" if group.v2 else "v1"}
    try:
        with tempfile.TemporaryDirectory(prefix="bench_cpu_quota_") as tmp:
            work = Path(tmp)
            listing = work / "photos.txt"
            listing.write_text("\n".join(photos) + "\n")
            trees = {"before": baseline_tree(args.baseline, work / "base"), "after": ROOT / "src"}
            for name, src in trees.items():
                out[name] = {"plan": python_json(group, src, PLAN, []),
                             "library_run": library_run(group, env_for(src), listing, work / f"{name}.jsonl"),
                             "one_at_a_time": python_json(group, src, LATENCY, ["0", *photos[:args.single]]),
                             "one_at_a_time_with_pauses": python_json(group, src, LATENCY,
                                                                      [str(GAP_S), *photos[:args.single]])}
                print(name, out[name], file=sys.stderr, flush=True)
            out["records"] = same_records(work / "before.jsonl", work / "after.jsonl")
    finally:
        group.remove()
    report(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
