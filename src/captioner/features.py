"""Feature caching for the frozen-encoder training stage.

Runs the encoder once over every image and stores the grids (fp16) in one safetensors file
keyed by image name, so epochs of the frozen stage cost decoder time only.

    python -m captioner.features --data ../shared/flickr8k --out runs/features_lite2_224.safetensors
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm import tqdm

from .encoders import Encoder, Preprocess, build_encoder
from .images import open_image


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
    for x in tqdm(loader, desc="features", unit="batch", disable=not progress):
        g = encoder(x.contiguous(memory_format=torch.channels_last))
        out.append(g.flatten(2).transpose(1, 2).to(torch.float16))
    return torch.cat(out)


def save_features(path: str | Path, names: list[str], feats: torch.Tensor, meta: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file({"features": feats.contiguous()}, str(tmp),
              metadata={"names": json.dumps(names), "meta": json.dumps(meta)})
    os.replace(tmp, path)


def load_features(path: str | Path) -> tuple[dict[str, int], torch.Tensor, dict]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        md = f.metadata()
    feats = load_file(str(path))["features"]
    names = json.loads(md["names"])
    return {n: i for i, n in enumerate(names)}, feats, json.loads(md["meta"])


def main(argv=None):
    from .data import load_dataset

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/flickr8k",
                    help="dataset: a Flickr8k folder (Kaggle, original or Karpathy layout), a Karpathy JSON (COCO, Flickr30k), or a CSV / JSON-lines file of image,caption[,split]")
    ap.add_argument("--out", required=True, help="safetensors file to write")
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
    feats = extract_features(enc, [ds.image_dir / n for n in names], args.batch_size, args.workers)
    save_features(args.out, names, feats, {"encoder": args.encoder, "image_size": args.image_size})
    print(f"wrote {args.out}: {tuple(feats.shape)}")


if __name__ == "__main__":
    main()
