"""Classical (training-free) rPPG baselines: GREEN, CHROM and POS.

All three work on face crops ``(T, H, W, 3)`` uint8 RGB at ``fs`` Hz and return a pulse waveform of
length T at ``fs``; HR then comes from :func:`pipeline.spectrum.hr_from_psd` like every other method.
They are written from the papers' descriptions (named below), not from any toolbox:

* **ROI trace.** :func:`rgb_trace` averages each frame over a skin ROI: pixels that pass a loose YCbCr
  skin rule on the clip's mean frame, inside a centred ellipse. If fewer than 5 % of the pixels pass
  (dark skin, odd white balance, night), the centred ellipse alone is used. One mask per clip, so the
  ROI does not flicker from frame to frame.
* **GREEN** (Verkruysse et al., 2008): the green channel, normalised by its mean and negated (more
  blood absorbs more green light), band-passed like the other two.
* **CHROM** (de Haan & Jeanne, TBME 2013): in 1.6 s windows (even length, 48 frames at 30 Hz) with 50 %
  overlap, each channel is divided by its window mean; Xs = 3R - 2G, Ys = 1.5R + G - 1.5B; both are
  band-passed (Butterworth order 3, 40-240 bpm, the paper's band; zero phase,
  :func:`pipeline.spectrum.bandpass`); S = Xf - (std Xf / std Yf) Yf; a Hann window is applied and the
  windows are overlap-added.
* **POS** (Wang et al., TBME 2017): in 1.6 s windows sliding by one frame, Cn = C / window mean; the
  projection P = [[0, 1, -1], [-2, 1, 1]] gives S1 = G - B and S2 = -2R + G + B; h = S1 + (std S1 / std S2)
  S2, and h - mean(h) is overlap-added into the output. The paper adds no post-filter; we leave the
  band-limiting to the HR estimator.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.spectrum import bandpass, window_starts

WINDOW_S = 1.6
BAND_HZ = (40 / 60, 240 / 60)
"""GREEN and CHROM band-pass band (40-240 bpm, de Haan & Jeanne's), wider than the HR band."""
TOOLBOX_CHROM_BAND_HZ = (0.7, 2.5)
"""rPPG-Toolbox's CHROM band-pass (order 3, 0.7-2.5 Hz): not used by the report, only by the
calibration bench's sensitivity row (the published CHROM figures may come from that implementation)."""
MIN_SKIN_SHARE = 0.05
EPS = 1e-9


def _ycbcr(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    cb = 128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return cb, cr


def centre_ellipse(h: int, w: int, ry: float = 0.42, rx: float = 0.32) -> np.ndarray:
    """(h, w) bool: an upright ellipse around the crop centre (the face in a 1.5x-enlarged box)."""
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    return ((yy - cy) / (ry * h)) ** 2 + ((xx - cx) / (rx * w)) ** 2 <= 1.0


def skin_roi(frames: np.ndarray) -> np.ndarray:
    """(H, W) bool ROI for a clip: YCbCr skin pixels of the mean frame inside the centre ellipse."""
    mean = np.asarray(frames, dtype=np.float32).mean(axis=0)
    cb, cr = _ycbcr(mean)
    ellipse = centre_ellipse(*mean.shape[:2])
    skin = (cb >= 77) & (cb <= 135) & (cr >= 133) & (cr <= 180) & ellipse & (mean.max(axis=-1) > 15)
    return skin if skin.mean() >= MIN_SKIN_SHARE else ellipse


def rgb_trace(frames: np.ndarray, roi: np.ndarray | None = None) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, 3) float64 spatial mean over ``roi`` (default :func:`skin_roi`)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) frames, got {frames.shape}")
    mask = skin_roi(frames) if roi is None else np.asarray(roi, dtype=bool)
    n = max(int(mask.sum()), 1)
    return frames[:, mask, :].astype(np.float64).sum(axis=1) / n


def _window_len(fs: float, even: bool = False) -> int:
    n = int(math.ceil(WINDOW_S * fs))
    return n + (n % 2) if even else n


def min_frames(fs: float) -> int:
    """The fewest frames at ``fs`` Hz that every method here accepts (CHROM's and POS's 1.6 s window)."""
    return max(_window_len(fs), _window_len(fs, even=True))


def green(trace: np.ndarray, fs: float = 30.0) -> np.ndarray:
    """GREEN: negated, mean-normalised green channel, band-passed 40-240 bpm (order 3)."""
    g = np.asarray(trace, dtype=np.float64)[:, 1]
    x = -(g / (g.mean() + EPS) - 1.0)
    return bandpass(x, fs, BAND_HZ, order=3) if x.size > 30 else x


def chrom(trace: np.ndarray, fs: float = 30.0, band_hz: tuple[float, float] = BAND_HZ) -> np.ndarray:
    """CHROM: chrominance projections in 50 %-overlapping Hann windows, overlap-added.

    ``band_hz``: the band-pass applied to both projections in each window, (low, high) Hz; the
    default is the CHROM paper's 40-240 bpm. ``bench/realism.py`` also scores rPPG-Toolbox's
    0.7-2.5 Hz (:data:`TOOLBOX_CHROM_BAND_HZ`) as a sensitivity row; the report uses the default.
    """
    c = np.asarray(trace, dtype=np.float64)
    t = c.shape[0]
    win = _window_len(fs, even=True)
    if t < win:
        raise ValueError(f"CHROM needs at least {win} frames, got {t}")
    starts = window_starts(t, win, win // 2, flush=True)
    hann = np.hanning(win)
    out, weight = np.zeros(t), np.zeros(t)
    for s in starts:
        seg = c[s : s + win]
        cn = seg / (seg.mean(axis=0) + EPS)
        xs = 3.0 * cn[:, 0] - 2.0 * cn[:, 1]
        ys = 1.5 * cn[:, 0] + cn[:, 1] - 1.5 * cn[:, 2]
        xf = bandpass(xs, fs, band_hz, order=3)
        yf = bandpass(ys, fs, band_hz, order=3)
        alpha = xf.std() / (yf.std() + EPS)
        out[s : s + win] += (xf - alpha * yf) * hann
        weight[s : s + win] += hann
    return out / np.maximum(weight, 1e-3)


def pos(trace: np.ndarray, fs: float = 30.0) -> np.ndarray:
    """POS: plane-orthogonal-to-skin projection in 1.6 s windows at stride 1, overlap-added."""
    c = np.asarray(trace, dtype=np.float64)
    t = c.shape[0]
    win = _window_len(fs)
    if t < win:
        raise ValueError(f"POS needs at least {win} frames, got {t}")
    # All windows at once: (n_windows, win, 3) strided view.
    segs = np.lib.stride_tricks.sliding_window_view(c, win, axis=0).transpose(0, 2, 1)
    cn = segs / (segs.mean(axis=1, keepdims=True) + EPS)
    s1 = cn[..., 1] - cn[..., 2]
    s2 = -2.0 * cn[..., 0] + cn[..., 1] + cn[..., 2]
    h = s1 + (s1.std(axis=1, keepdims=True) / (s2.std(axis=1, keepdims=True) + EPS)) * s2
    h -= h.mean(axis=1, keepdims=True)
    out = np.zeros(t)
    for k in range(win):  # overlap-add: window i covers frames i .. i + win - 1
        out[k : k + h.shape[0]] += h[:, k]
    return out


METHODS = {"POS": pos, "CHROM": chrom, "GREEN": green}


def classical_wave(method: str, frames_or_trace: np.ndarray, fs: float = 30.0) -> np.ndarray:
    """Waveform (T,) of ``method`` (POS, CHROM or GREEN) from frames (T, H, W, 3) or an RGB trace (T, 3)."""
    key = method.upper()
    if key not in METHODS:
        raise ValueError(f"unknown classical method {method!r}; choose {sorted(METHODS)}")
    x = np.asarray(frames_or_trace)
    trace = rgb_trace(x) if x.ndim == 4 else x
    return METHODS[key](trace, fs).astype(np.float64)
