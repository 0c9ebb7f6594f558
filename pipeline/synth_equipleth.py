"""Physically grounded synthetic EquiPleth dataset in the real on-disk layout.

Layout written under ``out`` (the same as the released EquiPleth, see reference.md §b.1)::

    rgb_files/v_<s>_<t>/rgbd_rgb_<i>.png   i = 0..n-1, NOT zero-padded; crop_size x crop_size RGB face crops
    rgb_files/v_<s>_<t>/rgbd_ppg.npy       float64 (n,) PPG at 30 Hz
    rf_files/<s>_<t>/rf.pkl                DCA1000 packet capture (pipeline.dca1000 format)
    rf_files/<s>_<t>/vital_dict.npy        0-d object array {'rgbd': {'NOM_PLETHWaveExport': ppg}}
    fitzpatrick_labels.pkl                 {"v_<s>": 1..6}
    demo_fold.pkl                          {0: {"train": [...], "val": [...], "test": [...]}} (by subject)
    synth_truth.json                       NOT part of the real layout: ground truth of the simulation

Subjects are numbered 1..subjects and trials 1..trials; n = round(30 * seconds) video frames and
round(120 * seconds) + 33 radar frames (real captures run ~0.27 s longer than the video).

Clock and label convention. Video frame i is at t = i / 30 s, radar frame f at t = f / 120 s (radar
frame 4t <-> video frame t, index alignment only, as in EquiPleth). Every EquiPleth loader drops
the first 25 PPG samples, so PPG sample j belongs to time (j - 25) / 30: video frame t shows the
pulse value stored at ``rgbd_ppg.npy[t + 25]``. The physiology is simulated from -25/30 s on.

Video model, per frame and pixel (values in 8-bit DN)::

    frame = illum(t)[c] * shift_t( face[c] * (1 - a * w[c] * skin * pulse(t)) ) + noise

``face`` is the base face (skimage's astronaut photo cropped MTCNN-style around the face, warped
and recoloured per subject: albedo of the subject's Fitzpatrick type on the face and hair, tinted
background), ``skin`` a soft skin mask derived from the photo with a YCbCr rule, ``pulse`` the PPG
blood-volume waveform (peak-to-peak 1; more blood absorbs more light, hence the minus sign),
``a`` the green peak-to-peak pulsatile contrast (0.6-1.0 % for type 1, scaled down to 45 % of
that for type 6), ``w`` = (0.3, 1.0, 0.5) for (R, G, B), ``shift_t`` a slow rigid sub-pixel
translation (0.3-2 px at 128 px, < 0.25 Hz), ``illum`` a slow per-channel illumination drift
(1-4 %), ``noise`` read + shot noise; the result is rounded to uint8.

Radar model: the AWR1443 beat signal (1 TX, 1 RX, 256 complex samples at 5 Msps, slope
60.012 MHz/us, 77 GHz, one chirp per 120 Hz frame). Per frame f and fast-time sample k::

    s[f, k] = A exp(j (2 pi fb(f) k / fs + 4 pi (R + d(t_f)) / lambda)) + clutter[k] + noise
    fb(f)   = 2 slope (R + d(t_f)) / c

with chest range R in 0.35-0.8 m (range bin 7..16), d the simulated chest displacement, chest
amplitude giving a range-FFT peak of 0.3-1 x 1.255e5, a strong static enclosure reflection near
bin 2 (1.5-3 x the chest), one or two weaker static reflectors (0.15-0.5 x) at least 3 bins from
the chest, and complex Gaussian thermal noise; rounded to int16 and packetised with
:func:`pipeline.dca1000.encode_capture`.

Determinism: every random draw comes from a Generator seeded by (seed, subject, trial) (subject
looks by (seed, subject, 0), skin types and folds by (seed, 0, ...)), everything iterates in
sorted order and per-frame noise has its own seeded stream, so the same arguments give
byte-identical files regardless of thread scheduling.

Interrupted runs and reruns: each trial is written to ``out/.synth_tmp/`` and renamed into place
(``rgb_files/...`` and ``rf_files/...``), so a trial folder that exists is complete. On a rerun a
trial whose two folders exist is verified (same PPG, frame count, crop size) and skipped; if only
one of the two exists (interrupted between the two renames) it is regenerated; if it exists but
was made with other arguments a ``FileExistsError`` is raised instead of mixing datasets. The root
files are rewritten every run.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from pipeline.dca1000 import RADAR_FPS, SAMPLES_PER_CHIRP, encode_capture, write_rf_pkl
from pipeline.physio import Physiology, simulate_physiology
from pipeline.radar import ADC_RATE_HZ, SLOPE_HZ_PER_S, WAVELENGTH_M

VIDEO_FPS = 30.0
PPG_OFFSET = 25  # samples every EquiPleth loader drops from the start of the PPG
EXTRA_RADAR_FRAMES = 33  # real captures: 3633 radar frames for a 30 s video
C_M_PER_S = 299_792_458.0  # physical speed of light for the beat frequency
PNG_COMPRESS_LEVEL = 1  # zlib level: ~3.5x faster than Pillow's default 6 at ~20 % larger files
TRUTH_FILE = "synth_truth.json"
TMP_DIR = ".synth_tmp"

# Base face: skimage.data.astronaut(), face centre (row, col) and the side of the source square
# that maps onto the crop (face filling most of the crop, as MTCNN crops with a small margin do).
FACE_CENTER_RC = (118.0, 226.0)
FACE_BOX_PX = 160.0
# Mean skin colour (8-bit sRGB DN, well exposed) per Fitzpatrick type, and pulsatile contrast scale.
SKIN_ALBEDO = {
    1: (205.0, 168.0, 146.0),
    2: (196.0, 153.0, 124.0),
    3: (180.0, 134.0, 102.0),
    4: (152.0, 106.0, 76.0),
    5: (114.0, 76.0, 55.0),
    6: (80.0, 54.0, 40.0),
}
PULSE_SCALE = {1: 1.0, 2: 0.93, 3: 0.83, 4: 0.7, 5: 0.56, 6: 0.45}
CHANNEL_WEIGHTS = np.array([0.3, 1.0, 0.5], dtype=np.float32)
GREEN_PULSE_PP_RANGE = (0.006, 0.010)  # type-1 green peak-to-peak pulsatile contrast
CHEST_RANGE_M = (0.35, 0.8)
RF_PEAK_RANGE = (0.3 * 1.255e5, 1.0 * 1.255e5)


# --------------------------------------------------------------------------- helpers


def _ycbcr(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return y, cb, cr


def skin_rule(rgb: np.ndarray) -> np.ndarray:
    """Pixel-wise YCbCr skin rule tuned on the base photo (excludes its blond hair and background)."""
    _, cb, cr = _ycbcr(rgb)
    return (cb >= 106.5) & (cb <= 122.0) & (cr >= 138.0) & (cr <= 170.0) & (cr - cb > 25.0)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = ndi.sum(mask, lab, index=np.arange(1, n + 1))
    return lab == (int(np.argmax(sizes)) + 1)


@lru_cache(maxsize=1)
def _base_photo() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(photo float32 (H, W, 3) DN, soft skin mask, soft head mask) of skimage's astronaut."""
    from skimage.data import astronaut

    photo = astronaut().astype(np.float32)
    rr, cc = np.mgrid[0 : photo.shape[0], 0 : photo.shape[1]]
    r0, c0 = FACE_CENTER_RC
    near_face = ((rr - r0) / 95.0) ** 2 + ((cc - c0) / 85.0) ** 2 <= 1.0
    skin = ndi.binary_opening(skin_rule(photo) & near_face, iterations=2)
    skin = ndi.binary_closing(_largest_component(skin), iterations=2)
    # Head (face + hair) for the subject recolouring: a loose skin/hair rule inside an ellipse.
    _, cb, cr = _ycbcr(photo)
    loose = (cb >= 77) & (cb <= 117) & (cr >= 137) & (cr <= 173)
    head_ellipse = ((rr - (r0 - 15.0)) / 110.0) ** 2 + ((cc - c0) / 85.0) ** 2 <= 1.0
    # No hole filling: eye whites and teeth fail the loose rule and keep their colour.
    head = _largest_component(ndi.binary_opening(loose & head_ellipse, iterations=1) | skin)
    holes = ndi.binary_fill_holes(head) & ~head
    lab, n = ndi.label(holes)
    if n:
        small = np.flatnonzero(ndi.sum(holes, lab, index=np.arange(1, n + 1)) < 100) + 1
        head |= np.isin(lab, small)  # specular spots and speckles; keeps the larger teeth region
    skin_soft = ndi.gaussian_filter(skin.astype(np.float32), 1.5)
    head_soft = ndi.gaussian_filter(head.astype(np.float32), 1.5)
    return photo, skin_soft, head_soft


def skin_type_of(subject: int, seed: int) -> int:
    """Fitzpatrick type 1..6: subjects cycle through the six types from a seeded starting type."""
    offset = int(np.random.default_rng(np.random.SeedSequence([seed, 0, 0])).integers(6))
    return (subject - 1 + offset) % 6 + 1


def _slow(t: np.ndarray, rng: np.random.Generator, f_lo: float, f_hi: float, n: int = 3) -> np.ndarray:
    """Random-phase sum of sinusoids in [f_lo, f_hi] Hz, peak |x| = 1 over ``t``."""
    f = rng.uniform(f_lo, f_hi, n)
    ph = rng.uniform(0, 2 * np.pi, n)
    w = rng.uniform(0.5, 1.0, n)
    x = (w[:, None] * np.sin(2 * np.pi * f[:, None] * t[None, :] + ph[:, None])).sum(0)
    return x / max(float(np.abs(x).max()), 1e-12)


# --------------------------------------------------------------------------- subject look


@dataclass
class SubjectLook:
    face: np.ndarray  # (P, P, 3) float32 DN, recoloured and warped, P = crop_size + 2 * pad
    skin: np.ndarray  # (P, P) float32 soft skin mask
    pad: int
    skin_type: int


def make_subject_look(subject: int, seed: int, crop_size: int) -> SubjectLook:
    """Warp and recolour the base face for one subject (same for all trials of the subject)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, subject, 0]))
    skin_type = skin_type_of(subject, seed)
    photo, skin, head = _base_photo()

    # Recolour: skin + hair take the subject's albedo (shading kept as a ratio), background is tinted.
    mean_skin = (photo * skin[..., None]).sum((0, 1)) / skin.sum()
    albedo = np.array(SKIN_ALBEDO[skin_type]) * rng.uniform(0.95, 1.05, 3)
    gain = (albedo / mean_skin).astype(np.float32)
    bg_gain = (rng.uniform(0.8, 1.1) * rng.uniform(0.93, 1.07, 3)).astype(np.float32)
    head3 = head[..., None]
    coloured = photo * (1.0 + head3 * (gain - 1.0)) * (1.0 + (1.0 - head3) * (bg_gain - 1.0))

    # Warp: scale, aspect, rotation, small offset and optional mirror, sampled onto the padded crop.
    pad = int(np.ceil(2.0 * crop_size / 128.0)) + 2
    size = crop_size + 2 * pad
    px = FACE_BOX_PX / crop_size  # source pixels per output pixel
    scale = rng.uniform(0.92, 1.08)
    aspect = rng.uniform(0.95, 1.05)
    angle = np.deg2rad(rng.uniform(-6.0, 6.0))
    off = rng.uniform(-5.0, 5.0, 2)
    mirror = -1.0 if rng.random() < 0.5 else 1.0
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    u = (u - (size - 1) / 2.0) * px / scale * mirror
    v = (v - (size - 1) / 2.0) * px / (scale * aspect)
    ca, sa = np.cos(angle), np.sin(angle)
    src_r = FACE_CENTER_RC[0] + off[0] + sa * u + ca * v
    src_c = FACE_CENTER_RC[1] + off[1] + ca * u - sa * v
    coords = np.stack([src_r, src_c])
    sigma = max(0.0, 0.45 * (px / scale - 1.0))  # anti-alias before down-sampling
    face = np.empty((size, size, 3), dtype=np.float32)
    for ch in range(3):
        src = ndi.gaussian_filter(coloured[..., ch], sigma) if sigma > 0 else coloured[..., ch]
        face[..., ch] = ndi.map_coordinates(src, coords, order=1, mode="reflect")
    skin_w = ndi.map_coordinates(
        ndi.gaussian_filter(skin, sigma) if sigma > 0 else skin, coords, order=1, mode="constant"
    )
    return SubjectLook(
        face=np.clip(face, 0, 255),
        skin=np.clip(skin_w, 0, 1).astype(np.float32),
        pad=pad,
        skin_type=skin_type,
    )


# --------------------------------------------------------------------------- trial plan


@dataclass
class TrialPlan:
    """Everything about a trial except the heavy arrays; cheap to rebuild from the seed."""

    subject: int
    trial: int
    seed: int
    seconds: float
    crop_size: int
    n_frames: int
    n_radar: int
    phys: Physiology
    ppg_label: np.ndarray  # (n_frames,) float64
    skin_type: int
    # video
    pulse_pp_green: float
    motion_px: np.ndarray  # (n_frames, 2) (dy, dx)
    illum: np.ndarray  # (n_frames, 3)
    read_noise: float
    shot_gain: float
    # radar
    chest_range_m: float
    chest_bin: int
    chest_amp: float
    clutter: list[tuple[float, float, float]]  # (range m, amplitude, phase rad)
    thermal_sigma: float
    start_time: str
    end_time: str
    noise_seq: dict  # name -> SeedSequence for the heavy noise draws

    @property
    def name(self) -> str:
        return f"{self.subject}_{self.trial}"


def _beat_bin(range_m: float) -> float:
    return 2.0 * SLOPE_HZ_PER_S * range_m / C_M_PER_S * SAMPLES_PER_CHIRP / ADC_RATE_HZ


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def plan_trial(subject: int, trial: int, seconds: float, seed: int, crop_size: int) -> TrialPlan:
    n = int(round(VIDEO_FPS * seconds))
    n_radar = int(round(RADAR_FPS * seconds)) + EXTRA_RADAR_FRAMES
    ss_phys, ss_video, ss_radar, ss_label, ss_vnoise, ss_rnoise = np.random.SeedSequence(
        [seed, subject, trial]
    ).spawn(6)

    t0 = -PPG_OFFSET / VIDEO_FPS
    t_end = max((n - 1) / VIDEO_FPS, (n_radar - 1) / RADAR_FPS)
    phys = simulate_physiology(t_end - t0, np.random.default_rng(ss_phys), t0=t0)
    label_rng = np.random.default_rng(ss_label)
    t_label = (np.arange(n) - PPG_OFFSET) / VIDEO_FPS
    ppg_label = phys.ppg(t_label) + 0.003 * label_rng.standard_normal(n)

    skin_type = skin_type_of(subject, seed)
    vr = np.random.default_rng(ss_video)
    t_video = np.arange(n) / VIDEO_FPS
    pulse_pp = vr.uniform(*GREEN_PULSE_PP_RANGE) * PULSE_SCALE[skin_type]
    motion_amp = vr.uniform(0.3, 2.0) * crop_size / 128.0
    motion = np.stack([_slow(t_video, vr, 0.03, 0.25), _slow(t_video, vr, 0.03, 0.25)], axis=1)
    motion *= motion_amp * vr.uniform(0.5, 1.0, 2)[None, :]
    level = vr.uniform(0.88, 1.0)
    tint = 1.0 + vr.uniform(-0.03, 0.03, 3)
    drift = vr.uniform(0.01, 0.04) * _slow(t_video, vr, 0.005, 0.05, n=2)
    tint_drift = vr.uniform(0.0, 0.01) * _slow(t_video, vr, 0.005, 0.05, n=2)
    illum = level * tint[None, :] * (1.0 + drift[:, None] + tint_drift[:, None] * np.array([1.0, 0.0, -1.0]))
    read_noise = vr.uniform(1.0, 2.5)
    shot_gain = vr.uniform(0.01, 0.03)

    rr = np.random.default_rng(ss_radar)
    while True:  # keep the chest away from a bin boundary so its bin is unambiguous
        chest_r = rr.uniform(*CHEST_RANGE_M)
        frac = _beat_bin(chest_r) % 1.0
        if not 0.3 <= frac <= 0.7:
            break
    chest_bin = int(round(_beat_bin(chest_r)))
    chest_amp = rr.uniform(*RF_PEAK_RANGE) / SAMPLES_PER_CHIRP
    bin_m = chest_r / _beat_bin(chest_r)
    clutter = [(rr.uniform(1.6, 2.4) * bin_m, rr.uniform(1.5, 3.0) * chest_amp, rr.uniform(0, 2 * np.pi))]
    for _ in range(int(rr.integers(1, 3))):
        while True:
            b = rr.uniform(4.0, 40.0)
            if abs(b - _beat_bin(chest_r)) >= 3.0:
                break
        clutter.append((b * bin_m, rr.uniform(0.15, 0.5) * chest_amp, rr.uniform(0, 2 * np.pi)))
    thermal_sigma = rr.uniform(3.0, 10.0)
    start = (
        datetime(2022, 1, 3, 9, 0, 0, tzinfo=UTC)
        + timedelta(days=subject - 1, minutes=20 * (trial - 1))
        + timedelta(microseconds=int(rr.integers(0, 1_000_000)))
    )
    end = start + timedelta(seconds=n_radar / RADAR_FPS + rr.uniform(0.001, 0.02))

    return TrialPlan(
        subject=subject,
        trial=trial,
        seed=seed,
        seconds=float(seconds),
        crop_size=crop_size,
        n_frames=n,
        n_radar=n_radar,
        phys=phys,
        ppg_label=ppg_label,
        skin_type=skin_type,
        pulse_pp_green=float(pulse_pp),
        motion_px=motion,
        illum=illum.astype(np.float32),
        read_noise=float(read_noise),
        shot_gain=float(shot_gain),
        chest_range_m=float(chest_r),
        chest_bin=chest_bin,
        chest_amp=float(chest_amp),
        clutter=clutter,
        thermal_sigma=float(thermal_sigma),
        start_time=_iso(start),
        end_time=_iso(end),
        noise_seq={"video": ss_vnoise, "radar": ss_rnoise},
    )


def trial_truth(plan: TrialPlan) -> dict:
    t_video_end = plan.n_frames / VIDEO_FPS
    truth = plan.phys.truth(0.0, t_video_end, step_s=1.0)
    truth.update(
        {
            "subject": plan.subject,
            "trial": plan.trial,
            "seed": plan.seed,
            "skin_type": plan.skin_type,
            "chest_range_m": plan.chest_range_m,
            "chest_bin": plan.chest_bin,
            "chest_bin_float": _beat_bin(plan.chest_range_m),
            "clutter": [{"range_m": r, "amplitude": a} for r, a, _ in plan.clutter],
            "green_pulse_pp": plan.pulse_pp_green,
            "n_frames": plan.n_frames,
            "n_radar_frames": plan.n_radar,
            "crop_size": plan.crop_size,
            "seconds": plan.seconds,
        }
    )
    return truth


# --------------------------------------------------------------------------- rendering


def render_video(plan: TrialPlan, look: SubjectLook, out_dir: Path, workers: int | None = None) -> None:
    """Write rgbd_rgb_<i>.png for every frame of the trial into ``out_dir``."""
    s, pad = plan.crop_size, look.pad
    weights = (plan.pulse_pp_green * CHANNEL_WEIGHTS)[None, None, :]
    pulsing = look.face * look.skin[..., None] * weights  # DN change per unit pulse
    pulse = plan.phys.ppg_pulse(np.arange(plan.n_frames) / VIDEO_FPS).astype(np.float32)
    frame_seqs = plan.noise_seq["video"].spawn(plan.n_frames)

    def one(i: int) -> None:
        scene = look.face - pulse[i] * pulsing
        # Scene moved by (dy, dx): output pixel p samples the scene at p - d (bilinear).
        y0, x0 = pad - plan.motion_px[i, 0], pad - plan.motion_px[i, 1]
        iy, ix = int(np.floor(y0)), int(np.floor(x0))
        fy, fx = np.float32(y0 - iy), np.float32(x0 - ix)
        rows_a, rows_b = scene[iy : iy + s], scene[iy + 1 : iy + 1 + s]
        top = rows_a[:, ix : ix + s] * (1 - fx) + rows_a[:, ix + 1 : ix + 1 + s] * fx
        bot = rows_b[:, ix : ix + s] * (1 - fx) + rows_b[:, ix + 1 : ix + 1 + s] * fx
        clean = (top * (1 - fy) + bot * fy) * plan.illum[i][None, None, :]
        rng = np.random.default_rng(frame_seqs[i])
        sigma = np.sqrt(plan.read_noise**2 + plan.shot_gain * clean)
        img = clean + sigma * rng.standard_normal(clean.shape, dtype=np.float32)
        img = np.clip(img + 0.5, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(
            out_dir / f"rgbd_rgb_{i}.png", format="PNG", compress_level=PNG_COMPRESS_LEVEL
        )

    workers = workers or min(2, os.cpu_count() or 1)
    if workers <= 1:
        for i in range(plan.n_frames):
            one(i)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, range(plan.n_frames)))


def synth_adc(plan: TrialPlan) -> np.ndarray:
    """(n_radar, 256) complex128 beat signal in ADC units (not yet rounded)."""
    t_f = np.arange(plan.n_radar) / RADAR_FPS
    r = plan.chest_range_m + plan.phys.displacement(t_f)
    k = np.arange(SAMPLES_PER_CHIRP)[None, :]
    fb = 2.0 * SLOPE_HZ_PER_S * r / C_M_PER_S
    phase = 2 * np.pi * fb[:, None] * k / ADC_RATE_HZ + (4 * np.pi / WAVELENGTH_M) * r[:, None]
    adc = plan.chest_amp * np.exp(1j * phase)
    static = np.zeros(SAMPLES_PER_CHIRP, dtype=np.complex128)
    for rng_m, amp, ph in plan.clutter:
        fbc = 2.0 * SLOPE_HZ_PER_S * rng_m / C_M_PER_S
        static += amp * np.exp(1j * (2 * np.pi * fbc * k[0] / ADC_RATE_HZ + ph))
    adc += static[None, :]
    rng = np.random.default_rng(plan.noise_seq["radar"])
    noise = rng.standard_normal((plan.n_radar, SAMPLES_PER_CHIRP, 2))
    adc += plan.thermal_sigma * (noise[..., 0] + 1j * noise[..., 1])
    return adc


# --------------------------------------------------------------------------- trial I/O


def _rgb_name(plan: TrialPlan) -> str:
    return f"v_{plan.subject}_{plan.trial}"


def _check_existing(plan: TrialPlan, rgb_dir: Path, rf_dir: Path) -> None:
    """Raise FileExistsError unless the trial on disk matches ``plan``."""
    problems = []
    try:
        ppg = np.load(rgb_dir / "rgbd_ppg.npy")
        if ppg.shape != plan.ppg_label.shape or not np.array_equal(ppg, plan.ppg_label):
            problems.append("its PPG differs (other seed or seconds)")
    except (OSError, ValueError) as exc:
        problems.append(f"rgbd_ppg.npy unreadable ({exc})")
    n_png = sum(1 for p in rgb_dir.iterdir() if p.name.startswith("rgbd_rgb_") and p.suffix == ".png")
    if n_png != plan.n_frames:
        problems.append(f"it holds {n_png} frames, expected {plan.n_frames}")
    else:
        with Image.open(rgb_dir / "rgbd_rgb_0.png") as im:
            if im.size != (plan.crop_size, plan.crop_size):
                problems.append(f"its frames are {im.size}, expected crop_size {plan.crop_size}")
    for f in ("rf.pkl", "vital_dict.npy"):
        if not (rf_dir / f).is_file():
            problems.append(f"{f} missing")
    if problems:
        raise FileExistsError(
            f"{rgb_dir} / {rf_dir} already exist but do not match this run: "
            + "; ".join(problems)
            + ". Use a fresh output folder."
        )


def write_trial(out: Path, plan: TrialPlan, look: SubjectLook) -> bool:
    """Write one trial atomically; returns False if a matching complete trial was already there."""
    rgb_dir = out / "rgb_files" / _rgb_name(plan)
    rf_dir = out / "rf_files" / plan.name
    if rgb_dir.is_dir() and rf_dir.is_dir():
        _check_existing(plan, rgb_dir, rf_dir)
        return False
    for leftover in (rgb_dir, rf_dir):  # half-renamed trial from an interrupted run
        if leftover.exists():
            shutil.rmtree(leftover)
    tmp = out / TMP_DIR / plan.name
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp_rgb, tmp_rf = tmp / "rgb", tmp / "rf"
    tmp_rgb.mkdir(parents=True)
    tmp_rf.mkdir(parents=True)

    render_video(plan, look, tmp_rgb)
    np.save(tmp_rgb / "rgbd_ppg.npy", plan.ppg_label.astype(np.float64))
    capture = encode_capture(synth_adc(plan), plan.start_time, plan.end_time)
    write_rf_pkl(tmp_rf / "rf.pkl", capture)
    vital = np.empty((), dtype=object)
    vital[()] = {"rgbd": {"NOM_PLETHWaveExport": plan.ppg_label.astype(np.float64)}}
    np.save(tmp_rf / "vital_dict.npy", vital, allow_pickle=True)

    rgb_dir.parent.mkdir(parents=True, exist_ok=True)
    rf_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp_rf, rf_dir)
    os.replace(tmp_rgb, rgb_dir)
    tmp.rmdir()
    return True


def make_folds(subjects: int, trials: int, seed: int) -> dict:
    """Subject-level split {0: {"train", "val", "test"}} of "v_<s>_<t>" names (~60/20/20)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0, 1]))
    order = [int(s) for s in rng.permutation(np.arange(1, subjects + 1))]
    if subjects >= 3:
        n_test = n_val = max(1, int(round(0.2 * subjects)))
    else:  # 2 subjects: one for training, one for testing; 1 subject: training only
        n_test, n_val = subjects - 1, 0
    split = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
    return {
        0: {
            k: [f"v_{s}_{t}" for s in sorted(split[k]) for t in range(1, trials + 1)]
            for k in ("train", "val", "test")
        }
    }


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def synth_equipleth(
    out: str | Path,
    subjects: int = 6,
    trials: int = 2,
    seconds: float = 30.0,
    seed: int = 0,
    crop_size: int = 128,
    progress: bool = True,
):
    """Generate a synthetic EquiPleth dataset under ``out``; returns one DataFrame row per trial.

    Columns: subject, trial, rgb_dir, rf_dir, skin_type, mean_hr_bpm, chest_bin, n_frames,
    n_radar_frames. See the module docstring for the layout, models and rerun behaviour.
    """
    import pandas as pd
    from tqdm import tqdm

    if subjects < 1 or trials < 1:
        raise ValueError("subjects and trials must be >= 1")
    if seconds * VIDEO_FPS < PPG_OFFSET + 1:
        raise ValueError(f"seconds must give more than {PPG_OFFSET} video frames")
    if crop_size < 16:
        raise ValueError("crop_size must be >= 16")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    rows, truth = [], {}
    pairs = [(s, t) for s in range(1, subjects + 1) for t in range(1, trials + 1)]
    with tqdm(total=len(pairs), desc="synth EquiPleth", unit="trial", disable=not progress) as bar:
        for subject in range(1, subjects + 1):
            look = None
            for trial in range(1, trials + 1):
                plan = plan_trial(subject, trial, seconds, seed, crop_size)
                rgb_dir = out / "rgb_files" / _rgb_name(plan)
                rf_dir = out / "rf_files" / plan.name
                if not (rgb_dir.is_dir() and rf_dir.is_dir()) and look is None:
                    look = make_subject_look(subject, seed, crop_size)
                write_trial(out, plan, look)
                tr = trial_truth(plan)
                truth[_rgb_name(plan)] = tr
                rows.append(
                    {
                        "subject": subject,
                        "trial": trial,
                        "rgb_dir": str(rgb_dir),
                        "rf_dir": str(rf_dir),
                        "skin_type": plan.skin_type,
                        "mean_hr_bpm": tr["mean_hr_bpm"],
                        "chest_bin": plan.chest_bin,
                        "n_frames": plan.n_frames,
                        "n_radar_frames": plan.n_radar,
                    }
                )
                bar.update(1)
    tmp_root = out / TMP_DIR
    if tmp_root.is_dir() and not any(tmp_root.iterdir()):
        tmp_root.rmdir()

    fitz = {f"v_{s}": skin_type_of(s, seed) for s in range(1, subjects + 1)}
    _atomic_bytes(out / "fitzpatrick_labels.pkl", pickle.dumps(fitz, protocol=4))
    _atomic_bytes(out / "demo_fold.pkl", pickle.dumps(make_folds(subjects, trials, seed), protocol=4))
    doc = {
        "_note": (
            "Ground truth of the rpm synthetic EquiPleth generator. NOT part of the real EquiPleth "
            "layout; loaders of the real dataset must not rely on it."
        ),
        "convention": {
            "video_fps": VIDEO_FPS,
            "radar_fps": RADAR_FPS,
            "ppg_offset": PPG_OFFSET,
            "ppg_sample_time_s": "(j - 25) / 30",
            "video_frame_time_s": "i / 30",
            "radar_frame_time_s": "f / 120",
            "rates": "PPG timeline, averaged over the video span [0, n/30] s",
        },
        "args": {
            "subjects": subjects,
            "trials": trials,
            "seconds": float(seconds),
            "seed": seed,
            "crop_size": crop_size,
        },
        "trials": truth,
    }
    _atomic_bytes(out / TRUTH_FILE, json.dumps(doc, indent=1).encode())
    return pd.DataFrame(rows)
