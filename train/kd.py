"""Knowledge-distillation baselines the paper compares RPM-Distill against.

Written from the methods' published descriptions; no code was taken from any reference repository.
Each baseline replaces the spectral term L_distill of Eq. 1 with its own per-sample loss, so the
label-optional objective stays the same (labelled clips: L_sup + lambda * L_kd; unlabelled: lambda * L_kd).

* ``output-kd`` (Hinton-style output distillation, for a regression output): the student waveform is
  matched to the frozen teacher's waveform in the time domain, mean squared error between the per-sample
  z-scored signals (scale- and offset-free, like the labels).
* ``fitnets`` (Romero et al., FitNets: hints for thin deep nets): an intermediate student feature (the
  guided layer) is mapped by a learned convolutional regressor onto an intermediate teacher feature (the
  hint layer) and matched with an L2 loss. Guided layer (the student's ``guided_layer()``): the
  FactorizePhys head output, averaged over space, (B, 16, T - 1), or PhysNet's decoder output, (B, 64, T).
  Hint layer: the RF teacher's third decoder block, (B, C, T).
* ``dml`` (Zhang et al., deep mutual learning): two peers train together, each on its own supervised
  loss plus a mimicry loss towards the other's (detached) prediction. Here the peers are the video
  student and an RF network initialised from the trained teacher; mimicry is the output-kd loss.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn

from pipeline.spectrum import zscore

__all__ = ["FeatureTap", "HintRegressor", "hint_loss", "make_peer", "teacher_hint_layer", "waveform_kd"]


def waveform_kd(student_wave: Tensor, target_wave: Tensor) -> Tensor:
    """Per-sample time-domain matching loss (B,): mean over t of (z(s) - z(target))^2, target detached.

    Both (B, T) inputs are cropped to the shorter T. Equals 2 (1 - r) for the Pearson r of the pair.
    """
    t = min(student_wave.shape[1], target_wave.shape[1])
    diff = zscore(student_wave[:, :t]) - zscore(target_wave[:, :t].detach())
    return (diff * diff).mean(dim=1)


class FeatureTap:
    """Keeps the latest output of ``module`` (a forward hook); ``remove()`` detaches the hook."""

    def __init__(self, module: nn.Module):
        self.output: Tensor | None = None
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, _module, _inputs, output) -> None:
        self.output = output

    def remove(self) -> None:
        self._handle.remove()


def teacher_hint_layer(teacher: nn.Module) -> tuple[nn.Module, int]:
    """(module whose output is the hint, its channel count): the ReLU ending the third decoder block.

    The RF teacher's decoder is a sequence of [ConvTranspose1d, BatchNorm1d, ReLU] blocks; with fewer than
    three blocks the last one is used.
    """
    blocks = len(teacher.decoder) // 3
    if blocks == 0:
        raise ValueError("the RF teacher has no decoder block to take a hint from")
    k = min(3, blocks)
    return teacher.decoder[3 * k - 1], teacher.decoder[3 * k - 2].num_features


class HintRegressor(nn.Module):
    """FitNets regressor: (B, C_s, T, h, w) guided feature -> spatial mean -> Conv1d k3 -> (B, C_t, T)."""

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.conv = nn.Conv1d(student_channels, teacher_channels, kernel_size=3, padding=1)

    def forward(self, guided: Tensor) -> Tensor:
        if guided.dim() == 5:
            guided = guided.mean(dim=(3, 4))
        return self.conv(guided)


def hint_loss(regressed: Tensor, hint: Tensor) -> Tensor:
    """Per-sample FitNets loss (B,): 0.5 * mean over (C, T) of (regressed - hint)^2, hint detached.

    Both (B, C, T) inputs are cropped to the shorter T.
    """
    t = min(regressed.shape[-1], hint.shape[-1])
    diff = regressed[..., :t] - hint[..., :t].detach()
    return 0.5 * (diff * diff).flatten(1).mean(dim=1)


def make_peer(teacher: nn.Module) -> nn.Module:
    """A trainable copy of the RF teacher, the second peer of deep mutual learning."""
    peer = copy.deepcopy(teacher)
    for p in peer.parameters():
        p.requires_grad_(True)
    return peer.train()
