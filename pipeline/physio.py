"""Deterministic physiology simulation for the synthetic EquiPleth generator.

One :class:`Physiology` describes a single recording on an explicit time axis (seconds, on the
video/radar clock). It holds dense arrays on an internal grid (``fs_internal``, default 240 Hz)
and evaluates the signals at arbitrary times:

* heart rate: a mean drawn from the resting adult distribution, normal with mean 74 bpm and SD 11 bpm,
  limited to 50-110 bpm (Ostchega et al. 2011, NHANES 1999-2008 resting pulse reference data: adult
  means 70-77 bpm, 5th-95th percentiles about 55-100 bpm; an earlier uniform 45-150 bpm draw put a
  third of the recordings at rates no seated subject or driver has at rest, spread the true HRs three
  times wider than real data, which inflated Pearson r, and put many at the 45 bpm band edge), a slow
  linear drift (at most 4 bpm per 30 s), a slow
  Mayer-wave-like component (~0.05-0.15 Hz, <= 1.5 bpm) and respiratory sinus arrhythmia (RSA);
* the cardiac phase is the running integral of the instantaneous heart rate, so every signal
  derived from it shares the same instantaneous rate;
* respiration: rate 8-25 breaths/min with slow variability, a sinusoid of its integrated phase;
* PPG (:meth:`Physiology.ppg`): a systolic wave plus a diastolic wave after the dicrotic notch
  (two wrapped Gaussians per beat in the cardiac phase), with slight respiratory baseline and
  amplitude modulation;
* chest displacement (:meth:`Physiology.displacement`, metres, positive = away from the radar):
  respiration (2-6 mm peak-to-peak) + a biphasic cardiac mechanical pulse (0.1-0.5 mm
  peak-to-peak, a different shape from the PPG) + a very slow posture drift (< 1 mm).

Pulse transit time (PTT, 80-250 ms). Physically the chest wall moves when the heart ejects and the
pulse wave reaches the face/finger (camera, pulse oximeter) one PTT later. By default
(``chest_leads_ppg=True``) the PPG is therefore the cardiac waveform delayed by the PTT; pass
``chest_leads_ppg=False`` to make the chest signal lag the PPG by the PTT instead. Either way both
signals share the instantaneous rate and differ only in shape and a constant delay.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

HR_REST_MEAN_SD_BPM = (74.0, 11.0)  # resting adults (Ostchega et al. 2011)
HR_RANGE_BPM = (50.0, 110.0)  # limits of the drawn mean
HR_CLIP_BPM = (38.0, 165.0)
RR_RANGE_BPM = (8.0, 25.0)
RESP_PP_RANGE_M = (2e-3, 6e-3)
CARDIAC_PP_RANGE_M = (0.1e-3, 0.5e-3)
PTT_RANGE_S = (0.080, 0.250)
_MARGIN_S = 1.0  # extra simulated time on both sides of [t0, t0 + duration]


def _wrapped_gauss(cycles: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    """Gaussian bump on the unit circle: ``cycles`` and ``mu`` in cycles, ``sigma`` in cycles."""
    d = np.mod(cycles - mu + 0.5, 1.0) - 0.5
    return np.exp(-0.5 * (d / sigma) ** 2)


def breathing_shape(cycles: np.ndarray, inspiratory_fraction: float) -> np.ndarray:
    """Asymmetric breathing waveform in [-1, 1] over the respiration phase (cycles; 0 = end of expiration).

    Inspiration: a half-cosine rise over ``inspiratory_fraction`` of the cycle; expiration: a passive,
    exponential-like fall (raised cosine of the remaining time squared), slower at its end.
    """
    c = np.mod(cycles, 1.0)
    fi = inspiratory_fraction
    up = 0.5 - 0.5 * np.cos(np.pi * np.clip(c / fi, 0, 1))
    d = np.clip((c - fi) / (1 - fi), 0, 1)
    down = np.exp(-4.0 * d) * (1 - d) + 0.0
    y = np.where(c < fi, up, down)
    return 2.0 * y - 1.0


def _slow_wave(t: np.ndarray, rng: np.random.Generator, f_lo: float, f_hi: float, n: int = 3) -> np.ndarray:
    """Sum of ``n`` random-phase sinusoids in [f_lo, f_hi] Hz, scaled to peak |x| = 1 on ``t``."""
    freqs = rng.uniform(f_lo, f_hi, size=n)
    phases = rng.uniform(0.0, 2 * np.pi, size=n)
    weights = rng.uniform(0.5, 1.0, size=n)
    x = np.sum(weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t[None, :] + phases[:, None]), axis=0)
    peak = np.max(np.abs(x))
    return x / peak if peak > 0 else x


@dataclass(frozen=True)
class PpgShape:
    """Per-beat PPG template in cycles of the cardiac phase (beat onset at 0)."""

    sys_mu: float
    sys_sigma: float
    dia_delay: float
    dia_sigma: float
    dia_ratio: float

    def __call__(self, cycles: np.ndarray) -> np.ndarray:
        return _wrapped_gauss(cycles, self.sys_mu, self.sys_sigma) + self.dia_ratio * _wrapped_gauss(
            cycles, self.sys_mu + self.dia_delay, self.dia_sigma
        )


@dataclass(frozen=True)
class CardiacMechShape:
    """Biphasic chest-wall cardiac pulse (ballistocardiographic-like), in cycles of the cardiac phase."""

    pos_mu: float
    pos_sigma: float
    neg_delay: float
    neg_sigma: float
    neg_ratio: float

    def __call__(self, cycles: np.ndarray) -> np.ndarray:
        return _wrapped_gauss(cycles, self.pos_mu, self.pos_sigma) - self.neg_ratio * _wrapped_gauss(
            cycles, self.pos_mu + self.neg_delay, self.neg_sigma
        )


def _template_stats(shape) -> tuple[float, float]:
    """(mean, peak-to-peak) of a per-beat template over one cycle."""
    c = np.arange(2048) / 2048.0
    y = shape(c)
    return float(y.mean()), float(y.max() - y.min())


@dataclass(frozen=True)
class Physiology:
    """A simulated recording. Arrays live on ``t`` (internal grid); evaluate with the methods.

    Times passed to the methods must lie in ``[t[0], t[-1]]`` (the requested span plus 1 s on
    either side); signals are never extrapolated.
    """

    t: np.ndarray  # (M,) s, internal grid
    hr_bpm: np.ndarray  # (M,) instantaneous heart rate at the heart
    cardiac_cycles: np.ndarray  # (M,) integrated cardiac phase in cycles (beats)
    rr_bpm: np.ndarray  # (M,) instantaneous respiration rate, breaths/min
    resp_cycles: np.ndarray  # (M,) integrated respiration phase in cycles
    resp_pp_m: np.ndarray  # (M,) respiration peak-to-peak chest excursion, metres
    drift_m: np.ndarray  # (M,) slow posture drift, metres
    cardiac_pp_m: float  # cardiac mechanical pulse peak-to-peak, metres
    ptt_s: float  # pulse transit time, s
    chest_leads_ppg: bool
    ppg_shape: PpgShape
    mech_shape: CardiacMechShape
    ppg_resp_baseline: float  # PPG baseline wander (fraction of the pulse peak-to-peak)
    ppg_resp_am: float  # PPG amplitude modulation depth by respiration
    span: tuple[float, float]  # the requested [t0, t0 + duration]
    inspiratory_fraction: float | None = None  # None: sinusoidal breathing; else breathing_shape's

    def with_breathing(self, inspiratory_fraction: float) -> Physiology:
        """The same recording with asymmetric breathing (:func:`breathing_shape`) in the chest motion."""
        return replace(self, inspiratory_fraction=float(inspiratory_fraction))

    # ----------------------------------------------------------------- delays
    @property
    def ppg_delay_s(self) -> float:
        return self.ptt_s if self.chest_leads_ppg else 0.0

    @property
    def chest_delay_s(self) -> float:
        return 0.0 if self.chest_leads_ppg else self.ptt_s

    # ----------------------------------------------------------------- helpers
    def _interp(self, arr: np.ndarray, times) -> np.ndarray:
        times = np.asarray(times, dtype=np.float64)
        if times.size and (times.min() < self.t[0] - 1e-9 or times.max() > self.t[-1] + 1e-9):
            raise ValueError(
                f"times [{times.min():.3f}, {times.max():.3f}] s outside the simulated span "
                f"[{self.t[0]:.3f}, {self.t[-1]:.3f}] s"
            )
        return np.interp(times, self.t, arr)

    def _resp_terms(self, times) -> tuple[np.ndarray, np.ndarray]:
        cyc = self._interp(self.resp_cycles, times)
        return np.sin(2 * np.pi * cyc), self._interp(self.resp_pp_m, times)

    # ----------------------------------------------------------------- signals
    def heart_rate(self, times) -> np.ndarray:
        """Instantaneous heart rate (bpm) at the heart (chest timeline) at ``times``."""
        return self._interp(self.hr_bpm, np.asarray(times, dtype=np.float64) - self.chest_delay_s)

    def pulse_rate(self, times) -> np.ndarray:
        """Instantaneous pulse rate (bpm) of the PPG at ``times`` (the label's timeline)."""
        return self._interp(self.hr_bpm, np.asarray(times, dtype=np.float64) - self.ppg_delay_s)

    def respiration_rate(self, times) -> np.ndarray:
        return self._interp(self.rr_bpm, times)

    def ppg_pulse(self, times) -> np.ndarray:
        """Pulsatile blood-volume waveform, zero mean over a beat, peak-to-peak 1 (no respiration terms)."""
        tt = np.asarray(times, dtype=np.float64) - self.ppg_delay_s
        mean, pp = _template_stats(self.ppg_shape)
        return (self.ppg_shape(self._interp(self.cardiac_cycles, tt)) - mean) / pp

    def ppg(self, times) -> np.ndarray:
        """PPG (arbitrary units, pulse peak-to-peak ~1, rising with blood volume) at ``times``."""
        resp, _ = self._resp_terms(times)
        pulse = self.ppg_pulse(times)
        return pulse * (1.0 + self.ppg_resp_am * resp) + self.ppg_resp_baseline * resp

    def cardiac_displacement(self, times) -> np.ndarray:
        """Cardiac mechanical chest displacement (m), zero mean over a beat."""
        tt = np.asarray(times, dtype=np.float64) - self.chest_delay_s
        mean, pp = _template_stats(self.mech_shape)
        return self.cardiac_pp_m * (self.mech_shape(self._interp(self.cardiac_cycles, tt)) - mean) / pp

    def respiration_displacement(self, times) -> np.ndarray:
        resp, pp = self._resp_terms(times)
        if self.inspiratory_fraction is not None:
            cyc = self._interp(self.resp_cycles, times)
            resp = breathing_shape(cyc, self.inspiratory_fraction)
        return 0.5 * pp * resp

    def displacement(self, times) -> np.ndarray:
        """Total chest displacement (m, positive = away from the radar) at ``times``."""
        return (
            self.respiration_displacement(times)
            + self.cardiac_displacement(times)
            + self._interp(self.drift_m, times)
        )

    # ----------------------------------------------------------------- truth
    def mean_pulse_rate(self, t_start: float, t_end: float) -> float:
        """Mean PPG pulse rate (bpm) over [t_start, t_end]: beats elapsed / time elapsed."""
        cyc = self._interp(self.cardiac_cycles, np.array([t_start, t_end]) - self.ppg_delay_s)
        return float((cyc[1] - cyc[0]) / (t_end - t_start) * 60.0)

    def truth(self, t_start: float | None = None, t_end: float | None = None, step_s: float = 1.0) -> dict:
        """Summary over [t_start, t_end] (default: the requested span), PPG timeline for rates."""
        a = self.span[0] if t_start is None else float(t_start)
        b = self.span[1] if t_end is None else float(t_end)
        grid = np.arange(a, b + 1e-9, step_s)
        rc = self._interp(self.resp_cycles, np.array([a, b]))
        return {
            "mean_hr_bpm": self.mean_pulse_rate(a, b),
            "hr_times_s": [round(float(x), 6) for x in grid],
            "hr_trajectory_bpm": [float(x) for x in self.pulse_rate(grid)],
            "resp_rate_bpm": float((rc[1] - rc[0]) / (b - a) * 60.0),
            "ptt_s": float(self.ptt_s),
            "chest_leads_ppg": bool(self.chest_leads_ppg),
            "resp_pp_m": float(np.mean(self._interp(self.resp_pp_m, grid))),
            "cardiac_pp_m": float(self.cardiac_pp_m),
            "window_s": [a, b],
        }


def simulate_physiology(
    duration_s: float,
    rng: np.random.Generator,
    t0: float = 0.0,
    fs_internal: float = 240.0,
    mean_hr_bpm: float | None = None,
    chest_leads_ppg: bool = True,
) -> Physiology:
    """Simulate one recording covering [t0, t0 + duration_s] (s) plus a 1 s margin on both sides.

    All randomness comes from ``rng`` (draw order is fixed), so the same generator state gives the
    same recording. ``mean_hr_bpm`` overrides the drawn mean heart rate.
    """
    if duration_s <= 0:
        raise ValueError("duration_s must be positive")
    n = int(np.ceil((duration_s + 2 * _MARGIN_S) * fs_internal)) + 1
    t = t0 - _MARGIN_S + np.arange(n) / fs_internal
    t_mid = t0 + 0.5 * duration_s

    # Respiration: rate, slow rate variability, integrated phase, slowly varying depth.
    rr0 = rng.uniform(*RR_RANGE_BPM)
    rr = rr0 * (1.0 + rng.uniform(0.03, 0.10) * _slow_wave(t, rng, 0.01, 0.05))
    resp_cycles = rng.uniform(0.0, 1.0) + np.cumsum(rr / 60.0) / fs_internal
    resp_pp = rng.uniform(*RESP_PP_RANGE_M) * (1.0 + rng.uniform(0.05, 0.15) * _slow_wave(t, rng, 0.01, 0.05))

    # Heart rate: mean, linear drift, Mayer-like slow wave, respiratory sinus arrhythmia.
    hr0 = float(np.clip(rng.normal(*HR_REST_MEAN_SD_BPM), *HR_RANGE_BPM))
    hr0 = hr0 if mean_hr_bpm is None else float(mean_hr_bpm)
    slope = rng.uniform(-4.0, 4.0) / 30.0  # bpm per second
    mayer = rng.uniform(0.3, 1.5) * _slow_wave(t, rng, 0.05, 0.15)
    rsa = rng.uniform(0.5, 3.0) * np.sin(2 * np.pi * resp_cycles + rng.uniform(-0.5, 0.5))
    hr = np.clip(hr0 + slope * (t - t_mid) + mayer + rsa, *HR_CLIP_BPM)
    cardiac_cycles = rng.uniform(0.0, 1.0) + np.cumsum(hr / 60.0) / fs_internal

    ppg_shape = PpgShape(
        sys_mu=0.2,
        sys_sigma=rng.uniform(0.06, 0.08),
        dia_delay=rng.uniform(0.22, 0.30),
        dia_sigma=rng.uniform(0.08, 0.11),
        dia_ratio=rng.uniform(0.3, 0.6),
    )
    mech_shape = CardiacMechShape(
        pos_mu=0.1,
        pos_sigma=rng.uniform(0.06, 0.08),
        neg_delay=rng.uniform(0.38, 0.48),
        neg_sigma=rng.uniform(0.10, 0.13),
        neg_ratio=rng.uniform(0.6, 0.8),
    )
    cardiac_pp = rng.uniform(*CARDIAC_PP_RANGE_M)
    ptt = rng.uniform(*PTT_RANGE_S)
    drift = rng.uniform(0.0, 1e-3) * _slow_wave(t, rng, 0.005, 0.03, n=2)

    return Physiology(
        t=t,
        hr_bpm=hr,
        cardiac_cycles=cardiac_cycles,
        rr_bpm=rr,
        resp_cycles=resp_cycles,
        resp_pp_m=resp_pp,
        drift_m=drift,
        cardiac_pp_m=float(cardiac_pp),
        ptt_s=float(ptt),
        chest_leads_ppg=bool(chest_leads_ppg),
        ppg_shape=ppg_shape,
        mech_shape=mech_shape,
        ppg_resp_baseline=float(rng.uniform(0.03, 0.10)),
        ppg_resp_am=float(rng.uniform(0.02, 0.08)),
        span=(float(t0), float(t0 + duration_s)),
    )
