"""Feature caching for the frozen-encoder training stage.

Runs the encoder once over every image and stores the grids on disk, so epochs of the frozen
stage cost decoder time only.  A cache is two files: ``NAME.npy`` (numpy's own format, fp16
``[N, H*W, C]``, never pickled) and ``NAME.json`` (image names and what made the grids).  The
grids are written batch by batch as they are computed and read back row by row with ``pread``
(``FeatureStore``), so neither writing nor training holds the whole cache in memory: at COCO's
size the grids are about 15 GB, while a batch of 64 is 8 MB.

    python -m captioner.training.features --data ../shared/flickr8k --out runs/features_lite2_224.npy
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm import tqdm

from captioner.training.encoders import Encoder, Preprocess, build_encoder
from captioner.images import open_image


class ImageFiles(TorchDataset):
    """Image paths -> preprocessed tensors; used by feature caching and fine-tuning."""

    def __init__(self, paths: list[Path], preprocess: Preprocess):
        self.paths, self.preprocess = list(paths), preprocess

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.preprocess(open_image(self.paths[i]))


@torch.inference_mode()
def extract_features(encoder: Encoder, paths: list[Path], batch_size: int = 32, workers: int = 1,
                     progress: bool = True) -> torch.Tensor:
    """Encode images -> fp16 tensor [N, H*W, C]."""
    encoder.eval()
    loader = DataLoader(ImageFiles(paths, encoder.preprocess), batch_size=batch_size,
                        num_workers=workers)
    out = []
    dev = next(encoder.parameters()).device
    for x in tqdm(loader, desc="features", unit="batch", disable=not progress):
        g = encoder(x.to(dev).contiguous(memory_format=torch.channels_last))
        out.append(g.flatten(2).transpose(1, 2).to(torch.float16).cpu())
    return torch.cat(out)


def _paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    return path.with_suffix(".npy"), path.with_suffix(".json")


class FeatureStore:
    """A feature cache on disk: ``store[rows]`` reads just those rows -> fp16 tensor [len(rows), L, C]."""

    def __init__(self, path: str | Path):
        self.path, meta_path = _paths(path)
        info = json.loads(meta_path.read_text())
        self.names, self.meta = info["names"], info["meta"]
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            self.offset = f.tell()
        if dtype != np.float16 or fortran or len(shape) != 3 or shape[0] != len(self.names):
            raise ValueError(f"{self.path}: not a feature cache (shape {shape}, dtype {dtype})")
        self.shape = tuple(shape)
        self.row_bytes = shape[1] * shape[2] * 2
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def size(self, dim: int) -> int:
        return self.shape[dim]

    def __getitem__(self, rows) -> torch.Tensor:
        if isinstance(rows, slice):
            rows = range(*rows.indices(len(self)))
        elif torch.is_tensor(rows):
            rows = rows.tolist()
        elif isinstance(rows, int):
            return self[[rows]][0]
        rows = list(rows)
        buf = bytearray(len(rows) * self.row_bytes)
        view = memoryview(buf)
        for k, r in enumerate(rows):
            if not 0 <= r < len(self):
                raise IndexError(f"row {r} of a {len(self)}-row feature cache")
            # pread copies into this process's buffer: the page cache, not the process, holds the file
            view[k * self.row_bytes:(k + 1) * self.row_bytes] = os.pread(self._fd, self.row_bytes,
                                                                        self.offset + r * self.row_bytes)
        return torch.frombuffer(buf, dtype=torch.float16).view(len(rows), *self.shape[1:]) if rows else \
            torch.zeros(0, *self.shape[1:], dtype=torch.float16)

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None


class Rows:
    """Some rows of a store, renumbered 0..len-1: what one split's training reads."""

    def __init__(self, store: FeatureStore, rows: list[int]):
        self.store, self.rows = store, list(rows)
        self.shape = (len(self.rows), *store.shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def size(self, dim: int) -> int:
        return self.shape[dim]

    def __getitem__(self, idx) -> torch.Tensor:
        idx = idx.tolist() if torch.is_tensor(idx) else range(*idx.indices(len(self))) if isinstance(idx, slice) else idx
        return self.store[[self.rows[i] for i in idx]]


def _write_cache(path: str | Path, names: list[str], meta: dict, blocks) -> FeatureStore:
    """Write fp16 grids from ``blocks`` (tensors of whole rows, in order, ``len(names)`` rows in
    all) as NAME.npy + NAME.json; atomic: temporary files renamed once complete, the names last."""
    npy, js = _paths(path)
    npy.parent.mkdir(parents=True, exist_ok=True)
    tmp = npy.with_name(f".{npy.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            for block in blocks:
                if f.tell() == 0:  # the header needs the grid's shape, known from the first block
                    np.lib.format.write_array_header_2_0(
                        f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False,
                            "shape": (len(names), *block.shape[1:])})
                f.write(block.numpy().tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, npy)
    finally:
        if tmp.exists():
            tmp.unlink()
    tmp_js = js.with_name(f".{js.name}.tmp{os.getpid()}")
    tmp_js.write_text(json.dumps({"names": list(names), "meta": meta}))
    os.replace(tmp_js, js)
    return FeatureStore(npy)


@torch.inference_mode()
def write_features(path: str | Path, encoder: Encoder, paths: list[Path], names: list[str], meta: dict,
                   batch_size: int = 32, workers: int = 1, progress: bool = True) -> FeatureStore:
    """Encode images straight into a cache file, batch by batch."""
    encoder.eval()
    loader = DataLoader(ImageFiles(paths, encoder.preprocess), batch_size=batch_size, num_workers=workers)
    dev = next(encoder.parameters()).device

    def blocks():
        for x in tqdm(loader, desc="features", unit="batch", disable=not progress):
            g = encoder(x.to(dev).contiguous(memory_format=torch.channels_last))
            yield g.flatten(2).transpose(1, 2).to(torch.float16).cpu().contiguous()

    return _write_cache(path, names, meta, blocks())


def merge_features(path: str | Path, parts: list, names: list[str], meta: dict) -> FeatureStore:
    """One cache from the shards of ``k`` processes, shard r holding rows r, r+k, r+2k, ... of
    ``names`` (how data-parallel ranks split the encoding); streamed row by row."""
    stores = [FeatureStore(p) for p in parts]
    k = len(stores)
    return _write_cache(path, names, meta, (stores[i % k][[i // k]] for i in range(len(names))))


def load_features(path: str | Path) -> tuple[dict[str, int], FeatureStore, dict] | None:
    """-> (name -> row, the store, what made it), or None where there is no complete cache."""
    npy, js = _paths(path)
    if not (npy.is_file() and js.is_file()):
        return None
    store = FeatureStore(npy)
    return {n: i for i, n in enumerate(store.names)}, store, store.meta


def main(argv=None):
    from captioner.training.data import load_dataset

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/flickr8k",
                    help="dataset: a Flickr8k folder (Kaggle, original or Karpathy layout), a Karpathy JSON (COCO, Flickr30k), or a CSV / JSON-lines file of image,caption[,split]")
    ap.add_argument("--out", required=True, help="cache to write (NAME.npy and NAME.json)")
    ap.add_argument("--encoder", default="efficientnet_lite2", help="encoder name")
    ap.add_argument("--encoder-weights", default=None, help="ImageNet weights file for the encoder")
    ap.add_argument("--image-size", type=int, default=224, help="square input size in pixels")
    ap.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    ap.add_argument("--workers", type=int, default=1, help="image decoding worker processes")
    args = ap.parse_args(argv)
    ds = load_dataset(args.data)
    print(ds.summary())
    enc = build_encoder(args.encoder, weights_path=args.encoder_weights, image_size=args.image_size)
    enc = enc.to(memory_format=torch.channels_last)
    names = ds.images()
    store = write_features(args.out, enc, [ds.image_dir / n for n in names], names,
                           {"encoder": args.encoder, "image_size": args.image_size}, args.batch_size, args.workers)
    print(f"wrote {store.path}: {store.shape}")


if __name__ == "__main__":
    main()
