"""Inference back-ends: how a loaded model's encoder and decoder run. Chosen once, at the edge
(``Captioner(backend=..., precision=...)``, ``--backend`` / ``--precision`` on the command line).

Encoder ``backend``
  * ``onnx`` - the encoder is exported to ONNX once (cached in ``~/.cache/captioner/onnx``,
    keyed by a hash of its weights, so a fine-tuned encoder gets its own file) and run by
    ONNX Runtime, whose fused depthwise convolutions are much faster on CPUs than eager
    PyTorch; outputs match PyTorch to ~1e-5.
  * ``torch`` - PyTorch eager in channels-last memory order (also used on GPUs).
  * ``auto`` (default) - ``onnx`` on CPU when ``onnxruntime`` is installed, else ``torch``.

Decoder ``precision``
  * ``bf16`` - the decoder's large matrix products (LSTM, word classifier, gate) in bfloat16
    with fp32 results; attention, the LSTM cell state and beam scores stay fp32 (bf16
    element-wise maths is slower on CPUs, and the state would drift).  Pays off only where
    the CPU multiplies bf16 matrices in hardware (Intel AMX).
  * ``fp32`` - full precision.
  * ``auto`` (default) - ``bf16`` on CPUs with AMX, else ``fp32``.

The caption-quality cost of each choice is measured on the test split in the README.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

BACKENDS = ("auto", "onnx", "torch")
DEVICES = "auto, cpu, cuda, cuda:N or mps"
DEVICE_HELP = "auto (CUDA when present, else MPS, else CPU), cpu, cuda, cuda:N or mps"
PRECISIONS = ("auto", "fp32", "bf16")


def cache_dir() -> Path:
    return Path(os.environ.get("CAPTIONER_CACHE", Path.home() / ".cache" / "captioner"))


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: the process's GPU where CUDA is present, else Apple's MPS, else the CPU."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: not a device; choose {DEVICES}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: this PyTorch sees no CUDA GPU")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        elif device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) here")
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"--device {name}: MPS is not available")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name}: choose {DEVICES}")
    return device


def has_amx() -> bool:
    """True where the CPU has AMX tiles for bf16 matrix products (Sapphire Rapids and later)."""
    try:
        return bool(torch.cpu._is_amx_tile_supported()) and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision '{precision}': choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cpu" and has_amx() else "fp32"
    return precision


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class Bf16Linear(torch.nn.Module):
    """A Linear whose product runs in bfloat16; input and output stay fp32."""

    def __init__(self, lin: torch.nn.Linear):
        super().__init__()
        self.weight = torch.nn.Parameter(lin.weight.detach().to(torch.bfloat16), requires_grad=False)
        self.bias = torch.nn.Parameter(lin.bias.detach().float(), requires_grad=False) if lin.bias is not None else None

    def forward(self, x):
        y = torch.nn.functional.linear(x.to(torch.bfloat16), self.weight).float()
        return y + self.bias if self.bias is not None else y


class Bf16LSTMCell(torch.nn.Module):
    """nn.LSTMCell with its two products in bfloat16 and the gates and cell state in fp32."""

    def __init__(self, cell: torch.nn.LSTMCell):
        super().__init__()
        self.w_ih = torch.nn.Parameter(cell.weight_ih.detach().to(torch.bfloat16), requires_grad=False)
        self.w_hh = torch.nn.Parameter(cell.weight_hh.detach().to(torch.bfloat16), requires_grad=False)
        self.bias = torch.nn.Parameter((cell.bias_ih + cell.bias_hh).detach().float(), requires_grad=False)

    def forward(self, x, state):
        h, c = state
        gates = (torch.nn.functional.linear(x.to(torch.bfloat16), self.w_ih)
                 + torch.nn.functional.linear(h.to(torch.bfloat16), self.w_hh)).float() + self.bias
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


def bf16_matmuls(decoder: torch.nn.Module) -> torch.nn.Module:
    """Swap the decoder's large products for bfloat16 ones, in place (inference only)."""
    for name, m in list(decoder.named_children()):
        if isinstance(m, torch.nn.LSTMCell):
            setattr(decoder, name, Bf16LSTMCell(m))
        elif isinstance(m, torch.nn.Linear) and m.out_features > 1 and name not in ("feat_att",):
            # feat_att runs once per image, not per word: no gain, keep its precision
            setattr(decoder, name, Bf16Linear(m))
    return decoder


class TorchEncoder:
    """The PyTorch encoder in channels-last order: images [B, 3, S, S] -> grid [B, C, H, W]."""

    name = "torch"

    def __init__(self, encoder):
        self.encoder = encoder.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        dev = next(self.encoder.parameters()).device
        return self.encoder(x.to(dev, memory_format=torch.channels_last))


class OnnxEncoder:
    """The same encoder run by ONNX Runtime on the CPU: images [B, 3, S, S] -> grid [B, C, H, W]."""

    name = "onnx"

    def __init__(self, encoder, threads: int | None = None, cache: Path | None = None, digest: str | None = None):
        import onnxruntime as ort

        from .checkpoint import weights_digest

        size = encoder.preprocess.size
        digest = digest or weights_digest(encoder)   # the caller's, where it already has it (hashing costs ~0.1 s)
        path = (cache or cache_dir() / "onnx") / f"{encoder.name}_{size}_{digest}.onnx"
        if not path.is_file():
            export_onnx(encoder, path, size)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT's workers otherwise spin for a while after each run, stealing the cores from the
        # PyTorch decoder that runs next (measured: 78 -> 41 ms per single image on 2 cores)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.path = path

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().cpu().float().contiguous()
        return torch.from_numpy(self.session.run(None, {"images": x.numpy()})[0])


def export_onnx(encoder, path: Path, size: int) -> None:
    """Write the encoder as an ONNX graph with a dynamic batch size, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    encoder = encoder.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
            torch.onnx.export(encoder, torch.zeros(1, 3, size, size), str(tmp), input_names=["images"],
                              output_names=["grid"], dynamic_axes={"images": {0: "batch"}, "grid": {0: "batch"}},
                              opset_version=17, dynamo=False)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def add_model_argument(p) -> None:
    """``--model``, one path per flag (repeated for an ensemble), so it never swallows the photos after it."""
    p.add_argument("--model", action="append", default=None, metavar="MODEL",
                   help="checkpoint (.safetensors); repeat the flag for an ensemble (--model a.safetensors "
                        "--model b.safetensors); default: the shipped model")


def check_model_args(models, paths=()) -> None:
    """A photo given as a model, or a model given as a photo, is named with what it was read as."""
    from .images import IMAGE_SUFFIXES

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
    from .decode import DEFAULT_NO_REPEAT_NGRAM

    ap.add_argument("--device", default="auto", help=DEVICE_HELP)
    ap.add_argument("--backend", default="auto", choices=BACKENDS,
                    help="encoder back-end: onnx (ONNX Runtime), torch, or auto (onnx where installed)")
    ap.add_argument("--precision", default="auto", choices=PRECISIONS,
                    help="decoder matrix products: bf16 (fast on CPUs with AMX), fp32, or auto")
    ap.add_argument("--no-repeat-ngram", type=int, default=DEFAULT_NO_REPEAT_NGRAM,
                    help="forbid repeating any n-gram of this length within a caption (0: off)")
    ap.add_argument("--no-guidance", action="store_true",
                    help="never guide a caption with an ImageNet tag's word (constrained beam search)")


def make_encoder(encoder, backend: str = "auto", device: torch.device = torch.device("cpu"), digest: str | None = None):
    """-> a callable images -> grid for the chosen back-end. ``auto`` falls back to PyTorch,
    with a warning, if the ONNX export or session fails."""
    if backend not in BACKENDS:
        raise ValueError(f"backend '{backend}': choose one of {', '.join(BACKENDS)}")
    if backend == "onnx" and device.type != "cpu":
        raise ValueError(f"backend 'onnx' runs on the CPU only, not on {device}")
    if backend == "onnx" or (backend == "auto" and device.type == "cpu" and onnxruntime_available()):
        try:
            return OnnxEncoder(encoder, digest=digest)
        except Exception as e:
            if backend == "onnx":
                raise
            warnings.warn(f"ONNX Runtime encoder unavailable ({type(e).__name__}: {e}); using PyTorch")
    return TorchEncoder(encoder)
