"""POS, CHROM and GREEN recover HR from clean generated face clips; the ROI and input checks hold."""

import numpy as np
import pytest
from PIL import Image
from skimage.data import astronaut

from pipeline.spectrum import hr_from_psd
from train.classical import centre_ellipse, classical_wave, rgb_trace, skin_roi

FS = 30.0


def face_clip(bpm: float, seconds: float = 10.0, tone: float = 1.0, seed: int = 0) -> np.ndarray:
    """(T, 128, 128, 3) uint8: the astronaut's face, a blood-volume pulse on every pixel (strongest in
    green), slow illumination drift and sensor noise."""
    face = astronaut()[38:198, 146:306]
    face = np.asarray(Image.fromarray(face).resize((128, 128), Image.BILINEAR)).astype(np.float32) * tone
    t = np.arange(int(seconds * FS)) / FS
    pulse = 0.5 * np.sin(2 * np.pi * bpm / 60 * t) + 0.2 * np.sin(4 * np.pi * bpm / 60 * t + 1.0)
    illum = 1.0 + 0.02 * np.sin(2 * np.pi * 0.1 * t)
    contrast = 0.008 * np.array([0.3, 1.0, 0.5], dtype=np.float32)
    rng = np.random.default_rng(seed)
    frames = illum[:, None, None, None] * face[None] * (1 - contrast * pulse[:, None, None, None])
    frames += 2.0 * rng.standard_normal(frames.shape).astype(np.float32)
    return np.clip(frames + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("method", ["POS", "CHROM", "GREEN"])
@pytest.mark.parametrize(("bpm", "tone"), [(62.0, 1.0), (97.0, 1.0), (78.0, 0.45)])
def test_classical_recovers_hr_on_clean_clips(method, bpm, tone):
    frames = face_clip(bpm, tone=tone, seed=int(bpm))
    wave = classical_wave(method, frames, FS)
    assert wave.shape == (frames.shape[0],) and np.isfinite(wave).all()
    assert abs(hr_from_psd(wave, FS) - bpm) < 1.5


@pytest.mark.parametrize("method", ["POS", "CHROM"])
def test_chrominance_methods_cancel_a_common_intensity_flicker(method):
    """A strong in-band flicker of all channels together (a light source) fools GREEN, not POS / CHROM."""
    frames = face_clip(66.0, seed=3).astype(np.float32)
    t = np.arange(frames.shape[0]) / FS
    flicker = 1.0 + 0.03 * np.sin(2 * np.pi * 2.4 * t)  # 144 bpm, all channels alike
    frames = np.clip(frames * flicker[:, None, None, None], 0, 255).astype(np.uint8)
    assert abs(hr_from_psd(classical_wave("GREEN", frames, FS), FS) - 144.0) < 2.0
    assert abs(hr_from_psd(classical_wave(method, frames, FS), FS) - 66.0) < 1.5


def test_trace_is_the_roi_mean_and_roi_falls_back_to_the_centre():
    frames = face_clip(70.0, seconds=2.0)
    roi = skin_roi(frames)
    assert 0.05 < roi.mean() < 0.6  # skin pixels, not the whole crop
    assert np.allclose(rgb_trace(frames, roi)[0], frames[0][roi].mean(axis=0))
    blue = np.zeros((20, 64, 64, 3), np.uint8)
    blue[..., 2] = 200  # nothing skin-coloured
    assert np.array_equal(skin_roi(blue), centre_ellipse(64, 64))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="unknown classical method"):
        classical_wave("ICA", face_clip(70.0, seconds=2.0))
    with pytest.raises(ValueError, match="at least 48 frames"):
        classical_wave("POS", face_clip(70.0, seconds=1.0))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        rgb_trace(np.zeros((10, 8, 8), np.uint8))


def test_chrom_band_option_is_the_toolbox_band_and_the_default_is_unchanged():
    """``band_hz`` reaches CHROM's per-window band-pass: the rPPG-Toolbox band (0.7-2.5 Hz, the bench's
    sensitivity row) suppresses a 2.8 Hz chrominance component that the CHROM paper's 40-240 bpm keeps."""
    from train.classical import BAND_HZ, TOOLBOX_CHROM_BAND_HZ, chrom

    t = np.arange(600) / FS
    rng = np.random.default_rng(3)
    pulse = np.sin(2 * np.pi * 1.2 * t)
    # A 2.8 Hz disturbance of green only: X = 3R - 2G and Y = 1.5R + G - 1.5B see it with opposite
    # signs, so CHROM's X - alpha Y keeps it.
    motion = 1.5 * np.sin(2 * np.pi * 2.8 * t)
    trace = 100.0 + np.stack([0.3 * pulse, pulse + motion, 0.5 * pulse], axis=1)
    trace += 0.01 * rng.standard_normal(trace.shape)
    ours, toolbox = chrom(trace, FS), chrom(trace, FS, band_hz=TOOLBOX_CHROM_BAND_HZ)
    np.testing.assert_array_equal(ours, chrom(trace, FS, band_hz=BAND_HZ))

    def share_at(wave, hz):
        spec = np.abs(np.fft.rfft(wave[60:-60])) ** 2
        f = np.fft.rfftfreq(wave[60:-60].size, 1 / FS)
        return spec[np.abs(f - hz) < 0.15].sum() / spec.sum()

    assert share_at(ours, 2.8) > 0.3
    assert share_at(toolbox, 2.8) < 0.5 * share_at(ours, 2.8)
    assert hr_from_psd(toolbox, FS) == pytest.approx(72.0, abs=1.5)
