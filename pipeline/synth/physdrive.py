"""Synthetic PhysDrive dataset (car cabin, RGB video + mmWave radar + BVP) in a PhysDrive-like layout.

CONTRACT (what the PhysDrive reader codes against; the PhysDrive release, Wang et al., NeurIPS 2025)::

    <out>/RGB and IR/<SUBJ>/<SESSION>/RGB.mp4      full-frame H.264 (libx264, yuv420p, 2 Mbit/s), 640x480,
                                                   30 fps, written with PyAV; n = round(30 * seconds) frames
    <out>/RGB and IR/<SUBJ>/<SESSION>/Label/BVP.mat
                                                   key 'BVP': 1-D float64, 60 Hz, exactly 2 n samples (the
                                                   video's duration; sample j at j / 60 s after video
                                                   frame 0). Readers resample it to frame times.
    <out>/mmWave/<SUBJ>/<SUBJ>_<kk>/mmwave.mat     key 'mmwave': float32 (n_frames, 2, 8, 16, 8) =
                                                   (frames, real/imag, 8 Doppler, 16 angle, 8 range) at
                                                   20 Hz; 600-frame (30 s) clips, the last one shorter
                                                   (kept if > 220 frames, or if it is the only clip);
                                                   kk = 00, 01, ... numbered per subject across its
                                                   sessions in session order
    <out>/pairing.csv                              one row per radar clip: subject, session, clip
                                                   (AFH1_00), video_start (ISO, ms precision,
                                                   '%Y-%m-%dT%H:%M:%S.mmm'), radar_start (ISO, WHOLE
                                                   seconds, '%Y-%m-%dT%H:%M:%S', like the real LogFile),
                                                   radar_fps (20)
    <out>/synth_truth.json                         ground truth; NOT part of the dataset
    <out>/.rpm_synth.json                          marks the folder as synth's (pipeline.synth.target;
                                                   written before any data); NOT part of the dataset

Codes. Subject ``<car><sex><illum><n>``: car A/B/C, sex M/F, illumination Z (noon), H (dusk and
early morning), W (night), Y (rain, cloudy); subject i (0-based) gets car "ABC"[i % 3], sex
"MF"[i % 2], illumination "ZWHY"[i % 4], and n numbers subjects with the same prefix. Session
``<road><motion>``: road A (flat, open), B (flat, congested), C (bumpy, congested); motion S
(stationary) or T (talking). Subject i records the first ``sessions`` of AS, AT, BS, BT, CS, CT
rotated by 2 i (subject 0: AS, AT, ...; subject 1: BS, BT, ...).

Conditions follow the codes: illumination from the subject (noon / dusk / night with passing
streetlights / rain with drop shadows and the wiper), talking and moderate head motion in T
sessions, camera and chest vibration growing from road A to C, road bumps on road C; Fitzpatrick
types mostly 2-4. Radar corruption episodes (body motion with range migration, interference from
other cars' radars, occlusion by an arm) occur at about 1 per minute.

Video: the reflectance model of :mod:`pipeline.synth.scene`. The cabin (roof liner, windows showing
the outside light, B-pillar, headrest, seat belt, dashboard) and the driver's body are a static
background that shakes with the camera (vehicle vibration, whole pixels); the head (skimage's
astronaut, recoloured per subject, face ~85-100 px high) is warped per frame with its rigid motion
and talking deformation and blended in with a soft alpha. MTCNN finds the face.

Radar (TI IWR1843 as PhysDrive configures it): range bin c fs / (2 S N) = 0.0781 m (60 MHz/us, 128
samples at 4 Msps), Doppler bin lambda / (2 M Tc) with M = 128 loops and Tc = 3 x 85 us, 8 virtual
azimuth elements at lambda/2 with a 32-point angle FFT. The processed cube is synthesised in closed
form: each point scatterer (range R, radial velocity v, angle theta, complex amplitude
A exp(j 4 pi R / lambda)) contributes the product of its windowed range (Hann, 128), Doppler
(Hamming, 128 loops, fftshift) and angle (32-point) responses at the kept bins. The chest is a
scatterer at 0.45-0.9 m with R(t) = R0 + chest displacement (breathing + the ballistocardiographic
pulse, same instantaneous rate as the BVP, leading it by the pulse-transit time) + vibration; the
crop (8 Doppler around 0, 16 angle, 8 range) is centred on the chest's bin with a +-1 bin picking
error, so the chest sits in one angle and one range bin. Static clutter is taken as removed (the
PhysDrive code subtracts the mean over chirps); a weak residual remains, plus thermal noise. Finally the
amplitude is z-scored over the whole clip and the phase kept (PhysDrive's normalisation).

Clocks. Video frame i is at i / 30 s on the session's video clock. The radar recording truly starts
at ``true_offset_s`` (uniform in -1..1 s) on that clock and clip k frame m is at
true_offset_s + (600 k + m) / 20. pairing.csv's radar_start is the radar PC's log time, truncated to
whole seconds, so radar_start - video_start differs from the truth by ``sync_error_s`` in (-1, 1).

Determinism: all draws come from generators seeded by (seed, subject, session); the same arguments
give byte-identical .mat, .csv and .json files; the mp4 is encoded with fixed x264 settings
(single-threaded), which is also byte-identical on the same PyAV/libx264 build.

Interrupted runs and reruns (:mod:`pipeline.synth.driver`): each session is written to
``out/.synth_tmp/`` and renamed into place (its radar clips, then its video folder). On a rerun a
session whose clip and video folders all exist is verified (same BVP, video and clip files present)
and skipped; a partly renamed one is regenerated; one made with other arguments raises
``FileExistsError`` instead of mixing datasets. pairing.csv and the truth are rewritten (atomically)
every run.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import scipy.io
from scipy import ndimage as ndi

from pipeline.synth.confounders import (
    Confounders,
    apply_video,
    check_difficulty,
    confounder_rng,
    contact_label,
    face_pulse,
    plan_confounders,
    range_amplitude,
    sway,
    vehicle_vibration,
)
from pipeline.synth.driver import Recording, RunRules, finish, start, write_recording
from pipeline.synth.physio import Physiology, simulate_physiology
from pipeline.synth.scene import (
    FACE_HEIGHT_PX,
    Conditions,
    Renderer,
    Texture,
    Track,
    band_noise,
    child_seq,
    envelope,
    make_texture,
    make_track,
    plan_events,
    smooth_noise,
)

VIDEO_FPS = 30.0
BVP_FS = 60.0
RADAR_FPS = 20.0
CLIP_FRAMES = 600
MIN_LAST_CLIP = 220
FRAME_HW = (480, 640)
SESSIONS = ("AS", "AT", "BS", "BT", "CS", "CT")
ILLUM_CODES = {"Z": "noon", "H": "dusk", "W": "night", "Y": "rain"}
SIZES = {
    "small": {"subjects": 2, "sessions": 2, "seconds": 20.0},
    "full": {"subjects": 48, "sessions": 6, "seconds": 300.0},  # PhysDrive: 48 subjects, ~24 h
}
# H.264 rate control of an in-car camera: a fixed bitrate with a one-second VBV buffer, as camera and
# dashcam hardware encoders record, not constant quality. The PhysDrive camera's settings are not
# published by the PhysDrive release; 2 Mbit/s is a typical 640x480 30 fps recording rate. The earlier
# constant-quality CRF 20 spent only 0.2-0.6 Mbit/s on the mostly static synthetic cabin, and its
# skipped macroblocks froze the sub-DN pulse in stationary sessions (measured: POS MAE 56 stationary
# vs 20 talking, the reverse of the published order).
VIDEO_BITRATE_BPS = 2_000_000
# Radar: PhysDrive's IWR1843 profile (77 GHz, 60 MHz/us, 128 samples at 4 Msps, 20 Hz frames).
C_M_PER_S = 299_792_458.0
WAVELENGTH_M = C_M_PER_S / 77e9
RANGE_BIN_M = C_M_PER_S * 4e6 / (2 * 60e12 * 128)
N_SAMPLES, N_LOOPS, N_VRX, N_ANGLE_FFT = 128, 128, 8, 32
TC_S = 3 * (20e-6 + 65e-6)
DOPPLER_BIN_MPS = WAVELENGTH_M / (2 * N_LOOPS * TC_S)
CROP_D, CROP_A, CROP_R = 8, 16, 8
VIB_RMS_M = {"A": 0.015e-3, "B": 0.025e-3, "C": 0.05e-3}  # chest-radar vibration, 1-8 Hz
CAM_VIB_PX = {"A": 0.3, "B": 0.5, "C": 1.0}  # camera shake rms at a 100 px face
RADAR_EVENT_RATE_PER_MIN = 1.0
RADAR_EVENT_KINDS = {"body_motion": 0.4, "interference": 0.35, "occlusion": 0.25}
BUMP_RATE_PER_MIN = 3.0
CAR_INTERIOR = {"A": (120.0, 110.0, 95.0), "B": (85.0, 85.0, 92.0), "C": (48.0, 46.0, 50.0)}
RULES = RunRules(
    "physdrive",
    SIZES,
    limits={"subjects": (1, math.inf), "sessions": (1, len(SESSIONS)), "seconds": (2.0, math.inf)},
)


# --------------------------------------------------------------------------- codes


def subject_codes(subjects: int) -> list[str]:
    codes, seen = [], {}
    for i in range(subjects):
        prefix = "ABC"[i % 3] + "MF"[i % 2] + "ZWHY"[i % 4]
        seen[prefix] = seen.get(prefix, 0) + 1
        codes.append(f"{prefix}{seen[prefix]}")
    return codes


def session_codes(index: int, sessions: int) -> list[str]:
    start = (2 * index) % len(SESSIONS)
    return [SESSIONS[(start + j) % len(SESSIONS)] for j in range(sessions)]


# --------------------------------------------------------------------------- subject


@dataclass
class Driver:
    code: str
    index: int
    skin_type: int
    face_rc: tuple[float, float]  # face centre in the frame at rest
    face_px: float  # face height in output px
    background: np.ndarray  # (H + 2m, W + 2m, 3) float32 albedo: cabin + static body
    head: Texture
    box: tuple[int, int, int, int]


def _cabin(rng: np.random.Generator, car: str, face_rc, face_px, margin: int) -> np.ndarray:
    h, w = FRAME_HW[0] + 2 * margin, FRAME_HW[1] + 2 * margin
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy -= margin
    xx -= margin
    col = np.array(CAR_INTERIOR[car], dtype=np.float32) * rng.uniform(0.9, 1.1)
    img = np.broadcast_to(col, (h, w, 3)).copy()
    img *= (1.0 + 0.15 * (1.0 - yy / FRAME_HW[0]))[..., None]  # light falls off downwards
    outside = np.array([200.0, 210.0, 225.0], dtype=np.float32)
    scenery = 1.0 + 0.25 * ndi.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), 12.0) * 8
    rear = (yy > 55) & (yy < 175) & (xx > 150) & (xx < 455)
    side = (yy > 60) & (yy < 300) & (xx > 485) & (xx < 635) & (yy < 60 + (xx - 485) * 2.5)
    win = rear | side
    img[win] = outside * np.clip(scenery[win], 0.5, 1.3)[:, None]
    img[yy < 45] = col * 1.35  # roof liner
    img[(xx > 455) & (xx < 485) & (yy > 40)] = col * 0.45  # B-pillar
    cy, cx = face_rc
    rest = ((yy - (cy - 0.25 * face_px)) / (0.8 * face_px)) ** 4 + ((xx - cx) / (0.85 * face_px)) ** 4 <= 1
    img[rest] = col * 0.6  # headrest
    img[yy > 430] = col * 0.35  # dashboard / steering column
    fabric = 1.0 + 0.04 * rng.standard_normal((h, w, 1)).astype(np.float32)
    return np.clip(img * fabric, 0, 255).astype(np.float32)


def make_driver(index: int, code: str, seed: int) -> Driver:
    rng = np.random.default_rng(np.random.SeedSequence([seed, index + 1, 0]))
    skin_type = int(rng.choice([1, 2, 3, 4, 5, 6], p=[0.05, 0.25, 0.35, 0.25, 0.1, 0.0]))
    face_px = float(rng.uniform(85.0, 100.0))
    face_rc = (float(rng.uniform(185.0, 215.0)), float(rng.uniform(300.0, 350.0)))
    margin = 8
    bg = _cabin(rng, code[0], face_rc, face_px, margin)
    look_seed = np.random.SeedSequence([seed, index + 1, 1])
    src_px = FACE_HEIGHT_PX / face_px
    # Static body (person alpha) composited into the cabin, on the whole padded frame.
    body = make_texture(
        np.random.default_rng(look_seed),
        skin_type,
        bg.shape[:2],
        src_px,
        (face_rc[0] + margin, face_rc[1] + margin),
    )
    a = body.stack[..., 7:8]
    bg = a * body.stack[..., :3] + (1 - a) * bg
    belt = np.zeros(bg.shape[:2], dtype=bool)
    yy, xx = np.mgrid[0 : bg.shape[0], 0 : bg.shape[1]]
    d = (xx - (face_rc[1] + margin + 0.9 * face_px)) + 0.9 * (yy - (face_rc[0] + margin + 0.9 * face_px))
    belt = (np.abs(d) < 0.18 * face_px) & (yy > face_rc[0] + margin + 0.75 * face_px)
    bg[belt] = 35.0
    # Moving head (head alpha) on a box around the face.
    y0 = int(max(0, face_rc[0] - 1.2 * face_px))
    y1 = int(min(FRAME_HW[0], face_rc[0] + 1.0 * face_px))
    x0 = int(max(0, face_rc[1] - 1.0 * face_px))
    x1 = int(min(FRAME_HW[1], face_rc[1] + 1.0 * face_px))
    head = make_texture(
        np.random.default_rng(look_seed),
        skin_type,
        (y1 - y0, x1 - x0),
        src_px,
        (face_rc[0] - y0, face_rc[1] - x0),
        alpha="head_alpha",
    )
    return Driver(code, index, skin_type, face_rc, face_px, bg.astype(np.float32), head, (y0, y1, x0, x1))


# --------------------------------------------------------------------------- session plan


@dataclass
class SessionPlan:
    subject: str
    session: str
    index: int  # subject index
    seed: int
    seconds: float
    n_frames: int
    n_radar: int
    conditions: Conditions
    phys: Physiology
    track: Track
    radar_events: list[dict]
    true_offset_s: float
    video_start: datetime
    radar_log_start: datetime  # whole seconds
    chest_range_m: float
    chest_sin: float
    crop_origin: tuple[int, int]  # (angle bin, range bin) of the crop's first cell
    chest_amp: float
    noise_sigma: float
    vib: np.ndarray  # (n_radar,) chest vibration, m
    noise_seq: dict
    confounders: Confounders | None = None  # the realistic world's (pipeline.synth.confounders); None: easy

    @property
    def clip_lengths(self) -> list[int]:
        full, rest = divmod(self.n_radar, CLIP_FRAMES)
        lengths = [CLIP_FRAMES] * full
        if rest > MIN_LAST_CLIP or not lengths:
            lengths.append(rest)
        return lengths


def plan_session(
    index: int, code: str, session: str, s_idx: int, seconds: float, seed: int, difficulty: str = "realistic"
) -> SessionPlan:
    """Draw everything about one session; ``difficulty`` "realistic" adds the confounders of
    :mod:`pipeline.synth.confounders` (their own seed stream: all else equals the "easy" twin)."""
    check_difficulty(difficulty)
    ss = np.random.SeedSequence([seed, index + 1, 100 + SESSIONS.index(session)])
    ss_phys, ss_track, ss_radar, ss_vnoise, ss_rnoise, ss_ev = ss.spawn(6)
    n = int(round(VIDEO_FPS * seconds))
    n_radar = int(np.floor(RADAR_FPS * seconds))
    er = np.random.default_rng(ss_ev)
    true_offset = float(er.uniform(-1.0, 1.0))
    video_start = datetime(2023, 6, 5, 7, 30) + timedelta(days=index, minutes=40 * s_idx)
    video_start += timedelta(milliseconds=int(er.integers(0, 60_000)))
    skew = timedelta(microseconds=int(er.integers(0, 1_000_000)))
    true_radar = video_start + timedelta(seconds=true_offset)
    log = (true_radar + skew).replace(microsecond=0)

    road, motion = session[0], session[1]
    driver_skin = _skin_of(index, seed)
    cond = Conditions(
        skin_type=driver_skin,
        illumination=ILLUM_CODES[code[2]],
        motion="moderate" if motion == "T" else "stationary",
        talking=motion == "T",
        vibration_px=CAM_VIB_PX[road],
    )
    t_lo = min(0.0, true_offset) - 0.2
    t_hi = max(n / VIDEO_FPS, true_offset + n_radar / RADAR_FPS) + 0.2
    phys = simulate_physiology(t_hi - t_lo, np.random.default_rng(ss_phys), t0=t_lo)
    span = n_radar / RADAR_FPS
    radar_events = plan_events(span, er, RADAR_EVENT_RATE_PER_MIN, RADAR_EVENT_KINDS, (1.5, 4.0))
    radar_events = [
        {**e, "start_s": round(e["start_s"] + true_offset, 3), "end_s": round(e["end_s"] + true_offset, 3)}
        for e in radar_events
    ]
    if road == "C":
        bumps = plan_events(n / VIDEO_FPS, er, BUMP_RATE_PER_MIN, {"road_bump": 1.0}, (0.5, 1.5), gap_s=1.0)
        radar_events = sorted(radar_events + bumps, key=lambda e: e["start_s"])
    face_px = FACE_HEIGHT_PX  # scaled below by the driver's face size in render_session
    track = make_track(cond, n, VIDEO_FPS, np.random.default_rng(ss_track), face_px, episodes=radar_events)
    conf = None
    if difficulty == "realistic":
        key = (index + 1, 100 + SESSIONS.index(session))
        conf = plan_confounders(
            "physdrive", confounder_rng(seed, *key), (0.0, n / VIDEO_FPS), phys, road, cond.illumination
        )
        phys = phys.with_breathing(conf.params["inspiratory_fraction"])
        apply_video(conf, track, phys, np.arange(n) / VIDEO_FPS, face_px, crop=False)
    rr = np.random.default_rng(ss_radar)
    chest_r = float(rr.uniform(0.45, 0.9))
    chest_sin = float(np.sin(np.deg2rad(rr.uniform(-25.0, 25.0))))
    a_bin = int(round(N_ANGLE_FFT / 2 * chest_sin))
    r_bin = int(round(chest_r / RANGE_BIN_M))
    crop_origin = (
        a_bin - CROP_A // 2 + int(rr.integers(-1, 2)),
        r_bin - CROP_R // 2 + int(rr.integers(-1, 2)),
    )
    vib = VIB_RMS_M[road] * band_noise(n_radar, RADAR_FPS, 1.0, 8.0, rr)
    chest_amp = float(rr.uniform(0.5, 1.0))
    if conf is not None:
        vib = vehicle_vibration(conf, n_radar, RADAR_FPS) + sway(conf, n_radar, RADAR_FPS)
        chest_amp = range_amplitude(chest_amp, chest_r)
    return SessionPlan(
        subject=code,
        session=session,
        index=index,
        seed=seed,
        seconds=float(seconds),
        n_frames=n,
        n_radar=n_radar,
        conditions=cond,
        phys=phys,
        track=track,
        radar_events=radar_events,
        true_offset_s=true_offset,
        video_start=video_start,
        radar_log_start=log,
        chest_range_m=chest_r,
        chest_sin=chest_sin,
        crop_origin=crop_origin,
        chest_amp=chest_amp,
        noise_sigma=float(10 ** (-rr.uniform(26.0, 34.0) / 20.0)),
        vib=vib,
        noise_seq={"video": ss_vnoise, "radar": ss_rnoise},
        confounders=conf,
    )


def _skin_of(index: int, seed: int) -> int:
    rng = np.random.default_rng(np.random.SeedSequence([seed, index + 1, 0]))
    return int(rng.choice([1, 2, 3, 4, 5, 6], p=[0.05, 0.25, 0.35, 0.25, 0.1, 0.0]))


# --------------------------------------------------------------------------- radar cube


def _responses(beta: np.ndarray, bins: np.ndarray, n: int, window: np.ndarray) -> np.ndarray:
    """(F, len(bins)) windowed DFT response of exp(j 2 pi beta m / n), m < len(window), at ``bins``."""
    m = np.arange(window.size)
    ph = 2 * np.pi * (beta[:, None, None] - bins[None, :, None]) * m[None, None, :] / n
    return (np.exp(1j * ph) * window[None, None, :]).sum(-1) / window.sum()


def _point_cube(amp, rng_m, vel, sin_t, a0: int, r0: int) -> np.ndarray:
    """(F, 8, 16, 8) complex cube of one point scatterer per frame (closed-form responses)."""
    hann = np.hanning(N_SAMPLES + 2)[1:-1]
    hamm = np.hamming(N_LOOPS)
    hr = _responses(rng_m / RANGE_BIN_M, np.arange(r0, r0 + CROP_R), N_SAMPLES, hann)
    hd = _responses(vel / DOPPLER_BIN_MPS, np.arange(-CROP_D // 2, CROP_D // 2), N_LOOPS, hamm)
    ha = _responses(N_ANGLE_FFT / 2 * sin_t, np.arange(a0, a0 + CROP_A), N_ANGLE_FFT, np.ones(N_VRX))
    carrier = amp * np.exp(1j * 4 * np.pi * rng_m / WAVELENGTH_M)
    return np.einsum("f,fd,fa,fr->fdar", carrier, hd, ha, hr)


def synth_radar(plan: SessionPlan) -> np.ndarray:
    """(n_radar, 8, 16, 8) complex64 processed cube of the whole recording (before normalisation)."""
    n = plan.n_radar
    t = plan.true_offset_s + np.arange(n) / RADAR_FPS
    crng = np.random.default_rng(child_seq(plan.noise_seq["radar"], 0))
    rng = np.random.default_rng(plan.noise_seq["radar"])
    dt = 1e-3
    disp = plan.phys.displacement(t) + plan.vib
    vel = (plan.phys.displacement(t + dt) - plan.phys.displacement(t - dt)) / (2 * dt)
    r = plan.chest_range_m + disp
    sin_t = np.full(n, plan.chest_sin)
    amp = np.full(n, plan.chest_amp)
    a0, r0 = plan.crop_origin
    extra = np.zeros((n, CROP_D, CROP_A, CROP_R), dtype=np.complex128)
    for ev in plan.radar_events:
        env = envelope(t, ev["start_s"], ev["end_s"], 0.3)
        if not env.any():
            continue
        if ev["kind"] == "body_motion":
            move = crng.uniform(0.02, 0.06) * env * band_noise(n, RADAR_FPS, 0.1, 2.0, crng)
            r = r + move
            vel = vel + np.gradient(move, 1 / RADAR_FPS)
            sin_t = sin_t + 0.08 * env * band_noise(n, RADAR_FPS, 0.1, 1.0, crng)
            amp = amp * (1.0 + 0.4 * env * np.clip(smooth_noise(n, RADAR_FPS, 1.0, crng), -2, 2) / 2)
        elif ev["kind"] == "road_bump":
            jolt = crng.uniform(0.5e-3, 2e-3) * env * band_noise(n, RADAR_FPS, 1.0, 6.0, crng)
            r = r + jolt
            vel = vel + np.gradient(jolt, 1 / RADAR_FPS)
        elif ev["kind"] == "occlusion":
            amp = amp * (1.0 - (1.0 - crng.uniform(0.03, 0.15)) * env)
            near = crng.uniform(0.05, 0.2)
            r_occ = plan.chest_range_m - near + 0.002 * smooth_noise(n, RADAR_FPS, 0.5, crng)
            r_occ = r_occ + crng.uniform(0.3e-3, 1e-3) * band_noise(n, RADAR_FPS, 0.5, 4.0, crng)
            extra += _point_cube(
                crng.uniform(0.3, 0.8) * plan.chest_amp * env, r_occ, np.zeros(n), sin_t + 0.05, a0, r0
            )
        elif ev["kind"] == "interference":
            hit = (env > 0.5) & (crng.random(n) < crng.uniform(0.3, 0.7))
            level = crng.uniform(0.3, 1.5) * plan.chest_amp
            noise = crng.standard_normal((n, CROP_D, CROP_A, CROP_R, 2)) @ np.array([1.0, 1j])
            extra += (hit * level)[:, None, None, None] * noise
    cube = _point_cube(amp, r, vel, sin_t, a0, r0) + extra
    if plan.confounders is not None:  # multipath: the chest's echo by a static surface (seat, wheel)
        path, rel, scale, ph0 = plan.confounders.params["multipath"]
        r_mp = plan.chest_range_m + path + scale * (r - plan.chest_range_m)
        amp_mp = rel * amp * np.exp(1j * ph0)
        cube += _point_cube(amp_mp, r_mp, scale * vel, sin_t + 0.03, a0, r0)
    # Residual static clutter (after PhysDrive's clutter removal) at two random cells.
    for _ in range(2):
        d, a, rb = CROP_D // 2, int(crng.integers(0, CROP_A)), int(crng.integers(0, CROP_R))
        cube[:, d, a, rb] += (
            crng.uniform(0.02, 0.08) * plan.chest_amp * np.exp(1j * crng.uniform(0, 2 * np.pi))
        )
    noise = rng.standard_normal((n, CROP_D, CROP_A, CROP_R, 2)) @ np.array([1.0, 1j])
    cube += plan.noise_sigma * plan.chest_amp * noise
    return cube.astype(np.complex64)


def normalise_clip(cube: np.ndarray) -> np.ndarray:
    """PhysDrive's normalisation: z-score the amplitude over the clip, keep the phase -> (F, 2, 8, 16, 8)."""
    amp = np.abs(cube).astype(np.float64)
    z = (amp - amp.mean()) / max(float(amp.std()), 1e-12)
    out = z * np.exp(1j * np.angle(cube))
    return np.stack([out.real, out.imag], axis=1).astype(np.float32)


def chest_cell(plan: SessionPlan) -> tuple[int, int, int]:
    """(Doppler, angle, range) index of the chest inside the crop (at rest)."""
    a = int(round(N_ANGLE_FFT / 2 * plan.chest_sin)) - plan.crop_origin[0]
    r = int(round(plan.chest_range_m / RANGE_BIN_M)) - plan.crop_origin[1]
    return CROP_D // 2, a, r


# --------------------------------------------------------------------------- video


def render_session_frames(plan: SessionPlan, driver: Driver):
    """Yield the session's (480, 640, 3) uint8 RGB frames."""
    tr = plan.track
    k = driver.face_px / FACE_HEIGHT_PX  # plan tracks are drawn for a 110 px face
    scaled = Track(**{**tr.__dict__, "ty": tr.ty * k, "tx": tr.tx * k, "shake": tr.shake * k})
    t = np.arange(plan.n_frames) / VIDEO_FPS
    pulse = plan.phys.ppg_pulse(t) if plan.confounders is None else face_pulse(plan.confounders, plan.phys, t)
    r = Renderer(
        driver.head,
        scaled,
        pulse,
        FRAME_HW,
        driver.face_rc,
        1.0,
        background=driver.background,
        box=driver.box,
        noise_seq=plan.noise_seq["video"],
    )
    for i in range(plan.n_frames):
        yield r.frame(i)


def write_mp4(path: Path, frames, n: int) -> None:
    import av

    from pipeline.video import prefetch

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(VIDEO_FPS))
        stream.width, stream.height = FRAME_HW[1], FRAME_HW[0]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = VIDEO_BITRATE_BPS
        kbps = f"{VIDEO_BITRATE_BPS // 1000}k"
        stream.options = {"maxrate": kbps, "bufsize": kbps, "preset": "veryfast", "threads": "1"}
        for img in prefetch(frames, 4, name="render"):  # numpy rendering overlaps the x264 encode
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def face_boxes(plan: SessionPlan, driver: Driver, step_s: float = 1.0) -> list[list[float]]:
    """[t, y0, x0, y1, x1] face boxes (forehead to chin, square) sampled every ``step_s``."""
    tr = plan.track
    k = driver.face_px / FACE_HEIGHT_PX
    out = []
    for i in range(0, plan.n_frames, int(round(step_s * VIDEO_FPS))):
        cy = driver.face_rc[0] + k * (tr.ty[i] + tr.shake[i, 0])
        cx = driver.face_rc[1] + k * (tr.tx[i] + tr.shake[i, 1])
        half = 0.5 * driver.face_px * tr.scale[i] * 1.1
        out.append(
            [
                round(i / VIDEO_FPS, 3),
                *(round(float(v), 1) for v in (cy - half, cx - half, cy + half, cx + half)),
            ]
        )
    return out


# --------------------------------------------------------------------------- I/O


def _iso_ms(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}"


def _iso_s(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S")


def mat_bytes(key: str, value: np.ndarray) -> bytes:
    """A MAT 5 file holding ``value`` under ``key``, uncompressed, with a constant header (the
    header's creation timestamp would make the bytes differ run to run)."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, {key: value}, do_compression=False, oned_as="row")
    header = b"MATLAB 5.0 MAT-file, written by rpm synth (scipy.io)".ljust(116, b" ")
    return header + buf.getvalue()[116:]


def session_bvp(plan: SessionPlan) -> np.ndarray:
    """(2 n_frames,) float64 BVP label at 60 Hz, as BVP.mat stores it (contact-PPG noise included)."""
    t_bvp = np.arange(2 * plan.n_frames) / BVP_FS
    # The child after the renderer's one-per-frame noise streams (and the one before it), so the label
    # is the same whether or not the video is rendered in this run.
    bvp_rng = np.random.default_rng(child_seq(plan.noise_seq["video"], plan.n_frames + 1))
    clean = (
        plan.phys.ppg(t_bvp)
        if plan.confounders is None
        else contact_label(plan.confounders, plan.phys, t_bvp, BVP_FS)
    )
    return (clean + 0.003 * bvp_rng.standard_normal(t_bvp.size)).astype(np.float64)


def clip_names(plan: SessionPlan, first_clip: int) -> list[str]:
    """The session's radar clips ``<SUBJ>_<kk>``, numbered on from ``first_clip`` (per subject)."""
    return [f"{plan.subject}_{first_clip + j:02d}" for j in range(len(plan.clip_lengths))]


def pairing_rows(plan: SessionPlan, first_clip: int) -> list[dict]:
    """The session's pairing.csv rows, one per radar clip."""
    rows, start = [], 0
    for clip, length in zip(clip_names(plan, first_clip), plan.clip_lengths, strict=True):
        rows.append(
            {
                "subject": plan.subject,
                "session": plan.session,
                "clip": clip,
                "video_start": _iso_ms(plan.video_start),
                "radar_start": _iso_s(plan.radar_log_start + timedelta(seconds=start / RADAR_FPS)),
                "radar_fps": int(RADAR_FPS),
            }
        )
        start += length
    return rows


def session_differences(plan: SessionPlan, vdir: Path, clip_dirs: list[Path]) -> list[str]:
    """How the complete session on disk differs from ``plan`` (BVP, video and clip files)."""
    problems = []
    try:
        if (vdir / "Label" / "BVP.mat").read_bytes() != mat_bytes("BVP", session_bvp(plan)):
            problems.append("its BVP differs (other seed, seconds or difficulty)")
    except OSError as exc:
        problems.append(f"Label/BVP.mat unreadable ({exc})")
    if not (vdir / "RGB.mp4").is_file():
        problems.append("RGB.mp4 missing")
    problems += [f"{d.name}/mmwave.mat missing" for d in clip_dirs if not (d / "mmwave.mat").is_file()]
    return problems


def session_recording(out: Path, plan: SessionPlan, driver: Driver, first_clip: int) -> Recording:
    """The session as :func:`pipeline.synth.driver.write_recording` writes it: its radar clips
    ``mmWave/<SUBJ>/<SUBJ>_<kk>/`` (numbered on from ``first_clip``), then its video folder
    ``RGB and IR/<SUBJ>/<SESSION>/`` (all present: the session is complete)."""
    vdir = out / "RGB and IR" / plan.subject / plan.session
    clips = clip_names(plan, first_clip)
    clip_dirs = [out / "mmWave" / plan.subject / clip for clip in clips]

    def write(tmp: Path) -> None:
        (tmp / "video" / "Label").mkdir(parents=True)
        write_mp4(tmp / "video" / "RGB.mp4", render_session_frames(plan, driver), plan.n_frames)
        (tmp / "video" / "Label" / "BVP.mat").write_bytes(mat_bytes("BVP", session_bvp(plan)))
        cube = synth_radar(plan)
        start = 0
        for clip, length in zip(clips, plan.clip_lengths, strict=True):
            (tmp / "radar" / clip).mkdir(parents=True)
            data = mat_bytes("mmwave", normalise_clip(cube[start : start + length]))
            (tmp / "radar" / clip / "mmwave.mat").write_bytes(data)
            start += length

    return Recording(
        name=f"{plan.subject}_{plan.session}",
        parts=(*((f"radar/{clip}", d) for clip, d in zip(clips, clip_dirs, strict=True)), ("video", vdir)),
        write=write,
        verify=lambda: session_differences(plan, vdir, clip_dirs),
    )


def session_truth(plan: SessionPlan, driver: Driver, rows: list[dict]) -> dict:
    video_end = plan.n_frames / VIDEO_FPS
    truth = plan.phys.truth(0.0, video_end, step_s=1.0)
    logged = (plan.radar_log_start - plan.video_start).total_seconds()
    clips, start = [], 0
    for row, length in zip(rows, plan.clip_lengths, strict=True):
        a = plan.true_offset_s + start / RADAR_FPS
        b = a + length / RADAR_FPS
        kinds = sorted({e["kind"] for e in plan.radar_events if e["start_s"] < b and e["end_s"] > a})
        lo, hi = max(a, plan.phys.t[0] + plan.phys.chest_delay_s + 0.01), b
        cyc = np.interp([lo, hi], plan.phys.t, plan.phys.cardiac_cycles)
        clips.append(
            {
                "clip": row["clip"],
                "n_frames": length,
                "t_start_s": round(a, 6),
                "t_end_s": round(b, 6),
                "chest_cell": list(chest_cell(plan)),
                "mean_hr_bpm": float((cyc[1] - cyc[0]) / (hi - lo) * 60.0),
                "corruption_kinds": kinds,
            }
        )
        start += length
    truth.update(
        {
            "subject": plan.subject,
            "session": plan.session,
            "seed": plan.seed,
            "skin_type": plan.conditions.skin_type,
            "conditions": {
                **plan.conditions.to_dict(),
                "car": plan.subject[0],
                "sex": plan.subject[1],
                "road": plan.session[0],
                "motion_code": plan.session[1],
            },
            "n_frames": plan.n_frames,
            "seconds": plan.seconds,
            "video_start": _iso_ms(plan.video_start),
            "true_offset_s": round(plan.true_offset_s, 6),
            "logged_offset_s": round(logged, 6),
            "sync_error_s": round(logged - plan.true_offset_s, 6),
            "radar_frame_time_s": "true_offset_s + (600 k + m) / 20 for clip k frame m",
            "chest_range_m": plan.chest_range_m,
            "chest_angle_deg": float(np.rad2deg(np.arcsin(plan.chest_sin))),
            "crop_origin_angle_range": list(plan.crop_origin),
            "clips": clips,
            "corruptions": sorted(
                [{**e, "modality": "radar"} for e in plan.radar_events] + plan.track.events,
                key=lambda e: (e["start_s"], e["kind"]),
            ),
            "face_boxes_yxyx": face_boxes(plan, driver),
            "difficulty": "easy" if plan.confounders is None else "realistic",
            "confounders": [] if plan.confounders is None else plan.confounders.events,
        }
    )
    return truth


def synth_physdrive(
    out: str | Path,
    subjects: int | None = None,
    sessions: int | None = None,
    seconds: float | None = None,
    seed: int = 0,
    size: str = "small",
    progress: bool = True,
    force: bool = False,
    difficulty: str = "realistic",
):
    """Generate a synthetic PhysDrive dataset under ``out`` (layout: module docstring).

    ``difficulty``: "realistic" (default; the confounders of :mod:`pipeline.synth.confounders`) or
    "easy" (none of them: the clean world the pipeline's tests use).

    Returns one DataFrame row per session: subject, session, video, bvp, clips, n_frames,
    skin_type, illumination, mean_hr_bpm. Complete sessions are verified and skipped (the run
    resumes; module docstring). ``out`` must be absent, empty or synth's own PhysDrive output unless
    ``force`` (:func:`pipeline.synth.target.claim_synth_target`; :class:`SynthTargetError` otherwise).
    Arguments out of range raise ``ValueError`` before anything is written
    (:func:`pipeline.synth.driver.start`).
    """
    import pandas as pd
    from tqdm import tqdm

    dims = dict(subjects=subjects, sessions=sessions, seconds=seconds)
    out, dims = start(RULES, out, force, difficulty, size, **dims)
    subjects, sessions, seconds = dims["subjects"], dims["sessions"], dims["seconds"]
    codes = subject_codes(subjects)
    pairing, truth, table = [], {}, []
    total = subjects * sessions
    with tqdm(total=total, desc="synth PhysDrive", unit="session", disable=not progress) as bar:
        for index, code in enumerate(codes):
            driver = make_driver(index, code, seed)
            clip_no = 0
            for s_idx, session in enumerate(session_codes(index, sessions)):
                plan = plan_session(index, code, session, s_idx, seconds, seed, difficulty=difficulty)
                write_recording(out, session_recording(out, plan, driver, clip_no))
                rows = pairing_rows(plan, clip_no)
                clip_no += len(rows)
                pairing.extend(rows)
                tr = session_truth(plan, driver, rows)
                truth[f"{code}/{session}"] = tr
                table.append(
                    {
                        "subject": code,
                        "session": session,
                        "video": str(out / "RGB and IR" / code / session / "RGB.mp4"),
                        "bvp": str(out / "RGB and IR" / code / session / "Label" / "BVP.mat"),
                        "clips": [r["clip"] for r in rows],
                        "n_frames": plan.n_frames,
                        "skin_type": plan.conditions.skin_type,
                        "illumination": plan.conditions.illumination,
                        "mean_hr_bpm": tr["mean_hr_bpm"],
                    }
                )
                bar.update(1)
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, ["subject", "session", "clip", "video_start", "radar_start", "radar_fps"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(pairing)
    doc = {
        "_note": (
            "Ground truth of the rpm synthetic PhysDrive generator. NOT part of the PhysDrive layout; "
            "readers of the real dataset must not rely on it."
        ),
        "convention": {
            "video_fps": VIDEO_FPS,
            "bvp_fs": BVP_FS,
            "radar_fps": RADAR_FPS,
            "clock": "seconds after video frame 0 of the session",
            "rates": "PPG timeline, averaged over the video span [0, n/30] s; clips[*].mean_hr_bpm on "
            "the chest timeline over the clip's true interval",
            "sync_error_s": "(pairing radar_start - video_start) - true_offset_s",
            "chest_cell": "(Doppler, angle, range) index in the clip's 8 x 16 x 8 crop",
            "face_boxes_yxyx": "[t_s, y0, x0, y1, x1] in frame pixels, every second",
        },
        "args": {
            "subjects": subjects,
            "sessions": sessions,
            "seconds": seconds,
            "seed": seed,
            "size": size,
            "difficulty": difficulty,
        },
        "sessions": truth,
    }
    finish(out, {"pairing.csv": buf.getvalue().encode()}, doc)
    return pd.DataFrame(table)
