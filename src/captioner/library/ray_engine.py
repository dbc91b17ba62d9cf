"""The Ray Data engine of a library run (``captioner caption ... --output F --engine ray``): the
photos still to caption become a Ray Dataset; ``map_batches`` sends batches of paths to a pool of
actors, each of which loads the model (and ExifTool) once (``labeller.Labeller``) and returns the
batches' records; the driver writes them to the results file as they arrive, so a run resumes as a
local one does.  Optional: ``pip install -e ".[ray]"``.

    captioner caption photos/ --output out.jsonl --engine ray                       # a local Ray
    ray start --head   # on the head machine; ray start --address HEAD:6379 on the others
    captioner caption /shared/photos --output /shared/out.parquet --engine ray --ray-address auto \\
        --num-gpus-per-worker 1                                                     # one actor per GPU

The photos must be readable at the same paths on every machine (shared storage); each actor works
in the driver's current folder, so relative paths and the records' ``image`` fields are the same
as the local engine's.  Records arrive in completion order, not input order.
"""
from __future__ import annotations

import json
import math
import os

from captioner.parallel import WORKER_MB, model_mb


class _Worker:
    """One actor of the pool: a model loaded once, a batch of paths in, their records out."""

    def __init__(self, model: dict, metadata, overwrite: bool, cwd: str, threads: int):
        from captioner.library.labeller import Labeller

        if os.path.isdir(cwd):
            os.chdir(cwd)
        # each actor's share of the cores (the ONNX Runtime sessions' threads; the torch back-end's too)
        self.labeller = Labeller({**model, "threads": max(threads, 1)}, metadata, overwrite)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        paths = [str(p) for p in batch["image"]]
        recs = [r for chunk in self.labeller(paths, len(paths)) for r in chunk]
        return {"record": np.array([json.dumps(r, ensure_ascii=False) for r in recs], dtype=object)}


def _worker_class(config: dict) -> type:
    """``_Worker`` with its settings bound: Ray ships the class itself, so no constructor arguments sit
    in the object store (which Ray warns would break an actor's restart)."""

    class Worker(_Worker):
        def __init__(self):
            super().__init__(**config)

    return Worker


def actors(resources: dict, gpus: float = 0, workers: int = 0,
           per_actor_mb: int = WORKER_MB) -> tuple[int, int, dict]:
    """-> (actors, CPUs each, the memory each asks Ray for) on a cluster with ``resources``
    (``ray.cluster_resources()``): ``workers`` if given; one per ``gpus`` GPUs; else one per CPU, but no
    more than the cluster's memory holds at ``per_actor_mb`` each (an actor holds a model:
    ``parallel.model_mb`` at its peak), and Ray then places each actor where that memory is free."""
    memory: dict = {}
    if workers:
        n = workers
    elif gpus:
        n = max(int(resources.get("GPU", 0) // gpus), 1)
    else:
        n = max(int(resources.get("CPU", 1)), 1)
        room = int(resources.get("memory", 0) // (per_actor_mb * 2 ** 20))
        if room >= 1:   # else Ray could place none: one actor, whatever the memory
            n, memory = min(n, room), {"memory": per_actor_mb * 2 ** 20}
    return n, 1 if gpus else max(int(resources.get("CPU", 1)) // n, 1), memory


def _quiet(ray) -> None:
    """Ray Data's warnings and progress bars off: the run has its own."""
    import warnings

    warnings.filterwarnings("ignore", module=r"ray\..*")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def _environment() -> None:
    """Set before ray is imported, inherited by the cluster this run starts and its workers."""
    # Ray's own logs at error level only (set these variables to see more): the run reports its
    # progress and summary itself, and Ray Data's notes on actor restarts and progress bars would
    # read like faults to a user
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")
    # nothing leaves the machine: Ray's usage statistics off for the clusters this run starts (its
    # workers inherit the variable); set before ray is imported
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")


def ray_batches(paths: list[str], job):
    """Yield lists of records for ``paths`` computed on Ray (``job``: ``library.LibraryJob``)."""
    if not paths:
        return
    _environment()
    try:
        import ray
    except ImportError:
        raise ValueError('--engine ray needs Ray Data: pip install "captioner[ray]" (or pip install "ray[data]")') \
            from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=job.ray_address, num_cpus=None if job.ray_address else job.ray_cpus,
                 include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="ERROR")
    try:
        _quiet(ray)
        gpus = job.num_gpus_per_worker
        model = dict(job.model)
        n, cpus, memory = actors(ray.cluster_resources(), gpus, job.ray_workers, model_mb(model))
        if gpus and model.get("device", "auto") in ("auto", "cpu"):
            model["device"] = "cuda"
        model.setdefault("text_threads", cpus)   # the text reader keeps to the actor's share of the CPUs
        # a block per batch, and at least one per actor, so that every actor gets work
        blocks = max(math.ceil(len(paths) / (job.batch_size or 16)), min(n, len(paths)))
        ds = ray.data.from_items([{"image": p} for p in paths], override_num_blocks=blocks)
        worker = _worker_class({"model": model, "metadata": job.metadata, "overwrite": job.overwrite_metadata,
                                "cwd": os.getcwd(), "threads": cpus})
        out = ds.map_batches(worker, batch_size=job.batch_size or 16, batch_format="numpy",
                             compute=ray.data.ActorPoolStrategy(size=n), num_cpus=cpus, num_gpus=gpus or None,
                             **memory)
        for batch in out.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            yield [json.loads(s) for s in batch["record"]]
    finally:
        if started:
            ray.shutdown()
