"""The ONNX Runtime back-end (the default; numpy and onnxruntime only, no torch): a model file's
encoder and one decoder step run by ONNX Runtime, the search (``search.py``) on the numpy arrays it
returns.

The graphs come from the model file (``modelfile.py``; written by ``python -m
captioner.training.export``); each weight in them is a reference to the file's tensor of the same
name, supplied here when the session is made, so the weights are stored once.  A checkpoint straight
from ``captioner train`` has no graphs: where torch is installed they are made once by the exporter
and cached in ``~/.cache/captioner/onnx`` under the checkpoint's digest; where it is not, the message
says how to export it.

``ORT_DISABLE_TELEMETRY`` is set by ``captioner/__init__.py`` before onnxruntime is imported.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from captioner import modelfile
from captioner.runtime import cache_dir
from captioner.backends.fused import fused_prefix, fused_tables
from captioner.modelfile import CheckpointError
from captioner.preprocess import Preprocess


@dataclass
class Config:
    """The part of a model's ``ModelConfig`` (``training/model.py``) that inference reads."""
    vocab_size: int
    max_len: int
    decoder: str
    encoder: str
    image_size: int
    feature_dim: int

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        return cls(d["vocab_size"], d.get("max_len", 30), d.get("decoder", "attention"), d.get("encoder", ""),
                   d.get("image_size", 224), d.get("feature_dim", 0))


def session_options(threads: int | None):
    import onnxruntime as ort

    from captioner.parallel import cores

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or cores()   # the cores this process may use (taskset, containers)
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ORT's workers otherwise spin for a while after each run, stealing the cores from whatever runs
    # next (measured with the torch decoder: 78 -> 41 ms per single image on 2 cores)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # ORT's memory pattern plans one block of buffers per input shape it sees and keeps each; the
    # search's row count changes as captions end, so a process collected dozens.  Without it one
    # process peaks at 578 MB instead of 762 on 1,000 photos, at the same speed, with the same answers
    # (benchmarks/bench_pool_memory.py; docs/speed.md)
    opts.enable_mem_pattern = False
    return opts


class OnnxModel:
    """One model file on ONNX Runtime: ``encode`` (images -> grid), ``decoder`` (the ``step()``
    interface of ``search.py``), ``cfg``, ``preprocess``, ``vocab``, ``digest`` (the encoder's)."""

    name = "onnx"

    def __init__(self, path=None, threads: int | None = None, providers=None, precision: str = "fp32"):
        import onnxruntime as ort

        mf = modelfile.read(path)
        self.file, self.vocab, self.meta = mf, mf.vocab, mf.meta
        self.cfg = Config.from_dict(mf.config)
        graphs, io_spec, pre = _graphs(mf)
        self.preprocess = Preprocess(pre["size"], tuple(pre["mean"]), tuple(pre["std"]))
        self.digest = mf.version.get("encoder") or io_spec.get("encoder_digest")
        self.version = mf.version.get("weights")    # the model file's version: a digest of its weights
        weights = mf.tensors()
        n_experts = io_spec.get("experts", 0)
        if io_spec.get("fused"):
            for prefix in ["decoder."] + [f"experts.{i}." for i in range(n_experts)]:
                weights.update({fused_prefix(prefix) + k: np.ascontiguousarray(v, np.float32)
                                for k, v in fused_tables(weights, prefix).items()})
        available = ort.get_available_providers()
        self.providers = providers or (["CUDAExecutionProvider", "CPUExecutionProvider"]
                                       if "CUDAExecutionProvider" in available else ["CPUExecutionProvider"])
        self.device = "cuda" if self.providers[0].startswith("CUDA") else "cpu"
        self._keep = []      # the OrtValues the sessions read their weights from must outlive them
        # fp32, or int8: the step whose matrix products ONNX Runtime's dynamic quantisation made int8
        # (training/export.py; docs/speed.md measures what it costs)
        self.precision = "int8" if precision == "int8" else "fp32"
        step = "step_int8" if self.precision == "int8" else "step"
        if step not in graphs:
            raise CheckpointError(f"{mf.path}: no int8 step in this model file; export it again "
                                  "(python -m captioner.training.export) or use --precision fp32")
        external = io_spec.get("external", {})
        names = ["encoder", "init", step] + [f"expert{i}.{g}" for i in range(1, n_experts + 1) for g in ("init", step)]
        self.sessions = {k: self._session(graphs[k], external.get(k, []), weights, threads) for k in names}
        self.decoder = OnnxDecoder(self.sessions["init"], self.sessions[step], io_spec)
        # the decoders an adapted model started from (training/adapt.py), each with its vocabulary size
        self.experts = [Expert(OnnxDecoder(self.sessions[f"expert{i}.init"], self.sessions[f"expert{i}.{step}"],
                                           io_spec), Config.from_dict(c))
                        for i, c in enumerate(mf.experts, 1)]

    def _session(self, graph: bytes, names: list[str], weights: dict, threads):
        """A session for ``graph`` whose weights ``names`` are the file's tensors of those names."""
        import onnxruntime as ort

        opts = session_options(threads)
        missing = [n for n in names if n not in weights]
        if missing:
            raise CheckpointError(f"{self.file.path}: its ONNX graph needs tensors the file lacks ({missing[:3]})")
        values = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(weights[n])) for n in names]
        self._keep += values
        if names:
            opts.add_external_initializers(names, values)
        return ort.InferenceSession(graph, opts, providers=self.providers)

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Preprocessed images [B, 3, S, S] -> feature grid [B, C, H, W]."""
        x = np.ascontiguousarray(images, dtype=np.float32)
        return self.sessions["encoder"].run(None, {"images": x})[0]


@dataclass
class Expert:
    """A decoder with its config: what ``search.generate`` takes as a model."""
    decoder: object
    cfg: Config


class OnnxDecoder:
    """``init_state`` and ``step`` as ``training/model.py``'s decoders define them, on numpy arrays."""

    def __init__(self, init, step, io_spec: dict):
        self.init, self.step_session = init, step
        self.ns, self.nm, self.alpha = io_spec["state"], io_spec["memory"], io_spec["alpha"]

    def init_state(self, feats):
        out = self.init.run(None, {"feats": np.ascontiguousarray(feats, dtype=np.float32)})
        return tuple(out[:self.ns]), (tuple(out[self.ns:]) if self.nm else None)

    def step(self, words, state, memory):
        feed = {"words": np.ascontiguousarray(words, dtype=np.int64)}
        feed.update({f"state_{i}": s for i, s in enumerate(state)})
        feed.update({f"memory_{j}": m for j, m in enumerate(memory or ())})
        out = self.step_session.run(None, feed)
        return out[0], tuple(out[1:1 + self.ns]), (out[1 + self.ns] if self.alpha else None)


def _graphs(mf: modelfile.ModelFile) -> tuple[dict, dict, dict]:
    """-> (graphs, their layout, preprocessing) from the model file, or from the exporter's cache for a
    checkpoint that has none (made there once, where torch is installed)."""
    if mf.graphs is not None:
        return mf.graphs, json.loads(mf.header["onnx_io"]), json.loads(mf.header["preprocess"])   # read once
    h = hashlib.sha1()
    with open(mf.path, "rb") as f:   # the file's own digest: a retrained checkpoint is exported again
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    folder = cache_dir() / "onnx" / h.hexdigest()[:16]
    spec = folder / "spec.json"
    if not spec.is_file():
        try:
            from captioner.training.export import cache_graphs
        except ImportError:
            raise CheckpointError(
                f"{mf.path}: this checkpoint has no ONNX graphs (it comes straight from training). Export it "
                f"where PyTorch is installed: pip install 'captioner[train]' && python -m captioner.training.export "
                f"{mf.path} --out MODEL.safetensors --no-calibrate (or install captioner[train] here: it is then "
                f"exported on first load)") from None
        cache_graphs(mf.path, folder)
    s = json.loads(spec.read_text())
    graphs = {k: (folder / f"{k}.onnx").read_bytes() for k in s["graphs"]}
    return graphs, s["io"], s["preprocess"]
