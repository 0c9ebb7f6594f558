"""Losses and spectral features for RPM-Distill.

Written from the paper's Eqs. 2-7 and the L_sup of its Sec. 3.4; no code was taken from the reference
repositories. Every loss here is computed per sample and then averaged over the batch, so results do not
depend on how samples are grouped into batches.

Shapes: B = batch, T = samples per signal (video frames at ``fs`` Hz), F = number of PSD bins inside the
heart-rate band.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.spectrum import CARDIAC_BAND_BPM, CARDIAC_BAND_HZ

__all__ = [
    "EPS",
    "SpectralFeatures",
    "aggregate_distill",
    "band_bin_indices",
    "distill_components",
    "neg_pearson",
    "relation_map",
    "snr_band_indices",
    "snr_loss_db",
    "spectral_entropy",
    "spectral_features",
    "supervised_loss",
]

EPS = 1e-8
"""The epsilon used by the spectral features and distillation terms (Eq. 2's epsilon; the release's value)."""


def _check_2d(name: str, x: Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} must be (B, T), got shape {tuple(x.shape)}")


# ---------------------------------------------------------------------------------------------------------
# Supervised loss
# ---------------------------------------------------------------------------------------------------------


def neg_pearson(pred: Tensor, target: Tensor) -> Tensor:
    """Negative temporal Pearson loss, per sample along time, averaged over the batch.

    Args:
        pred: (B, T) predicted signal (any units; not normalised first).
        target: (B, T) reference signal.

    Returns a scalar: mean over b of (1 - r_b), where
    r = (N sum xy - sum x sum y) / sqrt((N sum x^2 - (sum x)^2 + 0.01) (N sum y^2 - (sum y)^2 + 0.01)),
    N = T. Dimensionless, in [0, 2] up to the 0.01 regularisers. Correlation runs along time within each
    sample (never across the batch), so a per-sample constant offset does not change it.
    """
    _check_2d("pred", pred)
    _check_2d("target", target)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    n = pred.shape[1]
    sx = pred.sum(dim=1)
    sy = target.sum(dim=1)
    sxy = (pred * target).sum(dim=1)
    sx2 = (pred * pred).sum(dim=1)
    sy2 = (target * target).sum(dim=1)
    num = n * sxy - sx * sy
    den = torch.sqrt((n * sx2 - sx * sx + 0.01) * (n * sy2 - sy * sy + 0.01))
    r = num / den
    return (1.0 - r).mean()


def snr_band_indices(
    fs: float = 30.0, n_fft: int = 1024, lo_hz: float = CARDIAC_BAND_HZ[0], hi_hz: float = CARDIAC_BAND_HZ[1]
) -> tuple[int, int]:
    """Indices of the rfft bins nearest ``lo_hz`` and ``hi_hz`` on an ``n_fft``-point grid at ``fs`` Hz.

    The grid has n_fft // 2 + 1 points k * fs / n_fft. Returns (lo, hi); (26, 102) at 30 Hz and 1024.
    """
    n_bins = n_fft // 2 + 1
    freqs = [k * fs / n_fft for k in range(n_bins)]
    lo = min(range(n_bins), key=lambda k: abs(freqs[k] - lo_hz))
    hi = min(range(n_bins), key=lambda k: abs(freqs[k] - hi_hz))
    return lo, hi


def snr_loss_db(
    pred: Tensor,
    target: Tensor,
    fs: float = 30.0,
    n_fft: int = 1024,
    lo_hz: float = CARDIAC_BAND_HZ[0],
    hi_hz: float = CARDIAC_BAND_HZ[1],
) -> Tensor:
    """Negative SNR of ``pred`` around the spectral peak of ``target``, in dB, averaged over the batch.

    Args:
        pred, target: (B, T) signals sampled at ``fs`` Hz.
        fs: sampling rate in Hz. n_fft: FFT length (zero padding). lo_hz, hi_hz: band limits in Hz.

    Both signals get an ``n_fft``-point rfft (zero padded, 1/N normalisation, no window, no mean removal).
    With lo, hi = :func:`snr_band_indices` and w = n_fft // 256, the target peak is
    k* = lo + argmax |Y_k|^2 over [lo, hi). Signal = sum |X_k|^2 over k* - w <= k < k* + w; noise = sum
    |X_k|^2 over [lo, k* - w) and [k* + w, hi). Per-sample loss = -10 log10(signal / (noise + 1e-7)) dB.
    Returns a scalar on the inputs' device.

    Not :func:`pipeline.spectrum.snr_db` (the quality figure): that one is numpy, band-passes and
    Hann-windows its input, takes the peak of the signal itself and counts +-0.1 Hz around it and its
    harmonic; this one is differentiable and keeps the reference recipe's unwindowed FFT and bins.
    Only the band (:data:`pipeline.spectrum.CARDIAC_BAND_HZ`) is shared.
    """
    _check_2d("pred", pred)
    _check_2d("target", target)
    if pred.shape[0] != target.shape[0]:
        raise ValueError(f"batch sizes differ: {pred.shape[0]} vs {target.shape[0]}")
    lo, hi = snr_band_indices(fs, n_fft, lo_hz, hi_hz)
    if hi <= lo:
        raise ValueError(f"empty SNR band: lo={lo}, hi={hi} (fs={fs}, n_fft={n_fft})")
    w = max(1, n_fft // 256)
    px = torch.fft.rfft(pred, n=n_fft, dim=1, norm="forward").abs() ** 2  # (B, n_fft//2+1)
    py = torch.fft.rfft(target, n=n_fft, dim=1, norm="forward").abs() ** 2
    k_star = lo + torch.argmax(py[:, lo:hi], dim=1)  # (B,)
    k = torch.arange(px.shape[1], device=px.device).unsqueeze(0)  # (1, K)
    ks = k_star.unsqueeze(1)
    sig_mask = (k >= ks - w) & (k < ks + w)
    band_mask = (k >= lo) & (k < hi)
    noise_mask = band_mask & ~sig_mask
    signal = (px * sig_mask).sum(dim=1)
    noise = (px * noise_mask).sum(dim=1)
    return (-10.0 * torch.log10(signal / (noise + 1e-7))).mean()


def supervised_loss(pred: Tensor, target: Tensor, fs: float = 30.0) -> Tensor:
    """L_sup = 0.01 * neg_pearson + snr_loss_db, after cropping both (B, T) inputs to the shorter T.

    The crop keeps the first min(T_pred, T_target) samples (the student outputs T - 1 samples while the
    label has T). Returns a scalar.
    """
    _check_2d("pred", pred)
    _check_2d("target", target)
    t = min(pred.shape[1], target.shape[1])
    pred, target = pred[:, :t], target[:, :t]
    return 0.01 * neg_pearson(pred, target) + snr_loss_db(pred, target, fs=fs)


# ---------------------------------------------------------------------------------------------------------
# Spectral features and distillation
# ---------------------------------------------------------------------------------------------------------


class SpectralFeatures(NamedTuple):
    """Band-limited spectral description of a batch of signals (see :func:`spectral_features`).

    Fields:
        logpsd_z: (B, F) z-scored log power spectrum over the band bins (dimensionless).
        log_raw: (B, F) natural log of band power plus EPS.
        centroid_idx: (B,) power-weighted centroid as a fractional local bin index (0 .. F - 1).
        centroid_bpm: (B,) the same centroid in beats per minute.
        peak_window: (B, F) Gaussian window centred on centroid_idx (values in (0, 1]).
        freqs_bpm: (F,) centre frequency of each band bin in beats per minute.
    """

    logpsd_z: Tensor
    log_raw: Tensor
    centroid_idx: Tensor
    centroid_bpm: Tensor
    peak_window: Tensor
    freqs_bpm: Tensor


def band_bin_indices(
    t: int, fs: float = 30.0, lo_bpm: float = CARDIAC_BAND_BPM[0], hi_bpm: float = CARDIAC_BAND_BPM[1]
) -> list[int]:
    """rfft bin indices k (length-``t`` transform at ``fs`` Hz) with lo_bpm <= 60 k fs / t <= hi_bpm."""
    tol = 1e-9 * max(1.0, hi_bpm)
    return [k for k in range(t // 2 + 1) if lo_bpm - tol <= 60.0 * k * fs / t <= hi_bpm + tol]


def spectral_features(
    x: Tensor,
    fs: float = 30.0,
    lo_bpm: float = CARDIAC_BAND_BPM[0],
    hi_bpm: float = CARDIAC_BAND_BPM[1],
    eps: float = EPS,
) -> SpectralFeatures:
    """Spectral features of (B, t) signals sampled at ``fs`` Hz, restricted to [lo_bpm, hi_bpm] inclusive.

    Steps: remove each sample's mean; multiply by the periodic Hann window of length t; P = |rfft|^2 (no
    padding, no normalisation); keep the band bins (F of them); L_raw = ln(P_b + eps); logpsd_z = z-score of
    L_raw over the band per sample (population std, + eps); w = softmax(L_raw); centroid_idx = sum w i,
    centroid_bpm = sum w f_bpm; peak_window_i = exp(-0.5 ((i - centroid_idx) / sigma)^2) with
    window_bins = max(1, floor(0.02 F)) and sigma = max(1, window_bins / 2).

    F = 19 for t = 255 or 256 at 30 Hz, 23 for t = 300. Raises ValueError if t < 8 or the band is empty.
    """
    _check_2d("x", x)
    t = x.shape[1]
    if t < 8:
        raise ValueError(f"spectral_features needs at least 8 samples, got t={t}")
    idx = band_bin_indices(t, fs, lo_bpm, hi_bpm)
    if not idx:
        raise ValueError(f"no rfft bin of a {t}-sample signal at fs={fs} Hz lies in [{lo_bpm}, {hi_bpm}] bpm")
    x = x - x.mean(dim=1, keepdim=True)
    win = torch.hann_window(t, periodic=True, dtype=x.dtype, device=x.device)
    power = torch.fft.rfft(x * win, dim=1).abs() ** 2  # (B, t//2+1)
    k0, k1 = idx[0], idx[-1] + 1
    p_band = power[:, k0:k1]  # (B, F), band bins are contiguous
    n_bins = k1 - k0
    freqs_bpm = torch.arange(k0, k1, dtype=x.dtype, device=x.device) * (60.0 * fs / t)
    log_raw = torch.log(p_band + eps)
    mean = log_raw.mean(dim=1, keepdim=True)
    std = log_raw.std(dim=1, keepdim=True, correction=0)
    logpsd_z = (log_raw - mean) / (std + eps)
    w = torch.softmax(log_raw, dim=1)
    local = torch.arange(n_bins, dtype=x.dtype, device=x.device)
    centroid_idx = (w * local).sum(dim=1)
    centroid_bpm = (w * freqs_bpm).sum(dim=1)
    window_bins = max(1, math.floor(0.02 * n_bins))
    sigma = max(1.0, window_bins / 2.0)
    peak_window = torch.exp(-0.5 * ((local.unsqueeze(0) - centroid_idx.unsqueeze(1)) / sigma) ** 2)
    return SpectralFeatures(logpsd_z, log_raw, centroid_idx, centroid_bpm, peak_window, freqs_bpm)


def spectral_entropy(logpsd_z: Tensor, eps: float = EPS) -> Tensor:
    """Entropy (nats) of softmax(logpsd_z) over the last axis: (B, F) -> (B,)."""
    p = torch.softmax(logpsd_z, dim=-1)
    return -(p * torch.log(p + eps)).sum(dim=-1)


def _smooth_l1(a: Tensor, b: Tensor) -> Tensor:
    return F.smooth_l1_loss(a, b, reduction="none", beta=1.0)


def distill_components(student: SpectralFeatures, teacher: SpectralFeatures, eps: float = EPS) -> Tensor:
    """Per-sample distillation terms (B, 3) in the order [peak, background, morphology].

    With diff = |l_s - l_t| (z-scored log-PSDs cropped to the shorter F), w_peak = the *teacher's* peak
    window and w_off = max(0, 1 - w_peak):

    * peak = sum(diff w_peak) / (sum w_peak + eps)
    * background = sum(diff w_off) / (sum w_off + eps)
    * morphology = SmoothL1_beta1(centroid_idx_s, centroid_idx_t) [bins] + SmoothL1_beta1(H_s, H_t) [nats],
      H = entropy of softmax(logpsd_z).

    Teacher features are treated as constants (detached). No reduction over the batch.
    """
    n = min(student.logpsd_z.shape[-1], teacher.logpsd_z.shape[-1])
    ls = student.logpsd_z[:, :n]
    lt = teacher.logpsd_z[:, :n].detach()
    w_peak = teacher.peak_window[:, :n].detach()
    w_off = (1.0 - w_peak).clamp(min=0.0)
    diff = (ls - lt).abs()
    peak = (diff * w_peak).sum(dim=1) / (w_peak.sum(dim=1) + eps)
    other = (diff * w_off).sum(dim=1) / (w_off.sum(dim=1) + eps)
    idx_term = _smooth_l1(student.centroid_idx, teacher.centroid_idx.detach())
    sharp_term = _smooth_l1(spectral_entropy(ls, eps), spectral_entropy(lt, eps))
    return torch.stack([peak, other, idx_term + sharp_term], dim=1)


def aggregate_distill(components: Tensor, gate: Tensor, alpha: Tensor) -> Tensor:
    """L_distill = mean_i g_i * sum_k alpha_ik L_ik.

    Args:
        components: (B, 3) from :func:`distill_components`.
        gate: (B,) gate g in [0, 1].
        alpha: (B, 3) component weights (rows sum to 1).

    Returns a scalar.
    """
    if components.dim() != 2 or alpha.shape != components.shape or gate.shape != components.shape[:1]:
        raise ValueError(
            "aggregate_distill expects components (B, K), gate (B,), alpha (B, K); got "
            f"{tuple(components.shape)}, {tuple(gate.shape)}, {tuple(alpha.shape)}"
        )
    return (gate * (alpha * components).sum(dim=1)).mean()


def relation_map(student: SpectralFeatures, teacher: SpectralFeatures) -> Tensor:
    """Policy input (B, 3, F): channels [l_s, l_t, |l_s - l_t|] of z-scored log-PSDs, cropped to shorter F.

    Not detached: gradients may flow into the student's spectrum.
    """
    n = min(student.logpsd_z.shape[-1], teacher.logpsd_z.shape[-1])
    ls = student.logpsd_z[:, :n]
    lt = teacher.logpsd_z[:, :n]
    return torch.stack([ls, lt, (ls - lt).abs()], dim=1)
