"""A library run inside a memory limit, as in a container: before and after, in one run.

    python benchmarks/bench_memory_limit.py --limit-mb 1200 --photos 1000 --json runs/bench_memory_limit.json

Makes a child control group of this process's own (cgroup v1's memory controller, or cgroup v2 where
the memory controller is delegated to it; root, or a delegated group, is needed), sets its memory
limit, and runs ``captioner caption --from-list L --output F.jsonl`` of ``--baseline``'s code (``git
archive``) and of this tree inside it, one after the other, on every core this script may use, on the
first N Flickr8k test photos (only captioned).  For each: the exit status, the records written, the
group's peak memory, whether the kernel's OOM killer struck, and images/s.  The group is removed at the end.

Before, ``plan()`` started one worker per core whatever the memory; now it reads the group's limit
(``parallel.memory_mb``) and starts no more workers than it holds.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cores import DATA, ROOT, baseline_tree, env_for, report, test_photos  # noqa: E402
from cgroup import Group, library_run  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit-mb", type=int, default=1200, help="the group's memory limit, in MB")
    ap.add_argument("--photos", type=int, default=1000, help="Flickr8k test photos to caption in each run")
    ap.add_argument("--baseline", default="4bdab39", help="the commit to compare against (plan without memory)")
    ap.add_argument("--data", default=str(DATA), help="the Flickr8k folder")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    photos = test_photos(Path(args.data), args.photos)
    group = Group(memory_bytes=args.limit_mb * 2 ** 20)
    out: dict = {"limit_mb": args.limit_mb, "cores": len(os.sched_getaffinity(0)), "photos": len(photos),
                 "baseline": args.baseline, "cgroup": "v2" if group.v2 else "v1"}
    try:
        with tempfile.TemporaryDirectory(prefix="bench_memory_limit_") as tmp:
            work = Path(tmp)
            listing = work / "photos.txt"
            listing.write_text("\n".join(photos) + "\n")
            trees = {"before": baseline_tree(args.baseline, work / "base"), "after": ROOT / "src"}
            for name, src in trees.items():
                out[name] = library_run(group, env_for(src), listing, work / f"{name}.jsonl")
                print(name, out[name], file=sys.stderr, flush=True)
    finally:
        group.remove()
    report(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
