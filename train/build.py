"""Networks from a :class:`~train.config.TrainConfig`: the video student, the RF teacher, a stage's model,
how a trained model reads a batch, output length."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from train.data import video_to_input
from train.fusion import RGBRadarFusion
from train.models import FactorizePhys, FactorizePhysBig, PhysNet, RFTeacher
from train.physformer import PhysFormer

if TYPE_CHECKING:
    from train.config import TrainConfig


def build_student(cfg: TrainConfig) -> nn.Module:
    """The ``cfg.student`` network for (B, 3, frames, student_size, student_size) input."""
    if cfg.student == "physnet":
        return PhysNet(frames=cfg.frames, in_channels=3, input_size=cfg.student_size)
    if cfg.student == "physformer":
        return PhysFormer(frames=cfg.frames, in_channels=3, input_size=cfg.student_size)
    cls = {"factorizephys": FactorizePhys, "factorizephys-big": FactorizePhysBig}.get(cfg.student)
    if cls is None:
        raise ValueError(f"unknown student {cfg.student!r}")
    return cls(
        frames=cfg.frames, in_channels=3, input_size=cfg.student_size, fsam=cfg.fsam, fsam_at_inference=True
    )


def build_stage_model(cfg: TrainConfig, rf_channels: int = 10) -> nn.Module:
    """The model a student stage trains and saves: the ``cfg.student`` network, or for method ``fusion``
    :class:`train.fusion.RGBRadarFusion` around it and an RF teacher for ``rf_channels`` radar channels
    (the video network and the teacher get their trained weights in :mod:`train.method`)."""
    if cfg.method == "fusion":
        video, radar = build_student(cfg), build_teacher(cfg, rf_channels)
        return RGBRadarFusion(video, radar, student_length(cfg), cfg.fs)
    return build_student(cfg)


def stage_forward(
    model: nn.Module, batch: dict, cfg: TrainConfig, device, radar: bool = False, channels_last: bool = False
) -> Tensor:
    """A trained model on a batch: the RF teacher (``radar``) on the radar window, a fusion model
    (``uses_radar_at_test``) on video and radar, any other student on the video (in ``channels_last_3d``
    when the model is). (B, >= T - 1)."""
    if radar:
        return model(batch["rf"].to(device, non_blocking=True))
    x = video_to_input(batch["video"], cfg.student_size, device, channels_last=channels_last)
    if getattr(model, "uses_radar_at_test", False):
        return model(x, batch["rf"].to(device, non_blocking=True))
    return model(x)


def student_length(cfg: TrainConfig) -> int:
    """Samples kept of every student, teacher and peer waveform: T - 1, what FactorizePhys outputs.

    PhysNet outputs T samples; cropping every student to T - 1 keeps the losses, the spectral features and
    the evaluation identical across students (the label is cropped to the prediction by the losses).
    """
    return cfg.frames - 1


def build_teacher(cfg: TrainConfig, rf_channels: int = 10) -> RFTeacher:
    """The RF teacher for (B, rf_channels, T) radar windows: 2 x range bins (EquiPleth 10, PhysDrive 16)."""
    widths = tuple(cfg.teacher_widths)
    return RFTeacher(in_channels=rf_channels, widths=widths, input_features=cfg.teacher_input)
