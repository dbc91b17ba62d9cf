"""A child control group of this process's own, as a container gives one, for the benchmarks that run the
CLI inside a memory limit (``bench_memory_limit.py``) or a CPU quota (``bench_cpu_quota.py``).  Not a
benchmark itself; needs root, or a group whose controllers are delegated to you.

    group = Group(memory_bytes=1200 * 2**20)            # a memory limit
    group = Group(cpus=1.0)                              # a CPU quota of one CPU's time (--cpus 1)
    subprocess.run(cmd, preexec_fn=group.enter)          # the command and all it starts are in the group
    group.peak_mb(); group.remove()
    library_run(group, env, listing, out)                # a library run inside it, measured

cgroup v1 (one hierarchy per controller: a child in the memory tree and one in the cpu tree) and v2
(one tree, one child).  The memory controller is always joined, so that the group's peak memory can be
read, limit or not.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

PERIOD_US = 100_000   # the kernel's default CFS period


class Group:
    def __init__(self, memory_bytes: int | None = None, cpus: float | None = None):
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        v1 = {c: ln.split(":", 2)[2] for ln in lines for c in ln.split(":", 2)[1].split(",") if c}
        self.v2 = "memory" not in v1
        name = f"captioner-bench-{os.getpid()}"
        wanted = ["memory"] + (["cpu"] if cpus is not None else [])
        if self.v2:
            rel = next(ln.split(":", 2)[2] for ln in lines if ln.startswith("0::"))
            parents = {c: Path("/sys/fs/cgroup") / rel.lstrip("/") for c in wanted}
        else:
            parents = {c: Path("/sys/fs/cgroup") / c / v1.get(c, "/").lstrip("/") for c in wanted}
        self.paths: dict[str, Path] = {}
        for c, parent in parents.items():
            if not parent.is_dir():   # a container that mounts its own group as the root
                parent = Path("/sys/fs/cgroup") / ("" if self.v2 else c)
            path = parent / name
            try:
                path.mkdir(exist_ok=self.v2 and bool(self.paths))
            except OSError as e:
                self.remove()
                raise SystemExit(f"cannot make a control group under {parent} ({e}): run as root, or in a "
                                 f"group whose {c} controller is delegated to you") from None
            self.paths[c] = path
        try:
            if memory_bytes is not None:
                self._write("memory", "memory.max" if self.v2 else "memory.limit_in_bytes", str(memory_bytes))
            if cpus is not None:
                quota = str(round(cpus * PERIOD_US))
                if self.v2:
                    self._write("cpu", "cpu.max", f"{quota} {PERIOD_US}")
                else:
                    self._write("cpu", "cpu.cfs_period_us", str(PERIOD_US))
                    self._write("cpu", "cpu.cfs_quota_us", quota)
        except OSError as e:   # v2: the parent's cgroup.subtree_control must list the controller
            self.remove()
            raise SystemExit(f"cannot set the limits of {name} ({e}): is the controller enabled for it?") from None

    def _write(self, controller: str, name: str, value: str) -> None:
        (self.paths[controller] / name).write_text(value)

    def _read(self, controller: str, name: str) -> str:
        return (self.paths[controller] / name).read_text()

    def enter(self) -> None:
        """In the child, before exec: this process and all it starts are in the group."""
        for path in dict.fromkeys(self.paths.values()):
            (path / "cgroup.procs").write_text(str(os.getpid()))

    def reset_peak(self) -> None:
        if not self.v2:
            self._write("memory", "memory.max_usage_in_bytes", "0")

    def peak_mb(self) -> float | None:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        try:
            return round(int(self._read("memory", name)) / 2 ** 20)
        except OSError:   # memory.peak needs Linux 5.19
            return None

    def oom_kills(self) -> int:
        text = self._read("memory", "memory.events" if self.v2 else "memory.oom_control")
        return next((int(ln.split()[1]) for ln in text.splitlines() if ln.startswith("oom_kill ")), 0)

    def throttled_s(self) -> float:
        """Seconds the group's processes were held back by the CPU quota so far."""
        text = self._read("cpu", "cpu.stat")
        stat = dict(ln.split() for ln in text.splitlines() if len(ln.split()) == 2)
        if "throttled_usec" in stat:   # v2
            return int(stat["throttled_usec"]) / 1e6
        return int(stat.get("throttled_time", 0)) / 1e9   # v1, in nanoseconds

    def remove(self) -> None:
        for path in dict.fromkeys(self.paths.values()):
            try:
                path.rmdir()
            except OSError as e:
                print(f"could not remove {path}: {e}", file=sys.stderr)


def library_run(group: Group, env: dict, listing: Path, out: Path) -> dict:
    """``captioner caption --from-list LISTING --output OUT`` inside ``group`` (``env``: the code to run, as
    ``bench_cores.env_for`` gives it) -> its exit status, records, seconds, images/s (process start included),
    the group's peak memory and OOM kills, and with a CPU quota the seconds it held the run back."""
    out.unlink(missing_ok=True)
    group.reset_peak()
    kills = group.oom_kills()
    held = group.throttled_s() if "cpu" in group.paths else None
    cmd = [sys.executable, "-m", "captioner", "caption", "--from-list", str(listing), "--output", str(out)]
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                       preexec_fn=group.enter, check=False)
    wall = time.perf_counter() - t
    records = sum(1 for _ in out.open()) if out.exists() else 0
    res = {"exit_status": r.returncode, "records": records, "seconds": round(wall, 1),
           "images_per_s": round(records / wall, 1), "group_peak_mb": group.peak_mb(),
           "oom_kills": group.oom_kills() - kills, "stderr_tail": r.stderr.strip().splitlines()[-1:]}
    if held is not None:
        res["throttled_s"] = round(group.throttled_s() - held, 1)
    return res
