"""How much of the machine a run uses, decided once at the edge, and the worker processes that use it.

``plan()`` reads the cores this process may use (``cores()``: its affinity mask, so ``taskset`` and
cgroup cpusets count, and a container's CPU quota) and chooses *processes x threads*: on a CPU, one
captioning process per core, each with a one-thread ONNX Runtime session, because independent
single-thread processes scale best (measured: 16 of them 205 images/s, one 16-thread process 40.5; docs/speed.md),
but no more processes than the free memory holds (``memory_mb``: the machine's available memory or a
container's limit, whichever leaves less; ``worker_mb()`` each), their threads then sharing the cores;
on a GPU, one process that owns the device.  The CLI (``caption``, with or without ``--output``),
``Captioner.caption_paths`` and the HTTP server all call it.

``CaptionPool`` is that set of processes: each loads the model once (``api.Captioner`` with its own
thread count) and captions the batches it is sent; results come back in input order, at most
``2 x processes`` batches are in flight (memory stays bounded), a worker that dies fails the run
with a clear error instead of hanging (the pool then takes no more tasks: ``failed``; the HTTP server
starts a new one), and Ctrl-C stops every worker (they ignore SIGINT and are
stopped by the parent, so results already handed back are written and nothing half-done is).

    from captioner import parallel
    print(parallel.plan())                 # Plan(processes=2, threads=1, cores=2) on two cores
    with parallel.CaptionPool({"beam_size": 3}, parallel.plan()) as pool:
        for path, caption in pool.caption_paths(paths, batch_size=16): ...

Workers are started with ``spawn`` (never ``fork``: a forked ONNX Runtime or CUDA context is not
safe), without the user's script as their ``__main__`` (``main_not_rerun``), so a script that uses the pool
needs no ``if __name__ == "__main__":`` guard.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from captioner import runtime

# how long the reader waits on the result queue before checking that every worker is still alive
_POLL_S = 0.5


def cores() -> int:
    """The cores this process may use: its affinity mask (``taskset``, cpusets), else all; fewer where
    its control group's CPU quota allows less time (a container's ``--cpus 2`` on a 16-core host, a
    systemd unit's ``CPUQuota=``), rounded up (1.5 CPUs: 2), as Java and .NET count a container's CPUs.
    Without that, a quota of 2 CPUs would start 16 workers that the kernel then throttles to 2 cores'
    time: no faster, and 8 times the memory."""
    try:
        n = max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):   # macOS, Windows: no affinity mask
        n = os.cpu_count() or 1
    quota = _cgroup_cpus()
    return min(n, max(math.ceil(quota), 1)) if quota else n


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    """A /proc or /sys value as a whole number; None for anything else ("max", empty, missing)."""
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


def _cgroups(controller: str):
    """(v2, folder) for this process's control group of ``controller`` and each of its ancestors,
    nearest first: cgroup v2's one tree (``v2`` True) and v1's tree of that controller."""
    for line in (_read("/proc/self/cgroup") or "").splitlines():
        if line.count(":") < 2:
            continue
        _, controllers, rel = line.split(":", 2)
        if controllers == "":
            v2, base = True, Path("/sys/fs/cgroup")
        elif controller in controllers.split(","):
            v2, base = False, Path("/sys/fs/cgroup") / controller
        else:
            continue
        group = base / rel.lstrip("/")
        # up to base: inside a container the group is often mounted as the root itself, and its own
        # path is not there
        for g in [group, *group.parents]:
            yield v2, g
            if g == base:
                break


def _cgroup_room() -> float | None:
    """Bytes this process's control group (a container's limit, a systemd slice) still lets it use, the
    tightest over the group and its ancestors; None without a limit.  cgroup v2 (``memory.max``) and
    v1 (``memory.limit_in_bytes``, where an unlimited group reports a huge number)."""
    rooms = []
    for v2, g in _cgroups("memory"):
        files = ("memory.max", "memory.current") if v2 else ("memory.limit_in_bytes", "memory.usage_in_bytes")
        limit, used = (_int(_read(str(g / f))) for f in files)
        if limit is not None and used is not None and limit < 2 ** 60:
            rooms.append(limit - used)
    return min(rooms) if rooms else None


def _cgroup_cpus() -> float | None:
    """The CPUs' worth of time this process's control group allows (quota / period), the tightest over
    the group and its ancestors; None without a quota.  cgroup v2 (``cpu.max``: "QUOTA PERIOD", or
    "max PERIOD" for none) and v1 (``cpu.cfs_quota_us``, -1 for none, over ``cpu.cfs_period_us``)."""
    quotas = []
    for v2, g in _cgroups("cpu"):
        if v2:
            quota, _, period = (_read(str(g / "cpu.max")) or "").partition(" ")
        else:
            quota, period = _read(str(g / "cpu.cfs_quota_us")), _read(str(g / "cpu.cfs_period_us"))
        q, p = _int(quota), _int(period)
        if q and p:
            quotas.append(q / p)
    return min(quotas) if quotas else None


def memory_mb() -> float | None:
    """Memory this process can still use, in MB: the system's available memory (``MemAvailable``,
    reclaimable cache included), or less where its control group's limit leaves less; None where
    neither can be read (not Linux)."""
    rooms = []
    for line in (_read("/proc/meminfo") or "").splitlines():
        name, _, value = line.partition(":")
        kb = _int(value.removesuffix("kB")) if name == "MemAvailable" else None
        if kb is not None:
            rooms.append(kb * 1024)
    cg = _cgroup_room()
    if cg is not None:
        rooms.append(cg)
    return max(min(rooms), 0) / 2 ** 20 if rooms else None


# the peak memory of one captioning process with the shipped model, 16 images a batch, a one-thread
# session (PSS, benchmarks/bench_pool_memory.py; docs/speed.md): about 0.7 GB on photos once ONNX
# Runtime's arena has grown, and up to 1.03 GB while it reads the text of full-size screenshots and
# pages; a plan starts no more processes than the available memory holds at this much each.  The
# torch back-end's process is larger (PyTorch alone is half a gigabyte): 1.45 GB reading text, measured
# the same way (``--backend torch``).  Each further model of an ensemble (``--model A --model B``) adds
# about half a gigabyte (measured: one process 629 MB with one model, 1,129 MB with two, on photos)
WORKER_MB, TORCH_WORKER_MB, MEMBER_MB = 1000, 1500, 500


def worker_mb(backend: str, members: int = 1) -> int:
    """The memory a plan counts for one captioning process of ``backend`` ("onnx" or "torch") holding
    ``members`` models (an ensemble's)."""
    return (TORCH_WORKER_MB if backend == "torch" else WORKER_MB) + MEMBER_MB * max(members - 1, 0)


def members(model: dict) -> int:
    """How many model files ``api.Captioner``'s keyword arguments name (an ensemble's several)."""
    path = model.get("path")
    return len(path) if isinstance(path, (list, tuple)) else 1


def _settings(model: dict) -> tuple[str, str, str]:
    return model.get("backend", "auto"), model.get("device", "auto"), model.get("precision", "auto")


def model_mb(model: dict) -> int:
    """``worker_mb`` for a model given as ``api.Captioner``'s keyword arguments: its back-end as
    ``runtime.choose_backend`` will choose it, and its number of model files."""
    return worker_mb(runtime.choose_backend(*_settings(model)), members(model))


# images per batch: 16 on a CPU (larger batches gain nothing there; docs/speed.md), 256 on a GPU, whose
# encoder needs hundreds of images a call to be busy (the H200: 18,600 images/s at 1,024)
CPU_BATCH, GPU_BATCH = 16, 256


@dataclass(frozen=True)
class Plan:
    processes: int      # captioning processes (1: this process captions, no pool)
    threads: int        # intra-op threads of each process's model
    cores: int          # the cores the plan was made for
    gpu: bool = False   # one process owns a GPU; the other cores decode images for it

    @property
    def batch_size(self) -> int:
        return GPU_BATCH if self.gpu else CPU_BATCH

    @property
    def pooled(self) -> bool:
        return self.processes > 1


def plan(processes: int | None = None, threads: int | None = None, device: str = "cpu",
         n_cores: int | None = None, room_mb: float | None = None, per_process_mb: int = WORKER_MB) -> Plan:
    """``processes`` / ``threads`` as the user gave them (None or 0: chosen here).  On a GPU
    (``device`` cuda or mps) one process holds the device and uses every core for its own work.
    Chosen here, the processes are as many as the memory holds (``room_mb``, default ``memory_mb()``,
    ``per_process_mb`` each, ``worker_mb(backend)``; ``inf``: no limit), their threads sharing out the
    cores: 16 cores and 4 GB give 4 processes of 4 threads, not 16 processes that run the machine out
    of memory."""
    n = n_cores or cores()
    for name, v in (("processes", processes), ("threads", threads)):
        if v is not None and v < 0:
            raise ValueError(f"{name} {v}: give 0 (automatic) or a positive number")
    gpu = str(device or "cpu").lower().startswith(("cuda", "mps"))
    if gpu and not processes:
        return Plan(1, threads or n, n, gpu=True)
    if processes:
        return Plan(processes, threads or max(n // processes, 1), n)
    t = threads or 1
    p = max(n // t, 1)
    room = memory_mb() if room_mb is None else room_mb
    if room is not None and p > 1 and room < p * per_process_mb:
        p = max(int(room // per_process_mb), 1)
        t = threads or max(n // p, 1)
    return Plan(p, t, n)


# numpy's BLAS (the tagger's, the domain check's products) and OpenMP read these when they load: a
# worker must not start a thread per core of its own, or N workers run N x N threads
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextmanager
def _child_env(threads: int):
    """The environment spawned workers inherit: their libraries' thread pools sized to ``threads``
    (a user's own setting is kept); this process's environment is restored after the start."""
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    for k in _THREAD_VARS:
        os.environ.setdefault(k, str(threads))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def main_not_rerun():
    """While worker processes are spawned: the parent's ``__main__`` is not named to them, so spawn does
    not run the user's script again in each worker before it starts (the workers run captioner's own
    code and need nothing from it).  A script without ``if __name__ == "__main__":`` then works, and no
    worker repeats the script's own work; ``__main__`` is as before once the processes have started."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def in_worker() -> bool:
    """True inside a process started by multiprocessing: no pool is started from there."""
    return mp.parent_process() is not None


def exit_with_parent() -> None:
    """In a process started by multiprocessing (a pool's worker, the GPU path's decoding processes): end
    it as soon as its parent is gone.  A parent killed without closing its pool (SIGKILL, a crash)
    must not leave workers waiting for ever, nor the shared memory they hold (the resource tracker
    frees it once they are gone).  multiprocessing keeps a pipe to the parent that closes when it
    dies, whenever that is: while the model loads, during a batch or between tasks."""
    parent = mp.parent_process()
    if parent is None:
        return

    def watch():
        parent.join()      # returns when the parent's end of the pipe closes
        os._exit(1)        # nothing here is anyone's any more: no cleanup to wait for

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _worker(model: dict, threads: int, tasks, results) -> None:
    """One worker's life: load the model, caption each (id, paths or (name, bytes), options) task."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent stops us; Ctrl-C must not cut a batch
    exit_with_parent()
    try:
        from captioner.api import Captioner

        # the text reader keeps to the worker's share of the cores too
        cap = Captioner(**{**model, "threads": threads, "text_threads": model.get("text_threads") or threads})
    except BaseException as e:   # the parent says why the model could not load, and stops
        results.put((None, ("error", (type(e).__name__, str(e)))))
        return
    results.put((None, ("ready", cap.describe())))
    while (task := tasks.get()) is not None:
        tid, kind, payload, opts = task
        try:
            if kind == "paths":
                out = list(cap.caption_paths(payload, processes=1, **opts))
            else:   # one uploaded image: (name, bytes)
                out = cap.caption_bytes(*payload, **opts)
            results.put((tid, ("ok", out)))
        except BaseException as e:   # the parent raises it; the worker stays up for the next task
            results.put((tid, ("error", (type(e).__name__, str(e)))))


class WorkerError(RuntimeError):
    """A worker process failed: a batch raised, or the process died."""


def ended(exitcode: int | None) -> str:
    """How a worker process ended, in words: killed by a signal (a negative exit code), SIGKILL most
    often by the system's out-of-memory killer, or stopped with an exit code."""
    if exitcode is None or exitcode >= 0:
        return f"stopped (exit code {exitcode})"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    hint = (" (often the system's out-of-memory killer: --processes with fewer processes needs less memory)"
            if -exitcode == signal.SIGKILL else "")
    return f"was killed by {name}{hint}"


def _error(err: tuple[str, str]) -> Exception:
    """A worker's (exception name, message) as the parent raises it: the user's errors (a model file
    that cannot be read, a bad setting, a bad upload) keep their kind, so callers catch them as before."""
    from captioner.images import ImageError

    name, msg = err
    kinds = {"ImageError": ImageError, "ValueError": ValueError, "FileNotFoundError": FileNotFoundError,
             "CheckpointError": ValueError, "OSError": OSError}
    return kinds[name](msg) if name in kinds else WorkerError(f"{name}: {msg}")


class CaptionPool:
    """``plan.processes`` processes, each with its own model (``api.Captioner(**model)``, ``plan.threads``
    threads): ``caption_paths`` (ordered, bounded) for files, ``submit_bytes`` (a Future) for uploads.
    ``loaded``, once started: what the workers loaded (``Captioner.describe()``), so that the process
    that started them need not load the model too."""

    def __init__(self, model: dict, plan: Plan):
        if in_worker():
            raise RuntimeError("a caption pool cannot be started inside a worker process")
        ctx = mp.get_context("spawn")
        self.plan = plan
        self.tasks, self.results = ctx.Queue(), ctx.Queue()
        self.procs = [ctx.Process(target=_worker, args=(dict(model), plan.threads, self.tasks, self.results),
                                  daemon=True, name=f"captioner-worker-{i}") for i in range(plan.processes)]
        self.pending: dict[int, Future] = {}
        self.loaded: dict = {}
        self.lock = threading.Lock()
        self.next_id = 0
        self.closed = False
        # set once a worker has died: the pool takes no more tasks (its queue may be held by the dead
        # process for ever), and a long-lived user such as the HTTP server starts a new one
        self.failed: WorkerError | None = None
        with _child_env(plan.threads), main_not_rerun():
            for p in self.procs:
                p.start()
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        self.reader = threading.Thread(target=self._read, daemon=True, name="captioner-pool-reader")
        self.reader.start()

    def _wait_ready(self) -> None:
        ready = 0
        while ready < len(self.procs):
            try:
                _, (status, value) = self.results.get(timeout=_POLL_S)
            except queue.Empty:
                if (err := self._dead()) is not None:
                    raise err from None
                continue
            if status == "error":
                raise _error(value)
            self.loaded = value   # every worker loaded the same model
            ready += 1

    def _dead(self) -> WorkerError | None:
        """The error to report if a worker process has ended, else None."""
        dead = [p for p in self.procs if not p.is_alive()]
        if not dead:
            return None
        return WorkerError(f"worker process {dead[0].name} {ended(dead[0].exitcode)}; "
                           "the batches it held were not captioned")

    def _read(self) -> None:
        """Resolve each task's Future from the result queue; fail them all if a worker dies."""
        while not self.closed:
            try:
                tid, (status, value) = self.results.get(timeout=_POLL_S)
            except queue.Empty:
                if self.closed:   # the workers were told to stop: their ending is no failure
                    return
                if (err := self._dead()) is not None:   # made here, not raised: it holds no traceback
                    self._fail_all(err, broken=True)
                    return
                continue
            except (EOFError, OSError, ValueError):   # the queue was closed under us: the pool is closing
                return
            with self.lock:
                fut = self.pending.pop(tid, None)
            if fut is not None and not fut.done():   # a cancelled one (the consumer stopped) is dropped
                fut.set_result(value) if status == "ok" else fut.set_exception(_error(value))

    def _fail_all(self, err: Exception, broken: bool = False) -> None:
        with self.lock:   # the lock submit takes: no task is added after this without seeing ``failed``
            if broken:
                self.failed = err
            futs, self.pending = list(self.pending.values()), {}
        for f in futs:
            if not f.done():
                f.set_exception(err)

    def submit(self, kind: str, payload, opts: dict) -> Future:
        if self.closed:
            raise RuntimeError("the caption pool is closed")
        fut: Future = Future()
        with self.lock:
            if self.failed is not None:
                raise self.failed
            tid, self.next_id = self.next_id, self.next_id + 1
            self.pending[tid] = fut
        self.tasks.put((tid, kind, payload, opts))
        return fut

    def submit_bytes(self, data: bytes, name: str, **opts) -> Future:
        """One uploaded image -> a Future of its Caption (``ImageError`` for a bad upload)."""
        return self.submit("bytes", (name, data), opts)

    def caption_paths(self, paths, batch_size: int = 16, **opts):
        """Yield (path, Caption or error message) in input order, as ``Captioner.caption_paths``
        does; the batches are the same ones (consecutive ``batch_size`` slices)."""
        paths = list(paths)
        starts = list(range(0, len(paths), runtime.whole("batch_size", batch_size, 1)))
        ahead = 2 * len(self.procs)
        inflight: list[Future] = []
        try:
            for lo in starts:
                inflight.append(self.submit("paths", paths[lo:lo + batch_size],
                                            {"batch_size": batch_size, **opts}))
                if len(inflight) > ahead:
                    yield from inflight.pop(0).result()
            while inflight:
                yield from inflight.pop(0).result()
        finally:
            for f in inflight:   # stopped early (an error, Ctrl-C, a consumer that broke off)
                f.cancel()

    def close(self) -> None:
        """Stop the workers: a sentinel each, a short wait, then terminate what is still running."""
        if self.closed:
            return
        self.closed = True
        for _ in self.procs:
            try:
                self.tasks.put_nowait(None)
            except (ValueError, OSError):
                break
        for p in self.procs:
            if p.pid is not None:
                p.join(timeout=2.0)
            if p.is_alive():
                p.terminate()
                p.join(timeout=2.0)
        self._fail_all(WorkerError("the caption pool was closed"))
        for q in (self.tasks, self.results):
            q.cancel_join_thread()   # a dead worker may have left the pipe full: never wait on it for ever
            q.close()
        # Each queue holds named semaphores, removed from the system when the queue and the threads
        # that use them are gone.  Let go of them now: a server stopped by SIGTERM never reaches the
        # interpreter's exit, and Python's resource tracker then removes them itself, warning of
        # "leaked semaphore objects".  Both threads end at once now that the queues are closed (the
        # feeder, which writes tasks to the pipe, unless a dead worker left it full).
        for t in (getattr(self.tasks, "_thread", None), getattr(self, "reader", None)):
            if t is not None and t is not threading.current_thread():
                t.join(timeout=4 * _POLL_S)
        self.tasks = self.results = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def plan_for(model: dict, processes: int | None = None, threads: int | None = None) -> Plan:
    """The plan for a model given as ``api.Captioner``'s keyword arguments (one process on a GPU)."""
    gpu = runtime.uses_gpu(*_settings(model))
    return plan(processes, threads, "cuda" if gpu else "cpu", per_process_mb=model_mb(model))


def caption_paths(model: dict, paths, batch_size: int | None = None, processes: int | None = None,
                  threads: int | None = None, workers: int = 0, **opts):
    """The CLI's way in: yield (path, Caption or error message) in input order, from a pool of
    worker processes where the plan has several (the model is then never loaded here), else from a
    model in this process with ``plan.threads`` threads (and ``workers`` decoding threads, or on a
    GPU decoding processes).  ``batch_size`` None: the plan's (16 on a CPU, 256 on a GPU)."""
    from captioner.api import Captioner

    paths = list(paths)
    p = plan_for(model, processes, threads)
    # checked here, before a pool is started for nothing
    batch_size = runtime.whole("batch_size", p.batch_size if batch_size is None else batch_size, 1)
    if p.pooled and len(paths) > batch_size and not in_worker():
        with CaptionPool(model, p) as pool:
            yield from pool.caption_paths(paths, batch_size, **opts)
        return
    # a short list that does not fill two batches runs here, on every core the plan had
    cap = Captioner(**{**model, "threads": model.get("threads") or threads or (p.cores if p.pooled else p.threads)})
    yield from cap.caption_paths(paths, batch_size, workers, processes=1, **opts)
