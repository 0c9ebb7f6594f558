"""Physically grounded synthetic EquiPleth dataset in the real on-disk layout.

Layout written under ``out`` (the same as the released EquiPleth, Vilesov et al., TOG 2022)::

    rgb_files/v_<s>_<t>/rgbd_rgb_<i>.png   i = 0..n-1, NOT zero-padded; crop_size x crop_size RGB face crops
    rgb_files/v_<s>_<t>/rgbd_ppg.npy       float64 (n,) PPG at 30 Hz
    rf_files/<s>_<t>/rf.pkl                DCA1000 packet capture (pipeline.dca1000 format)
    rf_files/<s>_<t>/vital_dict.npy        0-d object array {'rgbd': {'NOM_PLETHWaveExport': ppg}}
    fitzpatrick_labels.pkl                 {"v_<s>": 1..6}
    demo_fold.pkl                          {0: {"train": [...], "val": [...], "test": [...]}} (by subject)
    synth_truth.json                       NOT part of the real layout: ground truth of the simulation
    .rpm_synth.json                        NOT part of the real layout: marks the folder as synth's
                                           (pipeline.synth.target; written before any data)

Subjects are numbered 1..subjects and trials 1..trials; n = round(30 * seconds) video frames and
round(120 * seconds) + 33 radar frames are acquired (real captures run ~0.27 s longer than the
video); the capture stops on a time limit, so ``rf.pkl`` holds only whole 728-value packets (a 30 s
trial: 5110 packets, like the released example) and the last, partly sent frame is dropped by the
decoders: 3632 whole radar frames for 30 s (``n_radar_frames`` in the truth).
``size="small"`` (6 subjects x 2 trials x 30 s, the demo) or ``"full"`` (91 subjects x 6 trials x
30 s, EquiPleth-like) fill in whatever of subjects / trials / seconds is not given.

Clock and label convention. Video frame i is at t = i / 30 s, radar frame f at t = f / 120 s (radar
frame 4t <-> video frame t, index alignment only, as in EquiPleth: well synchronised, offset 0).
Every EquiPleth loader drops the first 25 PPG samples, so PPG sample j belongs to time (j - 25) / 30:
video frame t shows the pulse stored at ``rgbd_ppg.npy[t + 25]``. The physiology
(:mod:`pipeline.synth.physio`) is simulated from -25/30 s on.

Video: the reflectance model of :mod:`pipeline.synth.scene` on an MTCNN-style crop (the face fills
most of the crop, the crop follows the face, so only residual rigid motion remains). Lab
conditions: indoor light for every trial; Fitzpatrick types cycle through the subjects (balanced
light / medium / dark); per trial the head is stationary (75 %), moves moderately (20 %) or a lot
(5 %), and the subject talks in 10 % of the trials.

Radar model: the AWR1443 beat signal (1 TX, 1 RX, 256 complex samples at 5 Msps, slope
60.012 MHz/us, 77 GHz, one chirp per 120 Hz frame). Per frame f and fast-time sample k::

    adc[f, k] = A(f) exp(j (2 pi fb(f) k / fs + 4 pi R(f) / lambda)) + static clutter + noise
    R(f) = R0 + d(t_f) + m(t_f),   fb = 2 S R / c

with chest range R0 in 0.35-0.8 m (range bin 7..16), d the simulated chest displacement
(respiration + a ballistocardiographic pulse that shares the PPG's instantaneous rate and leads it
by the pulse-transit time), chest amplitude giving a range-FFT peak of 0.3-1 x 1.255e5, a strong
static enclosure reflection near bin 2 (1.5-3 x the chest), one or two weaker static reflectors
(0.15-0.5 x) at least 3 bins from the chest, and complex Gaussian thermal noise; rounded to int16
(saturating) and packetised with :func:`pipeline.dca1000.encode_capture`.

Radar corruption, sometimes present (about 0.8 episodes per minute, 1.5-4 s each; the truth lists
them as intervals on the clock above):

* ``body_motion``: the subject shifts: m(t) is band-limited (0.1-2 Hz) motion of 1.5-4 cm rms, so
  the chest migrates across range bins and its phase swings by tens of radians; the head moves in
  the video at the same time;
* ``interference``: another radar's chirp crosses the band in 30-70 % of the frames: a short
  (16-64 samples) swept burst 20-60 x the chest's per-sample amplitude, broadband in range;
* ``occlusion``: an arm in front of the chest: A(f) drops to 3-15 %, and the arm appears as a
  reflector 5-15 cm closer, with 0.3-1 mm of tremor (0.5-4 Hz) and a slow 2 mm drift;
* ``packet_loss``: in about a third of the trials 1-3 bursts of 1-12 UDP packets are lost
  (:func:`pipeline.dca1000.drop_and_shuffle`); occasionally two adjacent packets arrive swapped
  (``packet_reorder``, no data lost). The byte-count decoder marks the frames lost; the
  reference (organizer) decoder discards everything before the first gap.

Determinism: every random draw comes from a Generator seeded by (seed, subject, trial) (subject
looks by (seed, subject, 0), skin types and folds by (seed, 0, ...)), everything iterates in
sorted order and per-frame noise has its own seeded stream, so the same arguments give
byte-identical files regardless of thread scheduling.

Interrupted runs and reruns (:mod:`pipeline.synth.driver`): each trial is written to
``out/.synth_tmp/`` and renamed into place (``rf_files/...``, then ``rgb_files/...``). On a rerun a
trial whose two folders exist is verified (same PPG, frame count, crop size) and skipped; if only
one of the two exists (interrupted between the two renames) it is regenerated; if it exists but
was made with other arguments a ``FileExistsError`` is raised instead of mixing datasets. The root
files and the truth are rewritten (atomically) every run.
"""

from __future__ import annotations

import math
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.dca1000 import (
    BYTES_PER_FRAME,
    BYTES_PER_PACKET,
    RADAR_FPS,
    SAMPLES_PER_CHIRP,
    RfCapture,
    drop_and_shuffle,
    encode_capture,
    write_rf_pkl,
)
from pipeline.radar import ADC_RATE_HZ, SLOPE_HZ_PER_S, WAVELENGTH_M
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
)
from pipeline.synth.driver import Recording, RunRules, finish, start, write_recording
from pipeline.synth.physio import Physiology, simulate_physiology
from pipeline.synth.scene import (
    FACE_BOX_PX,
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
PPG_OFFSET = 25  # samples every EquiPleth loader drops from the start of the PPG
EXTRA_RADAR_FRAMES = 33  # real captures: 3633 radar frames for a 30 s video
C_M_PER_S = 299_792_458.0  # physical speed of light for the beat frequency
PNG_COMPRESS_LEVEL = 1  # zlib level: ~3.5x faster than Pillow's default 6 at ~20 % larger files
SIZES = {
    "small": {"subjects": 6, "trials": 2, "seconds": 30.0},
    "full": {"subjects": 91, "trials": 6, "seconds": 30.0},  # EquiPleth: 91 participants
}
CHEST_RANGE_M = (0.35, 0.8)
RF_PEAK_RANGE = (0.3 * 1.255e5, 1.0 * 1.255e5)
# Lab conditions and corruption rates of the EquiPleth-like data (moderate on purpose).
MOTION_P = {"stationary": 0.75, "moderate": 0.20, "large": 0.05}
TALKING_P = 0.10
RADAR_EVENT_RATE_PER_MIN = 0.8
RADAR_EVENT_KINDS = {"body_motion": 0.4, "interference": 0.3, "occlusion": 0.3}
RADAR_EVENT_LEN_S = (1.5, 4.0)
PACKET_LOSS_P = 0.3
PACKET_REORDER_P = 0.1
# Allowed arguments (inclusive): seconds must give more than the PPG_OFFSET samples loaders drop.
RULES = RunRules(
    "equipleth",
    SIZES,
    limits={
        "subjects": (1, math.inf),
        "trials": (1, math.inf),
        "seconds": ((PPG_OFFSET + 1) / VIDEO_FPS, math.inf),
        "crop_size": (16, math.inf),
    },
)


# --------------------------------------------------------------------------- helpers


def skin_type_of(subject: int, seed: int) -> int:
    """Fitzpatrick type 1..6: subjects cycle through the six types from a seeded starting type."""
    offset = int(np.random.default_rng(np.random.SeedSequence([seed, 0, 0])).integers(6))
    return (subject - 1 + offset) % 6 + 1


def _pad(crop_size: int) -> int:
    return int(np.ceil(0.15 * crop_size)) + 2


def make_subject_look(subject: int, seed: int, crop_size: int) -> Texture:
    """Warp and recolour the base face for one subject (same for all trials of the subject)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, subject, 0]))
    size = crop_size + 2 * _pad(crop_size)
    centre = (size - 1) / 2.0
    return make_texture(
        rng, skin_type_of(subject, seed), (size, size), FACE_BOX_PX / crop_size, (centre, centre)
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
    n_radar: int  # whole radar frames in the stored capture
    n_packets: int  # whole 728-value packets in the stored capture
    phys: Physiology
    ppg_label: np.ndarray  # (n_frames,) float64
    skin_type: int
    conditions: Conditions
    track: Track
    # radar
    chest_range_m: float
    chest_bin: int
    chest_amp: float
    clutter: list[tuple[float, float, float]]  # (range m, amplitude, phase rad)
    thermal_sigma: float
    radar_events: list[dict]  # {kind, start_s, end_s}
    lost_packets: list[tuple[int, int]]  # (first packet index, count)
    reorder_at: int  # arrival index of a swapped adjacent packet pair, -1 if none
    start_time: str
    end_time: str
    noise_seq: dict  # name -> SeedSequence for the heavy noise draws
    confounders: Confounders | None = None  # the realistic world's (pipeline.synth.confounders); None: easy

    @property
    def name(self) -> str:
        return f"{self.subject}_{self.trial}"


def whole_packets_of(n_acquired: int) -> int:
    """Whole 728-value packets a capture of ``n_acquired`` radar frames holds when stopped on a time limit."""
    return n_acquired * BYTES_PER_FRAME // BYTES_PER_PACKET


def _beat_bin(range_m: float) -> float:
    return 2.0 * SLOPE_HZ_PER_S * range_m / C_M_PER_S * SAMPLES_PER_CHIRP / ADC_RATE_HZ


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def plan_trial(
    subject: int,
    trial: int,
    seconds: float,
    seed: int,
    crop_size: int,
    overrides: dict | None = None,
    difficulty: str = "realistic",
) -> TrialPlan:
    """Draw everything about one trial. ``overrides`` (tests, studies) may set ``conditions``
    (a dict of :class:`~pipeline.synth.scene.Conditions` fields), ``radar_events`` (a list of
    {kind, start_s, end_s}), ``lost_packets`` (a list of (first packet, count)) and ``reorder_at``.
    ``difficulty``: "easy" (no confounders) or "realistic" (:mod:`pipeline.synth.confounders`, drawn
    from their own stream, so everything else equals the easy twin)."""
    overrides = overrides or {}
    check_difficulty(difficulty)
    n = int(round(VIDEO_FPS * seconds))
    n_acquired = int(round(RADAR_FPS * seconds)) + EXTRA_RADAR_FRAMES
    n_packets = whole_packets_of(n_acquired)
    n_radar = n_packets * BYTES_PER_PACKET // BYTES_PER_FRAME  # whole frames in the stored capture
    ss_phys, ss_video, ss_radar, ss_label, ss_vnoise, ss_rnoise, ss_cond = np.random.SeedSequence(
        [seed, subject, trial]
    ).spawn(7)

    t0 = -PPG_OFFSET / VIDEO_FPS
    t_end = max((n - 1) / VIDEO_FPS, n_radar / RADAR_FPS)
    phys = simulate_physiology(t_end - t0, np.random.default_rng(ss_phys), t0=t0)
    label_rng = np.random.default_rng(ss_label)
    t_label = (np.arange(n) - PPG_OFFSET) / VIDEO_FPS
    conf = None
    if difficulty == "realistic":
        conf = plan_confounders("equipleth", confounder_rng(seed, subject, trial), (0.0, n / VIDEO_FPS), phys)
        phys = phys.with_breathing(conf.params["inspiratory_fraction"])
        ppg_label = contact_label(conf, phys, t_label, VIDEO_FPS) + 0.003 * label_rng.standard_normal(n)
    else:
        ppg_label = phys.ppg(t_label) + 0.003 * label_rng.standard_normal(n)

    skin_type = skin_type_of(subject, seed)
    cr = np.random.default_rng(ss_cond)
    motion = list(MOTION_P)[int(cr.choice(len(MOTION_P), p=list(MOTION_P.values())))]
    conditions = Conditions(
        skin_type=skin_type, illumination="indoor", motion=motion, talking=bool(cr.random() < TALKING_P)
    )
    if "conditions" in overrides:
        conditions = replace(conditions, **overrides["conditions"])
    duration = n_radar / RADAR_FPS
    radar_events = plan_events(duration, cr, RADAR_EVENT_RATE_PER_MIN, RADAR_EVENT_KINDS, RADAR_EVENT_LEN_S)
    radar_events = [dict(e) for e in overrides.get("radar_events", radar_events)]
    lost: list[tuple[int, int]] = []
    if cr.random() < PACKET_LOSS_P:
        for _ in range(int(cr.integers(1, 4))):
            count = int(cr.integers(1, 13))
            lost.append((int(cr.integers(n_packets // 20, n_packets - count - 1)), count))
    lost = sorted(tuple(x) for x in overrides.get("lost_packets", lost))
    reorder_at = int(cr.integers(10, n_packets - 10)) if cr.random() < PACKET_REORDER_P else -1
    reorder_at = int(overrides.get("reorder_at", reorder_at))

    vr = np.random.default_rng(ss_video)
    face_px = crop_size * FACE_HEIGHT_PX / FACE_BOX_PX  # face height in crop pixels
    track = make_track(conditions, n, VIDEO_FPS, vr, face_px, episodes=radar_events)
    for e in radar_events:
        if e["kind"] == "body_motion":
            track.events.append({**e, "modality": "video"})
    track.events.sort(key=lambda e: e["start_s"])
    if conf is not None:
        apply_video(conf, track, phys, np.arange(n) / VIDEO_FPS, face_px, crop=True)

    rr = np.random.default_rng(ss_radar)
    while True:  # keep the chest away from a bin boundary so its bin is unambiguous
        chest_r = rr.uniform(*CHEST_RANGE_M)
        frac = _beat_bin(chest_r) % 1.0
        if not 0.3 <= frac <= 0.7:
            break
    chest_bin = int(round(_beat_bin(chest_r)))
    chest_amp = rr.uniform(*RF_PEAK_RANGE) / SAMPLES_PER_CHIRP
    if conf is not None:  # 1/R^2 (the easy world's amplitude is independent of the range)
        chest_amp = range_amplitude(chest_amp, chest_r)
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
        n_packets=n_packets,
        phys=phys,
        ppg_label=ppg_label,
        skin_type=skin_type,
        conditions=conditions,
        track=track,
        chest_range_m=float(chest_r),
        chest_bin=chest_bin,
        chest_amp=float(chest_amp),
        clutter=clutter,
        thermal_sigma=float(thermal_sigma),
        radar_events=radar_events,
        lost_packets=lost,
        reorder_at=reorder_at,
        start_time=_iso(start),
        end_time=_iso(end),
        noise_seq={"video": ss_vnoise, "radar": ss_rnoise},
        confounders=conf,
    )


def lost_frame_mask(plan: TrialPlan) -> np.ndarray:
    """(n_radar,) bool: radar frames with at least one byte in a lost packet."""
    lost = np.zeros(plan.n_radar, dtype=bool)
    for first, count in plan.lost_packets:
        lo = first * BYTES_PER_PACKET // BYTES_PER_FRAME
        hi = ((first + count) * BYTES_PER_PACKET - 1) // BYTES_PER_FRAME
        lost[lo : min(hi, plan.n_radar - 1) + 1] = True
    return lost


def _intervals(mask: np.ndarray, fs: float) -> list[tuple[float, float]]:
    """[start, end) times (s) of the True runs of ``mask`` sampled at ``fs``."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return [(a / fs, b / fs) for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True)]


def corruption_intervals(plan: TrialPlan) -> list[dict]:
    """Radar and video corruption episodes {kind, start_s, end_s, modality} on the video clock."""
    out = [{**e, "modality": "radar"} for e in plan.radar_events]
    for a, b in _intervals(lost_frame_mask(plan), RADAR_FPS):
        out.append({"kind": "packet_loss", "start_s": round(a, 4), "end_s": round(b, 4), "modality": "radar"})
    if plan.reorder_at >= 0:
        t = plan.reorder_at * BYTES_PER_PACKET / BYTES_PER_FRAME / RADAR_FPS
        out.append(
            {
                "kind": "packet_reorder",
                "start_s": round(t, 4),
                "end_s": round(t + 0.02, 4),
                "modality": "radar",
            }
        )
    out.extend(plan.track.events)
    return sorted(out, key=lambda e: (e["start_s"], e["kind"]))


def trial_truth(plan: TrialPlan) -> dict:
    t_video_end = plan.n_frames / VIDEO_FPS
    truth = plan.phys.truth(0.0, t_video_end, step_s=1.0)
    truth.update(
        {
            "subject": plan.subject,
            "trial": plan.trial,
            "seed": plan.seed,
            "skin_type": plan.skin_type,
            "conditions": plan.conditions.to_dict(),
            "radar_video_offset_s": 0.0,
            "corruptions": corruption_intervals(plan),
            "difficulty": "easy" if plan.confounders is None else "realistic",
            "confounders": [] if plan.confounders is None else plan.confounders.events,
            "lost_packets": int(sum(c for _, c in plan.lost_packets)),
            "lost_radar_frames": int(lost_frame_mask(plan).sum()),
            "chest_range_m": plan.chest_range_m,
            "chest_bin": plan.chest_bin,
            "chest_bin_float": _beat_bin(plan.chest_range_m),
            "clutter": [{"range_m": r, "amplitude": a} for r, a, _ in plan.clutter],
            "n_frames": plan.n_frames,
            "n_radar_frames": plan.n_radar,
            "crop_size": plan.crop_size,
            "seconds": plan.seconds,
        }
    )
    return truth


# --------------------------------------------------------------------------- rendering


def video_renderer(plan: TrialPlan, look: Texture) -> Renderer:
    s = plan.crop_size
    t = np.arange(plan.n_frames) / VIDEO_FPS
    pulse = plan.phys.ppg_pulse(t) if plan.confounders is None else face_pulse(plan.confounders, plan.phys, t)
    centre = (s - 1) / 2.0
    return Renderer(look, plan.track, pulse, (s, s), (centre, centre), 1.0, noise_seq=plan.noise_seq["video"])


def render_frames(plan: TrialPlan, look: Texture) -> np.ndarray:
    """(n, crop, crop, 3) uint8: the trial's video in memory (what :func:`render_video` writes)."""
    r = video_renderer(plan, look)
    return np.stack([r.frame(i) for i in range(plan.n_frames)])


def render_video(plan: TrialPlan, look: Texture, out_dir: Path, workers: int | None = None) -> None:
    """Write rgbd_rgb_<i>.png for every frame of the trial into ``out_dir``."""
    r = video_renderer(plan, look)

    def one(i: int) -> None:
        Image.fromarray(r.frame(i)).save(
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
    """(n_radar + 1, 256) complex128 beat signal in ADC units (not yet rounded), corruptions included:
    the stored whole frames plus the frame in progress when the capture stopped (partly stored)."""
    n = plan.n_radar + 1
    t_f = np.arange(n) / RADAR_FPS
    rng = np.random.default_rng(plan.noise_seq["radar"])
    crng = np.random.default_rng(child_seq(plan.noise_seq["radar"], 0))
    r = plan.chest_range_m + plan.phys.displacement(t_f)
    amp = np.full(n, plan.chest_amp)
    k = np.arange(SAMPLES_PER_CHIRP)[None, :]
    extra = np.zeros((n, SAMPLES_PER_CHIRP), dtype=np.complex128)
    conf = plan.confounders
    if conf is not None:  # postural sway, and a multipath echo of the chest by a static surface
        r = r + sway(conf, n, RADAR_FPS)
        path, rel, scale, ph0 = conf.params["multipath"]
        r_mp = plan.chest_range_m + path + scale * (r - plan.chest_range_m)
        fb = 2.0 * SLOPE_HZ_PER_S * r_mp / C_M_PER_S
        ph = 2 * np.pi * fb[:, None] * k / ADC_RATE_HZ + (4 * np.pi / WAVELENGTH_M) * r_mp[:, None] + ph0
        extra += rel * plan.chest_amp * np.exp(1j * ph)
    for ev in plan.radar_events:
        env = envelope(t_f, ev["start_s"], ev["end_s"], 0.3)
        if ev["kind"] == "body_motion":
            r = r + crng.uniform(0.015, 0.04) * env * band_noise(n, RADAR_FPS, 0.1, 2.0, crng)
            amp = amp * (1.0 + 0.4 * env * np.clip(smooth_noise(n, RADAR_FPS, 1.0, crng), -2, 2) / 2)
        elif ev["kind"] == "occlusion":
            amp = amp * (1.0 - (1.0 - crng.uniform(0.03, 0.15)) * env)
            # The arm sits 5-15 cm in front of the chest and never keeps still (tremor, 0.5-4 Hz).
            r_occ = (
                plan.chest_range_m - crng.uniform(0.05, 0.15) + 0.002 * smooth_noise(n, RADAR_FPS, 0.5, crng)
            )
            r_occ = r_occ + crng.uniform(0.3e-3, 1e-3) * band_noise(n, RADAR_FPS, 0.5, 4.0, crng)
            a_occ = crng.uniform(0.5, 1.0) * plan.chest_amp * env
            fb = 2.0 * SLOPE_HZ_PER_S * r_occ / C_M_PER_S
            ph = 2 * np.pi * fb[:, None] * k / ADC_RATE_HZ + (4 * np.pi / WAVELENGTH_M) * r_occ[:, None]
            extra += a_occ[:, None] * np.exp(1j * ph)
        elif ev["kind"] == "interference":
            hit = np.flatnonzero((env > 0.5) & (crng.random(n) < crng.uniform(0.3, 0.7)))
            length = crng.integers(16, 65, hit.size)[:, None]
            k0 = crng.integers(0, SAMPLES_PER_CHIRP - 64, hit.size)[:, None]
            kk = k - k0
            sweep = crng.uniform(-0.02, 0.02, hit.size)[:, None]
            ph = np.pi * sweep * kk**2 + crng.uniform(0, 2 * np.pi, hit.size)[:, None]
            a = crng.uniform(20.0, 60.0, hit.size)[:, None] * plan.chest_amp
            extra[hit] += np.where((kk >= 0) & (kk < length), a * np.exp(1j * ph), 0.0)
    fb = 2.0 * SLOPE_HZ_PER_S * r / C_M_PER_S
    phase = 2 * np.pi * fb[:, None] * k / ADC_RATE_HZ + (4 * np.pi / WAVELENGTH_M) * r[:, None]
    adc = amp[:, None] * np.exp(1j * phase) + extra
    static = np.zeros(SAMPLES_PER_CHIRP, dtype=np.complex128)
    for rng_m, a, ph in plan.clutter:
        fbc = 2.0 * SLOPE_HZ_PER_S * rng_m / C_M_PER_S
        static += a * np.exp(1j * (2 * np.pi * fbc * k[0] / ADC_RATE_HZ + ph))
    adc += static[None, :]
    noise = rng.standard_normal((n, SAMPLES_PER_CHIRP, 2))
    adc += plan.thermal_sigma * (noise[..., 0] + 1j * noise[..., 1])
    return adc


def make_capture(plan: TrialPlan) -> RfCapture:
    """The trial's DCA1000 capture with its planned packet loss and reordering applied."""
    capture = encode_capture(synth_adc(plan), plan.start_time, plan.end_time, whole_packets=True)
    if len(capture.payloads) > plan.n_packets:  # the acquired frames fill the stored packets exactly
        capture = drop_and_shuffle(capture, np.arange(plan.n_packets))
    keep = np.ones(len(capture.payloads), dtype=bool)
    for first, count in plan.lost_packets:
        keep[first : first + count] = False
    order = np.flatnonzero(keep)
    if plan.reorder_at >= 0:
        j = int(np.searchsorted(order, plan.reorder_at))
        if j + 1 < order.size:
            order[[j, j + 1]] = order[[j + 1, j]]
    if keep.all() and plan.reorder_at < 0:
        return capture
    return drop_and_shuffle(capture, order)


# --------------------------------------------------------------------------- trial I/O


def _rgb_name(plan: TrialPlan) -> str:
    return f"v_{plan.subject}_{plan.trial}"


def trial_dirs(out: Path, plan: TrialPlan) -> tuple[Path, Path]:
    """(``rgb_files/v_<s>_<t>``, ``rf_files/<s>_<t>``) under ``out``: the trial's two folders."""
    return out / "rgb_files" / _rgb_name(plan), out / "rf_files" / plan.name


def trial_differences(plan: TrialPlan, rgb_dir: Path, rf_dir: Path) -> list[str]:
    """How the complete trial on disk differs from ``plan`` (PPG, frame count, crop size, rf files)."""
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
    return problems


def trial_recording(out: Path, plan: TrialPlan, look: Texture) -> Recording:
    """The trial as :func:`pipeline.synth.driver.write_recording` writes it: ``rf_files/<s>_<t>/``,
    then ``rgb_files/v_<s>_<t>/`` (both folders present: the trial is complete)."""
    rgb_dir, rf_dir = trial_dirs(out, plan)

    def write(tmp: Path) -> None:
        tmp_rgb, tmp_rf = tmp / "rgb", tmp / "rf"
        tmp_rgb.mkdir()
        tmp_rf.mkdir()
        render_video(plan, look, tmp_rgb)
        np.save(tmp_rgb / "rgbd_ppg.npy", plan.ppg_label.astype(np.float64))
        write_rf_pkl(tmp_rf / "rf.pkl", make_capture(plan))
        vital = np.empty((), dtype=object)
        vital[()] = {"rgbd": {"NOM_PLETHWaveExport": plan.ppg_label.astype(np.float64)}}
        np.save(tmp_rf / "vital_dict.npy", vital, allow_pickle=True)

    return Recording(
        name=plan.name,
        parts=(("rf", rf_dir), ("rgb", rgb_dir)),
        write=write,
        verify=lambda: trial_differences(plan, rgb_dir, rf_dir),
    )


def make_folds(subjects: int, trials: int, seed: int) -> dict:
    """Subject-level split {0: {"train", "val", "test"}} of "v_<s>_<t>" names (~60/20/20).

    With 5 or more subjects the test set holds at least two subjects, the first light-skinned
    (Fitzpatrick 1-2) and the first dark-skinned (5-6) subject of the seeded order when both exist,
    so a report on the fold fills its skin-group columns; the rest follow the seeded order.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0, 1]))
    order = [int(s) for s in rng.permutation(np.arange(1, subjects + 1))]
    if subjects >= 3:
        n_test = n_val = max(1, int(round(0.2 * subjects)))
        if subjects >= 5:
            n_test = max(n_test, 2)
    else:  # 2 subjects: one for training, one for testing; 1 subject: training only
        n_test, n_val = subjects - 1, 0
    first = []
    for group in ((1, 2), (5, 6)):
        hit = [s for s in order if skin_type_of(s, seed) in group]
        if hit and len(first) < n_test:
            first.append(hit[0])
    order = first + [s for s in order if s not in first]
    split = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
    return {
        0: {
            k: [f"v_{s}_{t}" for s in sorted(split[k]) for t in range(1, trials + 1)]
            for k in ("train", "val", "test")
        }
    }


def synth_equipleth(
    out: str | Path,
    subjects: int | None = None,
    trials: int | None = None,
    seconds: float | None = None,
    seed: int = 0,
    crop_size: int = 128,
    progress: bool = True,
    size: str = "small",
    force: bool = False,
    difficulty: str = "realistic",
):
    """Generate a synthetic EquiPleth dataset under ``out``; returns one DataFrame row per trial.

    ``subjects`` / ``trials`` / ``seconds`` left at None come from the ``size`` preset
    (:data:`SIZES`). Columns: subject, trial, rgb_dir, rf_dir, skin_type, mean_hr_bpm, chest_bin,
    n_frames, n_radar_frames. See the module docstring for the layout, models and rerun behaviour
    (complete trials are skipped: the run resumes). ``out`` must be absent, empty or synth's own
    EquiPleth output unless ``force`` (:func:`pipeline.synth.target.claim_synth_target`;
    :class:`SynthTargetError` otherwise). Arguments out of range raise ``ValueError`` before anything
    is written (:func:`pipeline.synth.driver.start`).
    ``difficulty``: "realistic" (default; the confounders of :mod:`pipeline.synth.confounders`) or
    "easy" (none of them: the clean world the pipeline's tests use).
    """
    import pandas as pd
    from tqdm import tqdm

    dims = dict(subjects=subjects, trials=trials, seconds=seconds, crop_size=crop_size)
    out, dims = start(RULES, out, force, difficulty, size, **dims)
    subjects, trials, seconds = dims["subjects"], dims["trials"], dims["seconds"]

    rows, truth = [], {}
    pairs = [(s, t) for s in range(1, subjects + 1) for t in range(1, trials + 1)]
    with tqdm(total=len(pairs), desc="synth EquiPleth", unit="trial", disable=not progress) as bar:
        for subject in range(1, subjects + 1):
            look = make_subject_look(subject, seed, crop_size)
            for trial in range(1, trials + 1):
                plan = plan_trial(subject, trial, seconds, seed, crop_size, difficulty=difficulty)
                write_recording(out, trial_recording(out, plan, look))
                rgb_dir, rf_dir = trial_dirs(out, plan)
                tr = trial_truth(plan)
                tr["green_pulse_pp"] = look.pulse_pp_green
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
    fitz = {f"v_{s}": skin_type_of(s, seed) for s in range(1, subjects + 1)}
    root_files = {
        "fitzpatrick_labels.pkl": pickle.dumps(fitz, protocol=4),
        "demo_fold.pkl": pickle.dumps(make_folds(subjects, trials, seed), protocol=4),
    }
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
            "intervals": "corruptions[*].start_s/end_s: seconds on the video clock (radar frame f at f/120)",
        },
        "args": {
            "subjects": subjects,
            "trials": trials,
            "seconds": float(seconds),
            "seed": seed,
            "crop_size": crop_size,
            "size": size,
            "difficulty": difficulty,
        },
        "trials": truth,
    }
    finish(out, root_files, doc)
    return pd.DataFrame(rows)
