"""Where training runs: the device, mixed precision and data-parallel processes, chosen once at the
edge (as torchvision's references' ``utils.init_distributed_mode``); model code follows ``x.device``.

    captioner train --device cuda --precision bf16 ...                 # one GPU
    torchrun --nproc_per_node 4 -m captioner train ...                 # one process per GPU (NCCL)
    torchrun --nproc_per_node 2 -m captioner train --device cpu ...    # or per CPU worker (gloo)
    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 \\
        --rdzv_backend c10d --rdzv_endpoint HOST:29500 -m captioner train ...   # several machines

Under torchrun (``WORLD_SIZE`` > 1) every process holds a replica of the model wrapped in
``DistributedDataParallel``; each global batch is split between the ranks (``share``) and each
rank's loss is normalised by the global batch's token count, so the gradients DDP averages are
those of one process on the whole batch.  Rank 0 alone evaluates, writes checkpoints, curves and
history; the others wait for it (``barrier``) and receive its decisions (``broadcast``).
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from captioner.backends.torch import resolve_device  # noqa: F401  (one device rule for training and inference)

TRAIN_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_train_precision(name: str, device: torch.device) -> torch.dtype | None:
    """-> the autocast dtype, or None for fp32.  ``auto``: bf16 on GPUs that have it, else fp32
    (on the CPU always fp32: its results stay as they were)."""
    if name not in TRAIN_PRECISIONS:
        raise ValueError(f"--precision {name}: choose one of {', '.join(TRAIN_PRECISIONS)}")
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if name == "fp16" and device.type == "cpu":
        raise ValueError("--precision fp16 needs a GPU; on the CPU use bf16 or fp32")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


@dataclass
class Dist:
    device: torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    amp_dtype: torch.dtype | None = None
    scaler: object = None            # torch.amp.GradScaler for fp16

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def share(self, batch: list) -> list:
        """This rank's part of a global batch (every rank sees the same global batches)."""
        return batch[self.rank::self.world] if self.distributed else batch

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, x: float) -> float:
        """The sum of ``x`` over the ranks."""
        if not self.distributed:
            return x
        t = torch.tensor([float(x)], dtype=torch.float64,
                         device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return float(t.item())

    def sum_grads(self, params: list) -> None:
        """Each parameter's gradient summed over the ranks, in one all-reduce (for steps that do not
        run through DDP's forward, as SCST's beam search and sampling); a missing gradient counts as 0."""
        if not self.distributed:
            return
        params = [p for p in params if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        i = 0
        for p, g in zip(params, grads):
            p.grad = flat[i:i + g.numel()].view_as(p).clone()
            i += g.numel()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model as this process trains it: DDP over the parameters that now require grad."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        # frozen batch-norm statistics need no broadcast; stages change which parameters train,
        # so a stage wraps the model again when it starts
        return DDP(model, device_ids=ids, broadcast_buffers=False)


def init(device: str = "auto", precision: str = "auto") -> Dist:
    """Read torchrun's environment, join the process group, pick the device and precision."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        timeout = datetime.timedelta(minutes=30)
        # torchrun's store outlives a restart (--max-restarts): the keys of each attempt get their own
        # prefix, or the restarted ranks may read a dead process's address and fail to connect
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                              is_master=rank == 0 and not agent_store, timeout=timeout)
        dist.init_process_group(backend, store=dist.PrefixStore(f"captioner/attempt{attempt}", store),
                                rank=rank, world_size=world, timeout=timeout)
    amp = resolve_train_precision(precision, dev)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    return Dist(dev, rank, world, local_rank, amp, scaler)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
