"""Heart rate from waveforms and the metrics the paper reports.

HR recipe (Sec. 4.2, as the RPM-Distill and EquiPleth code do it): :func:`pipeline.spectrum.hr_from_psd`,
a 6th-order Butterworth band-pass over [lo, hi] bpm applied forwards and backwards, then a periodogram
with nfft = 60 fs / 0.1 (a 0.1 bpm grid, 18 000 points at 30 Hz) and the argmax inside [lo, hi]
(inclusive).

Metrics over windows, with e = HR_est - HR_gt in bpm: MAE = mean|e|, RMSE = sqrt(mean e^2),
STD = std(e) with ddof 0, r = Pearson correlation of the pooled window HRs, MAPE = mean |e|/gt
in percent, and ``within10`` = percentage of windows with |e|/gt <= 10 %.

Fairness (as EquiPleth's, medium group kept): windows are grouped by the subject's Fitzpatrick
type into light (< 3), medium (3-4) and dark (>= 5); the gap is |MAE(light) - MAE(dark)|.

Windowing protocols (RPM-Distill's and EquiPleth's evaluation code), see :data:`PROTOCOLS`:

* ``release``: RPM-Distill's per-window protocol. Every test window of T frames (the model's clip
  length) at stride 30 is one sample; the model's T - 1 outputs and the z-scored GT window give one
  HR each (band 45-180 bpm).
* ``equipleth``: EquiPleth's whole-video protocol. A prediction for the whole video is assembled from
  consecutive clips, then cut into 300-sample windows at stride 128 (starts 0, 128, ... < n - 300),
  each window re-z-scored, HR in 45-150 bpm for prediction and GT alike.

Seeds: :func:`aggregate_seeds` turns metric dicts of runs that differ only by seed into mean and
sample std (ddof 1; std is undefined for a single seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.spectrum import CARDIAC_BAND_BPM, hr_from_psd, window_starts, zscore


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


# ----------------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    window: int | None  # samples per HR window; None: the model's clip length (T - 1 outputs)
    stride: int
    lo_bpm: float
    hi_bpm: float
    description: str


PROTOCOLS = {
    "release": Protocol(
        "release",
        "per-window (RPM-Distill release)",
        None,
        30,
        CARDIAC_BAND_BPM[0],
        CARDIAC_BAND_BPM[1],
        "each T-frame test window at stride 30 is one sample; HR of the model's T - 1 outputs against "
        "the HR of the z-scored GT window; band 45-180 bpm",
    ),
    "equipleth": Protocol(
        "equipleth",
        "whole-video (EquiPleth)",
        300,
        128,
        CARDIAC_BAND_BPM[0],
        150.0,
        "a whole-video prediction (consecutive clips) cut into 300-sample windows at stride 128, each "
        "re-z-scored; band 45-150 bpm for prediction and GT",
    ),
}


def overlap_average(waves: np.ndarray, starts: list[int], n: int) -> np.ndarray:
    """One (n,) trace from windows placed at ``starts``: the mean of the z-scored windows covering each
    sample; samples no window covers hold the nearest covered value."""
    acc, weight = np.zeros(n), np.zeros(n)
    for w, s in zip(zscore(waves, axis=1), starts, strict=True):
        w = w[: max(0, n - s)]
        acc[s : s + len(w)] += w
        weight[s : s + len(w)] += 1
    covered = np.flatnonzero(weight > 0)
    if covered.size == 0:
        raise ValueError("no window covers the trace")
    trace = acc[covered] / weight[covered]
    return np.interp(np.arange(n), covered, trace)


def whole_video_hr(
    pred: np.ndarray, gt: np.ndarray, fs: float = 30.0, protocol: Protocol = PROTOCOLS["equipleth"]
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """EquiPleth protocol on one video: (HR_pred, HR_gt, starts) over re-z-scored windows."""
    n = min(len(pred), len(gt))
    starts = window_starts(n, protocol.window, protocol.stride)
    kw = dict(fs=fs, lo_bpm=protocol.lo_bpm, hi_bpm=protocol.hi_bpm)
    hp = [hr_from_psd(zscore(pred[s : s + protocol.window]), **kw) for s in starts]
    hg = [hr_from_psd(zscore(gt[s : s + protocol.window]), **kw) for s in starts]
    return np.array(hp, dtype=np.float64), np.array(hg, dtype=np.float64), starts


# ----------------------------------------------------------------------------------- fairness


SKIN_GROUPS = {"light": (1, 2), "medium": (3, 4), "dark": (5, 6)}


def skin_group(skin_type: int) -> str:
    """Fitzpatrick type -> light (< 3), medium (3-4), dark (>= 5) or unknown."""
    st = int(skin_type)
    if st < 1:
        return "unknown"
    return "light" if st < 3 else ("medium" if st <= 4 else "dark")


def fairness(hr_est: np.ndarray, hr_gt: np.ndarray, skin_types: np.ndarray) -> dict[str, float]:
    """MAE per skin group and the gap |MAE(light) - MAE(dark)| (NaN where a group has no window)."""
    est, gt = np.asarray(hr_est, dtype=np.float64), np.asarray(hr_gt, dtype=np.float64)
    groups = np.array([skin_group(s) for s in np.asarray(skin_types).ravel()])
    if groups.shape != est.shape or est.shape != gt.shape:
        raise ValueError(f"need equal shapes, got {est.shape}, {gt.shape}, {groups.shape}")
    out = {}
    for g in SKIN_GROUPS:
        sel = groups == g
        out[f"MAE_{g}"] = float(np.mean(np.abs(est[sel] - gt[sel]))) if sel.any() else math.nan
        out[f"n_{g}"] = int(sel.sum())
    out["fairness_gap"] = abs(out["MAE_light"] - out["MAE_dark"])  # NaN propagates
    return out


# ----------------------------------------------------------------------------------- seeds


def aggregate_seeds(per_seed: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """{metric: {"mean", "std", "n"}} over seeds; NaN values are skipped, std (ddof 1) needs 2 values."""
    keys = [k for k in per_seed[0] if isinstance(per_seed[0][k], int | float)] if per_seed else []
    out = {}
    for k in keys:
        vals = np.array([m.get(k, math.nan) for m in per_seed], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        out[k] = {
            "mean": float(vals.mean()) if vals.size else math.nan,
            "std": float(vals.std(ddof=1)) if vals.size > 1 else math.nan,
            "n": int(vals.size),
        }
    return out
