"""Vilesov et al. (2022) RGB-radar fusion, the EquiPleth paper's own fusion model, written for our windows.

Written from the paper ("Blending camera and 77 GHz radar sensing for equitable, robust plethysmography",
ACM TOG 2022) and from reading its release (``UCLA-VMG/EquiPleth`` ``nndl/fusion/``,
``nndl/data/fusion_gen.py``, ``nndl/data/datasets.py::FusionDatasetObject``, ``nndl/utils/eval.py``) to
understand how it is trained and evaluated; no code was copied.

How the method works (release):

1. Two single-modality networks are trained first and frozen: a video network (EquiPleth's PhysNet-like
   CNN3D) and the radar network (``RF_conv_decoder``). Here they are the run's supervised video network
   and RF teacher.
2. For a window of L samples, each network's waveform is z-scored and turned into a magnitude spectrum:
   |FFT| zero-padded to n = 48 L points (a 30/(48 L) Hz grid), cropped to the bins nearest 45 and 180 bpm
   (inclusive). The video spectrum and the ground-truth spectrum are divided by their maximum over the
   whole spectrum before cropping; the radar spectrum by its maximum inside the band
   (:func:`band_magnitude`).
3. :class:`SpectralFusionNet` maps the two band spectra (B, F) to a fused band spectrum (B, F): two
   branches of four Conv1d(k 5) + BatchNorm + ReLU blocks (1 -> 64 -> 128 -> 128 -> 128), summed, four
   more 128-channel blocks, and a kernel-1 Conv1d to one channel.
4. Training loss: the squared negative Pearson correlation (1 - r)^2 between the fused spectrum and the
   ground-truth band spectrum, each z-scored first (:func:`squared_neg_pearson`); Adam, lr 1e-3.
   The release adds adversarial skin-tone debiasing after a 4-epoch warm-up: a
   :class:`SkinToneDiscriminator` (MLP F -> 32 -> 16 -> 8 -> 4 -> 2 -> 1) learns to tell light (label 0)
   from dark (label 1) subjects' fused spectra with binary cross-entropy (lr 1e-4), and in alternate
   4-epoch phases the fusion network is trained to make every spectrum look light, loss 4 x BCE
   (:func:`adversarial_phase`, :func:`discriminator_loss`, :func:`debias_loss`).
5. Evaluation turns the fused spectrum back into a waveform (:func:`spectrum_to_waveform`): the fused
   spectrum is scaled to [0, 1], multiplied by the band maximum of the video prediction's magnitude and
   written over the band bins of the video prediction's FFT, keeping the video phase; the inverse FFT,
   cut to L samples and z-scored, is the fused waveform whose HR is read like any other.

:class:`RGBRadarFusion` bundles the frozen video and radar networks with the fusion network and gives
(video clip, radar window) -> fused waveform, so the report can score it on the same windows as every other
method. It uses radar at test time: ``uses_radar_at_test = True`` marks it as a fusion row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.spectrum import CARDIAC_BAND_BPM

__all__ = [
    "FFT_RESOLUTION",
    "FusionBand",
    "RGBRadarFusion",
    "SkinToneDiscriminator",
    "SpectralFusionNet",
    "adversarial_phase",
    "band_magnitude",
    "debias_loss",
    "discriminator_loss",
    "fusion_band",
    "fusion_targets",
    "spectrum_to_waveform",
    "squared_neg_pearson",
]

FFT_RESOLUTION = 48
"""Zero-padding factor of the release's fusion spectra: n_fft = 48 x window length."""


# ------------------------------------------------------------------------------------------- spectra


@dataclass(frozen=True)
class FusionBand:
    """The FFT grid of one window length: n_fft points at fs Hz, band bins lo..hi inclusive."""

    length: int  # window length L in samples
    n_fft: int  # FFT length (L x resolution)
    lo: int  # first band bin (nearest lo_bpm)
    hi: int  # last band bin, inclusive (nearest hi_bpm)
    fs: float

    @property
    def bins(self) -> int:
        """F, the number of band bins."""
        return self.hi - self.lo + 1

    def bpm(self) -> Tensor:
        """(F,) frequency of every band bin in bpm."""
        return torch.arange(self.lo, self.hi + 1, dtype=torch.float64) * self.fs * 60.0 / self.n_fft


def fusion_band(
    length: int,
    fs: float = 30.0,
    resolution: int = FFT_RESOLUTION,
    lo_bpm: float = CARDIAC_BAND_BPM[0],
    hi_bpm: float = CARDIAC_BAND_BPM[1],
) -> FusionBand:
    """The band of a window of ``length`` samples: n_fft = length x resolution, and the bins nearest
    ``lo_bpm`` and ``hi_bpm`` on the k fs 60 / n_fft grid (the release: L 300 -> n 14400, 1081 bins)."""
    if length < 8:
        raise ValueError(f"fusion windows need at least 8 samples, got {length}")
    n_fft = int(length * resolution)
    step = fs * 60.0 / n_fft
    lo, hi = round(lo_bpm / step), round(hi_bpm / step)
    if not 0 < lo < hi <= n_fft // 2:
        raise ValueError(f"band {lo_bpm}-{hi_bpm} bpm is empty or beyond Nyquist for fs={fs}, n_fft={n_fft}")
    return FusionBand(length, n_fft, lo, hi, fs)


def _zscore(x: Tensor, eps: float = 1e-8) -> Tensor:
    x = x - x.mean(dim=-1, keepdim=True)
    return x / (x.std(dim=-1, keepdim=True, correction=0) + eps)


def band_magnitude(x: Tensor, band: FusionBand, normalise: str = "full", eps: float = 1e-12) -> Tensor:
    """Band magnitude spectrum (B, F) of waveforms ``x`` (B, L): z-score, |rfft| with ``band.n_fft`` points,
    divided by the maximum over the whole spectrum (``normalise="full"``, the release's video and
    ground-truth spectra) or over the band (``"band"``, its radar spectrum), then cropped to the band."""
    if x.dim() != 2 or x.shape[1] != band.length:
        raise ValueError(f"expected waveforms (B, {band.length}), got shape {tuple(x.shape)}")
    mag = torch.fft.rfft(_zscore(x), n=band.n_fft, dim=-1).abs()
    sub = mag[:, band.lo : band.hi + 1]
    if normalise == "full":
        return sub / mag.amax(dim=-1, keepdim=True).clamp_min(eps)
    if normalise == "band":
        return sub / sub.amax(dim=-1, keepdim=True).clamp_min(eps)
    raise ValueError(f"normalise must be 'full' or 'band', got {normalise!r}")


def fusion_targets(truth: Tensor, band: FusionBand) -> Tensor:
    """Ground-truth band spectrum (B, F) of PPG windows (B, >= L), normalised like the video spectrum."""
    return band_magnitude(truth[:, : band.length], band, "full")


def spectrum_to_waveform(fused: Tensor, video_wave: Tensor, band: FusionBand, eps: float = 1e-12) -> Tensor:
    """Fused band spectrum (B, F) -> fused waveform (B, L), the release's evaluation step.

    The fused spectrum is shifted and scaled to [0, 1] per sample, multiplied by the band maximum of the
    z-scored video waveform's |FFT| (n_fft points), and replaces that FFT's band magnitudes; the video
    phase is kept everywhere and the other bins are untouched. The inverse real FFT (Hermitian symmetry
    implied), cut to the first L samples and z-scored, is returned.
    """
    if fused.shape != (video_wave.shape[0], band.bins):
        raise ValueError(f"fused spectrum must be (B, {band.bins}), got {tuple(fused.shape)}")
    spec = torch.fft.rfft(_zscore(video_wave), n=band.n_fft, dim=-1)
    mag, phase = spec.abs(), torch.angle(spec)
    f01 = fused - fused.amin(dim=-1, keepdim=True)
    f01 = f01 / f01.amax(dim=-1, keepdim=True).clamp_min(eps)
    roi_max = mag[:, band.lo : band.hi + 1].amax(dim=-1, keepdim=True)
    mag = torch.cat([mag[:, : band.lo], f01 * roi_max, mag[:, band.hi + 1 :]], dim=-1)
    wave = torch.fft.irfft(torch.polar(mag, phase), n=band.n_fft, dim=-1)[:, : band.length]
    return _zscore(wave)


# ------------------------------------------------------------------------------------------- networks


def _conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(in_ch, out_ch, 5, padding=2), nn.BatchNorm1d(out_ch), nn.ReLU())


class SpectralFusionNet(nn.Module):
    """Vilesov et al.'s fusion network: (video band spectrum, radar band spectrum) (B, F) each -> (B, F).

    Each modality: Conv1d(k 5, same padding) + BatchNorm1d + ReLU, 1 -> 64 -> 128 -> 128 -> 128. The two
    branch outputs are added, then four 128 -> 128 blocks of the same kind and a kernel-1 Conv1d 128 -> 1.
    Fully convolutional: any F. 742,273 parameters.
    """

    def __init__(self, width: int = 128, first: int = 64, depth: int = 4):
        super().__init__()
        widths = [1, first] + [width] * (depth - 1)

        def branch() -> nn.Sequential:
            return nn.Sequential(*(_conv_block(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)))

        self.video_branch = branch()
        self.radar_branch = branch()
        self.fusion = nn.Sequential(*(_conv_block(width, width) for _ in range(depth)))
        self.out = nn.Conv1d(width, 1, kernel_size=1)

    def forward(self, video_spec: Tensor, radar_spec: Tensor) -> Tensor:
        """(B, F), (B, F) -> (B, F) fused spectrum (unnormalised)."""
        if video_spec.dim() != 2 or video_spec.shape != radar_spec.shape:
            raise ValueError(
                f"SpectralFusionNet expects two (B, F) spectra of one shape, got {tuple(video_spec.shape)} "
                f"and {tuple(radar_spec.shape)}"
            )
        h = self.video_branch(video_spec[:, None]) + self.radar_branch(radar_spec[:, None])
        return self.out(self.fusion(h)).squeeze(1)


class SkinToneDiscriminator(nn.Module):
    """The release's debiasing adversary: fused spectrum (B, F) -> P(dark skin) (B, 1).

    Linear + BatchNorm1d + ReLU blocks F -> 32 -> 16 -> 8 -> 4 -> 2, then Linear 2 -> 1 and a sigmoid.
    """

    def __init__(self, bins: int):
        super().__init__()
        widths = [bins, 32, 16, 8, 4, 2]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(2, 1), nn.Sigmoid())
        self.bins = bins

    def forward(self, spectrum: Tensor) -> Tensor:
        if spectrum.dim() != 2 or spectrum.shape[1] != self.bins:
            raise ValueError(f"discriminator expects (B, {self.bins}), got {tuple(spectrum.shape)}")
        return self.net(spectrum)


# ----------------------------------------------------------------------------------------------- losses


def squared_neg_pearson(pred: Tensor, target: Tensor, eps: float = 1e-2) -> Tensor:
    """mean over the batch of (1 - r)^2, r the Pearson correlation of z-scored rows (B, F) along F.

    r = (N sum xy - sum x sum y) / sqrt((N sum x^2 - (sum x)^2 + eps)(N sum y^2 - (sum y)^2 + eps)) with
    the release's eps = 0.01; rows are z-scored (sample std, + 1e-6) first.
    """
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(
            f"pred and target must be (B, F) of one shape, got {tuple(pred.shape)}, {tuple(target.shape)}"
        )

    def norm(t: Tensor) -> Tensor:
        return (t - t.mean(dim=1, keepdim=True)) / (t.std(dim=1, keepdim=True) + 1e-6)

    x, y = norm(pred), norm(target)
    n = x.shape[1]
    sx, sy = x.sum(1), y.sum(1)
    num = n * (x * y).sum(1) - sx * sy
    den = torch.sqrt((n * (x * x).sum(1) - sx * sx + eps) * (n * (y * y).sum(1) - sy * sy + eps))
    return ((1.0 - num / den) ** 2).mean()


def adversarial_phase(epoch: int, warmup: int = 4, period: int = 4) -> str:
    """Which adversarial update the release runs in 1-based ``epoch`` besides the Pearson step:
    ``"none"`` for the first ``warmup`` epochs, then ``"discriminator"`` and ``"generator"`` phases of
    ``period`` epochs each, alternating (epochs 5-8 discriminator, 9-12 generator, ...)."""
    if epoch < 1:
        raise ValueError(f"epochs are counted from 1, got {epoch}")
    if epoch <= warmup:
        return "none"
    return "discriminator" if ((epoch - warmup - 1) // period) % 2 == 0 else "generator"


def discriminator_loss(disc: SkinToneDiscriminator, fused: Tensor, dark: Tensor) -> Tensor:
    """BCE of the discriminator on detached fused spectra (B, F), labels ``dark`` (B,): 1 dark, 0 light."""
    prob = disc(fused.detach()).squeeze(1)
    return F.binary_cross_entropy(prob, dark.to(prob.dtype))


def debias_loss(disc: SkinToneDiscriminator, fused: Tensor, weight: float = 4.0) -> Tensor:
    """The fusion network's adversarial loss: ``weight`` x BCE(disc(fused), light), gradient to ``fused``."""
    prob = disc(fused).squeeze(1)
    return weight * F.binary_cross_entropy(prob, torch.zeros_like(prob))


# ------------------------------------------------------------------------------------------ the bundle


class RGBRadarFusion(nn.Module):
    """Frozen video network + frozen radar network + :class:`SpectralFusionNet`, on one window.

    Args:
        video_net: (B, 3, T, S, S) frames in [0, 1] -> (B, >= length) waveform, trained beforehand.
        radar_net: (B, C, T) radar window -> (B, >= length) waveform, trained beforehand.
        length: L, samples of every waveform used (the trainer's T - 1).
        fs: sampling rate in Hz. resolution, lo_bpm, hi_bpm: see :func:`fusion_band`.

    The upstream networks get ``requires_grad = False`` and stay in eval mode whatever :meth:`train` is
    called with; only ``fusion`` learns. ``forward(video, rf)`` gives the fused waveform (B, L).
    """

    uses_radar_at_test = True

    def __init__(
        self,
        video_net: nn.Module,
        radar_net: nn.Module,
        length: int,
        fs: float = 30.0,
        resolution: int = FFT_RESOLUTION,
        lo_bpm: float = CARDIAC_BAND_BPM[0],
        hi_bpm: float = CARDIAC_BAND_BPM[1],
    ):
        super().__init__()
        self.video_net, self.radar_net = video_net, radar_net
        for p in [*video_net.parameters(), *radar_net.parameters()]:
            p.requires_grad_(False)
        self.band = fusion_band(length, fs, resolution, lo_bpm, hi_bpm)
        self.fusion = SpectralFusionNet()
        self.train(True)

    def train(self, mode: bool = True) -> RGBRadarFusion:
        super().train(mode)
        self.video_net.eval()
        self.radar_net.eval()
        return self

    def upstream(self, video: Tensor, rf: Tensor) -> tuple[Tensor, Tensor]:
        """The frozen networks' waveforms (B, L) each, without gradient."""
        with torch.no_grad():
            v = self.video_net(video)[:, : self.band.length].float()
            r = self.radar_net(rf)[:, : self.band.length].float()
        if v.shape[1] != self.band.length or r.shape[1] != self.band.length:
            raise ValueError(f"upstream waveforms shorter than L = {self.band.length}: {v.shape}, {r.shape}")
        return v, r

    def fuse(self, video_wave: Tensor, radar_wave: Tensor) -> Tensor:
        """Fused band spectrum (B, F) from the two upstream waveforms (B, L)."""
        return self.fusion(
            band_magnitude(video_wave, self.band, "full"), band_magnitude(radar_wave, self.band, "band")
        )

    def forward(self, video: Tensor, rf: Tensor) -> Tensor:
        """(B, 3, T, S, S) frames in [0, 1] and (B, C, T) radar -> fused waveform (B, L)."""
        v, r = self.upstream(video, rf)
        return spectrum_to_waveform(self.fuse(v, r), v, self.band)

    def hr_bpm(self, fused: Tensor) -> Tensor:
        """(B,) argmax frequency of fused band spectra (B, F), in bpm (a diagnostic; the report reads HR
        from :meth:`forward`'s waveform)."""
        return self.band.bpm().to(fused.device)[fused.argmax(dim=-1)].float()
