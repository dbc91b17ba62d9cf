"""The PyTorch back-end, for GPUs (imported only when chosen: ``--backend torch``, or a CUDA/MPS
``--device``): the model file read into ``training/model.py``'s ``CaptionModel``, the encoder in
channels-last order, the decoder's ``step()`` under ``inference_mode``; the search
(``search.py``) runs on its tensors where they are.  This module is the inference wing's one door
into the training wing, and needs ``pip install 'captioner[train]'``.

Decoder ``precision`` (chosen once, here)
  * ``bf16`` - the decoder's large matrix products (LSTM, word classifier, gate) in bfloat16
    with fp32 results; attention, the LSTM cell state and beam scores stay fp32 (bf16
    element-wise maths is slower on CPUs, and the state would drift).  Pays off only where
    the CPU multiplies bf16 matrices in hardware (Intel AMX).
  * ``fp32`` - full precision, with the exact fused step of the adaptive decoder.
  * ``auto`` - ``bf16`` on CPUs with AMX, else ``fp32``.
"""
from __future__ import annotations

import numpy as np
import torch

from captioner.runtime import DEVICES, PRECISIONS


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


class TorchModel:
    """The same interface as ``backends.onnx.OnnxModel``: ``encode``, ``decoder``, ``cfg``,
    ``preprocess``, ``vocab``, ``meta``, ``digest``; arrays are torch tensors on ``device``."""

    name = "torch"

    def __init__(self, path=None, device: torch.device = torch.device("cpu"), precision: str = "auto",
                 encoder_weights: str | None = None, threads: int | None = None):
        from captioner import modelfile
        from captioner.preprocess import Preprocess
        from captioner.training import checkpoint

        if threads:
            torch.set_num_threads(threads)
        self.device = device
        self.model, self.vocab, self.meta = checkpoint.load_model(path, device, encoder_weights)
        self.cfg = self.model.cfg
        p = self.model.preprocess
        self.preprocess = Preprocess(p.size, p.mean, p.std)
        version = modelfile.read(path).version
        self.digest = version.get("encoder") or checkpoint.weights_digest(self.model.encoder)
        self.version = version.get("weights")
        self.encoder = self.model.encoder.to(memory_format=torch.channels_last)
        self.precision = resolve_precision(precision, device)
        for dec in [self.model.decoder, *self.model.experts]:
            if self.precision == "bf16":
                bf16_matmuls(dec)
            elif hasattr(dec, "fuse_for_inference"):   # exact rewrites of the fp32 step (model.py)
                dec.fuse_for_inference()
        self.decoder = _InferenceDecoder(self.model.decoder)
        # the decoders an adapted model started from (training/adapt.py), as search.generate takes them
        self.experts = [_Expert(_InferenceDecoder(d), c) for d, c in zip(self.model.experts, self.model.expert_cfgs)]

    @torch.inference_mode()
    def encode(self, images) -> torch.Tensor:
        if isinstance(images, torch.Tensor):   # already on the device (normalise below)
            x = images.to(self.device, torch.float32)
        else:
            x = torch.as_tensor(np.ascontiguousarray(images, dtype=np.float32)).to(self.device)
        return self.encoder(x.contiguous(memory_format=torch.channels_last))

    @torch.inference_mode()
    def normalise(self, pixels: np.ndarray) -> torch.Tensor:
        """uint8 pixels [B, S, S, 3] -> normalised float32 images [B, 3, S, S] on the device: copied
        from pinned memory without waiting (on CUDA), then ``preprocess.to_array``'s arithmetic
        (/ 255, - mean, / std, in float32) on the device."""
        t = torch.from_numpy(np.ascontiguousarray(pixels))
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        else:
            t = t.to(self.device)
        x = t.permute(0, 3, 1, 2).to(torch.float32) / torch.tensor(255.0, device=self.device)
        m = torch.tensor(self.preprocess.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        s = torch.tensor(self.preprocess.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        return (x - m) / s


class _Expert:
    def __init__(self, decoder, cfg):
        self.decoder, self.cfg = decoder, cfg


class _InferenceDecoder:
    def __init__(self, decoder):
        self.decoder = decoder

    @torch.inference_mode()
    def init_state(self, feats):
        return self.decoder.init_state(torch.as_tensor(feats).float())

    @torch.inference_mode()
    def step(self, words, state, memory):
        return self.decoder.step(words, state, memory)
