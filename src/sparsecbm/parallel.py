"""Data-parallel training on several processes, through Hugging Face Accelerate.

    accelerate launch --multi_gpu --num_processes N -m sparsecbm train ...

(``--multi_gpu`` is Accelerate's torchrun launcher; on a machine without CUDA
the processes join a gloo group on the CPU.) Every process holds the whole
model and draws the same batches from the same seed; each computes its share
of every batch (rows ``rank::N``), the gradients are summed across processes
and every process takes the same optimizer step, so N processes train the
model one process would, up to float rounding and dropout noise. The Fisher
gradients of mask mining are split the same way, their Gram blocks summed,
and each process inverts its share of the blocks. Only the first process
writes files.

The gradients are summed by hand, not by wrapping the model in DDP: a
SparseCBM batch runs K masked passes of one backbone, and the loss of a share
is weighted by its rows so that uneven shares (the last batch) still give the
one-process gradient.

One process (no ``WORLD_SIZE`` in the environment) touches none of this.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class Processes:
    """This process's place among the data-parallel processes (one by default)."""

    rank: int = 0
    world: int = 1
    accelerator: Any = None  # accelerate.Accelerator when world > 1

    @property
    def main(self) -> bool:
        """The process that writes files and prints."""
        return self.rank == 0

    @property
    def device(self) -> torch.device | None:
        return self.accelerator.device if self.accelerator is not None else None

    def share(self, idx: np.ndarray) -> np.ndarray:
        """This process's rows of a batch of indices."""
        return idx[self.rank :: self.world]

    def sum_grads_(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum the gradients of ``params`` across processes, in place (one flat all-reduce)."""
        if self.world == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        for g, part in zip(grads, torch.split(flat, [g.numel() for g in grads])):
            g.copy_(part.view_as(g))

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` across processes, in place; returns it. (A CPU tensor makes the
        trip through this process's device: NCCL reduces GPU tensors only.)"""
        if self.world > 1:
            moved = tensor.to(self.device)
            torch.distributed.all_reduce(moved)
            tensor.copy_(moved)
        return tensor

    def owner(self, part: int) -> int:
        """The process that owns work item ``part`` (round robin)."""
        return part % self.world

    def reduce_to_owner_(self, tensor: torch.Tensor, part: int) -> None:
        """Sum ``tensor`` into the copy held by the owner of ``part`` (others keep partial sums)."""
        if self.world > 1:
            torch.distributed.reduce(tensor, dst=self.owner(part))

    def gather_rows(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """Rows ``rank::world`` of an n-row tensor from every process, back in order: (n, ...)."""
        if self.world == 1:
            return local
        rows = -(-n // self.world)  # the longest share
        padded = torch.zeros((rows, *local.shape[1:]), dtype=local.dtype, device=local.device)
        padded[: len(local)] = local
        parts = self.accelerator.gather(padded.to(self.device)).cpu()  # (world * rows, ...), process by process
        return parts.view(self.world, rows, *local.shape[1:]).transpose(0, 1).reshape(-1, *local.shape[1:])[:n]


@functools.cache
def processes() -> Processes:
    """The processes of this run: one, unless launched with several (``WORLD_SIZE`` > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    try:
        from accelerate import Accelerator
    except ImportError:  # pragma: no cover - accelerate is a dependency
        raise ValueError("several processes need Hugging Face Accelerate: pip install accelerate") from None
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    return Processes(accelerator.process_index, accelerator.num_processes, accelerator)
