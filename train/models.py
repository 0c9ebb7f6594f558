"""Networks used by RPM-Distill: the video student, the radar teacher and the spectral policy.

Written from the descriptions in ``shared/docs/reference.md`` (sections d.1 to d.4, d.7, d.8 and a.6);
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

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


# ---------------------------------------------------------------------------------------------------------
# FactorizePhys students
# ---------------------------------------------------------------------------------------------------------

# One convolution of a FactorizePhys network: (out channels, stride, padding, kernel); None = Dropout3d.
# Input channels follow from the previous convolution. Spatial padding is 0 everywhere except where noted.
_ConvSpec = tuple[int, tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]
_S1, _S2 = (1, 1, 1), (1, 2, 2)
_P1, _P0 = (1, 1, 1), (1, 0, 0)
_K3, _K344 = (3, 3, 3), (3, 4, 4)


def _conv_out(size: int, stride: int, kernel: int = 3, pad: int = 0) -> int:
    """Output length of a convolution (0 if the input is too short)."""
    size += 2 * pad
    if size < kernel:
        return 0
    return (size - kernel) // stride + 1


def _spec_sizes(input_size: int, specs: list[_ConvSpec | None]) -> list[int]:
    """Spatial side length after each convolution of ``specs`` (dropouts skipped)."""
    sizes, size = [], input_size
    for spec in specs:
        if spec is None:
            continue
        _, stride, pad, kernel = spec
        size = _conv_out(size, stride[1], kernel[1], pad[1])
        sizes.append(size)
    return sizes


_NF = (8, 12, 16)

# Standard 72x72 FactorizePhys (reference d.1): first conv keeps the size, convs 2 and 5 have stride 2.
_STANDARD_SPECS: dict[str, list[_ConvSpec | None]] = {
    "feature_extractor": [
        (_NF[0], _S1, _P1, _K3),
        (_NF[1], _S2, _P0, _K3),
        (_NF[1], _S1, _P0, _K3),
        None,
        (_NF[1], _S1, _P0, _K3),
        (_NF[2], _S2, _P0, _K3),
        (_NF[2], _S1, _P0, _K3),
        None,
    ],
    "head": [(_NF[2], _S1, _P0, _K3), (_NF[2], _S1, _P0, _K3), (_NF[2], _S1, _P0, _K3), None],
    "final_layer": [(_NF[1], _S1, _P0, _K3), (_NF[0], _S1, _P0, _K3), (1, _S1, _P0, _K3)],
}

# FactorizePhysBig, 128x128 (reference d.2): no spatial padding on conv 1, stride 2 on convs 2 and 4, the
# head's first conv with stride 2 and the first final_layer kernel [3, 4, 4].
_BIG_SPECS: dict[str, list[_ConvSpec | None]] = {
    "feature_extractor": [
        (_NF[0], _S1, _P0, _K3),
        (_NF[1], _S2, _P0, _K3),
        (_NF[1], _S1, _P0, _K3),
        None,
        (_NF[1], _S2, _P0, _K3),
        (_NF[2], _S1, _P0, _K3),
        (_NF[2], _S1, _P0, _K3),
        None,
    ],
    "head": [(_NF[2], _S2, _P0, _K3), (_NF[2], _S1, _P0, _K3), (_NF[2], _S1, _P0, _K3), None],
    "final_layer": [(_NF[1], _S1, _P0, _K344), (_NF[0], _S1, _P0, _K3), (1, _S1, _P0, _K3)],
}


def _all_specs(specs: dict[str, list[_ConvSpec | None]]) -> list[_ConvSpec | None]:
    return specs["feature_extractor"] + specs["head"] + specs["final_layer"]


def factorizephys_spatial_sizes(input_size: int, big: bool = False) -> list[int]:
    """Spatial side length after each of the 12 convolutions of :class:`FactorizePhys` (or, with ``big``,
    :class:`FactorizePhysBig`). A value of 0 means the input is too small.

    Standard: the first convolution keeps the size (padding 1); convolutions 2 and 5 have stride 2; all
    others have stride 1 and no spatial padding. For 72 this gives
    ``[72, 35, 33, 31, 15, 13, 11, 9, 7, 5, 3, 1]``. Big at 128:
    ``[126, 62, 60, 29, 27, 25, 12, 10, 8, 5, 3, 1]``.
    """
    return _spec_sizes(input_size, _all_specs(_BIG_SPECS if big else _STANDARD_SPECS))


class _ConvBlock3D(nn.Module):
    """Conv3d (no bias) -> Tanh -> InstanceNorm3d (affine False, no running stats, no buffers)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: tuple[int, int, int],
        padding: tuple[int, int, int],
        kernel: tuple[int, int, int] = _K3,
    ):
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size=kernel, stride=stride, padding=padding, bias=False)
        self.norm = nn.InstanceNorm3d(out_ch, affine=False, track_running_stats=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, T, H, W) -> (B, out_ch, T, H', W')."""
        return self.norm(torch.tanh(self.conv(x)))


def _build_stage(in_ch: int, specs: list[_ConvSpec | None], dropout: float, bare_last: bool = False):
    """nn.Sequential of ConvBlock3D / Dropout3d from ``specs``; ``bare_last``: the last conv is a plain
    Conv3d (no bias, activation or norm). Returns (stage, output channels)."""
    layers: list[nn.Module] = []
    for i, spec in enumerate(specs):
        if spec is None:
            layers.append(nn.Dropout3d(dropout))
            continue
        out_ch, stride, pad, kernel = spec
        if bare_last and i == len(specs) - 1:
            layers.append(
                nn.Conv3d(in_ch, out_ch, kernel_size=kernel, stride=stride, padding=pad, bias=False)
            )
        else:
            layers.append(_ConvBlock3D(in_ch, out_ch, stride, pad, kernel))
        in_ch = out_ch
    return nn.Sequential(*layers), in_ch


def _nmf_rank1_tkab(x: Tensor, steps: int, eps: float = 1e-6) -> Tensor:
    """Rank-1 non-negative matrix factorisation of a (B, C, T, H, W) map, T_KAB shaping, S = 1.

    Each sample is reshaped, *without a permute*, to a (D, N) = (T, C*H*W) matrix, so that one row is a
    block of consecutive memory (several frames of one channel), exactly as the released weights were
    trained. Bases start as all ones normalised over D and coefficients start as softmax over the single
    rank, i.e. all ones. ``steps`` multiplicative updates run under no_grad; one final coefficient update
    runs with gradient, so gradients reach ``x`` only through that last step.

    Returns the reconstruction bases @ coef^T reshaped back to (B, C, T, H, W).
    """
    b = x.shape[0]
    d = x.shape[2]
    mat = x.reshape(b, d, -1)  # (B, D, N), no permute
    rank = 1
    with torch.no_grad():
        bases = torch.ones(b, d, rank, dtype=x.dtype, device=x.device)
        bases = F.normalize(bases, dim=1)
        coef = torch.softmax(mat.transpose(1, 2) @ bases, dim=-1)  # (B, N, R): all ones for R = 1
        for _ in range(steps):
            num = mat.transpose(1, 2) @ bases  # (B, N, R)
            den = coef @ (bases.transpose(1, 2) @ bases)  # (B, N, R)
            coef = coef * num / (den + eps)
            num = mat @ coef  # (B, D, R)
            den = bases @ (coef.transpose(1, 2) @ coef)  # (B, D, R)
            bases = bases * num / (den + eps)
    # One more coefficient update with gradient (through ``mat`` only).
    num = mat.transpose(1, 2) @ bases
    den = coef @ (bases.transpose(1, 2) @ bases)
    coef = coef * num / (den + eps)
    recon = bases @ coef.transpose(1, 2)  # (B, D, N)
    return recon.reshape(x.shape)


class _FSAM(nn.Module):
    """Factorised self-attention module (NMF, rank 1) of FactorizePhys.

    pre_conv: Conv3d ch->ch/2 (1x1x1, bias) + ReLU; NMF reconstruction; post: Conv3d ch/2->ch/2 (no bias),
    ReLU, Conv3d ch/2->ch (no bias). Conv weights start from N(0, sqrt(2/n)), n = kernel volume x out
    channels; the pre_conv bias keeps torch's default init.
    """

    def __init__(self, channels: int = 16, md_channels: int = 8, md_steps: int = 4):
        super().__init__()
        self.md_steps = md_steps
        self.pre_conv = nn.Conv3d(channels, md_channels, kernel_size=1, bias=True)
        self.post_conv1 = nn.Conv3d(md_channels, md_channels, kernel_size=1, bias=False)
        self.post_conv2 = nn.Conv3d(md_channels, channels, kernel_size=1, bias=False)
        for conv in (self.pre_conv, self.post_conv1, self.post_conv2):
            n = conv.kernel_size[0] * conv.kernel_size[1] * conv.kernel_size[2] * conv.out_channels
            nn.init.normal_(conv.weight, mean=0.0, std=math.sqrt(2.0 / n))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: non-negative (B, C, T, h, w) -> (attention (B, C, T, h, w), appx_error per sample (B,)).

        appx_error is the Frobenius distance between the NMF input and its reconstruction (detached; for
        logging only, never part of the loss).
        """
        z = F.relu(self.pre_conv(x))
        recon = _nmf_rank1_tkab(z, self.md_steps)
        appx_error = torch.linalg.vector_norm((z - recon).detach().flatten(1), dim=1)
        att = self.post_conv2(F.relu(self.post_conv1(recon)))
        return att, appx_error


def _per_sample_min(x: Tensor) -> Tensor:
    """Minimum over all non-batch dims, shaped to broadcast against ``x``."""
    return x.flatten(1).amin(dim=1).reshape((-1,) + (1,) * (x.dim() - 1))


class _FactorizePhysBase(nn.Module):
    """Shared body of the FactorizePhys students: input differencing and normalisation, the three stages
    built from a spec table, FSAM with residual fusion, the spatial mean at the end and the input checks.

    Subclasses set ``_SPECS`` (the convolution table) and ``_FSAM_BEFORE_HEAD`` (where FSAM runs), and may
    restrict the input size in :meth:`_check_input_size`.
    """

    _SPECS: dict[str, list[_ConvSpec | None]] = _STANDARD_SPECS
    _FSAM_BEFORE_HEAD = False

    def __init__(
        self,
        frames: int,
        in_channels: int,
        input_size: int,
        fsam: bool,
        fsam_at_inference: bool,
        md_steps: int,
        dropout: float,
    ):
        super().__init__()
        name = type(self).__name__
        if frames < 2:
            raise ValueError(f"{name} needs at least 2 input frames, got frames={frames}")
        self._check_input_size(input_size)
        self.frames = frames
        self.in_channels = in_channels
        self.input_size = input_size
        self.use_fsam = fsam
        self.fsam_at_inference = fsam_at_inference
        self.output_spatial_size = _spec_sizes(input_size, _all_specs(self._SPECS))[-1]

        self.input_norm = nn.InstanceNorm3d(in_channels, affine=False, track_running_stats=False)
        self.feature_extractor, ch = _build_stage(in_channels, self._SPECS["feature_extractor"], dropout)
        self.head, ch = _build_stage(ch, self._SPECS["head"], dropout)
        if fsam:
            self.fsam = _FSAM(ch, ch // 2, md_steps)
            self.fsam_norm = nn.InstanceNorm3d(ch, affine=False, track_running_stats=False)
            self.bias1 = nn.Parameter(torch.tensor(1.0))
        else:
            self.fsam = None
            self.fsam_norm = None
            self.register_parameter("bias1", None)
        self.final_layer, _ = _build_stage(ch, self._SPECS["final_layer"], dropout, bare_last=True)
        self.last_appx_error: Tensor | None = None

    def _check_input_size(self, input_size: int) -> None:
        sizes = _spec_sizes(input_size, _all_specs(self._SPECS))
        if min(sizes) < 1:
            raise ValueError(
                f"input_size={input_size} is too small for {type(self).__name__}: the spatial sizes would "
                f"be {sizes}; the final map must be at least 1x1 (input_size >= 71)"
            )

    def guided_layer(self) -> tuple[nn.Module, int]:
        """(module, channels) whose output is the FitNets guided feature: the head, (B, 16, T - 1, h, w)."""
        return self.head, _NF[2]

    def _check_input(self, x: Tensor) -> None:
        name = type(self).__name__
        if x.dim() != 5:
            raise ValueError(
                f"{name} expected (B, C, T, H, W) = (B, {self.in_channels}, {self.frames}, "
                f"{self.input_size}, {self.input_size}), got a {x.dim()}-D tensor of shape {tuple(x.shape)}"
            )
        _, c, t, h, w = x.shape
        expected = (self.in_channels, self.frames, self.input_size, self.input_size)
        if (c, t, h, w) != expected:
            raise ValueError(
                f"{name} input mismatch: expected (C, T, H, W) = "
                f"{expected}, got {(c, t, h, w)}. The model was built for frames={self.frames}, "
                f"in_channels={self.in_channels}, input_size={self.input_size}; resize/crop the input or "
                "build a model for this shape (inputs are never reshaped silently)."
            )

    def _attend(self, v: Tensor) -> Tensor:
        """FSAM with residual fusion: v + InstanceNorm((v - min v + b) * (A - min A + b)), per sample.

        Identity when the model has no FSAM, or in eval mode without ``fsam_at_inference``.
        """
        if self.fsam is None or not (self.training or self.fsam_at_inference):
            return v
        v_shift = v - _per_sample_min(v)
        att, self.last_appx_error = self.fsam(v_shift)
        fused = (v_shift + self.bias1) * (att - _per_sample_min(att) + self.bias1)
        return v + self.fsam_norm(fused)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) raw frames in [0, 1] -> (B, T - 1) rPPG signal."""
        self._check_input(x)
        x = torch.diff(x, dim=2)  # (B, C, T-1, H, W)
        x = self.input_norm(x)
        v = self.feature_extractor(x)  # (B, 16, T-1, s, s) voxel embeddings
        if self._FSAM_BEFORE_HEAD:
            v = self._attend(v)
        v = self.head(v)  # (B, 16, T-1, h, w)
        if not self._FSAM_BEFORE_HEAD:
            v = self._attend(v)
        out = self.final_layer(v)  # (B, 1, T-1, h', w')
        return out.mean(dim=(3, 4)).squeeze(1)


class FactorizePhys(_FactorizePhysBase):
    """FactorizePhys video student with FSAM, as used by RPM-Distill (without its unused HR head).

    Args:
        frames: number of raw input frames T (the output has T - 1 samples).
        in_channels: input channels C (3 for RGB).
        input_size: spatial side H = W the network is built for; any other size is refused.
        fsam: build the NMF attention module (and the trainable fusion bias ``bias1``).
        fsam_at_inference: apply FSAM in eval mode too (RPM-Distill: True; upstream FactorizePhys: False).
        md_steps: number of no-grad multiplicative NMF updates before the final coefficient update.
        dropout: Dropout3d probability.

    Input: raw frames (B, C, T, H, W), float in [0, 1]. Inside forward the frames are differenced along T
    (T -> T - 1) and instance-normalised per sample and channel. FSAM runs on the head output. Output:
    (B, T - 1), the rPPG signal (the final (B, 1, T - 1, h, w) map averaged over h and w; h = w = 1 at
    72x72). 52,169 parameters with FSAM and bias1, 51,840 without.
    """

    def __init__(
        self,
        frames: int,
        in_channels: int = 3,
        input_size: int = 72,
        fsam: bool = True,
        fsam_at_inference: bool = True,
        md_steps: int = 4,
        dropout: float = 0.1,
    ):
        super().__init__(frames, in_channels, input_size, fsam, fsam_at_inference, md_steps, dropout)


class FactorizePhysBig(_FactorizePhysBase):
    """FactorizePhysBig, the 128x128 FactorizePhys (reference d.2), with the same FSAM and options.

    Differences from :class:`FactorizePhys`: the first convolution has no spatial padding and the 4th has
    stride (1, 2, 2) (spatial sizes 126, 62, 60, 29, 27, 25); FSAM runs on the 25x25 extractor output,
    before the head; the head's first convolution has stride (1, 2, 2) (12, 10, 8); the first final_layer
    kernel is [3, 4, 4] (5, 3, 1). Built for 128x128 only: any other ``input_size`` or input size is
    refused (reference f.1 #1). Input (B, C, T, 128, 128) raw frames in [0, 1] -> (B, T - 1).
    56,201 parameters with FSAM and bias1, 55,872 without.
    """

    _SPECS = _BIG_SPECS
    _FSAM_BEFORE_HEAD = True
    INPUT_SIZE = 128

    def __init__(
        self,
        frames: int,
        in_channels: int = 3,
        input_size: int = 128,
        fsam: bool = True,
        fsam_at_inference: bool = True,
        md_steps: int = 4,
        dropout: float = 0.1,
    ):
        super().__init__(frames, in_channels, input_size, fsam, fsam_at_inference, md_steps, dropout)

    def _check_input_size(self, input_size: int) -> None:
        if input_size != self.INPUT_SIZE:
            raise ValueError(
                f"FactorizePhysBig is built for 128x128 input only, got input_size={input_size}; use "
                "FactorizePhys for other sizes (or resize the frames to 128)"
            )


# ---------------------------------------------------------------------------------------------------------
# PhysNet student
# ---------------------------------------------------------------------------------------------------------


def _bn_block(in_ch: int, out_ch: int, kernel, padding) -> nn.Sequential:
    """Conv3d (with bias) -> BatchNorm3d -> ReLU."""
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, kernel, stride=1, padding=padding),
        nn.BatchNorm3d(out_ch),
        nn.ReLU(inplace=True),
    )


def _temporal_upsample(ch: int) -> nn.Sequential:
    """ConvTranspose3d k[4, 1, 1] s[2, 1, 1] p[1, 0, 0] (doubles T) -> BatchNorm3d -> ELU."""
    return nn.Sequential(
        nn.ConvTranspose3d(ch, ch, (4, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0)),
        nn.BatchNorm3d(ch),
        nn.ELU(inplace=True),
    )


def diff_normalized_frames(x: Tensor, eps: float = 1e-7) -> Tensor:
    """rPPG-Toolbox-style DiffNormalized frames, per sample: (f[t+1] - f[t]) / (f[t+1] + f[t] + eps),
    divided by the sample's std (over C, T, H, W), with a zero frame appended so T is kept.

    (B, C, T, H, W) -> (B, C, T, H, W). The toolbox divides by the whole video's std; here the clip is the
    unit, so a window's input does not depend on the rest of its recording.
    """
    d = torch.diff(x, dim=2) / (x[:, :, 1:] + x[:, :, :-1] + eps)
    std = d.flatten(1).std(dim=1, correction=0).clamp_min(eps)
    d = d / std.reshape(-1, 1, 1, 1, 1)
    return torch.cat([d, torch.zeros_like(d[:, :, :1])], dim=2)


class PhysNet(nn.Module):
    """PhysNet (rPPG-Toolbox's PhysNet_padding_Encoder_Decoder_MAX semantics, reference d.7).

    Every block is Conv3d (bias) -> BatchNorm3d -> ReLU: block 1 3 -> 16 with kernel [1, 5, 5]; spatial
    max-pool; blocks 2-3 (16 -> 32 -> 64, k3); spatio-temporal max-pool (2, 2, 2); blocks 4-5; max-pool
    (2, 2, 2); blocks 6-7; spatial max-pool; blocks 8-9 (64 channels, k3, padding 1); two temporal
    upsamplings (ConvTranspose3d + BatchNorm3d + ELU) back from T/4 to T; adaptive average pooling to
    (T, 1, 1); Conv3d 64 -> 1 (k1). 768,577 parameters; it has BatchNorm buffers.

    Args:
        frames: input frames T, divisible by 4 (the output has T samples).
        in_channels: input channels C.
        input_size: spatial side H = W the network is built for (at least 16); any other size is refused.
        diff_normalize: turn the raw frames into DiffNormalized frames inside forward (see
            :func:`diff_normalized_frames`), the input the toolbox trains PhysNet on; False feeds the
            frames as they are.

    Input: raw frames (B, C, T, H, W), float in [0, 1]. Output: (B, T). The FactorizePhys students give
    T - 1 samples; the trainer crops every student output to T - 1.
    """

    def __init__(self, frames: int, in_channels: int = 3, input_size: int = 72, diff_normalize: bool = True):
        super().__init__()
        if frames < 4 or frames % 4 != 0:
            raise ValueError(
                f"PhysNet needs frames divisible by 4 (T/4 after two pools), got frames={frames}"
            )
        if input_size < 16:
            raise ValueError(
                f"input_size={input_size} is too small for PhysNet: four 2x spatial poolings need >= 16"
            )
        self.frames = frames
        self.in_channels = in_channels
        self.input_size = input_size
        self.diff_normalize = diff_normalize
        self.encoder = nn.Sequential(
            _bn_block(in_channels, 16, (1, 5, 5), (0, 2, 2)),
            nn.MaxPool3d((1, 2, 2), stride=(1, 2, 2)),
            _bn_block(16, 32, 3, 1),
            _bn_block(32, 64, 3, 1),
            nn.MaxPool3d((2, 2, 2), stride=2),
            _bn_block(64, 64, 3, 1),
            _bn_block(64, 64, 3, 1),
            nn.MaxPool3d((2, 2, 2), stride=2),
            _bn_block(64, 64, 3, 1),
            _bn_block(64, 64, 3, 1),
            nn.MaxPool3d((1, 2, 2), stride=(1, 2, 2)),
            _bn_block(64, 64, 3, 1),
            _bn_block(64, 64, 3, 1),
        )
        self.decoder = nn.Sequential(_temporal_upsample(64), _temporal_upsample(64))
        self.pool = nn.AdaptiveAvgPool3d((frames, 1, 1))
        self.out_conv = nn.Conv3d(64, 1, kernel_size=1)

    def guided_layer(self) -> tuple[nn.Module, int]:
        """(module, channels) whose output is the FitNets guided feature: the decoder, (B, 64, T, h, w)."""
        return self.decoder, 64

    def _check_input(self, x: Tensor) -> None:
        expected = (self.in_channels, self.frames, self.input_size, self.input_size)
        if x.dim() != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"PhysNet input mismatch: expected (B, C, T, H, W) with (C, T, H, W) = {expected}, got "
                f"shape {tuple(x.shape)}. The model was built for frames={self.frames}, "
                f"in_channels={self.in_channels}, input_size={self.input_size} (T divisible by 4); "
                "inputs are never reshaped silently."
            )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) raw frames in [0, 1] -> (B, T) rPPG signal."""
        self._check_input(x)
        if self.diff_normalize:
            x = diff_normalized_frames(x)
        v = self.decoder(self.encoder(x))  # (B, 64, T, h, w)
        return self.out_conv(self.pool(v)).reshape(x.shape[0], self.frames)


# ---------------------------------------------------------------------------------------------------------
# RF teacher
# ---------------------------------------------------------------------------------------------------------


class RFTeacher(nn.Module):
    """RPM-Distill's radar teacher: a 1-D convolutional encoder-decoder without pooling.

    Encoder: Conv1d (kernel ``kernel``, same padding) ``in_channels -> widths[0] -> ... -> widths[-1]``,
    each followed by BatchNorm1d + ReLU except the last, which is a bare convolution. Decoder:
    ConvTranspose1d (same kernel, stride 1, same padding) back down ``widths[-1] -> ... -> widths[0]``, each
    followed by BatchNorm1d + ReLU, then a kernel-1 Conv1d ``widths[0] -> 1``.

    Input (B, in_channels, T) -> output (B, T). With the default widths it has 9,786,401 parameters.
    """

    def __init__(
        self,
        in_channels: int = 10,
        widths: tuple[int, ...] = (32, 64, 128, 256, 512, 1024),
        kernel: int = 7,
    ):
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"RFTeacher needs at least 2 widths, got {widths}")
        if kernel % 2 != 1:
            raise ValueError(f"RFTeacher kernel must be odd to keep the length, got {kernel}")
        self.in_channels = in_channels
        pad = kernel // 2
        enc: list[nn.Module] = []
        prev = in_channels
        for i, w in enumerate(widths):
            enc.append(nn.Conv1d(prev, w, kernel, stride=1, padding=pad))
            if i < len(widths) - 1:
                enc += [nn.BatchNorm1d(w), nn.ReLU(inplace=True)]
            prev = w
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = []
        for w in reversed(widths[:-1]):
            dec.append(nn.ConvTranspose1d(prev, w, kernel, stride=1, padding=pad))
            dec += [nn.BatchNorm1d(w), nn.ReLU(inplace=True)]
            prev = w
        self.decoder = nn.Sequential(*dec)
        self.out_conv = nn.Conv1d(prev, 1, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, T) -> (B, T)."""
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"RFTeacher expects (B, {self.in_channels}, T), got shape {tuple(x.shape)}")
        return self.out_conv(self.decoder(self.encoder(x))).squeeze(1)


def rotate_iq(rf: Tensor, theta: Tensor) -> Tensor:
    """Rotate every I/Q pair of a radar tensor by a per-sample phase.

    Args:
        rf: (B, 2K, T) laid out as [I_0 .. I_{K-1}, Q_0 .. Q_{K-1}].
        theta: (B,) rotation angle in radians, one per sample.

    Returns a new (B, 2K, T) tensor with I' = cos(theta) I - sin(theta) Q and
    Q' = sin(theta) I + cos(theta) Q. The input is not modified. The magnitude I^2 + Q^2 of every channel
    pair and time step is preserved.
    """
    if rf.dim() != 3 or rf.shape[1] % 2 != 0:
        raise ValueError(f"rotate_iq expects rf of shape (B, 2K, T), got {tuple(rf.shape)}")
    theta = torch.as_tensor(theta, dtype=rf.dtype, device=rf.device)
    if theta.shape != (rf.shape[0],):
        raise ValueError(f"rotate_iq expects theta of shape ({rf.shape[0]},), got {tuple(theta.shape)}")
    k = rf.shape[1] // 2
    i_part, q_part = rf[:, :k], rf[:, k:]
    c = torch.cos(theta).view(-1, 1, 1)
    s = torch.sin(theta).view(-1, 1, 1)
    return torch.cat([c * i_part - s * q_part, s * i_part + c * q_part], dim=1)


# ---------------------------------------------------------------------------------------------------------
# Spectral policy
# ---------------------------------------------------------------------------------------------------------


def _gn_groups(channels: int, max_groups: int = 8) -> int:
    """min(max_groups, channels), lowered until it divides ``channels``."""
    g = min(max_groups, channels)
    while channels % g != 0:
        g -= 1
    return g


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_gn_groups(channels), channels)


class _ResBlock1d(nn.Module):
    """SiLU(x + GN(conv3(SiLU(GN(conv3_dilated(x)))))), convs without bias; length preserved."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.norm1 = _gn(channels)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = _gn(channels)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, F) -> (B, C, F)."""
        y = F.silu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.silu(x + y)


class SpectralPolicy(nn.Module):
    """Spectral policy network: relation map (B, 3, F) -> gate g (B,) and component weights alpha (B, K).

    Encoder: stem Conv1d(in, base, k5) + GN + SiLU; residual blocks with the given dilations; before block 1
    a stride-2 transition Conv1d(base, 2*base, k3) + GN + SiLU halves the frequency axis. Decoder: a
    matrix-decomposition-style pooling (``md_rank`` frequency-softmax bases and rank-softmax coefficients)
    plus a global average, then Linear(2C, md_hidden) + SiLU + Dropout and two heads:
    alpha = softmax(Linear(md_hidden, n_components)), g = sigmoid(Linear(md_hidden, 1)).

    With the defaults it has 72,276 parameters. Works for any F >= 2 (F = 19 at the defaults).
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_ch: int = 32,
        depth: int = 3,
        dilations: tuple[int, ...] = (1, 2, 4),
        md_rank: int = 8,
        md_hidden: int = 32,
        dropout: float = 0.1,
        n_components: int = 3,
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if len(dilations) < depth:
            raise ValueError(f"need one dilation per block: depth={depth}, dilations={dilations}")
        self.in_channels = in_channels
        self.n_components = n_components
        self.stem = nn.Sequential(
            nn.Conv1d(in_channels, base_ch, 5, padding=2, bias=False), _gn(base_ch), nn.SiLU()
        )
        layers: list[nn.Module] = []
        ch = base_ch
        for i in range(depth):
            if i == 1:
                layers += [nn.Conv1d(ch, 2 * ch, 3, stride=2, padding=1, bias=False), _gn(2 * ch), nn.SiLU()]
                ch = 2 * ch
            layers.append(_ResBlock1d(ch, dilations[i]))
        self.encoder = nn.Sequential(*layers)
        self.channels = ch
        self.rank = max(2, md_rank)
        self.pre = nn.Sequential(nn.Conv1d(ch, ch, 1, bias=False), _gn(ch), nn.SiLU())
        self.basis_conv = nn.Conv1d(ch, self.rank, 1)
        self.coeff_conv = nn.Conv1d(ch, self.rank, 1)
        self.fc = nn.Linear(2 * ch, md_hidden)
        self.dropout = nn.Dropout(dropout)
        self.alpha_head = nn.Linear(md_hidden, n_components)
        self.gate_head = nn.Linear(md_hidden, 1)

    def forward(self, relation_map: Tensor) -> tuple[Tensor, Tensor]:
        """relation_map (B, in_channels, F) -> (g (B,) in (0, 1), alpha (B, n_components), rows sum to 1)."""
        if relation_map.dim() != 3 or relation_map.shape[1] != self.in_channels:
            raise ValueError(
                f"SpectralPolicy expects (B, {self.in_channels}, F), got shape {tuple(relation_map.shape)}"
            )
        x = self.encoder(self.stem(relation_map))  # (B, C, F')
        x = self.pre(x)
        basis_attn = torch.softmax(self.basis_conv(x), dim=-1)  # (B, R, F'), softmax over frequency
        coeff_attn = torch.softmax(self.coeff_conv(x), dim=1)  # (B, R, F'), softmax over rank
        xt = x.transpose(1, 2)  # (B, F', C)
        basis_tok = basis_attn @ xt  # (B, R, C)
        coeff_tok = coeff_attn @ xt  # (B, R, C)
        md_vec = (0.5 * (basis_tok + coeff_tok)).mean(dim=1)  # (B, C)
        global_vec = x.mean(dim=-1)  # (B, C)
        h = self.dropout(F.silu(self.fc(torch.cat([md_vec, global_vec], dim=1))))
        alpha = torch.softmax(self.alpha_head(h), dim=-1)
        g = torch.sigmoid(self.gate_head(h)).squeeze(-1)
        return g, alpha
