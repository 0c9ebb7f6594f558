"""Table 1 comparison models: PhysFormer (train/physformer.py) and Vilesov et al.'s RGB-radar fusion
(train/fusion.py): shapes, published sizes, their losses, and a few real training steps on tiny tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.spectrum import hr_from_psd
from train.fusion import (
    RGBRadarFusion,
    SkinToneDiscriminator,
    SpectralFusionNet,
    adversarial_phase,
    band_magnitude,
    debias_loss,
    discriminator_loss,
    fusion_band,
    fusion_targets,
    spectrum_to_waveform,
    squared_neg_pearson,
)
from train.models import RFTeacher, count_parameters
from train.physformer import (
    PUBLISHED_PARAMETERS,
    PhysFormer,
    TemporalDifferenceConv3d,
    curriculum_beta,
    hr_class_spectrum,
    physformer_loss,
    tiny_physformer,
)

FS = 30.0


def _sine(hr_bpm: float, n: int, phase: float = 0.0) -> np.ndarray:
    return np.sin(2 * math.pi * hr_bpm / 60.0 * np.arange(n) / FS + phase)


def _pulsing_clips(
    hrs: list[float], frames: int, size: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, T, S, S) frames in [0, 1] whose centre square pulses at each HR, and the (B, T) pulses."""
    g = np.random.default_rng(seed)
    waves = np.stack([_sine(hr, frames, g.uniform(0, 2 * math.pi)) for hr in hrs])
    x = 0.5 + 0.02 * g.standard_normal((len(hrs), 3, frames, size, size))
    c = slice(size // 4, 3 * size // 4)
    x[:, 1, :, c, c] += 0.05 * waves[:, :, None, None]
    return torch.tensor(x, dtype=torch.float32).clamp(0, 1), torch.tensor(waves, dtype=torch.float32)


def _snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(before: list[torch.Tensor], module: nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters(), strict=True))


# ------------------------------------------------------------------------------------------ PhysFormer


def test_physformer_published_size_matches_the_paper():
    model = PhysFormer(frames=160, input_size=128)  # the published D 96, D' 144, 4 heads, 12 blocks
    n = count_parameters(model)
    assert n == 7_380_865
    assert abs(n - PUBLISHED_PARAMETERS) / PUBLISHED_PARAMETERS < 0.005  # paper: 7.38 M


def test_physformer_forward_shapes_and_refusals():
    model = tiny_physformer(frames=8, input_size=32).eval()
    assert model(torch.rand(2, 3, 8, 32, 32)).shape == (2, 8)
    assert model.uses_radar_at_test is False
    with pytest.raises(ValueError, match="input mismatch"):
        model(torch.rand(2, 3, 8, 64, 64))
    with pytest.raises(ValueError, match="divisible by 4"):
        tiny_physformer(frames=10)
    with pytest.raises(ValueError, match="input_size=72"):
        PhysFormer(frames=160, input_size=72)  # 72 / 8 = 9 is not tiled by 4x4 tubes


def test_temporal_difference_conv_formula():
    torch.manual_seed(0)
    plain = TemporalDifferenceConv3d(2, 3, theta=0.0)
    x = torch.randn(1, 2, 5, 6, 6)
    assert torch.allclose(plain(x), plain.conv(x))
    # theta = 1 on a constant input: only the centre temporal slice of the kernel responds (interior voxels)
    tdc = TemporalDifferenceConv3d(2, 3, theta=1.0)
    tdc.conv.weight.data.copy_(plain.conv.weight.data)
    const = torch.full((1, 2, 5, 6, 6), 0.7)
    centre = plain.conv.weight[:, :, 1].sum(dim=(1, 2, 3)) * 0.7
    assert torch.allclose(tdc(const)[0, :, 2, 2, 2], centre, atol=1e-5)


def test_physformer_loss_parts():
    pure = torch.tensor(_sine(72.0, 160)[None], dtype=torch.float32)
    q = hr_class_spectrum(pure, FS)
    assert q.shape == (1, 140) and torch.allclose(q.sum(), torch.tensor(1.0))
    assert int(q.argmax()) + 40 == 72
    assert curriculum_beta(0, 25) == 1.0 and curriculum_beta(25, 25) == pytest.approx(5.0)
    assert curriculum_beta(10, 25) < curriculum_beta(11, 25)
    good, stats = physformer_loss(pure, pure, FS, epoch=0, epochs=10)
    bad, _ = physformer_loss(torch.tensor(_sine(120.0, 160)[None], dtype=torch.float32), pure, FS, 0, 10)
    assert torch.isfinite(good) and bad > good + 1.0
    assert float(stats["time"]) < 1e-3 and float(stats["beta"]) == 1.0


def test_physformer_trains_a_few_steps():
    torch.manual_seed(0)
    model = tiny_physformer(frames=64, input_size=32, dropout=0.0)
    x, y = _pulsing_clips([66.0, 96.0], frames=64, size=32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    before = _snapshot(model)
    losses = []
    for _ in range(8):
        loss, _ = physformer_loss(model(x), y, FS, epoch=0, epochs=5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert _changed(before, model)
    assert min(losses[-3:]) < losses[0]


# --------------------------------------------------------------------------------------------- fusion


def test_fusion_network_size_from_the_release_layer_list():
    # The paper states no parameter count; this is the count its released layer list implies:
    # per block Conv1d(a, b, 5) weights + bias + BatchNorm affine.
    block = lambda a, b: 5 * a * b + b + 2 * b  # noqa: E731
    branch = block(1, 64) + block(64, 128) + 2 * block(128, 128)
    assert count_parameters(SpectralFusionNet()) == 2 * branch + 4 * block(128, 128) + 128 + 1 == 742_273


def test_fusion_band_matches_the_release_grid():
    band = fusion_band(300)  # the release: 300-sample windows, 48x zero padding, 45-180 bpm
    assert (band.n_fft, band.bins) == (14_400, 1081)  # its discriminator takes 1081 bins
    assert float(band.bpm()[0]) == pytest.approx(45.0) and float(band.bpm()[-1]) == pytest.approx(180.0)


def test_spectrum_to_waveform_follows_the_fused_peak():
    band = fusion_band(255)
    video = torch.tensor(_sine(70.0, 255)[None], dtype=torch.float32)
    bpm = band.bpm().float()
    fused = torch.exp(-0.5 * ((bpm - 90.0) / 1.5) ** 2)[None]  # the fusion says 90 bpm
    wave = spectrum_to_waveform(fused, video, band)
    assert wave.shape == (1, 255)
    assert hr_from_psd(wave[0].numpy(), FS) == pytest.approx(90.0, abs=2.0)
    same = spectrum_to_waveform(band_magnitude(video, band), video, band)  # its own spectrum: ~unchanged
    assert hr_from_psd(same[0].numpy(), FS) == pytest.approx(70.0, abs=1.0)


def _tiny_fusion(frames: int = 64) -> RGBRadarFusion:
    torch.manual_seed(0)
    video_net = tiny_physformer(frames=frames, input_size=32)
    radar_net = RFTeacher(in_channels=10, widths=(4, 8))
    return RGBRadarFusion(video_net, radar_net, length=frames - 1)


def test_fusion_forward_shapes_and_radar_flag():
    model = _tiny_fusion()
    assert RGBRadarFusion.uses_radar_at_test is True and model.uses_radar_at_test
    x, _ = _pulsing_clips([70.0, 100.0], frames=64, size=32)
    out = model.eval()(x, torch.randn(2, 10, 64))
    assert out.shape == (2, 63) and torch.isfinite(out).all()
    v, r = model.upstream(x, torch.randn(2, 10, 64))
    assert model.fuse(v, r).shape == (2, model.band.bins)
    assert not model.video_net.training and not model.radar_net.training  # frozen nets stay in eval mode
    model.train()
    assert not model.video_net.training and model.fusion.training


def test_fusion_trains_a_few_steps_upstream_frozen():
    model = _tiny_fusion().train()
    x, y = _pulsing_clips([66.0, 84.0, 108.0, 126.0], frames=64, size=32, seed=1)
    rf = torch.randn(4, 10, 64)
    target = fusion_targets(y, model.band)
    upstream = _snapshot(model.video_net) + _snapshot(model.radar_net)
    before = _snapshot(model.fusion)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    v, r = model.upstream(x, rf)
    losses = []
    for _ in range(6):
        loss = squared_neg_pearson(model.fuse(v, r), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert _changed(before, model.fusion)
    after = list(model.video_net.parameters()) + list(model.radar_net.parameters())
    assert all(torch.equal(a, b) for a, b in zip(upstream, after, strict=True))


def test_fusion_debiasing_schedule_and_losses():
    phases = [adversarial_phase(e) for e in range(1, 14)]
    assert phases[:4] == ["none"] * 4
    assert phases[4:8] == ["discriminator"] * 4 and phases[8:12] == ["generator"] * 4
    assert phases[12] == "discriminator"
    torch.manual_seed(0)
    fused = torch.randn(6, 40, requires_grad=True)
    disc = SkinToneDiscriminator(40)
    dark = torch.tensor([0, 1, 0, 1, 0, 1])
    d_loss = discriminator_loss(disc, fused, dark)
    d_loss.backward()
    assert fused.grad is None and disc.net[0].weight.grad is not None  # the spectra are detached there
    g_loss = debias_loss(disc, fused)
    g_loss.backward()
    assert torch.isfinite(g_loss) and fused.grad is not None and fused.grad.abs().sum() > 0
