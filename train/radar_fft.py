"""FFT radar baseline (Alizadeh et al., IEEE Access 2019, "Remote monitoring of human vital signs using
mm-wave FMCW radar"): the training-free RF row of the RPM-Distill paper's Table 1.

Written from the paper's description, on the stored range-time I/Q (``radar`` in the session store,
``(T_rf, 2, bins)`` at ``radar_fps``; the chest's range bin is the group's ``radar_channel``):

1. **Chest range bin**: the stored ``radar_channel`` (the preprocessing chose it as the bin with the
   most chest energy, as the paper picks the range bin of the strongest reflection).
2. **Unwrapped phase** of that bin: :func:`pipeline.quality.radar_cardiac_signal`, i.e. the phase
   about the fitted circle centre (DC-offset-corrected arctangent demodulation), unwrapped; frames
   with ``radar_ok`` False are held at the last valid value.
3. **Phase difference** between successive frames (the paper's step to suppress the respiration
   drift and emphasise the heartbeat).
4. **Band-pass and spectral peak**: :func:`train.evaluate.hr_from_psd`, the report's HR estimator
   (6th-order Butterworth, 45-180 bpm, periodogram peak on a 0.1 bpm grid), so the radar row is read
   exactly like the video rows.

:func:`radar_fft_hr_windows` evaluates it on the same windows as the video methods: video window
``[s, s + T)`` (frames at ``fps``) maps to radar frames ``[round(s r), round((s + T) r))`` with
``r = radar_fps / fps``, the radar clock being the video clock in the store.
"""

from __future__ import annotations

import numpy as np

from pipeline.quality import radar_cardiac_signal
from pipeline.spectrum import CARDIAC_BAND_BPM, hr_from_psd


def radar_phase(radar: np.ndarray, channel: int, ok: np.ndarray | None = None) -> np.ndarray:
    """(T_rf, 2, bins) I/Q -> (T_rf,) unwrapped chest phase (rad); lost frames hold the last valid value."""
    radar = np.asarray(radar)
    ok = np.ones(radar.shape[0], bool) if ok is None else np.asarray(ok, bool)
    phase = radar_cardiac_signal(radar, channel, ok)
    if not ok.all() and ok.any():
        idx = np.where(ok, np.arange(ok.size), 0)
        np.maximum.accumulate(idx, out=idx)
        phase = phase[idx]
    return phase


def radar_fft_hr(
    radar: np.ndarray,
    radar_fps: float,
    channel: int,
    ok: np.ndarray | None = None,
    lo_bpm: float = CARDIAC_BAND_BPM[0],
    hi_bpm: float = CARDIAC_BAND_BPM[1],
) -> float:
    """Heart rate (bpm) of one radar window (T_rf, 2, bins) at ``radar_fps`` Hz by the FFT baseline."""
    d_phase = np.diff(radar_phase(radar, channel, ok))
    return hr_from_psd(d_phase, fs=radar_fps, lo_bpm=lo_bpm, hi_bpm=hi_bpm)


def radar_fft_hr_windows(
    radar: np.ndarray,
    radar_ok: np.ndarray | None,
    channel: int,
    radar_fps: float,
    starts: list[int],
    window: int,
    fps: float = 30.0,
    **kw,
) -> np.ndarray:
    """(len(starts),) HR (bpm) of the radar over video windows ``[s, s + window)`` (frames at ``fps``).

    A window with fewer than half of its radar frames valid gives NaN (the radar saw nothing there).
    """
    r = radar_fps / fps
    ok_all = np.ones(len(radar), bool) if radar_ok is None else np.asarray(radar_ok, bool)
    out = []
    for s in starts:
        a, b = int(round(s * r)), min(int(round((s + window) * r)), len(radar))
        ok = ok_all[a:b]
        if b - a < 16 or ok.mean() < 0.5:
            out.append(np.nan)
            continue
        out.append(radar_fft_hr(radar[a:b], radar_fps, channel, ok, **kw))
    return np.asarray(out, dtype=np.float64)
