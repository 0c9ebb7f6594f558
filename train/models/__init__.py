"""Networks used by RPM-Distill: the video student, the radar teacher and the spectral policy.

Written from descriptions of FactorizePhys, PhysNet, EquiPleth's RF model and the paper's Sec. 3.3;
no code was taken from the reference repositories.

* :class:`FactorizePhys` -- the default student. The standard 72x72 FactorizePhys feature extractor and
  head, the rank-1 NMF attention module (FSAM) with residual fusion, and RPM-Distill's spatial average at
  the end. RPM-Distill's extra heart-rate head is left out because its output is never used.
* :class:`FactorizePhysBig` -- the 128x128 FactorizePhys (FSAM before the head), sharing the blocks, FSAM
  and forward of :class:`FactorizePhys`; it refuses any other input size.
* :class:`PhysNet` -- the PhysNet encoder-decoder baseline student (BatchNorm, output (B, T)).
* :class:`RFTeacher` -- RPM-Distill's 1-D convolutional encoder-decoder for radar I/Q input.
* :func:`rotate_iq` -- rotates radar I/Q channel pairs by a random phase, used to augment teacher inputs.
* :class:`SpectralPolicy` -- the policy that maps the student/teacher log-PSD relation map to a gate g and
  component weights alpha.
"""

from __future__ import annotations

from torch import nn

from train.models.factorizephys import FactorizePhys, FactorizePhysBig, factorizephys_spatial_sizes
from train.models.physnet import PhysNet, diff_normalized_frames
from train.models.policy import SpectralPolicy
from train.models.rf_teacher import RFTeacher, rotate_iq

__all__ = [
    "FactorizePhys",
    "FactorizePhysBig",
    "PhysNet",
    "RFTeacher",
    "SpectralPolicy",
    "count_parameters",
    "diff_normalized_frames",
    "factorizephys_spatial_sizes",
    "rotate_iq",
]


def count_parameters(model: nn.Module) -> int:
    """Total number of elements in ``model``'s parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())
