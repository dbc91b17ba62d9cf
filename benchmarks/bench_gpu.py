"""The GPU check (``benchmarks/bench_gpu.sh PHOTOS_DIR`` runs this): one command, a few minutes, nothing
installed, one JSON summary on stdout (progress on stderr).

    bash benchmarks/bench_gpu.sh ../shared/flickr8k/Images          # or any folder of photos

What it measures, each part skipped with a note where the machine lacks what it needs:

* ``cpu_reference``: the photos captioned on the CPU with the default back-end (ONNX Runtime, every
  core: ``parallel.py``), beam 3; its captions are the reference the GPU runs are compared with.
* ``torch_cuda``: the torch back-end on the GPU from JPEG files (decoding processes, uint8 pixels
  normalised on the device: ``api.Captioner._device_batches``), per batch size and beam, fp32 and
  the bf16 decoder; each run repeats the photo list until ``--seconds`` have passed, after one
  warm-up batch; images/s, the GPU's mean utilisation (``nvidia-smi``, sampled every 100 ms) and
  the share of captions identical to the CPU's.
* ``main_process_profile``: where the one process driving the GPU spends its time (cProfile, batch 256):
  with ``main_process_cpu_pct`` of each run near 100 %, that process, not the GPU, sets the rate.
* ``decoder_compiled``: whether ``torch.compile`` pays for the decoder's step (the search alone on one
  batch, eager against compiled, the same captions or not).
* ``encoder_alone``: the encoder on random device tensors (fp32, and bf16 autocast): the ceiling.
* ``decoding_alone``: the decoding processes alone (files -> uint8 pixels + colour statistics), the
  pixels back through shared memory and through the pipe, with the receiving process's CPU an image.
* ``onnx_cuda``: ONNX Runtime's CUDA provider, where ``onnxruntime-gpu`` is installed.
* ``training``: ``captioner train --init --init-mode continue`` for one frozen-stage and one
  fine-tuning epoch on these photos, with the CPU's captions (3 beams each) as their captions:
  seconds and captions/s per stage (dev evaluation included).  Only a timing: the run's model is
  deleted.  Give it photos from a training split if any model selection could ever see them.

Without a GPU (this is how it is tested on a CPU machine) the GPU parts are skipped, the training
part runs on the CPU on a few photos as a dry run, and the summary says so.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from captioner.images import IMAGE_SUFFIXES  # noqa: E402


def log(msg: str) -> None:
    print(f"[bench_gpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Summary(dict):
    """The JSON summary, rewritten to ``path`` after every part, so that what was measured survives a
    part that fails or the wrapper's time limit; ``part`` runs one part and keeps its error instead
    of losing the rest (a GPU is lent for minutes)."""

    def __init__(self, path: str | None, **fields):
        super().__init__(**fields)
        self.path = path

    def save(self) -> None:
        if self.path:
            Path(self.path).write_text(json.dumps(self, indent=1))

    def part(self, key: str, fn, *args, **kwargs):
        try:
            self[key] = fn(*args, **kwargs)
        except Exception:   # noqa: BLE001 - any failure of one part is reported, the others still run
            import traceback

            self[key] = {"error": traceback.format_exc()[-2000:]}
            log(f"{key} failed: {self[key]['error'].strip().splitlines()[-1]}")
        self.save()
        return self[key]


class Utilisation:
    """Mean GPU utilisation (%) while the block runs, from ``nvidia-smi`` every 100 ms (None without it)."""

    def __init__(self, index: int = 0):
        self.index, self.samples, self.proc = index, [], None

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", "-i", str(self.index), "--query-gpu=utilization.gpu",
                                          "--format=csv,noheader,nounits", "-lms", "100"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            if line.strip().isdigit():
                self.samples.append(int(line.strip()))

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)

    @property
    def mean(self):
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def photos_in(folder: Path, limit: int) -> list[str]:
    found = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not found:
        raise SystemExit(f"{folder}: no photos in it")
    return found[:limit]


def timed_captions(cap, paths: list[str], batch_size: int, beam: int, seconds: float, workers: int = 0) -> dict:
    """Caption the photo list, repeated, in one call (one set of decoding processes) until about
    ``seconds`` have passed, after a warm-up batch -> images/s (with and without the decoding
    processes' start), and the captions of the first pass."""
    list(cap.caption_paths(paths[:batch_size], batch_size, workers, beam_size=beam, processes=1, attention=False))
    longest = max(50_000, 4 * batch_size)
    repeated = paths * max(1, longest // len(paths))
    first: dict = {}
    n, t0, t_first, cpu0 = 0, time.perf_counter(), None, time.process_time()
    for path, res in cap.caption_paths(repeated, batch_size, workers, beam_size=beam, processes=1, attention=False):
        n += 1
        if n <= len(paths):
            first[path] = res if isinstance(res, str) else res.text
        if n == batch_size:   # the first batch is out: the decoding processes have started
            t_first = time.perf_counter()
        if n % batch_size == 0 and time.perf_counter() - t0 >= seconds:
            break
    end = time.perf_counter()
    # this process's own CPU time (its threads together) over the wall time: near 100 %, the one
    # process that drives the GPU is what limits the rate, not the GPU
    busy = 100 * (time.process_time() - cpu0) / (end - t0)
    steady = (n - batch_size) / (end - t_first) if t_first and n > batch_size and end > t_first else None
    return {"images": n, "seconds": round(end - t0, 2), "images_per_s": round(n / (end - t0), 1),
            "images_per_s_after_first_batch": round(steady, 1) if steady else None,
            "main_process_cpu_pct": round(busy, 1), "captions": first}


def identical(a: dict, b: dict) -> float | None:
    keys = [k for k in a if k in b]
    return round(sum(a[k] == b[k] for k in keys) / len(keys), 4) if keys else None


def cpu_reference(paths: list[str]) -> tuple[dict, dict]:
    from captioner import parallel

    t = time.perf_counter()
    caps, beams = {}, {}
    for path, res in parallel.caption_paths({"backend": "onnx", "device": "cpu", "read_text": "never"}, paths,
                                            n_best=3, attention=False):
        if not isinstance(res, str):
            caps[path], beams[path] = res.text, [b for b, _ in res.beams] or [res.text]
    wall = time.perf_counter() - t
    return ({"backend": "onnx", "plan": str(parallel.plan()), "images": len(paths), "seconds": round(wall, 2),
             "images_per_s_process_start_included": round(len(paths) / wall, 1)}, {"captions": caps, "beams": beams})


def torch_cuda(paths: list[str], ref: dict, seconds: float, batches: list[int], deadline: float,
               device: str = "cuda", precisions=("fp32", "bf16")) -> dict:
    """The torch back-end from files on ``device`` (cuda; cpu only to dry-run this code)."""
    import torch

    from captioner.api import Captioner

    cuda = device.startswith("cuda")
    out = {"device": torch.cuda.get_device_name(0) if cuda else device, "runs": []}
    for precision in precisions:
        cap = Captioner(backend="torch", device=device, precision=precision, read_text="never")
        mid = batches[min(1, len(batches) - 1)]
        configs = ([(b, 3) for b in batches] + ([(mid, 1)] if cuda else [])) if precision == "fp32" else [(mid, 3)]
        for batch, beam in configs:
            if time.time() > deadline:
                out["runs"].append({"skipped": f"batch {batch} beam {beam} {precision}: out of time"})
                continue
            log(f"torch cuda {precision}, batch {batch}, beam {beam}")
            with Utilisation() as u:
                r = timed_captions(cap, paths, batch, beam, seconds)
            caps = r.pop("captions")
            out["runs"].append({"precision": precision, "batch": batch, "beam": beam, **r,
                                "gpu_utilisation_pct": u.mean,
                                "identical_to_cpu": identical(caps, ref["captions"]) if beam == 3 else None})
        del cap
        if cuda:
            torch.cuda.empty_cache()
    return out


def main_process_profile(paths: list[str], batch: int, seconds: float, device: str = "cuda", top: int = 20) -> dict:
    """Where the driving process spends its time while the GPU captions (cProfile, one run of about
    ``seconds``): the ``top`` functions by their own time.  Under the profiler everything is slower;
    the shares are what guides the next step."""
    import cProfile
    import pstats

    from captioner.api import Captioner

    cap = Captioner(backend="torch", device=device, read_text="never")
    list(cap.caption_paths(paths[:batch], batch, beam_size=3, processes=1, attention=False))
    prof = cProfile.Profile()
    prof.enable()
    r = timed_captions(cap, paths, batch, 3, seconds)
    prof.disable()
    stats = pstats.Stats(prof)
    total = sum(v[2] for v in stats.stats.values())
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return {"batch": batch, "images": r["images"], "images_per_s_under_profiler": r["images_per_s"],
            "own_time_share": [{"function": f"{Path(f).name}:{line} {name}", "calls": v[1],
                                "share_pct": round(100 * v[2] / total, 1)} for (f, line, name), v in rows]}


def decoder_compiled(paths: list[str], device: str = "cuda", batch: int = 256, reps: int = 3) -> dict:
    """Whether ``torch.compile`` pays for the decoder's step: the beam-3 search alone on one batch of
    these photos' features, the step eager and then compiled (dynamic shapes: the rows shrink as
    images end) -> images/s each, the compile time, and whether the captions are the same.  On this
    2-core CPU (batch 8): 22 s to compile, then as fast as eager, the same captions."""
    import torch

    from captioner.api import Captioner, _sequence
    from captioner.images import open_image
    from captioner.search import generate

    cap = Captioner(backend="torch", device=device, precision="fp32", read_text="never")
    chosen = (paths * (batch // len(paths) + 1))[:batch]
    x = np.stack([cap.preprocess(open_image(p)) for p in chosen])
    feats = _sequence(cap.model.encode(x))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run():
        out = generate(cap.model, feats, 3)
        sync()
        return [h[0].tokens if h else None for h in out]

    def rate():
        t = time.perf_counter()
        for _ in range(reps):
            run()
        return round(reps * batch / (time.perf_counter() - t), 1)

    dec = cap.model.decoder.decoder
    # the fused fp32 step itself (``step`` checks the weights' versions first, which dynamo cannot follow)
    name = "_fused_step" if getattr(dec, "_fused_ready", lambda: False)() else "step"
    eager_tokens = run()
    out = {"batch": batch, "compiled": name, "eager_images_per_s": rate()}
    try:
        t = time.perf_counter()
        setattr(dec, name, torch.compile(getattr(dec, name)))   # dynamic shapes once the rows first change
        compiled_tokens = run()
        out["compile_and_first_run_s"] = round(time.perf_counter() - t, 1)
        out["compiled_images_per_s"] = rate()
        out["identical_captions"] = round(sum(a == b for a, b in zip(eager_tokens, compiled_tokens)) / batch, 4)
    except Exception as e:   # no compiler back-end here (e.g. no Triton): say so, keep the rest
        out["compile_error"] = f"{type(e).__name__}: {str(e)[:300]}"
    finally:
        dec.__dict__.pop(name, None)
    return out


def encoder_alone(batches: list[int], device: str = "cuda", reps: int = 10) -> dict:
    """The encoder on random images on ``device`` (fp32, and bf16 autocast) -> images/s per batch size."""
    import torch

    from captioner.backends.torch import TorchModel

    dev = torch.device(device)
    m = TorchModel(None, dev, "fp32")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    out = {}
    for batch in batches:
        x = torch.randn(batch, 3, m.preprocess.size, m.preprocess.size, device=dev)
        for name, ctx in (("fp32", torch.autocast(dev.type, enabled=False)),
                          ("bf16", torch.autocast(dev.type, dtype=torch.bfloat16))):
            with ctx:
                for _ in range(2):
                    m.encode(x)
                sync()
                t = time.perf_counter()
                for _ in range(reps):
                    m.encode(x)
                sync()
            out[f"{name}, batch {batch}"] = round(reps * batch / (time.perf_counter() - t), 1)
    return out


def decoding_alone(paths: list[str], workers: int, seconds: float, batch: int = 64) -> dict:
    """The decoding processes alone, ``workers`` of them, for about ``seconds`` each way the pixels can
    come back (a shared memory ring, the pipe) -> images/s, and the CPU time the receiving process
    spends an image (the process that would be driving the GPU)."""
    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    from captioner import modelfile
    from captioner.preprocess import decode_batch
    from captioner.shared_batches import Ring, room_for

    size = json.loads(modelfile.read(None).header["preprocess"])["size"]
    chunks = [paths[i:i + batch] for i in range(0, len(paths), batch)]
    in_flight = 2 * workers
    out = {"processes": workers, "batch": batch, "size": size}
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(decode_batch, chunks[:1] * workers, [size] * workers))   # start the processes
        for way in ("shared memory", "pipe"):
            if way == "shared memory" and not room_for(in_flight * batch * size * size * 3):
                out[way] = {"skipped": "/dev/shm has too little room"}
                continue
            ring = Ring(in_flight, batch * size * size * 3) if way == "shared memory" else None
            try:
                pending, n, i = deque(), 0, 0
                t, cpu = time.perf_counter(), time.process_time()
                while time.perf_counter() - t < seconds or pending:
                    while len(pending) < in_flight and time.perf_counter() - t < seconds:
                        slot = ring.lend() if ring else None
                        pending.append((slot, pool.submit(decode_batch, chunks[i % len(chunks)], size, slot=slot)))
                        i += 1
                    slot, fut = pending.popleft()
                    errors, pixels, _ = fut.result()
                    if slot is not None:
                        ring.take(slot, (pixels or 0, size, size, 3))
                    n += len(errors)
                wall, cpu = time.perf_counter() - t, time.process_time() - cpu
            finally:
                if ring:
                    ring.close()
            out[way] = {"images": n, "images_per_s": round(n / wall, 1),
                        "receiving_process_cpu_ms_per_image": round(1e3 * cpu / n, 4)}
    return out


def onnx_cuda(paths: list[str], ref: dict, seconds: float) -> dict:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return {"skipped": "onnxruntime here has no CUDA provider (onnxruntime-gpu is not installed)"}
    from captioner.api import Captioner

    cap = Captioner(backend="onnx", device="cuda", read_text="never")
    with Utilisation() as u:
        r = timed_captions(cap, paths, 256, 3, seconds)
    caps = r.pop("captions")
    return {**r, "gpu_utilisation_pct": u.mean, "identical_to_cpu": identical(caps, ref["captions"])}


def training(paths: list[str], ref: dict, device: str, work: Path, epochs: tuple[int, int], timeout: float,
             larger: int = 256) -> dict:
    """Frozen and fine-tuning epochs on these photos with the CPU's beams as captions -> per-stage rates;
    then, time allowing, the frozen stage again with ``larger`` captions a batch instead of the recipe's 64
    (whether larger batches pay in speed; whether they keep the recipe's results takes a whole run)."""
    import csv

    data = work / "train.csv"
    names = [p for p in paths if p in ref["beams"]]
    n_dev = max(2, len(names) // 20)
    (work / "images").mkdir()
    with open(data, "w", newline="") as f:   # the images by relative names (links), as the csv layout reads them
        w = csv.writer(f)
        w.writerow(["image", "caption", "split"])
        for i, p in enumerate(names):
            link = work / "images" / f"{i:05d}{Path(p).suffix.lower()}"
            link.symlink_to(Path(p).resolve())
            for c in ref["beams"][p]:
                w.writerow([f"images/{link.name}", c, "dev" if i < n_dev else "train"])
    captions = sum(len(ref["beams"][p]) for p in names[n_dev:])
    # this checkout's src first, then what bench_gpu.sh added (wheels unpacked for this run)
    path = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path, "CAPTIONER_CACHE": str(work / "cache")}
    end = time.time() + timeout

    def run(name: str, frozen: int, finetune: int, *more: str) -> dict:
        out_dir = work / name
        cmd = [sys.executable, "-m", "captioner", "train", "--data", str(data), "--layout", "csv", "--out",
               str(out_dir), "--init", "--init-mode", "continue", "--epochs", str(frozen), "--finetune-epochs",
               str(finetune), "--device", device, "--eval-beam", "1", "--workers", str(min(8, os.cpu_count() or 1)),
               "--feature-cache", str(work / "features.npy"), "--no-calibrate", *more]   # grids computed once
        t = time.perf_counter()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=max(end - time.time(), 1),
                               check=False)
        except subprocess.TimeoutExpired:
            return {"skipped": "out of time"}
        if r.returncode:
            return {"error": r.stderr[-1500:]}
        history = json.loads((out_dir / "history.json").read_text())
        return {"wall_s_process": round(time.perf_counter() - t, 1),
                "epochs": [{"stage": h["stage"], "seconds": h["seconds"],
                            "captions_per_s": round(captions / h["seconds"], 1) if h["seconds"] else None}
                           for h in history]}

    out = {"device": device, "train_captions_per_epoch": captions, **run("recipe", *epochs),
           "note": "seconds per epoch include the dev evaluation (beam 1)"}
    if "epochs" in out and end - time.time() > 45:
        out[f"frozen_batch_{larger}"] = run(f"batch{larger}", epochs[0], 0, "--batch-size", str(larger))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photos", help="a folder of photos (JPEG, PNG, ...), searched recursively")
    ap.add_argument("--limit", type=int, default=500, help="at most this many photos")
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each timed GPU run")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for the whole check; parts past it are skipped")
    ap.add_argument("--json", default=None, help="also write the summary to this file (rewritten after each part)")
    args = ap.parse_args()
    start = time.time()
    deadline = start + args.budget
    # the wrapper's time limit sends SIGTERM: end through the finally below, which prints what was measured
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))
    import onnxruntime as ort

    from captioner import parallel

    paths = photos_in(Path(args.photos), args.limit)
    try:   # the room for the decoded batches' shared memory ring (shared_batches.py)
        st = os.statvfs("/dev/shm")
        shm_free_gb = round(st.f_bavail * st.f_frsize / 2 ** 30, 2)
    except OSError:
        shm_free_gb = None
    summary = Summary(args.json, photos=len(paths), cores=parallel.cores(), dev_shm_free_gb=shm_free_gb,
                      onnxruntime=ort.__version__, onnxruntime_providers=ort.get_available_providers(), notes=[])
    try:
        import torch

        summary["torch"] = torch.__version__
        gpu = torch.cuda.is_available()
    except ImportError:
        torch, gpu = None, False
        summary["notes"].append("torch is not installed: the torch back-end, the GPU and training are skipped")
    summary["gpu"] = torch.cuda.get_device_name(0) if gpu else None
    work = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    try:
        log(f"{len(paths)} photos; CPU reference (ONNX Runtime, {parallel.plan()})")
        summary["cpu_reference"], ref = cpu_reference(paths)   # every later part compares with it
        summary.save()
        if gpu:
            batches = [64, 256] + ([1024] if len(paths) >= 256 else [])
            summary.part("torch_cuda", torch_cuda, paths, ref, args.seconds, batches, deadline - 150)
            if time.time() < deadline - 140:
                log("main process profile")
                summary.part("main_process_profile", main_process_profile, paths, 256, min(args.seconds, 10))
            if time.time() < deadline - 200:
                log("decoder step compiled")
                summary.part("decoder_compiled", decoder_compiled, paths, "cuda", 256)
            log("encoder alone")
            summary.part("encoder_alone_images_per_s", encoder_alone, [256, 1024])
            summary.part("onnx_cuda", onnx_cuda, paths, ref, args.seconds)
        else:
            summary["notes"].append("no CUDA GPU here: the GPU parts ran on the CPU as a dry run of this script "
                                    "(torch_cpu_dry_run: fp32, batch 8, 16 photos; encoder_alone_cpu_dry_run: batch "
                                    "4; not measurements), onnx_cuda skipped, training on the CPU on at most 24 photos")
            if torch is not None:
                log("torch back-end on the CPU (dry run of the GPU part)")
                summary.part("torch_cpu_dry_run", torch_cuda, paths[:16], ref, 1.0, [8], deadline - 150, "cpu",
                             ("fp32",))
                summary.part("encoder_alone_cpu_dry_run", encoder_alone, [4], "cpu", reps=1)
                summary.part("main_process_profile_cpu_dry_run", main_process_profile, paths[:16], 8, 1.0, "cpu",
                             top=8)
                summary.part("decoder_compiled_cpu_dry_run", decoder_compiled, paths[:8], "cpu", 8, reps=2)
        log("decoding processes alone")
        summary.part("decoding_alone", decoding_alone, paths, max(parallel.cores() - 1, 1), min(args.seconds, 10))
        if torch is not None:
            left = deadline - time.time()
            if left > 60:
                log(f"training ({'cuda' if gpu else 'cpu dry run'}), {left:.0f} s left")
                subset = paths if gpu else paths[:24]
                summary.part("training", training, subset, ref, "cuda" if gpu else "cpu", work, (1, 1), left - 10)
            else:
                summary["training"] = {"skipped": "out of time"}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        summary["seconds"] = round(time.time() - start, 1)
        summary.save()
        print(json.dumps(summary, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
