"""Inference speed on the machine at hand, as ratios from one run.

  1. batch captioning (beam 3, worker processes decoding images) vs the encoder forward alone,
     both with the default back-end
  2. the product's batched decoder vs the seed's method (one model call per word, re-running the
     whole prefix each time), same weights, same outputs checked
  3. encoder variants vs eager fp32 PyTorch: channels-last, bf16, ONNX Runtime, torch.compile
  4. single-image latency p50/p95 (model loaded once), with and without the model's knowledge
     (tags, domain check, guidance, confidence; ``--latency-only`` runs just this), and the
     command line's cold start
  5. throughput and peak memory by batch size
  6. throughput and peak memory for 100, 1,000 and 8,000 images (``--counts``), each in a fresh
     process, as ``captioner caption`` runs them

    python benchmarks/bench_inference.py --images ../shared/flickr8k/Images --n 256

Since issue 22 this runs on the torch back-end (its sections 2 and 3 compare PyTorch variants); the
torch-free path against it is ``bench_backends.py``.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from captioner import Captioner
from captioner.search import DEFAULT_LENGTH_PENALTY, generate
from captioner.images import open_image


def peak_rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def timed(fn, repeat=1):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


@torch.inference_mode()
def encoder_only(encode, x, bs=16):
    for i in range(0, len(x), bs):
        encode(x[i:i + bs])


def count_run(images: str, n: int, batch_size: int) -> str:
    """Caption n images in a fresh process (the library call ``captioner caption`` makes)."""
    code = f"""
import time, sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from bench_inference import peak_rss_mb
from captioner import Captioner
paths = sorted(Path({images!r}).glob('*.jpg'))[:{n}]
cap = Captioner()
t = time.perf_counter()
k = sum(1 for _ in cap.caption_paths(paths, batch_size={batch_size}))
dt = time.perf_counter() - t
print(f"| {{k}} | {{dt:.1f}} | {{k / dt:.1f}} | {{peak_rss_mb():.0f}} |")
"""
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


@torch.inference_mode()
def seed_decode(model, feats, beam_size, max_len, length_penalty):
    """The straightforward decoder of the original Keras system: for every new word, run the model
    over the whole prefix again (one call per word, per image, per beam)."""
    dec = model.decoder
    out = []
    for f in feats:
        f = f.unsqueeze(0)

        def next_logp(prefix):
            state, memory = dec.init_state(f)
            for w in prefix:
                logits, state, _ = dec.step(torch.tensor([w]), state, memory)
            lp = logits[0].log_softmax(-1)
            lp[[0, 1, 3]] = float("-inf")
            return lp

        beams = [([1], 0.0, False)]
        for _ in range(max_len + 1):
            cand = []
            for seq, score, done in beams:
                if done:
                    cand.append((seq, score, True))
                    continue
                lp = next_logp(seq)
                top = lp.topk(beam_size)
                for s, w in zip(top.values.tolist(), top.indices.tolist()):
                    cand.append((seq + [w], score + s, w == 2))
            beams = sorted(cand, key=lambda c: -c[1])[:beam_size]
            if all(d for _, _, d in beams):
                break

        def norm(c):
            n = len(c[0]) - 1 - (1 if c[2] else 0)
            return c[1] / max(n + (1 if c[2] else 0), 1) ** length_penalty
        best = max(beams, key=norm)[0][1:]
        out.append(best[:best.index(2)] if 2 in best else best)
    return out


def latency(cap, paths, args):
    print("\n## 4. latency")
    # the same model without its knowledge (no tags, domain check, guidance, confidence), the two
    # interleaved image by image so that both see the same machine state
    plain = Captioner(args.model, beam_size=3, backend=cap.backend, precision=cap.precision, knowledge=False)
    lat, lat_plain = [], []
    for i, p in enumerate(paths[:args.latency_n]):
        pair = ((cap, lat), (plain, lat_plain))
        for c, out in pair if i % 2 else pair[::-1]:   # alternate which goes first
            t = time.perf_counter()
            c.caption(p)
            out.append(time.perf_counter() - t)
    for name, xs in (("with knowledge (default)", lat), ("without knowledge", lat_plain)):
        xs.sort()
        print(f"single image, beam 3, model loaded, {name}: p50 {statistics.median(xs) * 1000:.1f} ms, "
              f"p95 {xs[int(0.95 * (len(xs) - 1))] * 1000:.1f} ms, mean {statistics.fmean(xs) * 1000:.1f} ms")
    print(f"knowledge adds {statistics.median(lat) / statistics.median(lat_plain) - 1:+.1%} to the median latency "
          f"(target <= +10 %)")
    if args.latency_only:
        return
    cold = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "captioner", "caption", str(paths[0])], check=True, capture_output=True)
        cold.append(time.perf_counter() - t)
    print(f"command line cold start (process start to first caption): median {statistics.median(cold):.2f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default="../shared/flickr8k/Images", help="folder of images")
    ap.add_argument("--n", type=int, default=256, help="images for the throughput runs")
    ap.add_argument("--seed-n", type=int, default=16, help="images for the seed-decoder comparison")
    ap.add_argument("--workers", type=int, default=0, help="image decoding workers for batch captioning")
    ap.add_argument("--batch-size", type=int, default=16, help="images per batch for batch captioning")
    ap.add_argument("--counts", default="100,1000,8000", help="image counts for the scaling runs ('' skips)")
    ap.add_argument("--model", default=None, help="checkpoint; default: the shipped model")
    ap.add_argument("--skip-compile", action="store_true", help="skip the torch.compile variant")
    ap.add_argument("--latency-n", type=int, default=30, help="images for the single-image latency")
    ap.add_argument("--latency-only", action="store_true", help="measure only the single-image latency (section 4)")
    args = ap.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, python {platform.python_version()}")
    paths = sorted(Path(args.images).glob("*.jpg"))[:args.n]
    cap = Captioner(args.model, beam_size=3, backend="torch")
    print(f"default back-end: encoder {cap.backend}, decoder {cap.precision}, "
          f"no-repeat n-gram {cap.no_repeat_ngram}")
    if args.latency_only:
        cap.caption(paths[0])  # warm-up
        return latency(cap, paths, args)
    x = torch.stack([torch.from_numpy(cap.preprocess(open_image(p))) for p in paths])
    encoder_only(cap.encode_images, x[:16])  # warm-up

    print("\n## 1. batch captioning vs encoder alone")
    bs = args.batch_size
    t_enc = timed(lambda: encoder_only(cap.encode_images, x, bs), 2)
    t_all = timed(lambda: list(cap.caption_paths(paths, batch_size=bs, workers=args.workers)), 2)
    grids = [cap.encode_images(x[i:i + bs]).flatten(2).transpose(1, 2) for i in range(0, len(x), bs)]
    t_dec = timed(lambda: [generate(cap.model, g, 3) for g in grids], 2)
    t_seq = timed(lambda: [cap.caption_tensors(x[i:i + bs]) for i in range(0, len(x), bs)], 2)
    print(f"encoder forward alone ({cap.backend}): {len(paths) / t_enc:.1f} images/s")
    print(f"beam-3 decoder alone ({cap.precision}): {len(paths) / t_dec:.1f} images/s")
    print(f"encoder then decoder on preprocessed images: {len(paths) / t_seq:.1f} images/s "
          f"(ratio {t_enc / t_seq:.3f}: the ceiling without overlap)")
    print(f"caption_paths from files, beam 3, batch {bs}, {args.workers} workers: {len(paths) / t_all:.1f} images/s")
    print(f"ratio: {t_enc / t_all:.3f}  (target >= 0.9)")
    # the alternatives the defaults were chosen against, same images
    w = 1 if args.workers == 0 else 0
    t_w = timed(lambda: list(cap.caption_paths(paths, batch_size=bs, workers=w)), 1)
    print(f"  for comparison: caption_paths with {w} workers: {len(paths) / t_w:.1f} images/s")
    if cap.precision == "bf16":
        fp32 = Captioner(args.model, beam_size=3, backend="torch", precision="fp32")
        t_d32 = timed(lambda: [generate(fp32.model, g, 3) for g in grids], 2)
        print(f"  for comparison: beam-3 decoder alone in fp32: {len(paths) / t_d32:.1f} images/s")

    print("\n## 2. decoder vs the seed's per-word full-prefix method")
    # plain beam search on both sides (no n-gram blocking), the same weights and precision
    feats = cap.encode_images(x[:args.seed_n]).flatten(2).transpose(1, 2)
    for k in (1, 3):
        t_ours = timed(lambda: generate(cap.model, feats, k, length_penalty=DEFAULT_LENGTH_PENALTY,
                                        no_repeat_ngram=0), 3)
        ours = [h[0].tokens for h in generate(cap.model, feats, k, length_penalty=DEFAULT_LENGTH_PENALTY,
                                              no_repeat_ngram=0)]
        t_seed = timed(lambda: seed_decode(cap.model, feats, k, cap.model.cfg.max_len, DEFAULT_LENGTH_PENALTY), 1)
        seed = seed_decode(cap.model, feats, k, cap.model.cfg.max_len, DEFAULT_LENGTH_PENALTY)
        same = sum(a == b for a, b in zip(ours, seed))
        print(f"beam {k}: product {t_ours * 1000:.0f} ms, seed method {t_seed * 1000:.0f} ms, speed-up "
              f"{t_seed / t_ours:.1f}x (target >= 10x); identical captions {same}/{len(ours)}")

    print("\n## 3. encoder variants (same images, batch 16)")
    import copy

    from captioner.backends.onnx import OnnxModel

    sub = x[:64]
    enc = copy.deepcopy(cap.model.encoder).to(memory_format=torch.contiguous_format)
    variants = {"eager fp32 (contiguous)": lambda b: enc(b.contiguous())}
    enc_cl = copy.deepcopy(enc).to(memory_format=torch.channels_last)
    variants["channels-last fp32"] = lambda b: enc_cl(b.contiguous(memory_format=torch.channels_last))
    enc_bf16 = copy.deepcopy(enc_cl).to(torch.bfloat16)
    variants["channels-last bf16 (not used: features drift ~7 %)"] = lambda b: enc_bf16(
        b.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
    onnx_model = OnnxModel(args.model)
    variants["ONNX Runtime fp32"] = lambda b: torch.from_numpy(onnx_model.encode(b.numpy()))
    if not args.skip_compile:
        compiled = torch.compile(enc_cl)
        variants["torch.compile channels-last fp32"] = lambda b: compiled(b.contiguous(memory_format=torch.channels_last))
    with torch.inference_mode():
        ref = enc(sub[:16])
    t_eager = None
    for name, fn in variants.items():
        try:
            with torch.inference_mode():
                t0 = time.perf_counter()
                out = fn(sub[:16]).float()   # warm-up (and compilation)
                warm = time.perf_counter() - t0
            t = timed(lambda: encoder_only(fn, sub), 2)
        except Exception as e:  # a missing compiler toolchain is a result, not a crash
            print(f"{name}: failed ({type(e).__name__}: {str(e)[:100]})")
            continue
        t_eager = t_eager or t
        diff = ((out - ref).norm() / ref.norm()).item()
        print(f"{name}: {64 / t:.1f} images/s ({t_eager / t:.2f}x), relative difference {diff:.1e}"
              + (f", first call {warm:.0f} s" if warm > 2 else ""))

    latency(cap, paths, args)

    print("\n## 5. scaling by batch size (beam 3, preprocessed images)")
    print("| batch | images/s | peak RSS MB |")
    print("| --- | --- | --- |")
    for bs in (1, 2, 4, 8, 16, 32, 64):
        reset_peak()
        n = max(bs, 32)
        t = timed(lambda: [cap.caption_tensors(x[i:i + bs]) for i in range(0, n, bs)], 1)
        print(f"| {bs} | {n / t:.1f} | {peak_rss_mb():.0f} |")

    if args.counts:
        print(f"\n## 6. scaling by image count (caption_paths, batch {args.batch_size}, fresh process each)")
        print("| images | seconds | images/s | peak RSS MB |")
        print("| --- | --- | --- | --- |")
        for n in (int(c) for c in args.counts.split(",")):
            print(count_run(args.images, n, args.batch_size), flush=True)


if __name__ == "__main__":
    main()
