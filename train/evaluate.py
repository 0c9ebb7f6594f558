"""Heart rate from waveforms and the metrics the paper reports.

HR recipe (reference e.1, shared by RPM-Distill and EquiPleth): 6th-order Butterworth band-pass
over [lo, hi] bpm applied forwards and backwards, then a periodogram with nfft = 60 fs / 0.1
(a 0.1 bpm grid, 18 000 points at 30 Hz) and the argmax inside [lo, hi] (inclusive).

Metrics over windows, with e = HR_est - HR_gt in bpm: MAE = mean|e|, RMSE = sqrt(mean e^2),
STD = std(e) with ddof 0, r = Pearson correlation of the pooled window HRs, MAPE = mean |e|/gt
in percent, and ``within10`` = percentage of windows with |e|/gt <= 10 %.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

HR_LO_BPM, HR_HI_BPM = 45.0, 180.0


def hr_from_psd(
    x: np.ndarray,
    fs: float = 30.0,
    lo_bpm: float = HR_LO_BPM,
    hi_bpm: float = HR_HI_BPM,
    order: int = 6,
    resolution_bpm: float = 0.1,
) -> float:
    """Heart rate (bpm) of one waveform ``x`` (samples at ``fs`` Hz) by the band-limited PSD peak."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size < 16 or not np.isfinite(x).all():
        raise ValueError(f"need a finite waveform of at least 16 samples, got {x.size}")
    sos = signal.butter(order, [lo_bpm / 60.0, hi_bpm / 60.0], btype="bandpass", fs=fs, output="sos")
    filtered = signal.sosfiltfilt(sos, x - x.mean())
    nfft = int(round(60.0 * fs / resolution_bpm))
    freqs, power = signal.periodogram(filtered, fs=fs, nfft=nfft)
    band = (freqs >= lo_bpm / 60.0) & (freqs <= hi_bpm / 60.0)
    return float(freqs[band][np.argmax(power[band])] * 60.0)


def hr_batch(waves: np.ndarray, fs: float = 30.0, **kw) -> np.ndarray:
    """(N, T) waveforms -> (N,) heart rates in bpm."""
    return np.array([hr_from_psd(w, fs, **kw) for w in np.asarray(waves)], dtype=np.float64)


def hr_metrics(hr_est: np.ndarray, hr_gt: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, STD (ddof 0), Pearson r, MAPE (%) and within10 (%) over windows; n = windows.

    r is NaN when either side is constant (Pearson is undefined there).
    """
    est, gt = np.asarray(hr_est, dtype=np.float64), np.asarray(hr_gt, dtype=np.float64)
    if est.shape != gt.shape or est.size == 0:
        raise ValueError(f"need equal, non-empty HR arrays, got {est.shape} and {gt.shape}")
    e = est - gt
    if est.size > 1 and est.std() > 0 and gt.std() > 0:
        r = float(np.corrcoef(est, gt)[0, 1])
    else:
        r = math.nan
    ape = np.abs(e) / gt
    return {
        "MAE": float(np.mean(np.abs(e))),
        "RMSE": float(np.sqrt(np.mean(e**2))),
        "STD": float(np.std(e)),
        "r": r,
        "MAPE": float(100.0 * np.mean(ape)),
        "within10": float(100.0 * np.mean(ape <= 0.10)),
        "n": int(est.size),
    }
