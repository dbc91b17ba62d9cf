"""Checkpoints on the torch side: writing model files and reading them into a ``CaptionModel``
(``modelfile.py`` is the numpy reader the inference wing uses, and defines the format).

A checkpoint is a single ``.safetensors`` file: tensors (the decoder, plus the encoder when
it was fine-tuned or is not the pip-shipped default) and, in the header's metadata, the
model config and the vocabulary as JSON.  Writes go to a temporary file that is renamed
over the target, so a crash or a full disk never leaves a half-written checkpoint.
Loading accepts only safetensors: a pickle (``torch.save``) file is refused unread.

A calibrated model file also holds what the model knows of its own limits (ImageNet head,
out-of-domain statistics, confidence calibration; ``knowledge/bundle.py``) as ``knowledge.*`` tensors
and a ``knowledge`` JSON header entry, added by ``save_knowledge``.

Training state for ``--resume`` (optimizer moments, epoch, history, RNG) is a second
safetensors file written the same way.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from captioner.modelfile import (DEFAULT_MODEL, FORMAT, KNOWLEDGE, CheckpointError,  # noqa: F401 (names used here and re-exported)
                                  check_safetensors, encode_graphs, read_header)
from captioner.training.model import CaptionModel, ModelConfig
from captioner.vocab import Vocab

def atomic_save(tensors: dict, path: str | Path, metadata: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # an ordinary file, readable like any other the user writes
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def weights_digest(module: torch.nn.Module) -> str:
    """Short hash of a module's weights: tells a cache made by a fine-tuned encoder from another."""
    h = hashlib.sha1()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def save_model(path, model: CaptionModel, vocab: Vocab, meta: dict | None = None,
               include_encoder: bool | None = None, dtype: torch.dtype = torch.float32, extra: dict | None = None) -> None:
    """``extra``: what ``export.py`` adds for the inference wing (``onnx`` graphs, ``onnx_io``,
    ``version``, ``preprocess``; ``modelfile.py``)."""
    if include_encoder is None:
        include_encoder = model.cfg.encoder != "efficientnet_lite2" or bool(meta and meta.get("finetuned"))
    sd = model.state_dict()
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).cpu() for k, v in sd.items()
               if include_encoder or not k.startswith("encoder.")}
    experts = {"experts": json.dumps([c.to_dict() for c in model.expert_cfgs])} if model.expert_cfgs else {}
    atomic_save(tensors, path, {"format": FORMAT, "config": json.dumps(model.cfg.to_dict()),
                                "vocab": vocab.to_json(), "meta": json.dumps(meta or {}),
                                "has_encoder": json.dumps(include_encoder), **experts, **_extra(extra)})


def _extra(extra: dict | None) -> dict:
    if not extra:
        return {}
    out = {}
    for k, v in extra.items():
        if k == "onnx":
            out[k] = encode_graphs(v)
        elif k == "preprocess":
            out[k] = json.dumps({"size": v.size, "mean": list(v.mean), "std": list(v.std)})
        else:
            out[k] = json.dumps(v)
    return out


def load_model(path=None, device: str | torch.device = "cpu", encoder_weights: str | None = None):
    """-> (model in eval mode, vocab, meta). ``path=None`` loads the shipped default model."""
    path = Path(path) if path else DEFAULT_MODEL
    md = read_header(path)
    cfg = ModelConfig.from_dict(json.loads(md["config"]))
    vocab = Vocab.from_json(md["vocab"])
    has_encoder = json.loads(md.get("has_encoder", "false"))
    model = CaptionModel(cfg, pretrained_encoder=not has_encoder, encoder_weights=encoder_weights)
    for d in json.loads(md.get("experts", "[]")):   # the decoders an adapted model started from
        model.add_expert(ModelConfig.from_dict(d))
    sd = {k: v for k, v in load_file(str(path)).items() if not k.startswith(KNOWLEDGE)}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if has_encoder or not k.startswith("encoder.")]
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the config (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    if len(vocab) != cfg.vocab_size:
        raise CheckpointError(f"{path}: vocabulary has {len(vocab)} words, config says {cfg.vocab_size}")
    model.float().to(device).eval()
    return model, vocab, json.loads(md.get("meta", "{}"))


def save_knowledge(path, tensors: dict, info: dict, out=None) -> None:
    """Rewrite the model file ``path`` (or write ``out``) with ``tensors`` (names starting with
    ``knowledge.``) and ``info`` added, replacing any earlier ones; atomic like every write."""
    path = Path(path)
    md = read_header(path)
    if any(not k.startswith(KNOWLEDGE) for k in tensors):
        raise ValueError(f"knowledge tensors must be named {KNOWLEDGE}*")
    kept = {k: v for k, v in load_file(str(path)).items() if not k.startswith(KNOWLEDGE)}
    dtype = next((v.dtype for k, v in kept.items() if v.is_floating_point()), torch.float32)
    tensors = {k: torch.as_tensor(v) for k, v in tensors.items()}   # numpy (knowledge/) or torch
    kept.update({k: (v.to(dtype) if v.is_floating_point() else v).cpu() for k, v in tensors.items()})
    atomic_save(kept, out or path, {**md, "knowledge": json.dumps(info)})


def load_knowledge(path=None) -> tuple[dict, dict] | None:
    """-> (the ``knowledge.*`` tensors in fp32, their JSON info), or None for a model file that
    was never calibrated."""
    path = Path(path) if path else DEFAULT_MODEL
    md = read_header(path)
    if "knowledge" not in md:
        return None
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k).float() for k in f.keys() if k.startswith(KNOWLEDGE)}
    return tensors, json.loads(md["knowledge"])


# ---------------------------------------------------------------- training state

def save_train_state(path, model, optimizers: dict, info: dict) -> None:
    """The resume point, in one atomic file: model weights, optimizer moments (flattened into
    tensors), the torch RNG state, and ``info`` (epoch, history...) as JSON.  Written last at
    the end of an epoch, so a kill at any moment leaves either the previous or the new state."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    groups = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        groups[name] = sd["param_groups"]
        for pid, st in sd["state"].items():
            for k, v in st.items():
                tensors[f"opt.{name}.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    tensors["rng.torch"] = torch.get_rng_state()
    atomic_save(tensors, path, {"format": FORMAT + "-train", "groups": json.dumps(groups),
                                "info": json.dumps(info)})


def load_train_state(path, model, optimizers: dict) -> dict:
    path = Path(path)
    check_safetensors(path)
    with safe_open(str(path), "pt") as f:
        md = f.metadata() or {}
    if md.get("format") != FORMAT + "-train":
        raise CheckpointError(f"{path}: not a captioner training state")
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    groups = json.loads(md["groups"])
    for name, opt in optimizers.items():
        state = {}
        prefix = f"opt.{name}."
        for key, v in tensors.items():
            if key.startswith(prefix):
                pid, _, k = key[len(prefix):].partition(".")
                state.setdefault(int(pid), {})[k] = v
        opt.load_state_dict({"state": state, "param_groups": groups[name]})
    torch.set_rng_state(tensors["rng.torch"])
    return json.loads(md["info"])
