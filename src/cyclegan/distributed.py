"""Training on several processes with PyTorch's DistributedDataParallel (``torchrun``).

``torchrun --nproc_per_node N -m cyclegan train ...`` starts N copies; each reads the usual
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` variables, joins the process group (gloo on CPU, NCCL on
CUDA) and trains on its own shard of the data. This module owns that plumbing, so that the
trainer only asks "am I rank 0?" and "agree on this flag".
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job; the single-process default has world size 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any rank (a collective: every rank must call it)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.reduce_device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def smallest(self, value: int) -> int:
        """The smallest of every rank's ``value``, on every rank (a collective)."""
        if not self.enabled:
            return value
        tensor = torch.tensor([float(value)], device=self.reduce_device, dtype=torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
        return int(tensor.item())

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (None elsewhere); a collective."""
        if not self.enabled:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    @property
    def reduce_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` in DistributedDataParallel under torchrun (gradients averaged over the ranks); as is alone."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    def own_rank_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """This rank's part of a checkpoint's state (its pools and RNGs): its own when the checkpoint has
        one per rank, else rank 0's."""
        ranks = state.get("ranks")
        if ranks and len(ranks) == self.world_size:
            return ranks[self.rank]
        if ranks or self.enabled:
            log.warning("the checkpoint was written by %d process(es) and %d resume it: every process starts from the "
                        "pools and RNGs of the first, so the run continues, but not bit for bit",
                        len(ranks or [0]), self.world_size)
        return state


SINGLE = Distributed()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str = "auto") -> Distributed:
    """Join the torchrun job this process belongs to (or stay single when there is none).

    The backend is NCCL when this rank trains on CUDA, gloo otherwise.
    """
    if not launched_by_torchrun():
        return SINGLE
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Distributed(rank=rank, world_size=world, local_rank=local, backend=backend)


def close_distributed(context: Distributed) -> None:
    if context.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def device_for(context: Distributed, device: str) -> str:
    """Each rank's own GPU under NCCL; the requested device otherwise."""
    return f"cuda:{context.local_rank}" if context.backend == "nccl" else device


def sync_batch_norm(model: nn.Module, names: tuple[str, ...], device: torch.device) -> None:
    """Batch statistics over all ranks, as one process with the whole batch would compute them."""
    if device.type != "cuda":
        raise ValueError("--norm batch under torchrun needs SyncBatchNorm, which runs on CUDA only; on CPUs use "
                         "--norm instance (the CycleGAN default, which needs no synchronisation)")
    for name in names:
        setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(getattr(model, name)))
