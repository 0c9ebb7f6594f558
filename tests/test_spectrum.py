"""pipeline.spectrum: the band, band-pass, PSD-peak HR, z-score, SNR and window starts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.spectrum import (
    CARDIAC_BAND_BPM,
    CARDIAC_BAND_HZ,
    bandpass,
    hr_batch,
    hr_from_psd,
    power_spectrum,
    snr_db,
    window_starts,
    zscore,
)


def _sine(hz: float, seconds: float, fs: float, phase: float = 0.3) -> np.ndarray:
    return np.sin(2 * np.pi * hz * np.arange(int(round(seconds * fs))) / fs + phase)


def test_band_constants_agree():
    assert CARDIAC_BAND_BPM == (45.0, 180.0)
    assert CARDIAC_BAND_HZ == (0.75, 3.0)


@pytest.mark.parametrize("bpm", [55.0, 72.5, 100.0, 170.0])
@pytest.mark.parametrize("fs", [20.0, 30.0, 120.0])
def test_hr_of_a_sinusoid(bpm, fs):
    x = 5.0 + _sine(bpm / 60.0, 10.0, fs)  # an offset does not matter
    assert hr_from_psd(x, fs) == pytest.approx(bpm, abs=0.3)


def test_hr_near_the_band_edge_is_pulled_inwards_on_short_windows():
    # The filter's roll-off tilts the 6 bpm-wide peak of a 10 s window: 48 bpm reads 48.5 at 120 Hz;
    # a 60 s window narrows the peak and the bias goes.
    assert 48.0 < hr_from_psd(_sine(0.8, 10.0, 120.0), 120.0) <= 49.0
    assert hr_from_psd(_sine(0.8, 60.0, 120.0), 120.0) == pytest.approx(48.0, abs=0.15)


def test_hr_ignores_out_of_band_power_and_honours_the_band():
    fs = 30.0
    x = 3.0 * _sine(0.25, 20.0, fs) + _sine(1.2, 20.0, fs)  # strong breathing at 15 bpm, pulse at 72
    assert hr_from_psd(x, fs) == pytest.approx(72.0, abs=0.3)
    # A 160 bpm pulse lies outside EquiPleth's 45-150 bpm band: the estimate stays inside the band.
    y = _sine(160 / 60, 20.0, fs)
    assert hr_from_psd(y, fs) == pytest.approx(160.0, abs=0.3)
    assert 45.0 <= hr_from_psd(y, fs, hi_bpm=150.0) <= 150.0


def test_hr_grid_and_batch():
    fs = 30.0
    f, p = power_spectrum(_sine(1.0, 4.0, fs), fs)
    assert len(f) == 18000 // 2 + 1 and f[1] * 60 == pytest.approx(0.1)
    waves = np.stack([_sine(b / 60, 8.5, fs) for b in (60.0, 90.0, 120.0)])
    np.testing.assert_allclose(hr_batch(waves, fs), [60.0, 90.0, 120.0], atol=0.3)
    assert hr_batch(waves, fs).dtype == np.float64


def test_hr_rejects_short_or_non_finite():
    with pytest.raises(ValueError, match="at least 16 samples"):
        hr_from_psd(np.ones(15))
    with pytest.raises(ValueError, match="finite"):
        hr_from_psd(np.r_[np.ones(40), np.nan])


def test_bandpass_passes_the_band_and_attenuates_outside():
    fs = 30.0
    inside = _sine(1.5, 30.0, fs)
    below, above = _sine(0.1, 30.0, fs), _sine(8.0, 30.0, fs)
    mid = slice(150, -150)  # away from the ends

    def gain(x):
        return np.abs(bandpass(x, fs)[mid]).max() / np.abs(x[mid]).max()

    assert gain(inside) == pytest.approx(1.0, abs=0.02)
    assert gain(below) < 1e-3 and gain(above) < 1e-3
    # Zero phase: the passed sine is not shifted.
    assert np.corrcoef(bandpass(inside, fs)[mid], inside[mid])[0, 1] > 0.999
    # Along an axis, each row filtered alone; a signal shorter than the default padding still works.
    rows = np.stack([inside, below])
    np.testing.assert_allclose(bandpass(rows.T, fs, axis=0).T[0], bandpass(inside, fs))
    assert bandpass(inside[:20], fs).shape == (20,)


def test_bandpass_upper_edge_clamped_below_nyquist():
    # 3 Hz at fs = 6 Hz is the Nyquist frequency; the edge is clamped to 0.45 fs = 2.7 Hz.
    x = _sine(1.0, 20.0, 6.0)
    assert np.isfinite(bandpass(x, 6.0)).all()


def test_zscore_numpy_and_torch():
    x = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]])
    z = zscore(x)
    np.testing.assert_allclose(z[0].mean(), 0.0, atol=1e-12)
    np.testing.assert_allclose(z[0].std(), 1.0, atol=1e-6)
    assert np.array_equal(z[1], np.zeros(4))  # a constant gives zeros, not NaN
    assert z.dtype == np.float64 and zscore(x.astype(np.float32), dtype=np.float32).dtype == np.float32
    np.testing.assert_allclose(zscore(x, axis=0)[:, 0], [-1.0, 1.0], atol=1e-6)
    t = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    zt = zscore(t)
    assert isinstance(zt, torch.Tensor) and zt.dtype == torch.float32 and zt.requires_grad
    np.testing.assert_allclose(zt.detach().numpy(), z, atol=1e-6)
    assert torch.equal(zscore(torch.full((1, 8), 3.0)), torch.zeros(1, 8))


def test_snr_clean_beats_noisy_and_known_rate():
    fs, rng = 30.0, np.random.default_rng(0)
    clean = _sine(1.2, 20.0, fs)
    noisy = clean + rng.normal(0, 2.0, clean.size)
    assert snr_db(clean, fs) > 20.0
    assert snr_db(clean, fs) > snr_db(noisy, fs) + 10.0
    # With the true rate given, the signal bins are placed there, not at the strongest peak.
    assert snr_db(clean, fs, hr_bpm=72.0) == pytest.approx(snr_db(clean, fs), abs=1e-9)
    assert snr_db(clean, fs, hr_bpm=150.0) < 0.0


def test_snr_undefined_cases():
    fs = 30.0
    assert math.isnan(snr_db(_sine(1.2, 3.9, fs), fs))  # shorter than 4 s
    assert math.isnan(snr_db(np.zeros(300), fs))


def test_window_starts():
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(10, 4, 3, flush=True) == [0, 3, 6]  # already flush with the end
    assert window_starts(11, 4, 3) == [0, 3, 6]
    assert window_starts(11, 4, 3, flush=True) == [0, 3, 6, 7]
    assert window_starts(4, 4, 3, flush=True) == [0]  # exactly one window
    assert window_starts(3, 4, 1) == [] and window_starts(3, 4, 1, flush=True) == []  # n < frames
    assert window_starts(0, 1, 1) == []
    assert window_starts(428, 300, 128) == [0, 128] and window_starts(427, 300, 128) == [0]
    for n in range(1, 60):
        for frames, stride in ((1, 1), (7, 3), (16, 16), (20, 50)):
            s = window_starts(n, frames, stride, flush=True)
            assert all(0 <= a and a + frames <= n for a in s) and s == sorted(set(s))
            if n >= frames:
                assert s[-1] == n - frames
    with pytest.raises(ValueError, match="stride"):
        window_starts(10, 4, 0)
    with pytest.raises(ValueError, match="frames"):
        window_starts(10, 0, 1)
