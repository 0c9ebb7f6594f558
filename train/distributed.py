"""Devices and data parallelism for training.

CUDA when present (bf16 autocast), else CPU in fp32. With ``WORLD_SIZE`` set (``torchrun
--nproc-per-node N -m cli train ...``) one process per device joins a process group (NCCL on CUDA,
gloo on CPU); gradients are averaged with one flat all-reduce per step (:func:`sync_grads`), BatchNorm
statistics are taken from rank 0 after every epoch (:func:`sync_buffers`), and only rank 0 writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from train.config import DEVICES, TrainError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly single-process) data-parallel job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    active: bool = False  # a process group is initialised

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str = "auto") -> tuple[DistInfo, bool]:
    """Join the process group when ``WORLD_SIZE`` is set (torchrun). Returns (info, created here).

    The backend is NCCL on CUDA and gloo on CPU.
    """
    if "WORLD_SIZE" not in os.environ:
        return DistInfo(), False
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        created = True
    return DistInfo(rank, world, local_rank, True), created


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda`` (device ``local_rank``).

    Raises :class:`TrainError` for any other name and for ``cuda`` on a machine without a CUDA GPU.
    """
    if name not in DEVICES:
        raise TrainError(f"--device {name!r}: unknown device; choose one of {DEVICES}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise TrainError("--device cuda: no CUDA GPU is available here; use --device cpu or auto")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA; a no-op on CPU (fp32)."""
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda"
    )


def to_fp32(x: torch.Tensor) -> torch.Tensor:
    """Autocast outputs (bf16 / fp16) back to fp32 for the losses; other dtypes (fp32, fp64) unchanged."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def sync_grads(params, d: DistInfo) -> None:
    """Average gradients over the processes (one flat all-reduce); a no-op without DDP.

    Used instead of the DistributedDataParallel wrapper because the meta step calls the student through
    ``functional_call`` with explicit parameters, which the wrapper's hooks do not see.
    """
    if not d.active or d.world == 1:
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= d.world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p))
        offset += n


def sync_buffers(module: nn.Module | None, d: DistInfo) -> None:
    """Rank 0's BatchNorm statistics everywhere (they are local to each process while training)."""
    if module is None or not d.active or d.world == 1:
        return
    for b in module.buffers():
        dist.broadcast(b, src=0)


def check_in_sync(module: nn.Module | None, d: DistInfo, what: str) -> None:
    """Raise if the replicas' parameters differ (they must stay identical under gradient averaging)."""
    if module is None or not d.active or d.world == 1:
        return
    v = torch.cat([p.detach().reshape(-1).double() for p in module.parameters()])
    idx = torch.arange(v.numel(), dtype=v.dtype, device=v.device)
    mine = torch.stack([v.sum(), (v * v).sum(), (v * idx).sum()])
    every = [torch.zeros_like(mine) for _ in range(d.world)]
    dist.all_gather(every, mine)
    for r, other in enumerate(every):
        if not torch.allclose(other, every[0], rtol=1e-9, atol=1e-9):
            raise TrainError(
                f"{what}: replica on rank {r} diverged from rank 0 ({other.tolist()} vs {every[0]})"
            )


def all_sum(t: torch.Tensor, d: DistInfo) -> torch.Tensor:
    """Sum ``t`` over the processes in place (a no-op without DDP); returns ``t``."""
    if d.active and d.world > 1:
        dist.all_reduce(t)
    return t


def barrier(d: DistInfo) -> None:
    """Wait for every process (a no-op without DDP)."""
    if d.active and d.world > 1:
        dist.barrier()
