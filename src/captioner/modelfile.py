"""Model files: the one reader of what a model file holds, in numpy (no torch).

A model file is a single ``.safetensors`` file: tensors (the decoder, the encoder when it was
fine-tuned or is not the pip-shipped default, and ``knowledge.*`` when calibrated) and, in the
header's metadata, JSON entries:

  * ``format``      ``captioner/1``
  * ``config``      every hyper-parameter (``training.model.ModelConfig``)
  * ``vocab``       the words, in id order
  * ``meta``        where it came from (epoch, dev scores, ...)
  * ``has_encoder`` whether the encoder's weights are in the file
  * ``knowledge``   what the model knows of its limits (``knowledge/bundle.py``), when calibrated
  * ``onnx``        the ONNX graphs of the encoder and of one decoder step (``backends/onnx.py``),
                    written by ``python -m captioner.training.export``: graphs only, each weight an
                    external reference to the tensor of the same name in this file, so the weights
                    are stored once and both back-ends read them
  * ``experts``     (an adapted model only, ``training/adapt.py``) the configs of the decoders it started
                    from, whose weights are the tensors ``experts.N.*``
  * ``version``     ``{"weights": digest, "encoder": digest}``: short hashes of the weights, which
                    name caches (an ONNX export of a checkpoint) and pick the kind classifier

The torch side (writing, and reading into a ``CaptionModel``) is ``training/checkpoint.py``; it
uses the checks and names defined here.  Only safetensors is read: a pickle is refused unread.
"""
from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from captioner.vocab import Vocab

FORMAT = "captioner/1"
DEFAULT_MODEL = Path(__file__).parent / "weights" / "default.safetensors"
KNOWLEDGE = "knowledge."


class CheckpointError(ValueError):
    pass


def check_safetensors(path: Path) -> None:
    """Reject anything that is not a safetensors file before any parser touches it."""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        raise CheckpointError(f"{path}: not a safetensors checkpoint (file too short)")
    # safetensors: an 8-byte little-endian header length, then the JSON header.  (Its first byte
    # is the length's low byte and may be anything, 0x80 included, so it says nothing about pickle.)
    (n,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{" or n > min(100_000_000, path.stat().st_size - 8):
        # say what it looks like: a PyTorch zip or a pickle (never opened: loading them can run code), or
        # a photo handed over as the model
        looks = {b"PK\x03\x04": "a zip archive, as PyTorch's .pt files are", b"\xff\xd8\xff": "a JPEG image",
                 b"\x89PNG": "a PNG image"}
        what = next((v for k, v in looks.items() if head.startswith(k)), "a pickle" if head[:1] == b"\x80" else None)
        raise CheckpointError(f"{path}: not a safetensors checkpoint{f' but {what}' if what else ''}; captioner "
                              "reads .safetensors model files only (pickle and zip files are refused because "
                              "loading them can run code)")


def read_header(path) -> dict:
    from safetensors import safe_open

    path = Path(path)
    check_safetensors(path)
    try:
        with safe_open(str(path), "np") as f:
            md = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"{path}: unreadable safetensors file ({e})") from None
    if md.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a captioner checkpoint (format {md.get('format')!r})")
    return md


def encode_graphs(graphs: dict[str, bytes]) -> str:
    """ONNX graphs (serialised protos) -> the header's ``onnx`` entry."""
    return json.dumps({k: base64.b64encode(v).decode("ascii") for k, v in graphs.items()})


@dataclass
class ModelFile:
    path: Path
    config: dict
    vocab: Vocab
    meta: dict
    has_encoder: bool
    knowledge_info: dict | None
    graphs: dict[str, bytes] | None            # name -> serialised ONNX graph, or None
    version: dict = field(default_factory=dict)
    header: dict = field(default_factory=dict)   # the raw metadata entries (onnx_io, preprocess, ...)
    experts: list = field(default_factory=list)  # configs of the decoders an adapted model started from

    def tensors(self, prefix: str = "", strip: bool = False) -> dict[str, np.ndarray]:
        """The file's tensors whose names start with ``prefix``, floats as float32 (the shipped
        model stores fp16); ``strip`` removes the prefix from the names."""
        from safetensors import safe_open

        out = {}
        with safe_open(str(self.path), "np") as f:
            for k in f.keys():
                if k.startswith(prefix):
                    v = f.get_tensor(k)
                    out[k[len(prefix):] if strip else k] = v.astype(np.float32) if v.dtype.kind == "f" else v
        return out

    def knowledge(self) -> tuple[dict, dict] | None:
        """-> (the ``knowledge.*`` tensors in float32, their JSON info), or None if never calibrated."""
        if self.knowledge_info is None:
            return None
        return self.tensors(KNOWLEDGE), self.knowledge_info


def read(path=None) -> ModelFile:
    """Read a model file's header (tensors are read on demand). ``path=None``: the shipped model."""
    path = Path(path) if path else DEFAULT_MODEL
    md = read_header(path)
    try:
        cfg = json.loads(md["config"])
        vocab = Vocab.from_json(md["vocab"])
        graphs = {k: base64.b64decode(v) for k, v in json.loads(md["onnx"]).items()} if "onnx" in md else None
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: damaged model header ({type(e).__name__}: {e})") from None
    if len(vocab) != cfg.get("vocab_size"):
        raise CheckpointError(f"{path}: vocabulary has {len(vocab)} words, config says {cfg.get('vocab_size')}")
    return ModelFile(path, cfg, vocab, json.loads(md.get("meta", "{}")), json.loads(md.get("has_encoder", "false")),
                     json.loads(md["knowledge"]) if "knowledge" in md else None, graphs,
                     json.loads(md.get("version", "{}")), md, json.loads(md.get("experts", "[]")))
