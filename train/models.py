"""Networks used by RPM-Distill: the video student, the radar teacher and the spectral policy.

Written from the descriptions in ``shared/docs/reference.md`` (sections d.1, d.3, d.4, d.8 and a.6);
no code was taken from the reference repositories.

* :class:`FactorizePhys` -- the student. The standard 72x72 FactorizePhys feature extractor and head, the
  rank-1 NMF attention module (FSAM) with residual fusion, and RPM-Distill's spatial average at the end.
  RPM-Distill's extra heart-rate head is left out because its output is never used.
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
    "RFTeacher",
    "SpectralPolicy",
    "count_parameters",
    "factorizephys_spatial_sizes",
    "rotate_iq",
]


def count_parameters(model: nn.Module) -> int:
    """Total number of elements in ``model``'s parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------
# FactorizePhys student
# ---------------------------------------------------------------------------------------------------------


def _conv_out(size: int, stride: int) -> int:
    """Output length of a kernel-3, unpadded convolution with ``stride`` (0 if the input is too short)."""
    if size < 3:
        return 0
    return (size - 3) // stride + 1


def factorizephys_spatial_sizes(input_size: int) -> list[int]:
    """Spatial side length after each of the 12 convolutions of :class:`FactorizePhys`.

    The first convolution keeps the size (padding 1); convolutions 2 and 5 have stride 2 and no spatial
    padding; all others have stride 1 and no spatial padding. For 72 this gives
    ``[72, 35, 33, 31, 15, 13, 11, 9, 7, 5, 3, 1]``. A value of 0 means the input is too small.
    """
    sizes = [input_size]
    strides = [2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1]
    for s in strides:
        sizes.append(_conv_out(sizes[-1], s))
    return sizes


class _ConvBlock3D(nn.Module):
    """Conv3d (kernel 3, no bias) -> Tanh -> InstanceNorm3d (affine False, no running stats, no buffers)."""

    def __init__(self, in_ch: int, out_ch: int, stride: tuple[int, int, int], padding: tuple[int, int, int]):
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size=3, stride=stride, padding=padding, bias=False)
        self.norm = nn.InstanceNorm3d(out_ch, affine=False, track_running_stats=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, T, H, W) -> (B, out_ch, T, H', W')."""
        return self.norm(torch.tanh(self.conv(x)))


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


class FactorizePhys(nn.Module):
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
    (T -> T - 1) and instance-normalised per sample and channel. Output: (B, T - 1), the rPPG signal
    (the final (B, 1, T - 1, h, w) map averaged over h and w; h = w = 1 at 72x72).
    """

    _NF = (8, 12, 16)

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
        super().__init__()
        if frames < 2:
            raise ValueError(f"FactorizePhys needs at least 2 input frames, got frames={frames}")
        sizes = factorizephys_spatial_sizes(input_size)
        if min(sizes) < 1:
            raise ValueError(
                f"input_size={input_size} is too small for FactorizePhys: the spatial sizes would be "
                f"{sizes}; the final map must be at least 1x1 (input_size >= 71)"
            )
        self.frames = frames
        self.in_channels = in_channels
        self.input_size = input_size
        self.use_fsam = fsam
        self.fsam_at_inference = fsam_at_inference
        self.output_spatial_size = sizes[-1]

        nf = self._NF
        p1 = (1, 1, 1)
        p0 = (1, 0, 0)
        s1 = (1, 1, 1)
        s2 = (1, 2, 2)
        self.input_norm = nn.InstanceNorm3d(in_channels, affine=False, track_running_stats=False)
        self.feature_extractor = nn.Sequential(
            _ConvBlock3D(in_channels, nf[0], s1, p1),
            _ConvBlock3D(nf[0], nf[1], s2, p0),
            _ConvBlock3D(nf[1], nf[1], s1, p0),
            nn.Dropout3d(dropout),
            _ConvBlock3D(nf[1], nf[1], s1, p0),
            _ConvBlock3D(nf[1], nf[2], s2, p0),
            _ConvBlock3D(nf[2], nf[2], s1, p0),
            nn.Dropout3d(dropout),
        )
        self.head = nn.Sequential(
            _ConvBlock3D(nf[2], nf[2], s1, p0),
            _ConvBlock3D(nf[2], nf[2], s1, p0),
            _ConvBlock3D(nf[2], nf[2], s1, p0),
            nn.Dropout3d(dropout),
        )
        if fsam:
            self.fsam = _FSAM(nf[2], nf[2] // 2, md_steps)
            self.fsam_norm = nn.InstanceNorm3d(nf[2], affine=False, track_running_stats=False)
            self.bias1 = nn.Parameter(torch.tensor(1.0))
        else:
            self.fsam = None
            self.fsam_norm = None
            self.register_parameter("bias1", None)
        self.final_layer = nn.Sequential(
            _ConvBlock3D(nf[2], nf[1], s1, p0),
            _ConvBlock3D(nf[1], nf[0], s1, p0),
            nn.Conv3d(nf[0], 1, kernel_size=3, stride=1, padding=p0, bias=False),
        )
        self.last_appx_error: Tensor | None = None

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 5:
            raise ValueError(
                f"FactorizePhys expected (B, C, T, H, W) = (B, {self.in_channels}, {self.frames}, "
                f"{self.input_size}, {self.input_size}), got a {x.dim()}-D tensor of shape {tuple(x.shape)}"
            )
        _, c, t, h, w = x.shape
        expected = (self.in_channels, self.frames, self.input_size, self.input_size)
        if (c, t, h, w) != expected:
            raise ValueError(
                "FactorizePhys input mismatch: expected (C, T, H, W) = "
                f"{expected}, got {(c, t, h, w)}. The model was built for frames={self.frames}, "
                f"in_channels={self.in_channels}, input_size={self.input_size}; resize/crop the input or "
                "build a model for this shape (inputs are never reshaped silently)."
            )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) raw frames in [0, 1] -> (B, T - 1) rPPG signal."""
        self._check_input(x)
        x = torch.diff(x, dim=2)  # (B, C, T-1, H, W)
        x = self.input_norm(x)
        v = self.feature_extractor(x)  # (B, 16, T-1, s, s) voxel embeddings
        v = self.head(v)  # (B, 16, T-1, h, w)
        if self.fsam is not None and (self.training or self.fsam_at_inference):
            v_shift = v - _per_sample_min(v)
            att, self.last_appx_error = self.fsam(v_shift)
            fused = (v_shift + self.bias1) * (att - _per_sample_min(att) + self.bias1)
            v = v + self.fsam_norm(fused)
        out = self.final_layer(v)  # (B, 1, T-1, h', w')
        return out.mean(dim=(3, 4)).squeeze(1)


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
