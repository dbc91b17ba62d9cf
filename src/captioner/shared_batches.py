"""Decoded batches handed from decoding processes to the process that drives a GPU through shared
memory, instead of through a pipe.

The GPU path (``api.Captioner._device_batches``) has its images decoded in worker processes; a
batch of 256 images at 260 pixels is 52 MB of uint8 pixels.  Sent back as a pickled result, the
driving process reads it from a pipe 64 KB at a time, about 0.2 ms of its CPU an image
(``benchmarks/bench_gpu.py``'s ``decoding_alone`` measures it), a good part of what one process
may spend an image at thousands of images a second.  A fresh shared memory block per batch was
slower still (every page of it faults in, in both processes).  So the driving process makes a
ring of blocks once, one per batch in flight; a worker maps each block the first time it is
given it and decodes straight into it; the driving process copies the pixels out and gives the
block to the next batch.

``/dev/shm`` is often small in containers (Docker's default is 64 MB), and a write beyond it kills
the writer with SIGBUS; so ``room_for`` checks the free space first, and the caller falls back to
the pipe when the ring would not fit twice over.

    with Ring(count, nbytes) as ring:                   # the driving process
        slot = ring.lend()                              # a free block's name, for a decode_batch task
        ...
        pixels = ring.take(slot, (n, size, size, 3))    # a private copy; the block is free again
    rows = attached(slot, shape)                        # in a worker: the block as an array
"""
from __future__ import annotations

import os
from multiprocessing import shared_memory

import numpy as np

SHM_DIR = "/dev/shm"


def room_for(nbytes: int) -> bool:
    """Whether shared memory can hold ``nbytes`` twice over (Linux's tmpfs at /dev/shm)."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:     # no /dev/shm (macOS, Windows): the pipe
        return False
    return st.f_bavail * st.f_frsize >= 2 * nbytes


class Ring:
    """``count`` shared memory blocks of ``nbytes`` each, made and finally removed by the driving
    process; a block is lent to one batch at a time."""

    def __init__(self, count: int, nbytes: int):
        self.blocks: dict[str, shared_memory.SharedMemory] = {}
        try:
            for _ in range(count):
                b = shared_memory.SharedMemory(create=True, size=max(nbytes, 1))
                self.blocks[b.name] = b
        except BaseException:
            self.close()
            raise
        self.free = list(self.blocks)

    def lend(self) -> str:
        return self.free.pop()

    def take(self, name: str, shape: tuple) -> np.ndarray:
        """The pixels a worker wrote into block ``name``, copied out; the block is free again."""
        pixels = np.array(np.ndarray(shape, np.uint8, buffer=self.blocks[name].buf))
        self.free.append(name)
        return pixels

    def give_back(self, name: str) -> None:
        self.free.append(name)

    def close(self) -> None:
        for b in self.blocks.values():
            b.close()
            b.unlink()
        self.blocks = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# in a decoding process: the blocks it was lent, mapped once each (mapping a block per batch made
# every page fault in again); they go when the process ends
_mapped: dict[str, shared_memory.SharedMemory] = {}


def attached(name: str, shape: tuple) -> np.ndarray:
    """In a worker: block ``name`` as a uint8 array of ``shape``."""
    if name not in _mapped:
        _mapped[name] = shared_memory.SharedMemory(name=name)
    return np.ndarray(shape, np.uint8, buffer=_mapped[name].buf)
