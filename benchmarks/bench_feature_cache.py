"""Peak memory of stage 1 against the dataset's size: the on-disk feature cache (``FeatureStore``,
rows read per batch) against holding the whole cache in memory (as before it).

Encodes ``--real`` Flickr8k training images once, replicates their grids into caches of each
``--sizes`` rows (the values do not matter for memory or time), then in a fresh process per
(size, mode) trains the attention decoder on ``--batches`` batches of 64 random rows and reports
the process's peak RSS and the time per batch.

    python benchmarks/bench_feature_cache.py --sizes 8000,40000 --out runs/cache_bench
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_cache(path: Path, real: torch.Tensor, n: int) -> None:
    """A cache of ``n`` rows cycling through ``real``'s grids, in the format ``write_features`` makes."""
    npy = path.with_suffix(".npy")
    with open(npy, "wb") as f:
        np.lib.format.write_array_header_2_0(f, {"descr": "<f2", "fortran_order": False,
                                                 "shape": (n, real.size(1), real.size(2))})
        block = real.numpy().tobytes()
        for start in range(0, n, len(real)):
            rows = min(len(real), n - start)
            f.write(block[: rows * real[0].numel() * 2])
    path.with_suffix(".json").write_text(json.dumps({"names": [f"img{i}.jpg" for i in range(n)], "meta": {}}))


def run_one(path: str, mode: str, batches: int, vocab_size: int) -> dict:
    from captioner.training.features import FeatureStore
    from captioner.training.model import CaptionModel, ModelConfig

    torch.manual_seed(0)
    store = FeatureStore(path)
    feats = torch.from_numpy(np.load(store.path)) if mode == "in-memory" else store
    n = len(store)
    model = CaptionModel(ModelConfig(vocab_size=vocab_size), pretrained_encoder=False)
    opt = torch.optim.Adam(model.decoder.parameters(), 4e-4)
    model.train()
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(batches):
        rows = torch.randint(0, n, (64,), generator=g).tolist()
        caps = torch.randint(4, vocab_size, (64, 14), generator=g)
        caps[:, 0], caps[:, -1] = 1, 2
        _, loss = model(feats=feats[rows], captions=caps)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"rows": n, "mode": mode, "ms_per_batch": round((time.perf_counter() - t0) / batches * 1000, 1),
            "peak_rss_mb": round(peak_rss_mb())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/flickr8k", help="dataset whose training images give the grids")
    ap.add_argument("--real", type=int, default=256, help="real images encoded")
    ap.add_argument("--sizes", default="8000,40000", help="cache sizes in rows")
    ap.add_argument("--batches", type=int, default=60, help="training batches per run")
    ap.add_argument("--out", default="runs/cache_bench", help="folder for the caches (GBs; deleted after)")
    ap.add_argument("--one", nargs=4, metavar=("PATH", "MODE", "BATCHES", "VOCAB"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], int(args.one[2]), int(args.one[3]))))
        return

    from captioner.training.data import load_dataset
    from captioner.training.encoders import build_encoder
    from captioner.training.features import extract_features

    ds = load_dataset(args.data)
    enc = build_encoder()
    names = ds.images("train")[: args.real]
    real = extract_features(enc, [ds.image_dir / n for n in names], 32, 1, False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("| cache rows | cache size | mode | peak RSS | ms per batch of 64 |")
    print("| --- | --- | --- | --- | --- |")
    for n in (int(x) for x in args.sizes.split(",")):
        path = out / f"cache_{n}"
        make_cache(path, real, n)
        size_gb = path.with_suffix(".npy").stat().st_size / 1e9
        for mode in ("on disk", "in-memory"):
            r = subprocess.run([sys.executable, __file__, "--one", str(path), mode, str(args.batches), "2538"],
                               capture_output=True, text=True, check=True)
            res = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"| {n:,} | {size_gb:.2f} GB | {mode} | {res['peak_rss_mb']:,} MB | {res['ms_per_batch']} |", flush=True)
        path.with_suffix(".npy").unlink()
        path.with_suffix(".json").unlink()


if __name__ == "__main__":
    main()
