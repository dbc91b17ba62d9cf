"""The bridge from training to inference: write a trained checkpoint as a model file the inference
wing runs without torch.  It holds the weights (fp16, encoder included when it was fine-tuned) and the
ONNX graphs of the encoder and of the decoder's ``init_state`` and ``step`` (``modelfile.py``), whose
weights are references to the file's own tensors; then it is calibrated (``calibrate.py``: ImageNet
head, out-of-domain statistics, confidence) on the training data's train and dev splits.

    python -m captioner.training.export runs/main/best.safetensors [--out src/captioner/weights/default.safetensors]
    python -m captioner.training.export runs/main/best.safetensors --no-calibrate      # weights and graphs only

``graphs(model)`` is also what ``backends/`` calls, where torch is installed, for a checkpoint
straight from ``captioner train`` (cached; ``backends/onnx.py``).
"""
from __future__ import annotations

import argparse
import io
import warnings

import numpy as np
import torch
from torch import nn

from captioner.backends.fused import fused_prefix
from captioner.search import generate
from captioner.training import calibrate, checkpoint

OPSET = 17


class _Init(nn.Module):
    def __init__(self, decoder, tables: nn.ParameterDict):
        super().__init__()
        self.dec, self.tables = decoder, tables   # registered, so the graph names the fused tables

    def forward(self, feats):
        state, memory = self.dec.init_state(feats)
        return (*state, *(memory or ()))


class _Step(nn.Module):
    """One decoder step; the adaptive decoder's fused tables are registered here as parameters so
    the graph names them (``backends/fused.py`` computes them again at load)."""

    def __init__(self, decoder, n_state: int, tables: dict | None):
        super().__init__()
        self.dec, self.n_state = decoder, n_state
        self.tables = nn.ParameterDict({k: nn.Parameter(v, requires_grad=False) for k, v in (tables or {}).items()})

    def forward(self, words, *rest):
        state, memory = tuple(rest[:self.n_state]), tuple(rest[self.n_state:]) or None
        logits, state, alpha = self.dec.step(words, state, memory)
        return (logits, *state) + ((alpha,) if alpha is not None else ())


def _export(module, args, names_in, names_out, dynamic) -> bytes:
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
        # no constant folding: every weight stays the initializer of its own name, so it can be
        # replaced by a reference to the model file's tensor of that name
        torch.onnx.export(module, args, buf, input_names=names_in, output_names=names_out, dynamic_axes=dynamic,
                          opset_version=OPSET, dynamo=False, do_constant_folding=False)
    return buf.getvalue()


def _strip(graph: bytes, rename: dict[str, str], available: dict[str, np.ndarray], names: list) -> bytes:
    """Every initializer that is one of the file's tensors becomes an external reference to it
    (``backends/onnx.py`` supplies the data at load); the rest (small constants) stay in the graph."""
    import onnx
    from onnx import TensorProto, numpy_helper

    g = onnx.load_from_string(graph)
    for init in g.graph.initializer:
        name = rename.get(init.name)
        if name is None or name not in available:
            continue
        if numpy_helper.to_array(init).shape != available[name].shape:
            raise ValueError(f"ONNX initializer {init.name}: shape differs from {name}'s")
        old = init.name
        for node in g.graph.node:
            node.input[:] = [name if i == old else i for i in node.input]
        init.name = name
        names.append(name)
        for f in ("raw_data", "float_data", "int64_data", "int32_data", "double_data"):
            init.ClearField(f)
        init.data_location = TensorProto.EXTERNAL
        del init.external_data[:]
        for k, v in (("location", "model-file"), ("offset", "0"), ("length", "0")):
            e = init.external_data.add()
            e.key, e.value = k, v
    embedded = sum(len(i.raw_data) for i in g.graph.initializer if i.data_location != TensorProto.EXTERNAL)
    if available and embedded > 4_000_000:   # stripping left a weight behind
        raise ValueError(f"ONNX export kept {embedded / 1e6:.1f} MB of weights inside the graph")
    return g.SerializeToString()


def _quantize(graph: bytes) -> bytes:
    """ONNX Runtime's dynamic int8 quantisation of the step's matrix products (weights int8 per tensor,
    activations quantised per call).  The fused word table (a Gather) stays fp32: it is a lookup, not a
    product, and the file's own tensors rebuild it."""
    import tempfile
    from pathlib import Path

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src, dst = Path(d) / "step.onnx", Path(d) / "step_int8.onnx"
        src.write_bytes(graph)
        import logging

        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)   # "consider pre-processing": not for this graph
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        finally:
            logging.getLogger().setLevel(level)
        return dst.read_bytes()


def _decoder_graphs(dec, feats, strip: bool, tensor_prefix: str, graph_prefix: str) -> tuple[dict, dict, dict]:
    """One decoder's "init", "step" and "step_int8" graphs (named ``graph_prefix`` + those), its weights
    as references to the file's tensors ``tensor_prefix`` + their names -> (graphs, external weight names
    per graph, layout)."""
    file_names = {f"{tensor_prefix}{k}": v for k, v in dec.state_dict().items()}
    fused = fused_prefix(tensor_prefix)
    with torch.no_grad():
        state, memory = dec.init_state(feats)
    memory = tuple(memory or ())
    ns, nm = len(state), len(memory)
    tables = None
    if hasattr(dec, "fuse_for_inference"):
        dec.fuse_for_inference()      # export the exact fused step (model.py), its tables named
        tables = {k: v.clone() for k, v in dec._fused.items() if k != "versions"}
    step = _Step(dec, ns, tables).eval()   # eval: the exporter restores the mode it finds
    if tables:
        dec._fused = {**{k: step.tables[k] for k in tables}, "versions": dec._weight_versions()}
        with torch.no_grad():
            state, memory = dec.init_state(feats)   # the fused memory layout
    memory = tuple(memory or ())
    n_in = [f"state_{i}" for i in range(ns)] + [f"memory_{j}" for j in range(nm)]
    out, external = {}, {f"{graph_prefix}{k}": [] for k in ("init", "step", "step_int8")}
    rename_dec = {f"dec.{k}": f"{tensor_prefix}{k}" for k in dec.state_dict()}
    rename_dec.update({f"tables.{k}": f"{fused}{k}" for k in (tables or {})})
    available = dict(file_names)
    available.update({f"{fused}{k}": v for k, v in (tables or {}).items()})
    available = {k: v.detach().cpu().numpy() for k, v in available.items()} if strip else {}
    init_out = [f"state_{i}" for i in range(ns)] + [f"memory_{j}" for j in range(nm)]
    out[f"{graph_prefix}init"] = _strip(
        _export(_Init(dec, step.tables).eval(), (feats,), ["feats"], init_out,
                {"feats": {0: "images", 1: "cells"}, **{n: {0: "images"} for n in init_out}}),
        rename_dec, available, external[f"{graph_prefix}init"])
    words = torch.tensor([1, 5, 1, 7, 1, 9], dtype=torch.long)      # 2 images x 3 rows
    rows = torch.arange(2).repeat_interleave(3)
    args = (words, *(s[rows] for s in state), *memory)
    has_alpha = dec.step(words, tuple(s[rows] for s in state), memory or None)[2] is not None
    step_out = ["logits"] + [f"state_out_{i}" for i in range(ns)] + (["alpha"] if has_alpha else [])
    dynamic = {"words": {0: "rows"}, **{f"state_{i}": {0: "rows"} for i in range(ns)},
               **{f"memory_{j}": {0: "images"} for j in range(nm)}, **{n: {0: "rows"} for n in step_out}}
    if nm:
        for j in range(nm):
            if memory[j].dim() == 3:
                dynamic[f"memory_{j}"] = {0: "images", 1: "cells"}
    if has_alpha:
        dynamic["alpha"] = {0: "rows", 1: "cells"}
    raw_step = _export(step, args, ["words", *n_in], step_out, dynamic)
    out[f"{graph_prefix}step"] = _strip(raw_step, rename_dec, available, external[f"{graph_prefix}step"])
    # the int8 step (--precision int8): its quantised weights live in the graph, the rest in the file
    out[f"{graph_prefix}step_int8"] = _strip(_quantize(raw_step), rename_dec, available,
                                             external[f"{graph_prefix}step_int8"])
    if tables:
        dec.fuse_for_inference()    # back to the decoder's own tables
    return out, external, {"state": ns, "memory": nm, "alpha": has_alpha, "fused": sorted(tables or {}) if strip else []}


def graphs(model, strip: bool = True) -> tuple[dict[str, bytes], dict]:
    """-> (ONNX graphs "encoder", "init", "step" (and "step_int8"), and for each expert the model was
    adapted from (``training/adapt.py``) "expert1.init", "expert1.step", ..., with the weights as
    references to the model file's tensor names; their layout: state and memory counts, attention,
    fused tables and, per graph, the names of its external weights).  ``strip=False`` keeps every weight
    inside its graph (the cache of a checkpoint that has no graphs of its own)."""
    model = model.float().eval()
    cfg = model.cfg
    size = cfg.image_size
    with torch.no_grad():
        grid = model.encoder(torch.zeros(1, 3, size, size))
        feats = torch.randn(2, grid.size(2) * grid.size(3), cfg.feature_dim).abs()
    out, external, layout = _decoder_graphs(model.decoder, feats, strip, "decoder.", "")
    for i, dec in enumerate(model.experts, 1):
        g, ext, lay = _decoder_graphs(dec, feats, strip, f"experts.{i - 1}.", f"expert{i}.")
        if {k: v for k, v in lay.items() if k != "fused"} != {k: v for k, v in layout.items() if k != "fused"}:
            raise ValueError(f"expert {i}: its decoder's state layout differs from the main decoder's")
        out.update(g)
        external.update(ext)
    external["encoder"] = []
    enc_names = {k: f"encoder.{k}" for k in model.encoder.state_dict()}
    enc_avail = {f"encoder.{k}": v.detach().cpu().numpy() for k, v in model.encoder.state_dict().items()} if strip else {}
    out["encoder"] = _strip(_export(model.encoder, (torch.zeros(1, 3, size, size),), ["images"], ["grid"],
                                    {"images": {0: "batch"}, "grid": {0: "batch"}}), enc_names, enc_avail,
                            external["encoder"])
    io_spec = {**layout, "external": external, "opset": OPSET, "experts": len(model.experts)}
    return out, io_spec


def versions(model) -> dict:
    """Short digests of the weights: the encoder's (names its ONNX export, picks the kind
    classifier) and the whole model's (the version of a model file)."""
    return {"encoder": checkpoint.weights_digest(model.encoder), "weights": checkpoint.weights_digest(model)}


def write(path, model, vocab, meta: dict, dtype=torch.float16) -> None:
    """The model file: weights in ``dtype``, the encoder always included (the graphs refer to it), the
    ONNX graphs and the weight digests in the header."""
    model = model.float().eval()
    # the graphs are made from the weights as stored, so both back-ends compute with the same numbers
    stored = {k: v.to(dtype).float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    model.load_state_dict(stored)
    g, io_spec = graphs(model)
    checkpoint.save_model(path, model, vocab, meta, include_encoder=True, dtype=dtype,
                          extra={"onnx": g, "onnx_io": io_spec, "version": versions(model),
                                 "preprocess": model.preprocess})


def cache_graphs(path, folder) -> None:
    """The graphs of a checkpoint that has none (``backends/onnx.py``), weights inside, written to
    ``folder`` atomically (the spec last, so a half-written folder is never read)."""
    import json
    import os
    from pathlib import Path

    model, _, _ = checkpoint.load_model(path)
    g, io_spec = graphs(model, strip=False)
    io_spec["encoder_digest"] = checkpoint.weights_digest(model.encoder)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for k, v in g.items():
        tmp = folder / f".{k}.onnx.tmp{os.getpid()}"
        tmp.write_bytes(v)
        os.replace(tmp, folder / f"{k}.onnx")
    pre = model.preprocess
    spec = {"graphs": sorted(g), "io": io_spec, "preprocess": {"size": pre.size, "mean": list(pre.mean), "std": list(pre.std)}}
    tmp = folder / f".spec.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(spec))
    os.replace(tmp, folder / "spec.json")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="trained checkpoint (.safetensors)")
    ap.add_argument("--out", default=str(checkpoint.DEFAULT_MODEL), help="where to write the fp16 model file")
    ap.add_argument("--no-calibrate", action="store_true",
                    help="skip calibration (the model then gives no in_domain, confidence or tags)")
    ap.add_argument("--keep-knowledge", action="store_true",
                    help="re-exporting a model file that is already calibrated (the same weights, say for a new "
                         "file layout): carry its knowledge over instead of calibrating again")
    calibrate.add_arguments(ap)
    args = ap.parse_args(argv)
    kept = checkpoint.load_knowledge(args.checkpoint) if args.keep_knowledge else None
    if args.keep_knowledge and kept is None:
        raise SystemExit(f"--keep-knowledge: {args.checkpoint} holds no knowledge (it was never calibrated)")
    model, vocab, meta = checkpoint.load_model(args.checkpoint)
    # a re-export of an exported file keeps the name of the run it came from
    meta = {**meta, "exported_from": meta.get("exported_from", str(args.checkpoint)) if args.keep_knowledge
            else str(args.checkpoint)}
    feats = torch.randn(8, 49, model.cfg.feature_dim).abs()
    with torch.inference_mode():
        a = [h[0].tokens for h in generate(model, feats)]
    write(args.out, model, vocab, meta)
    half, _, _ = checkpoint.load_model(args.out)
    with torch.inference_mode():
        b = [h[0].tokens for h in generate(half, feats)]
    same = sum(x == y for x, y in zip(a, b))
    print(f"wrote {args.out}; fp16 gives the same caption as fp32 for {same}/8 random feature grids")
    if kept is not None:
        checkpoint.save_knowledge(args.out, *kept)
        print(f"{args.out}: knowledge carried over from {args.checkpoint}")
    elif not args.no_calibrate:
        calibrate.calibrate(args.out, args.data, None, args.batch_size, args.encoder_weights, args.layout,
                            args.backend, args.precision, args.no_repeat_ngram, not args.no_guidance,
                            device=args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
