"""The torch-free path (ONNX Runtime encoder and decoder step, the search on numpy) against the torch
path (PyTorch fp32, the search on tensors), in one run, on the Flickr8k test photos (issue 22):

  1. the same answers: identical caption strings, BLEU-4 and CIDEr-D of each, in_domain, tags,
     confidences and alt texts, on all ``--n`` photos (product path: guidance, knowledge, alt text);
  2. speed: batch captioning (``caption_paths``), single-image latency, the encoder alone and the
     decoder alone (grids encoded once, then only the search and its steps timed), alternating the
     back-ends ``--repeats`` times; the issue-5 ratio is batch captioning over the encoder alone;
  3. peak memory of a library run over the photos (``captioner caption --output``), each in its own
     process.

    python benchmarks/bench_backends.py --n 1000 --repeats 3 --out runs/bench_backends.json

Needs the [train] extra (for the torch path) and ../shared/flickr8k.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from captioner.api import Captioner, _sequence
from captioner.search import generate
from captioner.training.data import load_dataset
from captioner.training.metrics import score_all

SHARED = Path(__file__).resolve().parents[2] / "shared" / "flickr8k"


def product(cap: Captioner, paths, batch_size: int):
    return [res for _, res in cap.caption_paths(paths, batch_size)]


def compare(a: list, b: list) -> dict:
    same = sum(x.text == y.text for x, y in zip(a, b))
    return {"identical_captions": same, "identical_alt_text": sum(x.alt_text == y.alt_text for x, y in zip(a, b)),
            "same_in_domain": sum(x.in_domain == y.in_domain for x, y in zip(a, b)),
            "same_top5_tags": sum([t.name for t in x.tags] == [t.name for t in y.tags] for x, y in zip(a, b)),
            "same_guided": sum(x.guided == y.guided for x, y in zip(a, b)),
            "max_confidence_diff": max(abs(x.confidence - y.confidence) for x, y in zip(a, b)),
            "max_distance_diff": max(abs(x.domain_distance - y.domain_distance) for x, y in zip(a, b)),
            "max_top_tag_prob_diff": max(abs(x.tags[0].prob - y.tags[0].prob) for x, y in zip(a, b)),
            "differing": [(x.text, y.text) for x, y in zip(a, b) if x.text != y.text][:10]}


def timed(fn, repeats: int):
    out, times = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def peak_library_run(backend: str, precision: str, paths: list[Path]) -> float:
    """Peak RSS (MB) of ``captioner caption --output`` over ``paths`` in a fresh process."""
    with tempfile.TemporaryDirectory() as d:
        lst = Path(d) / "list.txt"
        lst.write_text("\n".join(map(str, paths)))
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork and exec
        code = ("import sys; from captioner.cli import main; "
                f"rc = main(['caption', '--from-list', {str(lst)!r}, '--output', {str(Path(d) / 'out.jsonl')!r}, "
                f"'--backend', {backend!r}, '--precision', {precision!r}]); "
                "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]; "
                "print(int(hwm) / 1024); sys.exit(rc)")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"CAPTIONER_CACHE": d,
                           **{k: v for k, v in __import__("os").environ.items() if k != "CAPTIONER_CACHE"}})
        if p.returncode not in (0, 1):   # 1: some photo failed, which the run reports and survives
            raise SystemExit(p.stderr[-2000:])
        return float(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="test photos")
    ap.add_argument("--speed-n", type=int, default=256, help="photos for the timed runs")
    ap.add_argument("--latency-n", type=int, default=30, help="photos for the single-image latency")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each back-end, alternating")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--skip-memory", action="store_true", help="skip the library-run peak memory")
    ap.add_argument("--backends", default="onnx,torch",
                    help="comma-separated: onnx, torch, onnx-int8 (the int8 step); each compared with the first")
    ap.add_argument("--out", default=None, help="write the figures as JSON")
    args = ap.parse_args()
    ds = load_dataset(str(SHARED))
    names = ds.images("test")[:args.n]
    paths = [ds.image_dir / n for n in names]
    refs = ds.references("test")
    specs = {"onnx": ("onnx", "fp32"), "torch": ("torch", "fp32"), "onnx-int8": ("onnx", "int8")}
    names_b = args.backends.split(",")
    caps = {b: Captioner(backend=specs[b][0], precision=specs[b][1]) for b in names_b}
    res = {"images": len(paths), "backends": {}}

    # 1. the same answers
    out = {}
    for b, cap in caps.items():
        out[b] = product(cap, paths, args.batch_size)
        scores = score_all([c.words for c in out[b]], [refs[n] for n in names])
        res["backends"][b] = {"BLEU-4": scores["BLEU-4"], "CIDEr-D": scores["CIDEr-D"]}
    first = names_b[0]
    res["agreement"] = {b: compare(out[first], out[b]) for b in names_b[1:]}
    nb = {b: cap.caption(str(paths[0]), n_best=3) for b, cap in caps.items()}
    res["n_best"] = {b: [t for t, _ in c.beams] for b, c in nb.items()}
    res["attention_shape"] = {b: list(c.attention.shape) for b, c in nb.items()}
    print(json.dumps(res["agreement"], indent=1)[:1500], flush=True)

    # 2. speed, alternating
    sp = paths[:args.speed_n]
    batches = {b: [x for _, idx, x in cap._batches(sp, args.batch_size)] for b, cap in caps.items()}
    grids = {}
    times = {b: {"batch": [], "encoder": [], "decoder": []} for b in caps}
    for _ in range(args.repeats):
        for b, cap in caps.items():
            _, t = timed(lambda: product(cap, sp, args.batch_size), 1)
            times[b]["batch"].append(t)
            g, t = timed(lambda: [cap._grids(x)[0] for x in batches[b]], 1)
            times[b]["encoder"].append(t)
            grids[b] = [_sequence(x) for x in g]
            _, t = timed(lambda: [generate(cap.decoding, f, 3, no_repeat_ngram=cap.no_repeat_ngram) for f in grids[b]], 1)
            times[b]["decoder"].append(t)
    for b, cap in caps.items():
        r = res["backends"][b]
        for k in ("batch", "encoder", "decoder"):
            r[f"{k}_images_per_s"] = round(len(sp) / statistics.median(times[b][k]), 1)
        r["issue5_ratio"] = round(r["batch_images_per_s"] / r["encoder_images_per_s"], 3)
        lat = []
        for p in paths[:args.latency_n]:
            t0 = time.perf_counter()
            cap.caption(str(p))
            lat.append(time.perf_counter() - t0)
        r["single_image_ms"] = round(1000 * statistics.median(lat), 1)
        # the decoder step alone: one step on a batch of 16 images x 3 beams
        f = grids[b][0]
        state, memory = cap.decoding.decoder.init_state(f)
        xp_rows = np.repeat(np.arange(f.shape[0]), 3)
        if specs[b][0] == "torch":
            import torch

            rows = torch.as_tensor(xp_rows)
            state = tuple(s[rows] for s in state)
            words = torch.full((len(xp_rows),), 4, dtype=torch.long)
        else:
            state = tuple(s[xp_rows] for s in state)
            words = np.full((len(xp_rows),), 4, dtype=np.int64)
        step = lambda: cap.decoding.decoder.step(words, state, memory)  # noqa: E731
        for _ in range(5):
            step()
        _, t = timed(step, 50)
        r["step_ms_16x3"] = round(1000 * t, 3)
        # where the search spends its time: the share of the decoder-alone time inside step()
        dec, inside = cap.decoding.decoder, [0.0]
        plain_step = dec.step

        def counted(*a):
            t0 = time.perf_counter()
            out = plain_step(*a)
            inside[0] += time.perf_counter() - t0
            return out

        dec.step = counted
        t0 = time.perf_counter()
        for f in grids[b]:
            generate(cap.decoding, f, 3, no_repeat_ngram=cap.no_repeat_ngram)
        total = time.perf_counter() - t0
        dec.step = plain_step
        r["decoder_share_in_step"] = round(inside[0] / total, 3)
    print(json.dumps(res["backends"], indent=1), flush=True)

    # 3. peak memory of a library run
    if not args.skip_memory:
        for b in caps:
            res["backends"][b]["library_run_peak_rss_mb"] = round(peak_library_run(*specs[b], paths), 1)
        print({b: res["backends"][b]["library_run_peak_rss_mb"] for b in caps})
    res["this_process_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2, default=float))


if __name__ == "__main__":
    main()
