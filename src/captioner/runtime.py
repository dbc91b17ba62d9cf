"""Inference settings chosen once, at the edge, and the flags every entry point shares
(``Captioner(backend=..., device=..., precision=...)``; ``--backend`` / ``--device`` / ``--precision``).

``backend``
  * ``onnx`` - ONNX Runtime runs the model file's encoder and decoder step (``backends/onnx.py``);
    no torch.  On the CPU, or on a GPU where ``onnxruntime-gpu`` is installed.
  * ``torch`` - PyTorch (``backends/torch.py``; ``pip install 'captioner[train]'``), for GPUs and for
    the bf16 decoder on CPUs with AMX.
  * ``auto`` (default) - ``torch`` where a CUDA or MPS device or bf16 is asked for, else ``onnx``.

``precision`` of the decoder: ``auto`` (fp32, or bf16 on the torch back-end on CPUs with AMX), ``fp32``,
``bf16`` (torch back-end, ``backends/torch.py``) or ``int8`` (ONNX Runtime's dynamically quantised step,
``backends/onnx.py``).  The caption-quality cost of each choice is measured in docs/speed.md.
"""
from __future__ import annotations

import numbers
import os
import sys
from pathlib import Path

BACKENDS = ("auto", "onnx", "torch")
DEVICES = "auto, cpu, cuda, cuda:N or mps"
DEVICE_HELP = ("auto (the GPU where onnxruntime-gpu is installed, else the CPU; with --backend torch: CUDA, else MPS, "
               "else CPU), cpu, cuda, cuda:N or mps")
PRECISIONS = ("auto", "fp32", "bf16", "int8")


def whole(name: str, value, minimum: int, maximum: int | None = None) -> int:
    """``value`` if it is a whole number from ``minimum`` to ``maximum`` (None: no limit), else a
    ValueError naming ``name`` (a batch size of -3 once captioned nothing and said nothing; a beam size
    of 0 ended in a traceback)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum
            or (maximum is not None and value > maximum)):
        raise ValueError(f"{name} {value!r}: give a whole number, {_range(minimum, maximum)}")
    return int(value)


def _range(minimum: int, maximum: int | None) -> str:
    return f"{minimum} or more" if maximum is None else f"{minimum} to {maximum}"


def whole_type(minimum: int, maximum: int | None = None):
    """An argparse ``type``: a whole number from ``minimum`` to ``maximum``; argparse's message names
    the flag.  (``whole_type(0, 65535)``: a port.)"""
    import argparse

    def parse(text: str) -> int:
        try:
            return whole("", int(text), minimum, maximum)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: give a whole number, {_range(minimum, maximum)}") from None

    parse.__name__ = "whole number"
    return parse


def cache_dir() -> Path:
    return Path(os.environ.get("CAPTIONER_CACHE", Path.home() / ".cache" / "captioner"))


def torch_available() -> bool:
    """Whether PyTorch can be imported here, without importing it (seconds of start-up)."""
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def choose_backend(backend: str = "auto", device: str = "auto", precision: str = "auto") -> str:
    """-> "onnx" or "torch", with a message naming the setting that cannot be met."""
    if backend not in BACKENDS:
        raise ValueError(f"backend '{backend}': choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision '{precision}': choose one of {', '.join(PRECISIONS)}")
    dev = str(device or "auto").strip().lower()
    wants_torch = precision == "bf16" or dev.startswith("mps") or (dev.startswith("cuda") and not _ort_cuda())
    if backend == "auto":
        backend = "torch" if wants_torch else "onnx"
    if backend == "torch" and precision == "int8":
        raise ValueError("precision int8 runs on the onnx back-end (--backend onnx)")
    if backend == "onnx" and precision == "bf16":
        raise ValueError("precision bf16 runs on the torch back-end (--backend torch); ONNX Runtime runs fp32")
    if backend == "onnx" and wants_torch:
        raise ValueError(f"device {device}: ONNX Runtime here has no such provider (CUDA needs onnxruntime-gpu); "
                         "use --backend torch")
    if backend == "torch" and not torch_available():
        raise ValueError("the torch back-end needs PyTorch: pip install 'captioner[train]' (or use --backend onnx)"
                         + (f"; asked for by --device {device}" if dev not in ("auto", "cpu") else "")
                         + ("; asked for by --precision bf16" if precision == "bf16" else ""))
    return backend


def uses_gpu(backend: str = "auto", device: str = "auto", precision: str = "auto") -> bool:
    """Whether a model loaded with these settings would run on a GPU (CUDA or MPS), decided without
    loading it (``parallel.plan``: a GPU is owned by one process)."""
    dev = str(device or "auto").strip().lower()
    if dev.startswith(("cuda", "mps")):
        return True
    if dev != "auto":
        return False
    if choose_backend(backend, device, precision) == "onnx":
        return _ort_cuda()
    if not gpu_nodes():
        return False
    import torch

    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps is not None and mps.is_available())


# A CUDA or ROCm GPU on Linux shows as device nodes, inside containers too (the NVIDIA container
# runtime mounts them; WSL2 has /dev/dxg): where there are none, torch.cuda.is_available() is False.
_GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd")


def gpu_nodes() -> bool:
    """Whether this machine may have a GPU torch could use, known without importing torch: importing it
    to ask costs a process half a gigabyte for the rest of its life (measured: 510 MB PSS), which a
    pool's parent, which never loads the model itself, would hold for a whole library run.  Off Linux
    (Apple's MPS, Windows) only torch can tell."""
    return not sys.platform.startswith("linux") or any(os.path.exists(p) for p in _GPU_NODES)


def _ort_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def load_model(path=None, backend: str = "auto", device: str = "auto", precision: str = "auto",
               threads: int | None = None, encoder_weights: str | None = None):
    """One model file on the chosen back-end: an ``OnnxModel`` or a ``TorchModel`` (``backends/``)."""
    name = choose_backend(backend, device, precision)
    if name == "onnx":
        from captioner.backends.onnx import OnnxModel

        return OnnxModel(path, threads, ["CPUExecutionProvider"] if str(device).lower() == "cpu" else None, precision)
    from captioner.backends.torch import TorchModel, resolve_device

    dev = resolve_device(device) if isinstance(device, str) else device
    return TorchModel(path, dev, precision, encoder_weights, threads)


def add_model_argument(p) -> None:
    """``--model``, one path per flag (repeated for an ensemble), so it never swallows the photos after it."""
    p.add_argument("--model", action="append", default=None, metavar="MODEL",
                   help="checkpoint (.safetensors); repeat the flag for an ensemble (--model a.safetensors "
                        "--model b.safetensors); default: the shipped model")


def check_model_args(models, paths=()) -> None:
    """A photo given as a model, or a model given as a photo, is named with what it was read as."""
    from captioner.images import IMAGE_SUFFIXES

    for m in models or []:
        if Path(m).suffix.lower() in IMAGE_SUFFIXES:
            raise ValueError(f"--model {m}: read as a model file, but it is an image; give one model per --model "
                             "(repeat the flag for an ensemble) and the photos as plain arguments")
    for p in paths:
        if str(p).endswith(".safetensors"):
            raise ValueError(f"{p}: read as a photo to caption, but it is a model file; to caption with it, "
                             f"write --model {p}")


def add_arguments(ap) -> None:
    """The inference flags every entry point shares."""
    from captioner.search import DEFAULT_NO_REPEAT_NGRAM

    ap.add_argument("--device", default="auto", help=DEVICE_HELP)
    ap.add_argument("--backend", default="auto", choices=BACKENDS,
                    help="onnx (ONNX Runtime, no torch), torch (PyTorch, for GPUs), or auto (torch only where a "
                         "GPU device or bf16 asks for it)")
    ap.add_argument("--precision", default="auto", choices=PRECISIONS,
                    help="decoder products: fp32, int8 (ONNX Runtime, quantised step), bf16 (torch back-end, fast on "
                         "CPUs with AMX), or auto (fp32; bf16 on the torch back-end with AMX)")
    ap.add_argument("--no-repeat-ngram", type=whole_type(0), default=DEFAULT_NO_REPEAT_NGRAM,
                    help="forbid repeating any n-gram of this length within a caption (0: off)")
    ap.add_argument("--no-guidance", action="store_true",
                    help="never guide a caption with an ImageNet tag's word (constrained beam search)")
