"""The whole machine: the plan (processes x threads from the affinity mask), the pool of worker
processes (same records as one process, in order, errors named), the colour statistics (the same
numbers as before they were made faster), the exact top-k, and the GPU path's decoding and
normalisation (run on the CPU here).  Uses the shipped model and the bundled examples."""
from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import numpy as np
import pytest

from captioner import parallel
from captioner.training.checkpoint import DEFAULT_MODEL

EXAMPLES = sorted(p for p in (Path(__file__).resolve().parents[1] / "src/captioner/examples").iterdir()
                  if p.suffix in (".jpg", ".png"))
needs_model = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no shipped model")


def test_plan_follows_the_affinity_mask_and_the_device():
    assert 1 <= parallel.cores() <= len(os.sched_getaffinity(0))   # fewer where a CPU quota says so (below)
    inf = float("inf")   # memory enough for any number of processes (the memory's part: the next test)
    assert parallel.plan(n_cores=16, room_mb=inf) == parallel.Plan(16, 1, 16)   # one single-thread process a core
    assert parallel.plan(n_cores=16, threads=4, room_mb=inf) == parallel.Plan(4, 4, 16)
    assert parallel.plan(2, n_cores=16) == parallel.Plan(2, 8, 16)            # the cores shared out
    gpu = parallel.plan(n_cores=16, device="cuda:0")
    assert gpu == parallel.Plan(1, 16, 16, gpu=True) and gpu.batch_size == parallel.GPU_BATCH   # one process owns a GPU
    assert not parallel.plan(n_cores=1).pooled
    with pytest.raises(ValueError, match="processes -1"):
        parallel.plan(-1)


def test_plan_starts_no_more_processes_than_the_memory_holds():
    w = parallel.WORKER_MB
    # 16 cores, room for 5 processes: 5 of 3 threads each, every core still used
    assert parallel.plan(n_cores=16, room_mb=5.5 * w) == parallel.Plan(5, 3, 16)
    assert parallel.plan(n_cores=16, threads=4, room_mb=1.5 * w) == parallel.Plan(1, 4, 16)
    assert parallel.plan(n_cores=16, room_mb=0) == parallel.Plan(1, 16, 16)    # one process, all its threads
    assert parallel.plan(n_cores=2, room_mb=2 * w) == parallel.Plan(2, 1, 2)
    assert parallel.plan(8, n_cores=16, room_mb=0) == parallel.Plan(8, 2, 16)  # what the user asked for stands
    assert parallel.plan(n_cores=16, device="cuda", room_mb=0).gpu
    # the torch back-end's processes are larger: fewer of them in the same memory
    torch_mb = parallel.worker_mb("torch")
    assert parallel.plan(n_cores=16, room_mb=5.5 * w, per_process_mb=torch_mb) == parallel.Plan(3, 5, 16)
    assert parallel.worker_mb("onnx") == w < parallel.worker_mb("torch")
    # an ensemble's process holds each of its models
    assert parallel.worker_mb("onnx", 3) == w + 2 * parallel.MEMBER_MB
    assert parallel.members({"path": ["a", "b"]}) == 2 and parallel.members({"path": None}) == 1
    assert parallel.memory_mb() is None or parallel.memory_mb() > 0           # this machine's, read


def test_memory_room_reads_the_control_groups_limit(monkeypatch):
    """A container's limit (cgroup v2, as the group's root, or v1) counts when it leaves less than the
    machine's available memory; an unlimited group does not."""
    gib = 2 ** 30
    def fake(files):
        monkeypatch.setattr(parallel, "_read", lambda path: files.get(path))

    meminfo = "MemTotal: 67108864 kB\nMemAvailable: 33554432 kB\n"             # 32 GiB available
    fake({"/proc/meminfo": meminfo, "/proc/self/cgroup": "0::/\n",
          "/sys/fs/cgroup/memory.max": f"{4 * gib}\n", "/sys/fs/cgroup/memory.current": f"{gib}\n"})
    assert parallel.memory_mb() == 3 * 1024                                     # the container's 3 GiB left
    fake({"/proc/meminfo": meminfo, "/proc/self/cgroup": "0::/user.slice/app\n",   # the tightest ancestor
          "/sys/fs/cgroup/user.slice/app/memory.max": "max\n",
          "/sys/fs/cgroup/user.slice/app/memory.current": "5\n",
          "/sys/fs/cgroup/user.slice/memory.max": f"{2 * gib}\n",
          "/sys/fs/cgroup/user.slice/memory.current": f"{gib}\n"})
    assert parallel.memory_mb() == 1024
    fake({"/proc/meminfo": meminfo, "/proc/self/cgroup": "4:memory:/job\n0::/\n",
          "/sys/fs/cgroup/memory/job/memory.limit_in_bytes": "9223372036854771712\n",
          "/sys/fs/cgroup/memory/job/memory.usage_in_bytes": f"{gib}\n"})
    assert parallel.memory_mb() == 32 * 1024                                    # v1, unlimited: the machine's
    fake({"/proc/meminfo": meminfo, "/proc/self/cgroup": "4:memory:/job\n",
          "/sys/fs/cgroup/memory/memory.limit_in_bytes": f"{6 * gib}\n",        # v1, the group mounted as root
          "/sys/fs/cgroup/memory/memory.usage_in_bytes": f"{gib}\n"})
    assert parallel.memory_mb() == 5 * 1024
    fake({})
    assert parallel.memory_mb() is None                                         # not Linux: no limit known
    fake({"/proc/meminfo": "MemAvailable:\n", "/proc/self/cgroup": "garbage\n0::/\n",
          "/sys/fs/cgroup/memory.max": "12x\n", "/sys/fs/cgroup/memory.current": "\n"})
    assert parallel.memory_mb() is None                                         # unreadable: no limit, no crash


def test_cores_count_the_control_groups_cpu_quota(monkeypatch):
    """A container's --cpus (cgroup v2's cpu.max, v1's CFS quota) caps the cores, rounded up, the
    tightest of the group and its ancestors; no quota, or an unreadable one, leaves the affinity mask."""
    mask = len(os.sched_getaffinity(0))
    def fake(files):
        monkeypatch.setattr(parallel, "_read", lambda path: files.get(path))
        return parallel.cores()

    assert fake({"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "max 100000\n"}) == mask
    assert fake({"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "50000 100000\n"}) == 1
    assert fake({"/proc/self/cgroup": "0::/a/b\n", "/sys/fs/cgroup/a/b/cpu.max": "max 100000\n",
                 "/sys/fs/cgroup/a/cpu.max": "100000 100000\n"}) == 1            # the tightest ancestor
    assert fake({"/proc/self/cgroup": "3:cpu,cpuacct:/job\n0::/\n",               # v1
                 "/sys/fs/cgroup/cpu/job/cpu.cfs_quota_us": "-1\n",
                 "/sys/fs/cgroup/cpu/job/cpu.cfs_period_us": "100000\n"}) == mask
    assert fake({"/proc/self/cgroup": "3:cpu,cpuacct:/job\n",                       # v1, the group as root
                 "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "75000\n",
                 "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"}) == 1
    assert fake({"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "garbage\n"}) == mask
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert fake({"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "150000 100000\n"}) == 2   # 1.5: 2
    assert fake({"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "400000 100000\n"}) == 4
    assert fake({"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "3200000 100000\n"}) == 16  # the mask
    assert fake({}) == 16                                                            # not Linux: the mask


def _old_colour_features(images: np.ndarray) -> np.ndarray:
    """The colour statistics as the kind model was trained on them (the batch version they replace)."""
    q_levels = 16
    x = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    b = x.shape[0]
    q = np.minimum((x * q_levels).astype(np.int32), q_levels - 1)
    codes = (q[:, 0] * q_levels + q[:, 1]) * q_levels + q[:, 2]
    n = codes[0].size
    out = np.zeros((b, 12), np.float32)
    mx, mn = x.max(1), x.min(1)
    sat = (mx - mn) / np.maximum(mx, 1e-6)
    lum = x.mean(1)
    grad = np.abs(np.diff(lum, axis=2))[:, :-1, :] + np.abs(np.diff(lum, axis=1))[:, :, :-1]
    for i in range(b):
        counts = np.sort(np.bincount(codes[i].ravel(), minlength=q_levels ** 3))[::-1]
        out[i, :4] = counts[0] / n, counts[:4].sum() / n, counts[:16].sum() / n, \
            np.log1p((counts > 0).sum()) / np.log(q_levels ** 3)
    for j, v in enumerate((sat, sat < 0.08, mn > 0.92, mx < 0.08)):
        out[:, 4 + j] = v.reshape(b, -1).mean(1)
    out[:, 8] = lum.reshape(b, -1).std(1)
    for j, v in enumerate((grad < 0.01, grad > 0.25, grad)):
        out[:, 9 + j] = v.reshape(b, -1).mean(1)
    return out


def test_colour_statistics_are_the_same_numbers_as_before():
    from captioner.images import open_image
    from captioner.knowledge.kind import colour_features
    from captioner.preprocess import IMAGENET_MEAN, IMAGENET_STD, to_array, to_pixels

    x = np.stack([to_array(open_image(p)) for p in EXAMPLES])
    expected = _old_colour_features(to_pixels(x))
    assert np.array_equal(colour_features(to_pixels(x)), expected)                    # bit for bit
    assert np.array_equal(colour_features(x, IMAGENET_MEAN, IMAGENET_STD), expected)  # from the encoder's input


def test_top_k_is_a_stable_argsort():
    from captioner.knowledge.tags import top_k

    rng = np.random.default_rng(0)
    p = np.round(rng.random((50, 1000)), 2)   # many ties
    assert np.array_equal(top_k(p, 5), np.argsort(-p, axis=1, kind="stable")[:, :5])


@needs_model
def test_pool_gives_the_records_of_one_process_in_order(tmp_path):
    from captioner.api import Captioner
    from captioner.library.results import record

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    paths = [str(p) for p in EXAMPLES[:5]] + [str(bad)] + [str(p) for p in EXAMPLES[5:]]
    cap = Captioner(threads=1, read_text="never")
    one = [record(p, r) for p, r in cap.caption_paths(paths, batch_size=2, processes=1)]
    pooled = [record(p, r) for p, r in cap.caption_paths(paths, batch_size=2, processes=2)]
    assert pooled == one
    assert [r["image"] for r in pooled] == paths and "error" in pooled[5]


@needs_model
def test_bytes_are_captioned_as_their_files_in_one_process_and_in_the_pool(tmp_path):
    """``images.Blob``s (the pictures inside a document) go through the same batches as paths, pooled or
    not: the records of their files, under their names; a bad one is named and stops nothing."""
    from captioner.api import Captioner
    from captioner.images import Blob
    from captioner.library.results import record

    paths = [str(p) for p in EXAMPLES]
    blobs = [Blob(f"doc.docx!media/{p.name}", p.read_bytes()) for p in EXAMPLES]
    blobs.insert(3, Blob("doc.docx!media/broken.png", b"not a png"))
    cap = Captioner(threads=1, read_text="auto")
    files = [record(p, r) for p, r in cap.caption_paths(paths, batch_size=2, processes=1)]
    for processes in (1, 2):
        got = [(str(b), r) for b, r in cap.caption_paths(blobs, batch_size=2, processes=processes)]
        assert [name for name, _ in got] == [b.name for b in blobs]
        assert got[3][1] == "doc.docx!media/broken.png: not an image file (unrecognised format)"
        del got[3]
        for (name, res), rec in zip(got, files, strict=True):
            assert {**record(name, res), "image": rec["image"]} == rec


@needs_model
def test_a_script_without_a_main_guard_captions_through_the_pool(tmp_path):
    """Spawned workers do not run the user's script again: one without ``if __name__ == "__main__":``
    captions several batches through the pool, each image once, and keeps its own ``__file__``."""
    import subprocess
    import sys

    script = tmp_path / "plain.py"
    script.write_text("import captioner\n"
                      "model = captioner.load(read_text='never')\n"
                      f"paths = {[str(p) for p in EXAMPLES[:3]] * 2!r}\n"
                      "for path, result in model.caption_paths(paths, batch_size=2, processes=2):\n"
                      "    print(result if isinstance(result, str) else result.alt_text)\n"
                      "print('file', __file__)\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert len(lines) == 7 and lines[-1] == f"file {script}"
    assert lines[:3] == lines[3:6] and all(lines[:6])


@needs_model
def test_pool_names_a_model_that_cannot_load(tmp_path):
    missing = tmp_path / "missing.safetensors"
    with pytest.raises((ValueError, OSError), match="missing.safetensors"):
        list(parallel.caption_paths({"path": str(missing)}, [str(p) for p in EXAMPLES], batch_size=2, processes=2))


def _semaphores() -> set[str]:
    """multiprocessing's named semaphores (Linux shows them in /dev/shm)."""
    shm = Path("/dev/shm")
    return {p.name for p in shm.glob("sem.mp-*")} if shm.is_dir() else set()


@needs_model
def test_pool_uploads_and_a_bad_upload():
    """Uploads are captioned, a bad one named; and a pool closed the normal way is not marked failed and
    leaves none of its queues' named semaphores (a server stopped by SIGTERM never reaches the
    interpreter's exit, where they would otherwise go, and Python warned of "leaked semaphores")."""
    from captioner.images import ImageError

    before = _semaphores()
    with parallel.CaptionPool({"read_text": "never"}, parallel.plan(2, 1)) as pool:
        good = pool.submit_bytes(EXAMPLES[0].read_bytes(), EXAMPLES[0].name)
        bad = pool.submit_bytes(b"nonsense", "x.jpg")
        assert good.result(timeout=120).text
        with pytest.raises(ImageError, match="x.jpg"):
            bad.result(timeout=120)
        time.sleep(2 * parallel._POLL_S)   # the reader has polled an empty queue, as it does between tasks
    assert pool.failed is None
    assert _semaphores() <= before


@needs_model
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_device_batches_match_the_cpu_path(tmp_path, monkeypatch):
    """The GPU path (decoding processes, uint8 pixels normalised by the back-end), run on the CPU, with
    the pixels handed over through shared memory and through the pipe: the same arrays either way,
    a broken file named, and no shared memory block left behind."""
    from captioner import shared_batches
    from captioner.api import Captioner
    from captioner.images import Blob

    cap = Captioner(backend="torch", device="cpu", precision="fp32", read_text="never", threads=1)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    paths = [str(p) for p in EXAMPLES[:2]] + [str(broken)] + [str(p) for p in EXAMPLES[2:5]]
    paths.append(Blob("doc.epub!images/photo.jpg", EXAMPLES[0].read_bytes()))   # a picture inside a document
    plain = list(cap._batches(paths, 2))
    def blocks():   # shared memory blocks (psm_*; other processes' semaphores come and go beside them)
        return {f for f in os.listdir(shared_batches.SHM_DIR) if f.startswith("psm_")}

    shm = blocks() if os.path.isdir(shared_batches.SHM_DIR) else set()
    rings, ring = [], shared_batches.Ring
    monkeypatch.setattr(shared_batches, "Ring", lambda *a: rings.append(a) or ring(*a))
    shared = list(cap._device_batches(paths, 2, workers=1))
    assert rings == [(3, 2 * cap.sizes[0] ** 2 * 3)]                 # one block per batch in flight
    monkeypatch.setattr(shared_batches, "room_for", lambda nbytes: False)
    piped = list(cap._device_batches(paths, 2, workers=1))
    if os.path.isdir(shared_batches.SHM_DIR):
        assert blocks() == shm
    assert any(err and "broken.jpg" in err for b, _, _ in plain for _, err in b)
    for (b1, i1, x1), (b2, i2, x2, colour), (b3, i3, x3, colour3) in zip(plain, shared, piped, strict=True):
        assert b1 == b2 == b3 and i1 == i2 == i3
        size = cap.sizes[0]
        assert np.array_equal(x1[size], x2[size].numpy())            # the same normalised numbers
        assert np.array_equal(x2[size].numpy(), x3[size].numpy())
        assert np.array_equal(colour, cap._colour(x1)) and np.array_equal(colour, colour3)
        assert [c.text for c in cap.caption_tensors(x1)] == [c.text for c in cap.caption_tensors(x2, colour=colour)]


class StoppedRun:
    """A pooled library run (2 workers, batches of 2) over 48 copies of the bundled photos, to be stopped
    once its first record is written; ``finish`` checks that the records kept are whole and that the
    same command again captions exactly the photos that were missing."""

    def __init__(self, tmp_path, **popen):
        import subprocess
        import sys
        import time

        self.photos = tmp_path / "photos"
        self.photos.mkdir()
        for i in range(12):
            for p in EXAMPLES:
                if p.suffix == ".jpg":
                    (self.photos / f"{i}_{p.name}").write_bytes(p.read_bytes())
        self.out = tmp_path / "out.jsonl"
        self.cmd = [sys.executable, "-m", "captioner", "caption", str(self.photos), "--output", str(self.out),
                    "--batch-size", "2", "--processes", "2", "--read-text", "never"]
        self.proc = subprocess.Popen(self.cmd, stderr=subprocess.PIPE, text=True, **popen)
        deadline = time.time() + 300
        while time.time() < deadline and (not self.out.exists() or not self.out.read_text().strip()):
            time.sleep(0.2)

    def children(self) -> list[int]:
        import subprocess

        return [int(k) for k in subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                                               text=True).stdout.split()]

    def finish(self) -> None:
        import json
        import subprocess

        first = [json.loads(line) for line in self.out.read_text().splitlines()]
        total = len(list(self.photos.iterdir()))
        assert 0 < len(first) < total
        subprocess.run(self.cmd, check=True, capture_output=True)
        recs = [json.loads(line) for line in self.out.read_text().splitlines()]
        assert len(recs) == total and len({r["image"] for r in recs}) == total
        assert recs[:len(first)] == first


@needs_model
@pytest.mark.slow
def test_ctrl_c_stops_the_workers_and_a_rerun_finishes(tmp_path):
    """Ctrl-C during a pooled library run: exit 130 within seconds, no worker left, every record
    written is whole, and the rerun captions exactly the photos that were missing."""
    import signal
    import time

    # SIGINT as a terminal delivers it: a shell starts background jobs with SIGINT ignored, and a child inherits
    # that (a suite run with `nohup … &` then saw the run finish with 0, deaf to the signal)
    run = StoppedRun(tmp_path, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    run.proc.send_signal(signal.SIGINT)
    t = time.time()
    assert run.proc.wait(60) == 130
    assert time.time() - t < 30
    assert not run.children()
    run.finish()


@needs_model
@pytest.mark.slow
def test_a_killed_worker_ends_the_run_with_a_clear_error_and_a_rerun_finishes(tmp_path):
    """A worker killed mid-run (SIGKILL, as the out-of-memory killer does): the run ends with one line
    that names the worker and the signal, no traceback, exit status 1, no process left; the records
    written are whole, and the rerun captions exactly the photos that were missing."""
    import signal

    run = StoppedRun(tmp_path)
    workers = [k for k in run.children() if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]
    assert len(workers) == 2, run.children()
    os.kill(workers[0], signal.SIGKILL)
    _, err = run.proc.communicate(timeout=60)
    assert run.proc.returncode == 1, err
    assert "Traceback" not in err, err
    assert "captioner: error: worker process captioner-worker-" in err and "was killed by SIGKILL" in err, err
    assert f"every photo captioned before it is in {run.out}" in err, err
    assert not still_running(workers[1:], 10)
    run.finish()


@needs_model
def test_the_examples_give_the_numbers_they_gave_before_the_speed_work():
    """Bit-identical where the arithmetic did not change: the records of the bundled examples as
    commit 3522a2b wrote them (tests/fixtures/README.md), in one process and from the pool."""
    import json

    from captioner.api import Captioner

    expected = json.loads((Path(__file__).parent / "fixtures" / "examples_3522a2b.json").read_text())
    cap = Captioner(read_text="never")
    keys = [k for k in expected[0] if k != "image"]
    for processes in (1, 2):
        got = [{"image": Path(p).name, **{k: r.to_dict()[k] for k in keys}}
               for p, r in cap.caption_paths([str(p) for p in EXAMPLES], 4, processes=processes)]
        assert got == expected, processes


def still_running(pids: list[int], seconds: float) -> list[int]:
    """Those of ``pids`` still running (not gone, not a zombie) after waiting up to ``seconds`` for all to end."""
    import subprocess
    import time

    def running(pid: int) -> bool:
        if subprocess.run(["kill", "-0", str(pid)], capture_output=True, check=False).returncode != 0:
            return False
        ps = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True, check=False)
        return "Z" not in ps.stdout

    deadline, alive = time.time() + seconds, list(pids)
    while alive and time.time() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if running(p)]
    return alive


@needs_model
@pytest.mark.parametrize("when", ["ready", "loading"])
def test_workers_do_not_outlive_a_killed_parent(tmp_path, when):
    """A parent killed with SIGKILL cannot close its pool: its workers notice and exit on their own,
    also when it dies while they are still loading the model."""
    import signal
    import subprocess
    import sys

    code = ("import sys, time\n"
            "from captioner.parallel import CaptionPool, Plan\n"
            "class Pool(CaptionPool):\n"
            "    def _wait_ready(self):\n"
            "        if LOADING:   # the workers are still loading: the parent dies now\n"
            "            print(' '.join(str(p.pid) for p in self.procs), flush=True)\n"
            "            time.sleep(600)\n"
            "        super()._wait_ready()\n"
            "if __name__ == '__main__':\n"
            f"    LOADING = {when == 'loading'}\n"
            "    pool = Pool({'read_text': 'never'}, Plan(processes=2, threads=1, cores=2))\n"
            "    print(' '.join(str(p.pid) for p in pool.procs), flush=True)\n"
            "    time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    kids = [int(x) for x in parent.stdout.readline().split()]
    assert len(kids) == 2
    parent.send_signal(signal.SIGKILL)
    parent.wait(30)
    alive = still_running(kids, 40)   # a worker that was loading finishes that first
    assert not alive, f"workers {alive} outlived their parent"


@needs_model
def test_decoding_processes_do_not_outlive_a_killed_driver(tmp_path):
    """The GPU path's decoding processes (run on the CPU here) end when the process they decode for is
    killed with SIGKILL, and the shared memory blocks of its ring go with them."""
    import signal
    import subprocess
    import sys
    import time

    from captioner import shared_batches

    def blocks():
        return {f for f in os.listdir(shared_batches.SHM_DIR) if f.startswith("psm_")}

    shm = blocks() if os.path.isdir(shared_batches.SHM_DIR) else set()
    code = ("import sys, time\n"
            "from captioner.api import Captioner\n"
            "if __name__ == '__main__':\n"
            "    cap = Captioner(backend='torch', device='cpu', read_text='never', threads=1)\n"
            f"    paths = {[str(p) for p in EXAMPLES] * 20!r}\n"
            "    batches = cap._device_batches(paths, 2, workers=2)\n"
            "    next(batches)\n"
            "    print('decoding', flush=True)\n"
            "    time.sleep(600)\n")
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    assert driver.stdout.readline().strip() == "decoding"
    kids = [int(x) for x in subprocess.run(["ps", "-o", "pid=", "--ppid", str(driver.pid)], capture_output=True,
                                           text=True).stdout.split()]
    assert len(kids) >= 2    # the decoding processes (and multiprocessing's resource tracker)
    if os.path.isdir(shared_batches.SHM_DIR):
        assert blocks() - shm                   # its ring is there
    driver.send_signal(signal.SIGKILL)
    driver.wait(30)
    alive = still_running(kids, 30)
    assert not alive, f"decoding processes {alive} outlived the process they decoded for"
    if os.path.isdir(shared_batches.SHM_DIR):
        time.sleep(1)
        assert blocks() <= shm, "the ring's shared memory was left behind"


def test_search_top_k_passes_select_what_a_partition_does():
    """The search's top-k (argmax passes) gives argpartition's values, distinct indices where a row has
    fewer than k finite values, and lowest index first among equal values."""
    from captioner.search import _topk_select, topk

    rng = np.random.default_rng(0)
    for trial in range(300):
        x = rng.normal(size=(int(rng.integers(1, 12)), int(rng.integers(17, 300)))).astype(np.float32)
        x[rng.random(x.shape) < rng.random()] = -np.inf          # from none to nearly all -inf
        if trial % 3 == 0:
            x = np.round(x)                                       # many equal values
        k = int(rng.integers(1, 18))
        vals, idx = topk(x, k)
        want_vals, want_idx = _topk_select(x, k)
        assert np.array_equal(vals, want_vals)
        assert np.array_equal(np.take_along_axis(x, idx, -1), vals)
        assert all(len(set(row)) == k for row in idx.tolist())
        if trial % 3:                                             # no ties among finite values
            finite = np.isfinite(vals)
            assert np.array_equal(idx[finite], want_idx[finite])
    assert topk(np.array([[1.0, 3.0, 3.0, 2.0]], np.float32), 2)[1].tolist() == [[1, 2]]


def test_knowledge_scores_a_batch_where_it_lies():
    """The ImageNet head and the domain distance in numpy are the numbers of their first, numpy-only
    formulas, bit for bit; on torch tensors (where a GPU batch is scored) the same within float error."""
    torch = pytest.importorskip("torch")
    from captioner.knowledge.domain import DomainCheck
    from captioner.knowledge.tags import Tagger
    from captioner.vocab import Vocab

    rng = np.random.default_rng(1)
    pooled = np.abs(rng.normal(0, 1, (40, 64))).astype(np.float32)
    bank = rng.normal(0, 1, (500, 64)).astype(np.float32)
    check = DomainCheck.fit(bank, dims=16, k=10)
    weight, bias = rng.normal(0, 0.1, (1000, 64)).astype(np.float32), rng.normal(0, 0.1, 1000).astype(np.float32)
    tagger = Tagger(weight, bias, Vocab(["<pad>", "<start>", "<end>", "<unk>", "dog"]))

    x = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    sims = (x @ check.proj) @ check.bank.T
    old_dist = (1.0 - np.sort(np.partition(sims, sims.shape[1] - 10, axis=1)[:, -10:], axis=1).mean(1)).astype(np.float32)
    z = pooled @ weight.T + bias
    z = np.exp(z - z.max(1, keepdims=True))
    old_probs = z / z.sum(1, keepdims=True)
    assert np.array_equal(check.distance(pooled), old_dist)
    assert np.array_equal(tagger.probs(pooled), old_probs)

    t = torch.from_numpy(pooled)
    dist, probs = check.distance(t), tagger.probs(t)
    assert isinstance(dist, torch.Tensor) and isinstance(probs, torch.Tensor)
    np.testing.assert_allclose(dist.numpy(), old_dist, atol=1e-5)
    np.testing.assert_allclose(probs.numpy(), old_probs, rtol=1e-4, atol=1e-7)


@pytest.mark.skipif(not os.path.exists("/proc/self"), reason="Linux's device nodes")
@pytest.mark.parametrize("nodes", [False, True])
def test_planning_for_the_torch_back_end_imports_torch_only_where_a_gpu_may_be(nodes):
    """A pool's parent never loads the model, so it must not import torch just to learn there is no
    GPU (half a gigabyte held all run): without GPU device nodes the plan is made without it; with
    them (faked here by a file that exists) torch is asked, and says what this machine has."""
    import subprocess
    import sys

    code = ("import sys; from captioner import parallel, runtime; "
            f"runtime._GPU_NODES = {(sys.executable,) if nodes else ()!r}; "
            "p = parallel.plan_for({'backend': 'torch'}); print(p.gpu, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    if not nodes:
        assert out == ["False", "False"]
    else:
        import torch

        assert out == [str(torch.cuda.is_available()), "True"]
