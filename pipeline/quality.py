"""Per-session quality figures recorded in the sessions manifest: radar SNR and video-radar lag.

Both work on the stored arrays, so every recipe computes them the same way.

* **Radar cardiac signal**: the I/Q of the chosen range bin (``radar_channel``). Chest motion moves
  the phasor along a circle around the static reflections of the same bin, so a circle is fitted
  to the I/Q points (algebraic least squares) and the unwrapped angle about its centre is taken:
  it is proportional to the chest displacement (lambda / 4 pi per radian). It is band-passed to the
  cardiac band 0.75-3 Hz (45-180 bpm, 4th-order Butterworth, zero phase;
  :func:`pipeline.spectrum.bandpass`). Frames with ``radar_ok`` False are left out of every estimate.
* **Radar SNR** (``radar_snr_db``, :func:`pipeline.spectrum.snr_db`): on the periodogram of that
  signal, the power within +-0.1 Hz of the strongest cardiac-band peak and of its second harmonic,
  over the rest of the band, in dB.
* **Lag** (``radar_lag_s``): the BVP (on the video clock) is interpolated onto the radar frame
  times, both are band-passed and z-scored, and the normalised cross-correlation is scanned over
  lags of +-``max_lag_s`` (2 s) with the biased estimator (normalised by the whole signals'
  energy, so of the peaks that recur every beat the best-overlapping one, nearest zero, wins); the
  lag with the largest |r| is reported with that |r| (``radar_lag_corr``). Positive = the radar
  lags the video. The radar sees the chest wall and the BVP the skin, so a pulse-transit time of
  0.1-0.25 s is expected even when the clocks agree, and a periodic pulse makes the correlation
  peak recur every beat: read the lag together with its |r|,
  and as evidence of a sync error only when it moves by about a second (PhysDrive's radar start
  has whole-second resolution).

Plausibility notes (:func:`plausibility_notes`, added to the manifest's ``repairs``; the session is
still stored):

* **Radar coverage** below ``MIN_RADAR_COVERAGE`` (half the stored radar frames lost or outside
  the recording). A session with no real radar frame at all is failed by the recipe instead.
* **Label time base and units**: the share of the label's power (linear trend removed, periodogram
  above 0.05 Hz) that lies in the cardiac band. A pulse wave puts most of its power there (0.6-0.9
  on the synthetic data) and white noise puts the band's share of the spectrum there (0.15 at 30
  Hz); below ``MIN_LABEL_CARDIAC_SHARE`` (0.1) the label is unlikely to be a pulse at the video
  rate: sampled at another rate than declared, a heart-rate series instead of a waveform, or
  mostly motion.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from pipeline.spectrum import CARDIAC_BAND_HZ, bandpass, snr_db

MIN_RADAR_COVERAGE = 0.5
MIN_LABEL_CARDIAC_SHARE = 0.1


def fit_circle_centre(i: np.ndarray, q: np.ndarray) -> tuple[float, float]:
    """Centre of the least-squares circle x^2 + y^2 + D x + E y + F = 0 through the (i, q) points."""
    a = np.column_stack([i, q, np.ones_like(i)])
    b = -(i * i + q * q)
    (d, e, _), *_ = np.linalg.lstsq(a, b, rcond=None)
    return -d / 2.0, -e / 2.0


def radar_cardiac_signal(radar: np.ndarray, channel: int, ok: np.ndarray | None = None) -> np.ndarray:
    """(T_rf, 2, bins) I/Q -> (T_rf,) unwrapped phase of bin ``channel`` about the fitted circle centre."""
    iq = np.asarray(radar[:, :, channel], dtype=np.float64)
    use = np.ones(iq.shape[0], bool) if ok is None else np.asarray(ok, bool)
    if use.sum() < 3:
        return np.zeros(iq.shape[0])
    scale = np.abs(iq[use]).max() or 1.0
    i, q = iq[:, 0] / scale, iq[:, 1] / scale
    ci, cq = fit_circle_centre(i[use], q[use])
    if not (np.isfinite(ci) and np.isfinite(cq)):
        ci, cq = i[use].mean(), q[use].mean()
    out = np.zeros(iq.shape[0])
    out[use] = np.unwrap(np.angle((i[use] - ci) + 1j * (q[use] - cq)))
    out[use] -= out[use].mean()
    return out


def estimate_lag(
    bvp: np.ndarray,
    fps: float,
    radar_sig: np.ndarray,
    radar_fps: float,
    ok: np.ndarray | None = None,
    max_lag_s: float = 2.0,
) -> tuple[float, float]:
    """Video-radar lag in seconds (positive: radar lags) and its |normalised correlation|."""
    n = radar_sig.size
    use = np.ones(n, bool) if ok is None else np.asarray(ok, bool)[:n]
    t_rf = np.arange(n) / radar_fps
    t_v = np.arange(bvp.size) / fps
    inside = use & (t_rf <= t_v[-1])
    if inside.sum() < 6 * radar_fps:
        return float("nan"), float("nan")
    v = bandpass(np.interp(t_rf, t_v, np.asarray(bvp, np.float64)), radar_fps)
    r = bandpass(np.where(use, radar_sig, 0.0), radar_fps)
    max_k = int(round(max_lag_s * radar_fps))
    v = np.where(inside, v, 0.0)
    r = np.where(use, r, 0.0)
    norm = np.sqrt((v * v).sum() * (r * r).sum())
    if norm <= 0:
        return float("nan"), float("nan")
    best_k, best_c = 0, -1.0
    for k in range(-max_k, max_k + 1):
        # biased estimator (divided by the full energy): among the beat-periodic peaks, the one with
        # the most overlap, i.e. nearest zero lag, wins. radar[j + k] matches video[j].
        c = abs(float(np.dot(v[max(0, -k) : n - max(0, k)], r[max(0, k) : n - max(0, -k)]) / norm))
        if c > best_c:
            best_k, best_c = k, c
    return best_k / radar_fps, best_c


def label_cardiac_share(bvp: np.ndarray, fps: float) -> float:
    """Share of the label's power above 0.05 Hz that lies in the cardiac band (NaN when too short)."""
    x = np.asarray(bvp, dtype=np.float64)
    if x.size < 4 * fps or not np.isfinite(x).all():
        return float("nan")
    f, p = signal.periodogram(signal.detrend(x), fs=fps, window="hann")
    total = p[f >= 0.05].sum()
    if total <= 0:
        return float("nan")
    return float(p[(f >= CARDIAC_BAND_HZ[0]) & (f <= CARDIAC_BAND_HZ[1])].sum() / total)


def plausibility_notes(bvp: np.ndarray, fps: float, radar_ok: np.ndarray) -> list[str]:
    """Manifest notes for a label or radar that is stored but looks wrong (see the module docstring)."""
    notes = []
    coverage = float(np.mean(radar_ok)) if np.size(radar_ok) else 0.0
    if coverage < MIN_RADAR_COVERAGE:
        notes.append(
            f"radar: only {coverage:.0%} of the radar frames hold data (< {MIN_RADAR_COVERAGE:.0%}); "
            "the rest are lost or outside the recording"
        )
    share = label_cardiac_share(bvp, fps)
    if share < MIN_LABEL_CARDIAC_SHARE:
        lo, hi = (round(60 * f) for f in CARDIAC_BAND_HZ)
        notes.append(
            f"ppg: only {share:.0%} of the label's power is in the heart-rate band {lo}-{hi} bpm "
            f"(< {MIN_LABEL_CARDIAC_SHARE:.0%}); check its time base ({fps:g} Hz) and units"
        )
    return notes


def session_quality(
    bvp: np.ndarray, fps: float, radar: np.ndarray, radar_fps: float, channel: int, ok: np.ndarray
) -> dict:
    """{radar_snr_db, radar_lag_s, radar_lag_corr} for one stored session."""
    sig = radar_cardiac_signal(radar, channel, ok)
    snr = snr_db(sig[ok], radar_fps) if ok.any() else float("nan")
    lag, corr = estimate_lag(bvp, fps, sig, radar_fps, ok)
    return {
        "radar_snr_db": round(snr, 3) if np.isfinite(snr) else snr,
        "radar_lag_s": round(lag, 4) if np.isfinite(lag) else lag,
        "radar_lag_corr": round(corr, 4) if np.isfinite(corr) else corr,
    }
