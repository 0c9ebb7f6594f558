"""The state of a student stage: how its steps run (:class:`StepContext`) and its modules and optimisers
(:class:`StudentState`, built and seeded by :func:`build_student_state`). Used by :mod:`train.trainer`
(the step and the loops) and :mod:`train.method` (what each method adds to the state)."""

from __future__ import annotations

import ctypes
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from train import kd
from train.build import build_stage_model
from train.checkpoint import CheckpointError
from train.config import TrainConfig, first_line
from train.distributed import DistInfo
from train.method import method_of


@dataclass(frozen=True)
class StepContext:
    """How a stage's steps run: its config, the device, the process group, bf16 autocast and whether the
    student and its input use the channels-last 3-D memory format (:func:`use_channels_last`)."""

    cfg: TrainConfig
    device: torch.device
    dist: DistInfo = DistInfo()
    amp: bool = False
    channels_last: bool = False


def use_channels_last(device: torch.device) -> bool:
    """Whether the student runs in ``torch.channels_last_3d``: on CPU (measured faster, same results within
    float rounding: ``bench/train_bench.py``), not elsewhere; ``RPM_CHANNELS_LAST=1`` / ``0`` overrides."""
    env = os.environ.get("RPM_CHANNELS_LAST", "")
    if env in ("0", "1"):
        return env == "1"
    return device.type == "cpu"


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
KEPT_FREED_BYTES = 2**30


def keep_freed_memory(device: torch.device) -> bool:
    """On CPU with glibc: serve large tensors from the heap and keep freed heap memory for reuse.

    glibc's malloc gives every block over 32 MiB (the most ``M_MMAP_THRESHOLD`` allows) its own ``mmap``
    and unmaps it when freed, so each of a training step's large activations and gradients starts on
    fresh pages, and the first write to every 4 KiB page faults: that made elementwise ops on the
    student's largest maps several times slower than the memory's bandwidth. ``M_MMAP_MAX`` 0 serves all
    blocks from the heap and ``M_TRIM_THRESHOLD`` :data:`KEPT_FREED_BYTES` keeps up to that much freed
    memory at the heap's top, so the next step reuses pages already mapped. Values are unchanged (only
    where the memory comes from). Process-wide, for allocations after the call; ``RPM_KEEP_FREED_MEMORY=0``
    turns it off. Returns whether it was applied (not off CPU, nor without glibc).
    """
    if device.type != "cpu" or os.environ.get("RPM_KEEP_FREED_MEMORY", "") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, KEPT_FREED_BYTES))
    except (OSError, AttributeError):  # not glibc
        return False


@dataclass
class StudentState:
    """The modules and optimisers of one student stage."""

    student: nn.Module
    opt: torch.optim.Optimizer
    teacher: nn.Module | None = None
    policy: nn.Module | None = None  # spectral policy (rpm-distill)
    policy_opt: torch.optim.Optimizer | None = None
    aux: nn.Module | None = None  # fitnets regressor or the dml peer
    aux_opt: torch.optim.Optimizer | None = None
    student_tap: kd.FeatureTap | None = None  # fitnets guided layer
    teacher_tap: kd.FeatureTap | None = None  # fitnets hint layer
    meta: bool = False  # bilevel meta step every meta_interval steps
    trained: dict[str, nn.Module] = field(default_factory=dict)  # earlier stages' models, by kind
    # The frozen teacher's waveform per clip (dataset index -> (T - 1,) fp32), computed once per clip;
    # None: run the teacher on every batch (the reference path).
    teacher_waves: dict[int, torch.Tensor] | None = field(default_factory=dict)

    def modules(self) -> dict[str, nn.Module]:
        pairs = (("model", self.student), ("policy", self.policy), ("aux", self.aux))
        return {k: m for k, m in pairs if m is not None}

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        pairs = (
            ("optimizer", self.opt),
            ("policy_optimizer", self.policy_opt),
            ("aux_optimizer", self.aux_opt),
        )
        return {k: o for k, o in pairs if o is not None}

    def state_dicts(self) -> dict[str, dict]:
        return {k: x.state_dict() for k, x in {**self.modules(), **self.optimisers()}.items()}

    def load_state_dicts(self, state: dict, source: Path) -> None:
        """Restore every module and optimiser from ``state`` (read from ``source``)."""
        for name, x in {**self.modules(), **self.optimisers()}.items():
            if name not in state:
                raise CheckpointError(
                    f"{source}: holds no {name!r} state for this stage (saved by another method?)"
                )
            try:
                x.load_state_dict(state[name])
            except (KeyError, ValueError, RuntimeError) as exc:
                raise CheckpointError(
                    f"{source}: its {name!r} state does not fit this stage ({first_line(exc)})"
                ) from exc


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_student_state(
    cfg: TrainConfig,
    teacher,
    device,
    trained: dict[str, nn.Module] | None = None,
    channels_last: bool = False,
) -> StudentState:
    """Student, policy and the method's auxiliary module, seeded, with their optimisers.

    ``trained``: the models of the run's earlier stages by kind (method fusion builds on the baseline).
    ``channels_last``: the student's 5-D weights in ``torch.channels_last_3d`` (the values are the same).
    """
    seed_everything(cfg.seed)
    rf_channels = teacher.in_channels if teacher is not None else 10
    student = build_stage_model(cfg, rf_channels).to(device)
    if channels_last:
        student = student.to(memory_format=torch.channels_last_3d)
    st = StudentState(
        student,
        torch.optim.Adam(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay),
        teacher=teacher,
        trained=dict(trained or {}),
    )
    method_of(cfg).setup(st, cfg, device)
    return st
