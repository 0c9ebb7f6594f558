"""PhysFormer (Yu et al., CVPR 2022): a video transformer for rPPG, and its published loss.

Written from the paper ("PhysFormer: Facial Video-based Physiological Measurement with Temporal
Difference Transformer", Sections 3.1-3.4 and the implementation details); no code was copied from the
authors' or any toolbox's release. The published configuration (the authors' run name
``Physformer_TDC07_sharp2_hid96_head4_layer12``): D = 96, D' = 144, 4 heads, 12 blocks, 4x4x4 tubes,
theta = 0.7, tau = 2.0, dropout 0.1, for 160-frame 128x128 clips.

Architecture, input (B, 3, T, H, W) frames in [0, 1] -> (B, T) rPPG signal:

* **Stem** (paper 3.1): three Conv3d blocks with kernels (1, 5, 5), (3, 3, 3), (3, 3, 3) and channels
  D/4, D/2, D, each followed by BatchNorm3d, ReLU and a spatial-only MaxPool (1, 2, 2); (B, D, T, H/8, W/8).
  The paper's stem is plain convolution; temporal difference convolution is used for the queries and keys.
* **Tube tokens**: a Conv3d with kernel = stride = (Ts, Hs, Ws) = (4, 4, 4); no position embedding (the
  paper relies on the stem's local context). N = T/4 * H/32 * W/32 tokens of width D.
* **Temporal difference transformer** x N blocks, pre-LayerNorm, each
  ``x = x + Dropout(W_O TD-MHSA(LN(x)))`` then ``x = x + Dropout(ST-FF(LN(x)))``:

  - TD-MHSA (3.2): Q = BN(TDC(x)), K = BN(TDC(x)) on the (D, T', H', W') token grid, V = x W_V
    (pointwise, no bias); per head softmax(Q K^T / tau) V; heads concatenated, then a linear W_O.
    TDC (:class:`TemporalDifferenceConv3d`) is a 3x3x3 convolution minus theta times the response of the
    centre voxel to the summed kernel weights of the two temporally adjacent slices.
  - ST-FF (3.3): pointwise D -> D' + BN + ELU, depthwise 3x3x3 D' -> D' + BN + ELU, pointwise D' -> D + BN.
* **Predictor head**: two temporal upsampling blocks (nearest x2 in time, Conv3d (3, 1, 1), BN, ELU;
  D -> D then D -> D/2), spatial mean, Conv1d D/2 -> 1: (B, T).

Published size: 7,380,865 parameters with T = 160 and 128x128 input (the paper reports 7.38 M); the count
does not depend on T or the input size.

Loss (3.4, :func:`physformer_loss`): L = alpha L_time + beta (L_CE + L_LD), with L_time the negative
Pearson correlation, L_CE the cross-entropy between the prediction's power spectrum over 140 one-bpm heart
rate classes (40-179 bpm) and the ground-truth HR class, L_LD the Kullback-Leibler divergence from a
Gaussian label distribution (sigma 1 bpm) around the ground-truth HR to that spectrum, alpha = 0.1 and the
curriculum weight beta = beta_0 eta^(epoch / epochs) with beta_0 = 1, eta = 5 (epoch counted from 0, the
paper's (E - 1) / E_total).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.spectrum import hr_batch
from train.losses import neg_pearson

__all__ = [
    "PUBLISHED_PARAMETERS",
    "PhysFormer",
    "PhysFormerLossConfig",
    "TemporalDifferenceConv3d",
    "curriculum_beta",
    "hr_class_spectrum",
    "physformer_loss",
    "tiny_physformer",
]

PUBLISHED_PARAMETERS = 7.38e6
"""PhysFormer's size as reported by Yu et al. (2022): 7.38 M parameters."""


class TemporalDifferenceConv3d(nn.Module):
    """Temporal difference convolution (TDC), 3x3x3, stride 1, same padding, no bias.

    y(p0) = sum_{p in R} w(p) x(p0 + p) - theta * x(p0) * sum_{p in R'} w(p), where R is the 3x3x3
    neighbourhood and R' its two temporally adjacent 3x3 slices (t - 1 and t + 1). theta = 0 gives a plain
    convolution. (B, C_in, T, H, W) -> (B, C_out, T, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, theta: float = 0.7):
        super().__init__()
        if not 0.0 <= theta <= 1.0:
            raise ValueError(f"TDC theta must lie in [0, 1], got {theta}")
        self.theta = theta
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        if self.theta == 0.0:
            return out
        w = self.conv.weight  # (C_out, C_in, 3, 3, 3)
        adjacent = (w[:, :, 0] + w[:, :, 2]).sum(dim=(2, 3))  # (C_out, C_in)
        return out - self.theta * F.conv3d(x, adjacent[:, :, None, None, None])


class _TDMultiHeadAttention(nn.Module):
    """Temporal difference multi-head self-attention on a (T', H', W') token grid.

    (B, N, D) tokens -> (B, N, D) (before the output projection W_O).
    """

    def __init__(self, dim: int, heads: int, theta: float, tau: float):
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"PhysFormer dim {dim} must be divisible by heads {heads}")
        if tau <= 0:
            raise ValueError(f"PhysFormer attention temperature tau must be > 0, got {tau}")
        self.heads, self.tau = heads, tau
        self.q = nn.Sequential(TemporalDifferenceConv3d(dim, dim, theta), nn.BatchNorm3d(dim))
        self.k = nn.Sequential(TemporalDifferenceConv3d(dim, dim, theta), nn.BatchNorm3d(dim))
        self.v = nn.Conv3d(dim, dim, kernel_size=1, bias=False)
        self.last_attention: Tensor | None = None

    def forward(self, x: Tensor, grid: tuple[int, int, int]) -> Tensor:
        b, n, d = x.shape
        vol = x.transpose(1, 2).reshape(b, d, *grid)

        def split(t: Tensor) -> Tensor:  # (B, D, T', H', W') -> (B, heads, N, D / heads)
            return t.flatten(2).reshape(b, self.heads, d // self.heads, n).transpose(2, 3)

        q, k, v = split(self.q(vol)), split(self.k(vol)), split(self.v(vol))
        att = torch.softmax(q @ k.transpose(-2, -1) / self.tau, dim=-1)  # (B, heads, N, N)
        self.last_attention = att.detach()
        return (att @ v).transpose(1, 2).reshape(b, n, d)


class _SpatioTemporalFeedForward(nn.Module):
    """ST-FF: pointwise D -> D' (BN, ELU), depthwise 3x3x3 (BN, ELU), pointwise D' -> D (BN)."""

    def __init__(self, dim: int, ff_dim: int):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv3d(dim, ff_dim, 1, bias=False), nn.BatchNorm3d(ff_dim), nn.ELU())
        self.depthwise = nn.Sequential(
            nn.Conv3d(ff_dim, ff_dim, 3, padding=1, groups=ff_dim, bias=False),
            nn.BatchNorm3d(ff_dim),
            nn.ELU(),
        )
        self.project = nn.Sequential(nn.Conv3d(ff_dim, dim, 1, bias=False), nn.BatchNorm3d(dim))

    def forward(self, x: Tensor, grid: tuple[int, int, int]) -> Tensor:
        b, n, d = x.shape
        vol = x.transpose(1, 2).reshape(b, d, *grid)
        return self.project(self.depthwise(self.expand(vol))).flatten(2).transpose(1, 2)


class _TDTransformerBlock(nn.Module):
    """Pre-norm block: x + Dropout(W_O TD-MHSA(LN x)), then x + Dropout(ST-FF(LN x))."""

    def __init__(self, dim: int, ff_dim: int, heads: int, theta: float, tau: float, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _TDMultiHeadAttention(dim, heads, theta, tau)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.ff = _SpatioTemporalFeedForward(dim, ff_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, grid: tuple[int, int, int]) -> Tensor:
        x = x + self.drop(self.proj(self.attn(self.norm1(x), grid)))
        return x + self.drop(self.ff(self.norm2(x), grid))


def _stem_block(in_ch: int, out_ch: int, kernel, padding) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, kernel, padding=padding),
        nn.BatchNorm3d(out_ch),
        nn.ReLU(inplace=True),
        nn.MaxPool3d((1, 2, 2), stride=(1, 2, 2)),
    )


def _upsample_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=(2, 1, 1), mode="nearest"),
        nn.Conv3d(in_ch, out_ch, (3, 1, 1), padding=(1, 0, 0)),
        nn.BatchNorm3d(out_ch),
        nn.ELU(),
    )


class PhysFormer(nn.Module):
    """PhysFormer rPPG network (see the module docstring for the architecture and sources).

    Args:
        frames: clip length T, divisible by the tube length ``patch[0]`` = 4 (the head's two x2 temporal
            upsamplings give back T).
        in_channels: input channels (3 for RGB).
        input_size: spatial side H = W the model is built for; H / 8 must be divisible by ``patch[1]``
            (128 with the published 4x4x4 tubes). Any other input shape is refused.
        dim, ff_dim, heads, layers, patch, theta, tau, dropout: D, D', heads, blocks, tube size, TDC
            theta, attention temperature, dropout; the defaults are the published values.

    Input (B, C, T, H, W) raw frames in [0, 1] (mapped to about [-1, 1] as (255 x - 127.5) / 128, the
    paper's frame normalisation); output (B, T). The trainer crops every student output to T - 1.
    """

    uses_radar_at_test = False

    def __init__(
        self,
        frames: int,
        in_channels: int = 3,
        input_size: int = 128,
        dim: int = 96,
        ff_dim: int = 144,
        heads: int = 4,
        layers: int = 12,
        patch: tuple[int, int, int] = (4, 4, 4),
        theta: float = 0.7,
        tau: float = 2.0,
        dropout: float = 0.1,
    ):
        super().__init__()
        pt, ph, pw = patch
        if pt != 4:
            raise ValueError(f"PhysFormer's head upsamples time x4, so the tube length must be 4, got {pt}")
        if frames < pt or frames % pt != 0:
            raise ValueError(f"PhysFormer needs frames divisible by {pt}, got frames={frames}")
        if input_size % 8 != 0 or (input_size // 8) % ph != 0 or (input_size // 8) % pw != 0:
            raise ValueError(
                f"PhysFormer input_size={input_size}: the stem halves it 3 times and {ph}x{pw} tubes "
                f"must tile the result exactly (input_size divisible by {8 * ph}; 128 is the published size)"
            )
        if dim % 4 != 0:
            raise ValueError(f"PhysFormer dim must be divisible by 4 (stem widths D/4, D/2), got {dim}")
        self.frames, self.in_channels, self.input_size = frames, in_channels, input_size
        self.grid = (frames // pt, input_size // 8 // ph, input_size // 8 // pw)
        self.stem = nn.Sequential(
            _stem_block(in_channels, dim // 4, (1, 5, 5), (0, 2, 2)),
            _stem_block(dim // 4, dim // 2, 3, 1),
            _stem_block(dim // 2, dim, 3, 1),
        )
        self.tubes = nn.Conv3d(dim, dim, kernel_size=patch, stride=patch)
        self.blocks = nn.ModuleList(
            _TDTransformerBlock(dim, ff_dim, heads, theta, tau, dropout) for _ in range(layers)
        )
        self.upsample = nn.Sequential(_upsample_block(dim, dim), _upsample_block(dim, dim // 2))
        self.out = nn.Conv1d(dim // 2, 1, kernel_size=1)

    def _check_input(self, x: Tensor) -> None:
        expected = (self.in_channels, self.frames, self.input_size, self.input_size)
        if x.dim() != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"PhysFormer input mismatch: expected (B, C, T, H, W) with (C, T, H, W) = {expected}, got "
                f"shape {tuple(x.shape)}; the model was built for frames={self.frames}, "
                f"input_size={self.input_size} (inputs are never reshaped silently)"
            )

    def guided_layer(self) -> tuple[nn.Module, int]:
        """(module, channels) of the FitNets guided feature: the predictor head, (B, D/2, T, h, w)."""
        return self.upsample, self.out.in_channels

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) raw frames in [0, 1] -> (B, T) rPPG signal."""
        self._check_input(x)
        x = (x * 255.0 - 127.5) / 128.0
        tok = self.tubes(self.stem(x))  # (B, D, T/4, H/32, W/32)
        b, d = tok.shape[:2]
        seq = tok.flatten(2).transpose(1, 2)  # (B, N, D)
        for block in self.blocks:
            seq = block(seq, self.grid)
        vol = seq.transpose(1, 2).reshape(b, d, *self.grid)
        feat = self.upsample(vol).mean(dim=(3, 4))  # (B, D/2, T)
        return self.out(feat).squeeze(1)


def tiny_physformer(frames: int = 8, input_size: int = 32, **kw) -> PhysFormer:
    """A CPU-sized PhysFormer for tests: D 16, D' 24, 2 heads, 2 blocks, 4x4x4 tubes (same code path)."""
    kw = {"dim": 16, "ff_dim": 24, "heads": 2, "layers": 2, **kw}
    return PhysFormer(frames=frames, input_size=input_size, **kw)


# ------------------------------------------------------------------------------------------------- loss


@dataclass(frozen=True)
class PhysFormerLossConfig:
    """The published loss weights (paper 3.4 and implementation details)."""

    alpha: float = 0.1  # weight of the negative Pearson loss
    beta0: float = 1.0  # initial weight of the frequency losses
    eta: float = 5.0  # beta grows to beta0 * eta over the epochs
    sigma_bpm: float = 1.0  # std of the Gaussian label distribution
    lo_bpm: int = 40  # first HR class
    hi_bpm: int = 180  # one past the last HR class: 140 classes 40..179 bpm


def curriculum_beta(epoch: int, epochs: int, cfg: PhysFormerLossConfig = PhysFormerLossConfig()) -> float:
    """beta = beta0 * eta^(epoch / epochs), epoch counted from 0 (the paper's (E_cur - 1) / E_total)."""
    if epochs < 1 or epoch < 0:
        raise ValueError(f"curriculum_beta needs epoch >= 0 and epochs >= 1, got {epoch} of {epochs}")
    return cfg.beta0 * cfg.eta ** (min(epoch, epochs) / epochs)


def hr_class_spectrum(pred: Tensor, fs: float, lo_bpm: int = 40, hi_bpm: int = 180) -> Tensor:
    """Power of ``pred`` at every whole bpm in [lo_bpm, hi_bpm), normalised to sum 1 per sample.

    pred: (B, T) at ``fs`` Hz. The mean is removed and a periodic Hann window applied; the power at
    f_k = k / 60 Hz is |sum_t x_t exp(-2 pi i f_k t / fs)|^2 (a DFT evaluated on the class grid, not an
    FFT). Returns (B, hi_bpm - lo_bpm), a distribution over the HR classes.
    """
    if pred.dim() != 2:
        raise ValueError(f"pred must be (B, T), got shape {tuple(pred.shape)}")
    t = pred.shape[1]
    x = (pred - pred.mean(dim=1, keepdim=True)) * torch.hann_window(t, dtype=pred.dtype, device=pred.device)
    bpm = torch.arange(lo_bpm, hi_bpm, dtype=pred.dtype, device=pred.device)
    phase = 2 * math.pi * (bpm[:, None] / 60.0) * torch.arange(t, dtype=pred.dtype, device=pred.device) / fs
    re, im = x @ torch.cos(phase).T, x @ torch.sin(phase).T  # (B, K)
    power = re * re + im * im
    return power / power.sum(dim=1, keepdim=True).clamp_min(1e-12)


def physformer_loss(
    pred: Tensor,
    target: Tensor,
    fs: float,
    epoch: int,
    epochs: int,
    cfg: PhysFormerLossConfig = PhysFormerLossConfig(),
    hr_true: np.ndarray | Tensor | None = None,
    eps: float = 1e-8,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PhysFormer's loss alpha L_time + beta(epoch) (L_CE + L_LD), averaged over the batch.

    Args:
        pred, target: (B, T) predicted signal and ground-truth PPG at ``fs`` Hz (a longer target is cropped
            to the prediction).
        epoch, epochs: the current epoch (from 0) and the run's epochs, for the curriculum weight beta.
        hr_true: (B,) ground-truth HR in bpm; default: the project's HR of ``target``
            (:func:`pipeline.spectrum.hr_batch`, the same estimator the evaluation uses).

    The predicted HR distribution q is :func:`hr_class_spectrum` (the paper does not say how the power
    spectrum becomes a distribution; here it is normalised to sum 1). L_CE = -log q[c] with c the class of
    round(HR); L_LD = KL(p || q) with p a Gaussian of std ``sigma_bpm`` around HR over the classes,
    normalised to sum 1. HRs outside the classes are clamped to the first / last class. Returns the scalar
    loss and 0-d detached stats (time, ce, ld, beta).
    """
    if pred.dim() != 2 or target.dim() != 2 or target.shape[1] < pred.shape[1]:
        raise ValueError(
            f"pred (B, T) and target (B, >= T) expected, got {tuple(pred.shape)}, {tuple(target.shape)}"
        )
    target = target[:, : pred.shape[1]]
    if hr_true is None:
        hr_true = hr_batch(target.detach().double().cpu().numpy(), fs=fs)
    hr = torch.as_tensor(np.asarray(hr_true, dtype=np.float64), dtype=pred.dtype, device=pred.device)
    n_cls = cfg.hi_bpm - cfg.lo_bpm
    q = hr_class_spectrum(pred, fs, cfg.lo_bpm, cfg.hi_bpm)
    log_q = torch.log(q + eps)
    pos = (hr - cfg.lo_bpm).clamp(0, n_cls - 1)  # HR on the class axis
    cls = pos.round().long()
    l_ce = -log_q.gather(1, cls[:, None]).squeeze(1).mean()
    k = torch.arange(n_cls, dtype=pred.dtype, device=pred.device)
    p = torch.exp(-0.5 * ((k[None, :] - pos[:, None]) / cfg.sigma_bpm) ** 2)
    p = p / p.sum(dim=1, keepdim=True)
    l_ld = (p * (torch.log(p + eps) - log_q)).sum(dim=1).mean()
    l_time = neg_pearson(pred, target)
    beta = curriculum_beta(epoch, epochs, cfg)
    loss = cfg.alpha * l_time + beta * (l_ce + l_ld)
    stats = {
        "time": l_time.detach(),
        "ce": l_ce.detach(),
        "ld": l_ld.detach(),
        "beta": torch.tensor(beta),
    }
    return loss, stats
