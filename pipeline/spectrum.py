"""Signal helpers shared by the data pipeline, training, evaluation, the report and ``rpm predict``.

One definition of each; every other module imports it from here.

* **Cardiac band** :data:`CARDIAC_BAND_BPM` = 45-180 bpm, :data:`CARDIAC_BAND_HZ` = 0.75-3 Hz (the
  paper's HR band; also the band of the SNR loss and of the spectral features in ``train.losses``).
* **Band-pass** (:func:`bandpass`): Butterworth in second-order sections, applied forwards and
  backwards (zero phase), the upper edge clamped to 0.45 fs.
* **Heart rate** (:func:`hr_from_psd`, :func:`hr_batch`): the evaluation's estimator (shared by
  RPM-Distill and EquiPleth): remove the mean, 6th-order band-pass over [lo, hi] bpm, periodogram on a
  0.1 bpm grid (nfft = 60 fs / 0.1, 18 000 points at 30 Hz), argmax inside [lo, hi] inclusive.
* **z-score** (:func:`zscore`): (x - mean) / (std + 1e-8) along one axis, for numpy arrays and torch
  tensors.
* **SNR** (:func:`snr_db`): a quality figure in dB on the Hann-windowed periodogram of the band-passed
  signal. ``train.losses.snr_loss_db`` is a different quantity (a differentiable training loss on an
  unwindowed 1024-point FFT, with the peak taken from the target); it only shares the band.
* **Window starts** (:func:`window_starts`): 0, stride, 2 stride, ... while a window fits, optionally
  plus one window flush with the end.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from scipy import signal

if TYPE_CHECKING:
    import torch

CARDIAC_BAND_BPM = (45.0, 180.0)
"""The heart-rate band in beats per minute (inclusive)."""
CARDIAC_BAND_HZ = (CARDIAC_BAND_BPM[0] / 60.0, CARDIAC_BAND_BPM[1] / 60.0)
"""The same band in Hz: (0.75, 3.0)."""
HR_FILTER_ORDER = 6
"""Butterworth order of the HR estimator's band-pass (before the forward-backward doubling)."""
HR_RESOLUTION_BPM = 0.1
"""Frequency grid of the HR estimator's periodogram, in bpm."""


def bandpass(
    x: np.ndarray, fs: float, band_hz: tuple[float, float] = CARDIAC_BAND_HZ, order: int = 4, axis: int = -1
) -> np.ndarray:
    """Zero-phase Butterworth band-pass of ``x`` (samples at ``fs`` Hz) along ``axis``.

    Design: ``order``-th-order band-pass over ``band_hz`` (the upper edge clamped to 0.45 fs, so a low
    sampling rate still gives a valid filter), second-order sections; applied forwards and backwards
    (``scipy.signal.sosfiltfilt``), so the magnitude response is squared and the phase is zero. The
    ends are padded by odd extension of 3 (2 n_sections + 1) samples (scipy's default), or n - 1
    samples when the signal is shorter than that. Returns an array of ``x``'s shape.
    """
    lo, hi = band_hz[0], min(band_hz[1], 0.45 * fs)
    sos = signal.butter(order, [lo, hi], btype="bandpass", fs=fs, output="sos")
    padlen = min(3 * (2 * len(sos) + 1), np.shape(x)[axis] - 1)
    return signal.sosfiltfilt(sos, x, axis=axis, padlen=max(padlen, 0))


def power_spectrum(
    x: np.ndarray, fs: float, resolution_bpm: float = HR_RESOLUTION_BPM
) -> tuple[np.ndarray, np.ndarray]:
    """(freqs_hz, power) of ``x``: periodogram (no window) zero-padded to a ``resolution_bpm`` grid.

    nfft = round(60 fs / resolution_bpm): 18 000 points at 30 Hz and 0.1 bpm.
    """
    nfft = int(round(60.0 * fs / resolution_bpm))
    return signal.periodogram(x, fs=fs, nfft=nfft)


def hr_from_psd(
    x: np.ndarray,
    fs: float = 30.0,
    lo_bpm: float = CARDIAC_BAND_BPM[0],
    hi_bpm: float = CARDIAC_BAND_BPM[1],
    order: int = HR_FILTER_ORDER,
    resolution_bpm: float = HR_RESOLUTION_BPM,
) -> float:
    """Heart rate (bpm) of one waveform ``x`` (samples at ``fs`` Hz) by the band-limited PSD peak.

    The mean is removed, ``x`` is band-passed over [lo_bpm, hi_bpm] (:func:`bandpass`, ``order``), and
    the argmax of :func:`power_spectrum` inside [lo_bpm, hi_bpm] (inclusive) is returned. Raises
    ValueError for fewer than 16 samples or non-finite values.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size < 16 or not np.isfinite(x).all():
        raise ValueError(f"need a finite waveform of at least 16 samples, got {x.size}")
    filtered = bandpass(x - x.mean(), fs, (lo_bpm / 60.0, hi_bpm / 60.0), order)
    freqs, power = power_spectrum(filtered, fs, resolution_bpm)
    band = (freqs >= lo_bpm / 60.0) & (freqs <= hi_bpm / 60.0)
    return float(freqs[band][np.argmax(power[band])] * 60.0)


def hr_batch(waves: np.ndarray, fs: float = 30.0, **kw) -> np.ndarray:
    """(N, T) waveforms -> (N,) heart rates in bpm (:func:`hr_from_psd` on each row; ``kw`` passed on)."""
    return np.array([hr_from_psd(w, fs, **kw) for w in np.asarray(waves)], dtype=np.float64)


def zscore(x, axis: int = -1, eps: float = 1e-8, dtype=np.float64):
    """(x - mean) / (std + ``eps``) along ``axis`` (population std).

    numpy input (or anything array-like) is converted to ``dtype`` first (float64 by default; float32
    keeps float32 arithmetic) and a numpy array is returned. A torch tensor stays a tensor (same dtype,
    device and autograd graph): it is centred first and divided by the std of the centred tensor.
    """
    if not isinstance(x, np.ndarray) and hasattr(x, "detach"):  # torch.Tensor, without importing torch
        t: torch.Tensor = x - x.mean(dim=axis, keepdim=True)
        return t / (t.std(dim=axis, keepdim=True, correction=0) + eps)
    x = np.asarray(x, dtype=dtype)
    return (x - x.mean(axis=axis, keepdims=True)) / (x.std(axis=axis, keepdims=True) + eps)


def snr_db(
    x: np.ndarray,
    fs: float,
    hr_bpm: float | None = None,
    band_hz: tuple[float, float] = CARDIAC_BAND_HZ,
    half_width_hz: float = 0.1,
) -> float:
    """Cardiac-band SNR of ``x`` (samples at ``fs`` Hz) in dB.

    On the Hann-windowed periodogram (nfft = max(4096, n)) of ``x`` band-passed over ``band_hz``
    (:func:`bandpass`, order 4): the power within +-``half_width_hz`` of f0 and of 2 f0, over the
    power in the rest of ``band_hz`` (inclusive). f0 is ``hr_bpm`` / 60 when the rate is known, else
    the strongest in-band frequency. NaN when ``x`` is shorter than 4 s or all zero; inf when the rest
    of the band holds no power.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size < 4 * fs or not np.any(x):
        return math.nan
    f, p = signal.periodogram(bandpass(x, fs, band_hz), fs=fs, window="hann", nfft=max(4096, x.size))
    in_band = (f >= band_hz[0]) & (f <= band_hz[1])
    if not in_band.any():
        return math.nan
    f0 = hr_bpm / 60.0 if hr_bpm is not None else f[in_band][np.argmax(p[in_band])]
    sig = in_band & ((np.abs(f - f0) <= half_width_hz) | (np.abs(f - 2 * f0) <= half_width_hz))
    noise = in_band & ~sig
    if p[noise].sum() <= 0:
        return math.inf
    return float(10 * np.log10(p[sig].sum() / p[noise].sum()))


def window_starts(n: int, frames: int, stride: int, flush: bool = False) -> list[int]:
    """Start indices 0, stride, 2 stride, ... of the ``frames``-long windows that fit in ``n`` samples.

    With ``flush``, a last window ending exactly at ``n`` (start n - frames) is added when the stride
    does not land there. Empty when n < frames. Raises ValueError unless frames and stride are >= 1.
    """
    if frames < 1 or stride < 1:
        raise ValueError(f"window frames and stride must be >= 1, got {frames} and {stride}")
    if n < frames:
        return []
    starts = list(range(0, n - frames + 1, stride))
    if flush and starts[-1] != n - frames:
        starts.append(n - frames)
    return starts
