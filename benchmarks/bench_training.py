"""Training cost on the machine at hand: feature extraction images/s, seconds per epoch of the
frozen stage and of the fine-tuning stage (measured on a number of real batches and scaled to
the full 30,000 captions / 6,000 images), peak memory, and a profile of where a frozen-stage
step spends its time.

    python benchmarks/bench_training.py --data ../shared/flickr8k
"""
from __future__ import annotations

import argparse
import math
import time

import torch
from torch.profiler import ProfilerActivity, profile

from captioner.training.data import load_dataset
from captioner.training.features import extract_features
from captioner.training.model import CaptionModel, ModelConfig
from captioner.training.stages import encode_split, finetune_loader, length_bucketed_batches, pad
from captioner.vocab import Vocab

from bench_inference import peak_rss_mb  # the script's own folder is on sys.path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/flickr8k", help="dataset root")
    ap.add_argument("--n-images", type=int, default=256, help="images for the feature-extraction timing")
    ap.add_argument("--batches", type=int, default=40, help="frozen-stage batches timed")
    ap.add_argument("--finetune-batches", type=int, default=6, help="fine-tuning batches timed")
    ap.add_argument("--workers", type=int, default=1, help="image decoding workers")
    args = ap.parse_args()
    from captioner.training.data import tokenize

    ds = load_dataset(args.data)
    names = ds.images("train")
    vocab = Vocab.build((tokenize(c) for n in names for c in ds.captions[n]), 5)
    cfg = ModelConfig(vocab_size=len(vocab))
    model = CaptionModel(cfg)
    enc = model.encoder.to(memory_format=torch.channels_last)

    t = time.perf_counter()
    feats = extract_features(enc, [ds.image_dir / n for n in names[:args.n_images]], 32, args.workers, False)
    ips = args.n_images / (time.perf_counter() - t)
    print(f"feature extraction: {ips:.1f} images/s -> all {len(ds.images())} images in "
          f"{len(ds.images()) / ips / 60:.1f} min")

    pairs = [p for p in encode_split(ds, names[:args.n_images], vocab, cfg.max_len)]
    index = {n: i for i, n in enumerate(names[:args.n_images])}
    g = torch.Generator().manual_seed(0)
    batches = length_bucketed_batches([len(c) for _, c in pairs], 64, g)
    params = list(model.decoder.parameters())
    opt = torch.optim.Adam(params, 4e-4)
    model.train()

    def step(b):
        _, loss = model(feats=feats[[index[pairs[j][0]] for j in b]], captions=pad([pairs[j][1] for j in b]))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()

    step(batches[0])
    todo = (batches * math.ceil(args.batches / len(batches)))[:args.batches]
    t = time.perf_counter()
    for b in todo:
        step(b)
    per = (time.perf_counter() - t) / len(todo)
    full = math.ceil(30000 / 64)
    print(f"frozen stage: {per * 1000:.0f} ms per batch of 64 -> {per * full / 60:.1f} min per epoch "
          f"({full} batches)")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in todo[:8]:
            step(b)
    print("where a frozen-stage step spends its time (top operators, self CPU):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))

    class A:  # the arguments finetune_loader reads
        max_len, finetune_batch_size, workers = cfg.max_len, 32, args.workers
    enc_params = model.encoder.set_trainable(3)
    opt_all = torch.optim.Adam([{"params": params, "lr": 1e-4}, {"params": enc_params, "lr": 1e-4}])
    loader = finetune_loader(ds, names[:args.finetune_batches * 32 + 32], vocab, model.preprocess, A, g)
    model.train()
    it = iter(loader)
    times = []
    for i in range(args.finetune_batches + 1):
        x, c = next(it)
        t = time.perf_counter()
        _, loss = model(images=x.contiguous(memory_format=torch.channels_last), captions=c)
        opt_all.zero_grad()
        loss.backward()
        opt_all.step()
        if i:  # the first batch warms up
            times.append(time.perf_counter() - t)
    per = sum(times) / len(times)
    print(f"fine-tuning stage (top 3 encoder stages): {per:.2f} s per batch of 32 -> "
          f"{per * 6000 / 32 / 60:.1f} min per epoch (6,000 images)")
    print(f"peak memory (RSS): {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
