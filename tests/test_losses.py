"""Tests for train/losses.py (CPU, small tensors)."""

from __future__ import annotations

import math

import pytest
import torch

from train.losses import (
    aggregate_distill,
    band_bin_indices,
    distill_components,
    neg_pearson,
    relation_map,
    snr_band_indices,
    snr_loss_db,
    spectral_features,
    supervised_loss,
)

FS = 30.0


def sine(bpm: float, t: int = 255, phase: float = 0.0) -> torch.Tensor:
    n = torch.arange(t, dtype=torch.float64) / FS
    return torch.sin(2 * math.pi * bpm / 60.0 * n + phase)


def noisy_sine(bpm: float, seed: int, t: int = 255, noise: float = 0.05) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (sine(bpm, t) + noise * torch.randn(t, generator=g, dtype=torch.float64)).unsqueeze(0)


# --- neg_pearson -------------------------------------------------------------------------------------------


def test_neg_pearson_identical_and_negated():
    x = torch.stack([sine(72), sine(90, phase=1.0), sine(120, phase=2.0)])
    assert neg_pearson(x, x).item() == pytest.approx(0.0, abs=1e-4)
    assert neg_pearson(x, -x).item() == pytest.approx(2.0, abs=1e-4)


def test_neg_pearson_invariant_to_per_sample_offset():
    # A batch-axis implementation (trap f.1.2) gives a large loss here.
    torch.manual_seed(0)
    y = torch.randn(4, 64, dtype=torch.float64)
    offsets = torch.tensor([[0.0], [5.0], [-3.0], [10.0]], dtype=torch.float64)
    assert neg_pearson(y + offsets, y).item() == pytest.approx(0.0, abs=1e-4)


def test_neg_pearson_batch_one_has_gradient():
    pred = torch.randn(1, 32, requires_grad=True)
    neg_pearson(pred, torch.randn(1, 32)).backward()
    assert pred.grad.abs().sum() > 0


def test_neg_pearson_is_batch_mean_of_per_sample_losses():
    torch.manual_seed(1)
    a, b = torch.randn(3, 40), torch.randn(3, 40)
    per = torch.stack([neg_pearson(a[i : i + 1], b[i : i + 1]) for i in range(3)])
    assert neg_pearson(a, b).item() == pytest.approx(per.mean().item(), abs=1e-5)


# --- SNR loss ----------------------------------------------------------------------------------------------


def test_snr_band_indices():
    assert snr_band_indices(30.0, 1024) == (26, 102)
    lo, hi = snr_band_indices(60.0, 1024)
    assert (lo, hi) == (13, 51)


def test_snr_loss_clean_sine_beats_noise():
    torch.manual_seed(0)
    label = torch.stack([sine(72), sine(100)]).float()
    clean = snr_loss_db(label.clone(), label)
    noise = snr_loss_db(torch.randn(2, 255), label)
    wrong_rate = snr_loss_db(torch.stack([sine(150), sine(50)]).float(), label)
    assert clean.dim() == 0
    assert clean < noise
    assert clean < wrong_rate
    assert clean < 0  # most power is in the 8 signal bins -> positive SNR


def test_snr_loss_hand_computed():
    # Pure sine exactly on bin 41 (41 * 30 / 1024 Hz) of a 1024-sample signal: all power in bin 41.
    n = torch.arange(1024, dtype=torch.float64)
    x = torch.cos(2 * math.pi * 41 * n / 1024).unsqueeze(0)
    loss = snr_loss_db(x, x)
    assert loss.item() == pytest.approx(-10 * math.log10(0.25 / 1e-7), rel=1e-3)
    # Pred power just outside the asymmetric signal window (k* + 4) counts as noise.
    y = torch.cos(2 * math.pi * 45 * n / 1024).unsqueeze(0)
    z = torch.cos(2 * math.pi * 37 * n / 1024).unsqueeze(0)  # k* - 4 is inside the signal window
    assert snr_loss_db(y, x).item() > 50
    assert snr_loss_db(z, x).item() < -50


def test_supervised_loss_crops_to_common_length():
    torch.manual_seed(0)
    pred = torch.randn(2, 255)
    label = torch.randn(2, 256)
    got = supervised_loss(pred, label)
    want = 0.01 * neg_pearson(pred, label[:, :255]) + snr_loss_db(pred, label[:, :255])
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


# --- spectral features -------------------------------------------------------------------------------------


@pytest.mark.parametrize("t,expected", [(255, 19), (256, 19), (300, 23), (160, 13)])
def test_band_bin_count(t, expected):
    feats = spectral_features(torch.randn(2, t))
    assert feats.logpsd_z.shape == (2, expected)
    assert feats.log_raw.shape == (2, expected)
    assert feats.peak_window.shape == (2, expected)
    assert feats.freqs_bpm.shape == (expected,)
    assert len(band_bin_indices(t)) == expected


def test_band_edges_255():
    f = spectral_features(torch.randn(1, 255)).freqs_bpm
    assert f[0].item() == pytest.approx(49.41, abs=0.01)
    assert f[-1].item() == pytest.approx(176.47, abs=0.01)


def test_centroid_of_72_bpm_sine():
    feats = spectral_features(sine(72).unsqueeze(0))
    assert abs(feats.centroid_bpm.item() - 72.0) < 4.0
    # local index: 72 bpm sits between bins 10 (70.6) and 11 (77.6) at t = 255, i.e. local 3 and 4
    assert 2.8 < feats.centroid_idx.item() < 3.6


def test_peak_window_sigma_one_bin():
    feats = spectral_features(sine(72).unsqueeze(0))
    i = torch.arange(19, dtype=torch.float64)
    want = torch.exp(-0.5 * (i - feats.centroid_idx) ** 2)
    assert torch.allclose(feats.peak_window[0], want)


def test_logpsd_z_is_standardised_per_sample():
    torch.manual_seed(0)
    x = torch.randn(3, 255) * torch.tensor([[1.0], [100.0], [0.01]]) + 7.0
    z = spectral_features(x).logpsd_z
    assert torch.allclose(z.mean(dim=1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std(dim=1, correction=0), torch.ones(3), atol=1e-4)


def test_periodic_hann_window_used():
    # Log-PSD of the mean-removed, periodic-Hann-windowed signal, computed by hand.
    torch.manual_seed(0)
    x = torch.randn(1, 64, dtype=torch.float64)
    n = torch.arange(64, dtype=torch.float64)
    w = 0.5 - 0.5 * torch.cos(2 * math.pi * n / 64)
    p = torch.fft.rfft((x - x.mean()) * w).abs() ** 2
    idx = band_bin_indices(64)
    want = torch.log(p[:, idx[0] : idx[-1] + 1] + 1e-8)
    assert torch.allclose(spectral_features(x).log_raw, want)


def test_spectral_features_errors():
    with pytest.raises(ValueError, match="at least 8"):
        spectral_features(torch.randn(1, 7))
    with pytest.raises(ValueError, match="no rfft bin"):
        spectral_features(torch.randn(1, 8))  # bins at 0, 3.75, ... Hz: none in 0.75-3 Hz


# --- distillation ------------------------------------------------------------------------------------------


def test_distill_components_zero_when_equal():
    x = torch.cat([noisy_sine(72, 0), noisy_sine(100, 1)])
    f = spectral_features(x)
    comp = distill_components(f, f)
    assert comp.shape == (2, 3)
    assert torch.allclose(comp, torch.zeros(2, 3, dtype=comp.dtype), atol=1e-6)


def test_distill_peak_term_grows_with_frequency_offset():
    teacher = spectral_features(noisy_sine(72, 0))
    peaks, morph = [], []
    for bpm in (72, 78, 90):
        comp = distill_components(spectral_features(noisy_sine(bpm, 1)), teacher)
        peaks.append(comp[0, 0].item())
        morph.append(comp[0, 2].item())
    assert peaks[0] < peaks[1] < peaks[2]
    assert morph[0] < morph[1] < morph[2]


def test_distill_components_per_sample():
    s = spectral_features(torch.cat([noisy_sine(72, 1), noisy_sine(120, 2)]))
    t = spectral_features(torch.cat([noisy_sine(72, 3), noisy_sine(72, 4)]))
    comp = distill_components(s, t)
    assert comp[1, 0] > comp[0, 0] + 0.5  # only the second sample is off-rate


def test_distill_gradient_reaches_student_only():
    x = noisy_sine(80, 0).requires_grad_(True)
    y = noisy_sine(72, 1).requires_grad_(True)
    comp = distill_components(spectral_features(x), spectral_features(y))
    comp.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert y.grad is None


def test_aggregate_distill():
    comp = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    alpha = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    assert aggregate_distill(comp, torch.zeros(2), alpha).item() == 0.0
    got = aggregate_distill(comp, torch.tensor([1.0, 0.5]), alpha).item()
    assert got == pytest.approx((1.0 + 0.5 * (0.8 + 1.5 + 3.0)) / 2)


def test_relation_map():
    s = spectral_features(noisy_sine(72, 0, t=255))
    t = spectral_features(noisy_sine(90, 1, t=300))  # F = 23, cropped to 19
    m = relation_map(s, t)
    assert m.shape == (1, 3, 19)
    assert torch.allclose(m[:, 0], s.logpsd_z)
    assert torch.allclose(m[:, 1], t.logpsd_z[:, :19])
    assert torch.allclose(m[:, 2], (s.logpsd_z - t.logpsd_z[:, :19]).abs())


def test_distill_background_term_grows_with_off_peak_noise():
    teacher = spectral_features(noisy_sine(72, 0))
    background = []
    for amp in (0.0, 0.1, 0.3, 1.0):  # power at 50 and 150 bpm, away from the teacher's 72 bpm peak
        x = noisy_sine(72, 1) + amp * (sine(150, phase=0.4) + sine(50, phase=1.1)).unsqueeze(0)
        comp = distill_components(spectral_features(x), teacher)
        background.append(comp[0, 1].item())
    assert background == sorted(background) and background[-1] > background[0] + 0.3, background


def test_distill_morphology_term_grows_with_spectral_smearing():
    teacher = spectral_features(noisy_sine(100, 0))
    morph = []
    for spread in (0.0, 10.0, 20.0, 30.0):
        bpms = [100.0 + k * spread for k in (-1.0, -0.5, 0.0, 0.5, 1.0)]
        x = sum(sine(b, phase=0.7 * i) for i, b in enumerate(bpms)).unsqueeze(0) / 5
        x = x + 0.05 * noisy_sine(100, 1, noise=1.0) - 0.05 * sine(100).unsqueeze(0)
        morph.append(distill_components(spectral_features(x), teacher)[0, 2].item())
    assert morph == sorted(morph) and morph[-1] > morph[0] + 0.1, morph
