"""What a new user pays before the first caption: a fresh virtual environment for the base install
(``pip install -e .``, no torch) against an earlier commit's README set-up (``pip install
torch==2.14.1 torchvision==0.29.1 && pip install -e .``), on this machine: size on disk, install
time, and the time from process start to the first caption (the README's first example).

    python benchmarks/bench_install.py --old-ref dc49853 --out runs/bench_install.json

Each set-up is installed into its own new venv under ``--work`` from a clean ``git worktree`` of its
commit (``HEAD`` for the new one), so neither sees this checkout's environment.  Start-up is timed
three times after one untimed run (which fills ONNX Runtime's caches), with ``HOME`` in a temporary
folder; the median is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def du_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True, check=True).stdout
    return float(out.split()[0])


def setup(ref: str, commands: list[str], work: Path) -> dict:
    tree, venv = work / f"tree_{ref}", work / f"venv_{ref}"
    for p in (tree, venv):
        if p.exists():
            shutil.rmtree(p)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref], check=True,
                   capture_output=True)
    shared = ROOT.parent / "shared"
    if shared.exists() and not (tree.parent / "shared").exists():
        (tree.parent / "shared").symlink_to(shared)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    for c in commands:
        subprocess.run(pip + c.split(), check=True, cwd=tree)
    seconds = time.perf_counter() - t0
    return {"ref": ref, "commands": commands, "install_s": round(seconds, 1), "venv_mb": du_mb(venv),
            "torch_installed": bool(list((venv / "lib").glob("python*/site-packages/torch"))),
            "tree": str(tree), "venv": str(venv)}


def first_caption(s: dict, photos: list[str], repeats: int = 3) -> dict:
    exe = str(Path(s["venv"]) / "bin" / "captioner")
    home = tempfile.mkdtemp()
    env = {**os.environ, "HOME": home}
    env.pop("CAPTIONER_CACHE", None)
    times, out = [], ""
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        p = subprocess.run([exe, "caption", *photos], capture_output=True, text=True, cwd=s["tree"], env=env)
        dt = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"{exe} failed: {p.stderr[-2000:]}")
        out = p.stdout
        if i:
            times.append(dt)
    shutil.rmtree(home, ignore_errors=True)
    return {"first_caption_s": round(statistics.median(times), 2), "runs_s": [round(t, 2) for t in times],
            "output": out.strip().splitlines()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old-ref", default="dc49853", help="the commit whose README set-up is compared")
    ap.add_argument("--new-ref", default="HEAD", help="the commit of the base install")
    ap.add_argument("--work", default=None, help="where the worktrees and venvs go (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the worktrees and venvs")
    ap.add_argument("--out", default=None, help="write the figures as JSON")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_install_"))
    work.mkdir(parents=True, exist_ok=True)
    photos = ["../shared/flickr8k/originals/1107246521_d16a476380.jpg", "src/captioner/examples/cat.jpg"]
    res = {}
    try:
        for name, ref, cmds in (("base", args.new_ref, ["-e ."]),
                                ("old_readme", args.old_ref, ["torch==2.14.1 torchvision==0.29.1", "-e ."])):
            s = setup(ref, cmds, work)
            s.update(first_caption(s, photos))
            res[name] = s
            print(f"{name} ({ref}): {s['venv_mb']:.0f} MB, installed in {s['install_s']:.0f} s, first caption "
                  f"{s['first_caption_s']:.2f} s, torch installed: {s['torch_installed']}", flush=True)
        res["ratio_size"] = round(res["old_readme"]["venv_mb"] / res["base"]["venv_mb"], 2)
        res["ratio_start"] = round(res["old_readme"]["first_caption_s"] / res["base"]["first_caption_s"], 2)
        print(f"the base install is {res['ratio_size']}x smaller and starts {res['ratio_start']}x faster")
    finally:
        if not args.keep:
            for s in res.values():
                if isinstance(s, dict):
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", s["tree"]],
                                   capture_output=True)
            shutil.rmtree(work, ignore_errors=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
