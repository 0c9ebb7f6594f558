"""Networks from a :class:`~train.config.TrainConfig`: the video student, the RF teacher, output length."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from train.models import FactorizePhys, FactorizePhysBig, PhysNet, RFTeacher

if TYPE_CHECKING:
    from train.config import TrainConfig


def build_student(cfg: TrainConfig) -> nn.Module:
    """The ``cfg.student`` network for (B, 3, frames, student_size, student_size) input."""
    if cfg.student == "physnet":
        return PhysNet(frames=cfg.frames, in_channels=3, input_size=cfg.student_size)
    cls = {"factorizephys": FactorizePhys, "factorizephys-big": FactorizePhysBig}.get(cfg.student)
    if cls is None:
        raise ValueError(f"unknown student {cfg.student!r}")
    return cls(
        frames=cfg.frames, in_channels=3, input_size=cfg.student_size, fsam=cfg.fsam, fsam_at_inference=True
    )


def student_length(cfg: TrainConfig) -> int:
    """Samples kept of every student, teacher and peer waveform: T - 1, what FactorizePhys outputs.

    PhysNet outputs T samples; cropping every student to T - 1 keeps the losses, the spectral features and
    the evaluation identical across students (the label is cropped to the prediction by the losses).
    """
    return cfg.frames - 1


def build_teacher(cfg: TrainConfig, rf_channels: int = 10) -> RFTeacher:
    """The RF teacher for (B, rf_channels, T) radar windows: 2 x range bins (EquiPleth 10, PhysDrive 16)."""
    return RFTeacher(in_channels=rf_channels, widths=tuple(cfg.teacher_widths))
