"""Physically modelled confounders of the realistic synthetic world (``rpm synth --difficulty realistic``).

``--difficulty easy`` is the clean-ish world the tests of the pipeline need: none of the confounders
below is drawn and the files are those of the generators before this module existed. ``realistic``
(the default) adds them. Each one is a physical effect with a stated source; none is white noise added
to the frames or to the label. Every confounder present in a recording is listed in the truth sidecar
under ``confounders`` as ``{kind, start_s, end_s, modality, ...parameters}`` on the recording's clock
(whole-recording effects span the recording).

Their draws come from their own seed stream (``SeedSequence([seed, *key, CONFOUNDER_STREAM])``), so a
realistic recording shows the same person, heart, conditions and corruption episodes as its easy twin.

Video
-----
* ``white_balance`` / ``auto_exposure`` (both layouts): consumer and automotive cameras run auto
  white balance (AWB) and auto exposure (AE) control loops that re-estimate the illuminant and the
  exposure when the metered scene changes (the subject moves, a door opens, the car turns) and apply
  the new R/B gains or gain/exposure as a step that settles in 0.1-0.5 s (first-order loop). An AE
  step scales all channels alike, which POS and CHROM largely cancel; an AWB step changes the R/G and
  B/G ratios, which no chrominance method cancels and which, at 0.5-2 %, is as large as the pulse
  (green pulsatile contrast 0.3-1 %). Rates and sizes are assumptions (the cameras' control loops are
  not published): EquiPleth lab 1-3 re-estimations a minute, PhysDrive cabin 4-10 a minute.
  Between the steps the AWB loop hunts (``white_balance_hunting``): its grey-world estimate follows
  the metered scene (the moving head, shading, noise), so the R and B gains wander by 0.1-0.4 %
  rms (EquiPleth) or 0.2-0.6 % (PhysDrive) within the loop's 0.1-2 Hz bandwidth (assumption).
* ``bcg_head_motion``: the ballistocardiographic recoil of the head at every heartbeat (Balakrishnan
  et al., CVPR 2013, "Detecting pulse from head motions in video"; Moco, Stuijk and de Haan, Sci. Rep.
  2016, "Ballistocardiographic artifacts in PPG imaging"): a vertical displacement of 0.05-0.2 mm that
  follows the cardiac mechanical waveform (the heart's timeline, one pulse-transit time before the
  face's PPG); it modulates pixels on shading gradients at the heart rate and its harmonics.
* ``respiration``: breathing moves the head (0.2-0.8 mm vertical, Moco et al. 2016 observe the same
  mechanism) and modulates the facial blood volume (baseline 3-10 % and amplitude 2-8 % of the pulse,
  as the contact PPG; Allen, Physiol. Meas. 2007, "Photoplethysmography and its application in
  clinical physiological measurement").
* ``crop_jitter`` (EquiPleth): the released frames are MTCNN face crops (the EquiPleth release,
  Vilesov et al. 2022), one detection per frame; the box of a detector run frame by frame jitters by
  about a pixel (which is why the usual practice smooths it). Modelled as independent per-frame crop
  offsets (0.3-1.0 % of the crop side, rms) and scale changes (0.3-0.8 %): a geometric effect, its
  intensity change comes from the face's own shading and edges.
* ``mouth_interior`` (both layouts, talking): when the jaw drops, the lips part and the gap shows the
  upper teeth (bright enamel) above the dark, shadowed oral cavity; neither carries a pulse. The easy
  world stretches the lip texture instead. The gap follows the renderer's jaw track (syllables at 3-6 Hz
  in 2-6 s bursts, 2.5-5 % of the face height at the chin; the lower lip moves about half that), inside
  a mouth 0.25 face heights wide (anthropometric proportion). The pixels that change are few (~1 % of the
  skin ROI at full opening) but far from skin in colour and brightness, so the ROI mean moves by about
  as much as the pulse, in and near the cardiac band and not along the intensity direction that POS and
  CHROM cancel. Colours and the teeth share (``cavity_green_dn``, ``teeth_green_dn``, ``teeth_frac`` in
  the sidecar) are assumptions.
* ``white_balance_gains`` (both layouts): not a confounder but the camera's steady state: its AWB
  converges on the illuminant, so the image is white-balanced (grey-world gains that neutralise the
  recording's mean illuminant colour, G fixed) before it is written or encoded. The warm dusk and cool
  night light therefore reach the encoder as a normally coloured face, with the noise of the channel
  the light was weak in amplified by its gain. The ``white_balance`` steps and hunting above are the
  loop's errors around this gain. (The easy world keeps the tinted, unbalanced image.)
* ``head_yaw`` (both layouts, talking): a talker turns the head about the vertical axis, towards the
  listener and back, and with the rhythm of speech (head movements accompany speech: Hadar, Steiner,
  Grant and Rose, Human Movement Science 1983, "Kinematics of head movements accompanying speech
  during conversation"; McClave, J. Pragmatics 2000, "Linguistic functions of head movements in the
  context of speech"). Drawn as band-limited turns of 2-6 degrees rms (0.1-1 Hz) inside each talking
  interval, back to the front between them (amplitude and band are assumptions of that order). A 2-D
  crop cannot undo an out-of-plane turn: the renderer maps the face onto a cylinder (half-width 0.45
  face heights), so the near cheek widens, the far one narrows, and skin, hair and background cross the
  crop's fixed skin ROI. Shading stays baked in the photo: a cylinder turning about its own axis under
  a fixed light keeps the same Lambertian shading at each image column, so what the ROI sees change is
  which surface lies under it.
* ``sun_shadow`` (PhysDrive, daylight): shadows of poles, trees and buildings sweep over the driver as
  the car passes them: dips of 15-45 % of the light for 0.1-0.6 s, several a minute (more on the
  congested roads B and C, fewer at dusk when the low, weak sun adds little direct light and most of
  the light is diffuse sky). Rates and depths are assumptions.

Contact-PPG label
-----------------
* ``label_transit_jitter``: the label is a finger PPG, the video sees the face; the pulse reaches the
  finger 20-60 ms after the face (longer arterial path), and the difference breathes with the blood
  pressure by +-3-10 ms (respiratory variation of the pulse transit time, Drinnan, Allen and Murray,
  Physiol. Meas. 2001). The label is the PPG on that warped timeline.
* ``label_baseline_wander``: finger PPG baseline changes with vasomotion and thermoregulation
  (0.01-0.1 Hz, 20-80 % of the pulse amplitude; Allen 2007).
* ``label_motion_artifact``: movements of the hand that carries the probe (EquiPleth: rare, seated;
  PhysDrive: the hand on the steering wheel) add 0.5-5 Hz artefacts of 0.5-2 pulse amplitudes for 1-4 s.

Radar
-----
* ``respiration_harmonics``: breathing is not a sinusoid: inspiration is active and shorter than the
  passive expiration (inspiratory fraction of the cycle 0.30-0.45, an I:E ratio of about 1:1.2-1:2.3;
  standard respiratory physiology). The chest excursion (2-6 mm, 10-30 x the cardiac 0.1-0.5 mm) then
  carries harmonics at 3-8 x the breathing rate, inside the cardiac band, the main confounder of
  phase-based radar HR (Alizadeh et al. 2019 and later work remove it explicitly).
* ``postural_sway``: the seated body sways and shifts slowly (0.03-0.7 Hz, EquiPleth 0.5-2 mm rms,
  PhysDrive 1-3 mm; assumption of the order of seated postural sway), adding low-frequency phase whose
  spectral tail leaks into the band; larger sways move the chest across range bins (bins of 4.7 cm
  EquiPleth, 7.8 cm PhysDrive).
* ``multipath``: a second echo of the chest by a static surface (desk, seat, steering wheel,
  windscreen): path 3-15 cm longer, 20-50 % of the direct amplitude, modulated by 0.5-0.9 of the chest
  displacement (bistatic geometry). The sum of the two phasors makes the demodulated phase a
  non-linear function of the displacement: harmonics and respiration-cardiac intermodulation.
* ``range_snr``: the received amplitude falls as 1/R^2 (radar equation, power ~ R^-4), so a chest at
  0.8 m gives a quarter of the amplitude it gives at 0.4 m against the same thermal noise.
* ``vehicle_vibration`` (PhysDrive): the torso moves on the seat cushion relative to the dashboard
  radar. Whole-body vibration at the seat of passenger cars is 0.2-0.6 m/s^2 rms (ISO 2631-1 weighting;
  Paddan and Griffin, J. Sound Vib. 2002); the radial chest-radar displacement it leaves in 0.7-8 Hz is
  taken as 0.05 (road A), 0.10 (B) and 0.25 mm rms (C, bumpy), modulated by stop-and-go traffic, in
  place of the easy world's 0.015-0.05 mm. This is comparable to the 0.1-0.5 mm cardiac pulse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.synth.scene import MouthInterior, band_noise, envelope, slow_wave, smooth_noise

DIFFICULTIES = ("easy", "realistic")
CONFOUNDER_STREAM = 16  # last entry of the confounders' SeedSequence key (issue 16)

# Video
AWB_RATE_PER_MIN = {"equipleth": (1.0, 3.0), "physdrive": (4.0, 10.0)}
AWB_JITTER_RMS = {"equipleth": (0.001, 0.004), "physdrive": (0.002, 0.006)}
AWB_JITTER_BAND_HZ = (0.1, 2.0)
AWB_STEP = (0.005, 0.02)  # relative change of the R and B gains per re-estimation
AE_STEP = (0.01, 0.05)  # relative change of the exposure per re-estimation
CAMERA_SETTLE_S = (0.1, 0.5)
BCG_HEAD_M = (0.05e-3, 0.2e-3)
RESP_HEAD_M = (0.2e-3, 0.8e-3)
FACE_HEIGHT_M = 0.20  # forehead to chin, for mm -> px
FACE_RESP_BASELINE = (0.03, 0.10)
FACE_RESP_AM = (0.02, 0.08)
CROP_JITTER_FRAC = (0.003, 0.010)
CROP_SCALE_JITTER = (0.003, 0.008)
SUN_SHADOW_RATE_PER_MIN = {"noon": {"A": 4.0, "B": 10.0, "C": 10.0}, "dusk": {"A": 2.0, "B": 5.0, "C": 5.0}}
SUN_SHADOW_DEPTH = {"noon": (0.15, 0.45), "dusk": (0.05, 0.15)}
SUN_SHADOW_LEN_S = (0.1, 0.6)
MOUTH_CAVITY_RGB = (50.0, 20.0, 20.0)  # shadowed oral cavity (tongue, mucosa), DN at noon
MOUTH_CAVITY_SCALE = (0.6, 1.4)
TEETH_RGB = (200.0, 190.0, 170.0)  # enamel, DN at noon
TEETH_SCALE = (0.8, 1.1)
TEETH_FRAC = (0.2, 0.5)  # share of the lip gap (from the top) that shows the upper teeth
TALK_YAW_RMS_DEG = (2.0, 6.0)  # head turns while talking, rms over a talking interval
TALK_YAW_BAND_HZ = (0.1, 1.0)
# Label
LABEL_DPTT_S = (0.020, 0.060)
LABEL_DPTT_RESP_S = (0.003, 0.010)
LABEL_WANDER = (0.2, 0.8)
LABEL_ARTIFACT_RATE_PER_MIN = {"equipleth": 0.3, "physdrive": 1.5}
LABEL_ARTIFACT_AMP = (0.5, 2.0)
LABEL_ARTIFACT_LEN_S = (1.0, 4.0)
# Radar
INSPIRATORY_FRACTION = (0.30, 0.45)
SWAY_RMS_M = {"equipleth": (0.5e-3, 2e-3), "physdrive": (1e-3, 3e-3)}
MULTIPATH_EXTRA_M = (0.03, 0.15)
MULTIPATH_REL_AMP = (0.2, 0.5)
MULTIPATH_DISP_SCALE = (0.5, 0.9)
RANGE_REF_M = 0.6  # amplitude reference range of the 1/R^2 law
VEHICLE_VIB_RMS_M = {"A": 0.05e-3, "B": 0.10e-3, "C": 0.25e-3}


def check_difficulty(difficulty: str) -> str:
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    return difficulty


def confounder_rng(seed: int, *key: int) -> np.random.Generator:
    """The confounders' own generator for one recording (``key``: the recording's seed key)."""
    return np.random.default_rng(np.random.SeedSequence([seed, *key, CONFOUNDER_STREAM]))


def _ev(kind: str, start: float, end: float, modality: str, **params) -> dict:
    return {
        "kind": kind,
        "start_s": round(float(start), 3),
        "end_s": round(float(end), 3),
        "modality": modality,
        **{k: (round(float(v), 6) if isinstance(v, float | np.floating) else v) for k, v in params.items()},
    }


def _poisson_times(rng: np.random.Generator, t0: float, t1: float, rate_per_min: float) -> np.ndarray:
    count = int(rng.poisson(rate_per_min * (t1 - t0) / 60.0))
    return np.sort(rng.uniform(t0, t1, count))


@dataclass
class Confounders:
    """What the realistic world adds to one recording; apply with the ``apply_*`` functions."""

    events: list[dict] = field(default_factory=list)
    params: dict = field(default_factory=dict)


def plan_confounders(
    layout: str,
    rng: np.random.Generator,
    t_video: tuple[float, float],
    phys,
    road: str = "",
    illumination: str = "",
) -> Confounders:
    """Draw the realistic confounders of one recording (``t_video``: [start, end] s of its video)."""
    a, b = t_video
    p: dict = {}
    ev: list[dict] = []
    # Camera control loops.
    settle = float(rng.uniform(*CAMERA_SETTLE_S))
    steps = []
    for t in _poisson_times(rng, a, b, float(rng.uniform(*AWB_RATE_PER_MIN[layout]))):
        awb = rng.uniform(*AWB_STEP) * rng.choice([-1.0, 1.0])
        ae = rng.uniform(*AE_STEP) * rng.choice([-1.0, 1.0])
        steps.append((float(t), float(awb), float(ae)))
        ev.append(_ev("white_balance", t, t + 3 * settle, "video", rb_step=awb))
        ev.append(_ev("auto_exposure", t, t + 3 * settle, "video", gain_step=ae))
    p["camera_steps"] = steps
    p["awb_jitter_rms"] = float(rng.uniform(*AWB_JITTER_RMS[layout]))
    ev.append(_ev("white_balance_hunting", a, b, "video", rb_rms=p["awb_jitter_rms"]))
    p["camera_settle_s"] = settle
    p["bcg_head_m"] = float(rng.uniform(*BCG_HEAD_M))
    ev.append(_ev("bcg_head_motion", a, b, "video", amplitude_m=p["bcg_head_m"]))
    p["resp_head_m"] = float(rng.uniform(*RESP_HEAD_M))
    p["face_resp_baseline"] = float(rng.uniform(*FACE_RESP_BASELINE))
    p["face_resp_am"] = float(rng.uniform(*FACE_RESP_AM))
    ev.append(
        _ev(
            "respiration",
            a,
            b,
            "video",
            head_m=p["resp_head_m"],
            blood_volume_baseline=p["face_resp_baseline"],
            pulse_am=p["face_resp_am"],
        )
    )
    if layout == "equipleth":
        p["crop_jitter"] = float(rng.uniform(*CROP_JITTER_FRAC))
        p["crop_scale_jitter"] = float(rng.uniform(*CROP_SCALE_JITTER))
        ev.append(
            _ev("crop_jitter", a, b, "video", offset_rms=p["crop_jitter"], scale_rms=p["crop_scale_jitter"])
        )
    shadows = []
    if layout == "physdrive" and illumination in SUN_SHADOW_RATE_PER_MIN:
        for t in _poisson_times(rng, a, b, SUN_SHADOW_RATE_PER_MIN[illumination][road]):
            depth = float(rng.uniform(*SUN_SHADOW_DEPTH[illumination]))
            length = float(rng.uniform(*SUN_SHADOW_LEN_S))
            shadows.append((float(t), length, depth))
            ev.append(_ev("sun_shadow", t, t + length, "video", depth=depth))
    p["sun_shadows"] = shadows
    # Contact-PPG label.
    p["label_dptt_s"] = float(rng.uniform(*LABEL_DPTT_S))
    p["label_dptt_resp_s"] = float(rng.uniform(*LABEL_DPTT_RESP_S))
    p["label_wander"] = float(rng.uniform(*LABEL_WANDER))
    ev.append(
        _ev(
            "label_transit_jitter",
            a,
            b,
            "label",
            delay_s=p["label_dptt_s"],
            resp_swing_s=p["label_dptt_resp_s"],
        )
    )
    ev.append(_ev("label_baseline_wander", a, b, "label", amplitude=p["label_wander"]))
    artifacts = []
    for t in _poisson_times(rng, a + 0.5, b - 1.0, LABEL_ARTIFACT_RATE_PER_MIN[layout]):
        length = float(rng.uniform(*LABEL_ARTIFACT_LEN_S))
        amp = float(rng.uniform(*LABEL_ARTIFACT_AMP))
        artifacts.append((float(t), float(t) + length, amp))
        ev.append(_ev("label_motion_artifact", t, t + length, "label", amplitude=amp))
    p["label_artifacts"] = artifacts
    # Radar.
    p["inspiratory_fraction"] = float(rng.uniform(*INSPIRATORY_FRACTION))
    ev.append(_ev("respiration_harmonics", a, b, "radar", inspiratory_fraction=p["inspiratory_fraction"]))
    p["sway_rms_m"] = float(rng.uniform(*SWAY_RMS_M[layout]))
    ev.append(_ev("postural_sway", a, b, "radar", rms_m=p["sway_rms_m"]))
    p["multipath"] = (
        float(rng.uniform(*MULTIPATH_EXTRA_M)),
        float(rng.uniform(*MULTIPATH_REL_AMP)),
        float(rng.uniform(*MULTIPATH_DISP_SCALE)),
        float(rng.uniform(0, 2 * np.pi)),
    )
    ev.append(
        _ev(
            "multipath",
            a,
            b,
            "radar",
            extra_path_m=p["multipath"][0],
            relative_amplitude=p["multipath"][1],
            displacement_scale=p["multipath"][2],
        )
    )
    if layout == "physdrive":
        p["vehicle_vib_rms_m"] = VEHICLE_VIB_RMS_M[road] * float(rng.uniform(0.7, 1.3))
        ev.append(_ev("vehicle_vibration", a, b, "radar", rms_m=p["vehicle_vib_rms_m"]))
    p["seed_entropy"] = int(rng.integers(0, 2**63 - 1))
    return Confounders(events=sorted(ev, key=lambda e: (e["start_s"], e["kind"])), params=p)


def _stream(conf: Confounders, k: int) -> np.random.Generator:
    """Per-use generator: the same on every call for the same plan (no shared state)."""
    return np.random.default_rng(np.random.SeedSequence([conf.params["seed_entropy"], k]))


# --------------------------------------------------------------------------- video


def camera_gains(conf: Confounders, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """((n, 3) multiplicative RGB gain on the image, (n,) analogue-gain factor) from the AE/AWB steps."""
    gains = np.ones((t.size, 3))
    analogue = np.ones(t.size)
    tau = conf.params["camera_settle_s"]
    if t.size > 8:
        fs = (t.size - 1) / max(float(t[-1] - t[0]), 1e-9)
        j = conf.params["awb_jitter_rms"] * band_noise(t.size, fs, *AWB_JITTER_BAND_HZ, _stream(conf, 5))
        gains[:, 0] *= 1.0 + j
        gains[:, 2] *= 1.0 - j
    for t0, awb, ae in conf.params["camera_steps"]:
        s = np.where(t >= t0, 1.0 - np.exp(-(t - t0) / tau), 0.0)
        gains[:, 0] *= 1.0 + awb * s
        gains[:, 2] *= 1.0 - awb * s
        gains *= (1.0 + ae * s)[:, None]
        analogue *= 1.0 + ae * s
    return gains, analogue


def sun_shadow_gain(conf: Confounders, t: np.ndarray) -> np.ndarray:
    """(n,) multiplicative light factor of the passing shadows (1 outside them)."""
    g = np.ones(t.size)
    for t0, length, depth in conf.params["sun_shadows"]:
        g *= 1.0 - depth * envelope(t, t0, t0 + length, min(0.1, length / 2))
    return g


def apply_video(conf: Confounders, track, phys, t: np.ndarray, face_px: float, crop: bool) -> None:
    """Add BCG and respiratory head motion, crop jitter, the open mouth and head turns of talking, the
    camera's white balance and its AWB/AE steps, and sun shadows to ``track`` in place.

    ``t``: frame times (s); ``face_px``: face height in the track's pixels; ``crop``: the frames are
    per-frame detector crops (EquiPleth).
    """
    px_per_m = face_px / FACE_HEIGHT_M
    p = conf.params
    mech = phys.cardiac_displacement(t)
    mech = mech / max(float(np.ptp(mech)), 1e-12)
    resp, _ = phys._resp_terms(t)
    track.ty = track.ty + px_per_m * (p["bcg_head_m"] * mech + 0.5 * p["resp_head_m"] * resp)
    if crop:
        rng = _stream(conf, 1)
        side = face_px / 0.69  # the crop side: FACE_HEIGHT_PX / FACE_BOX_PX of the crop
        track.ty = track.ty + p["crop_jitter"] * side * rng.standard_normal(t.size)
        track.tx = track.tx + p["crop_jitter"] * side * rng.standard_normal(t.size)
        track.scale = track.scale * (1.0 + p["crop_scale_jitter"] * rng.standard_normal(t.size))
    talking = [e for e in track.events if e["kind"] == "talking"]
    if talking and bool(np.any(track.jaw > 0)):
        rng = _stream(conf, 6)
        cavity = tuple(float(v) for v in np.array(MOUTH_CAVITY_RGB) * rng.uniform(*MOUTH_CAVITY_SCALE))
        teeth = tuple(float(v) for v in np.array(TEETH_RGB) * rng.uniform(*TEETH_SCALE))
        track.mouth = MouthInterior(cavity, teeth, float(rng.uniform(*TEETH_FRAC)))
        for e in talking:
            conf.events.append(
                _ev(
                    "mouth_interior",
                    e["start_s"],
                    e["end_s"],
                    "video",
                    cavity_green_dn=cavity[1],
                    teeth_green_dn=teeth[1],
                    teeth_frac=track.mouth.teeth_frac,
                )
            )
        rng = _stream(conf, 7)
        yaw_rms = float(rng.uniform(*TALK_YAW_RMS_DEG))
        fs = (t.size - 1) / max(float(t[-1] - t[0]), 1e-9)
        env = np.zeros(t.size)
        for e in talking:
            env = np.maximum(env, envelope(t, e["start_s"], e["end_s"], 0.5))
            conf.events.append(_ev("head_yaw", e["start_s"], e["end_s"], "video", rms_deg=yaw_rms))
        track.yaw = np.deg2rad(yaw_rms) * env * band_noise(t.size, fs, *TALK_YAW_BAND_HZ, rng)
    # The white balance the AWB loop converges to: grey-world gains that neutralise the session's mean
    # illuminant colour (G fixed, as cameras do). The AWB steps and hunting below are its errors
    # around this correction. Applied to the image after the sensor noise (Renderer.frame), so the
    # channel the light is weak in keeps its larger relative noise, as in a real camera.
    illuminant = track.ambient.mean(0)
    track.wb_gains = (illuminant[1] / illuminant).astype(np.float32)
    conf.events.append(
        _ev(
            "white_balance_gains",
            float(t[0]),
            float(t[-1] + (t[-1] - t[0]) / max(t.size - 1, 1)),
            "video",
            r_gain=float(track.wb_gains[0]),
            b_gain=float(track.wb_gains[2]),
        )
    )
    gains, analogue = camera_gains(conf, t)
    light = sun_shadow_gain(conf, t)
    track.ambient = (track.ambient * gains * light[:, None]).astype(np.float32)
    track.gain = (track.gain * analogue).astype(np.float32)


def face_pulse(conf: Confounders, phys, t: np.ndarray) -> np.ndarray:
    """Facial blood-volume signal for the renderer: the PPG pulse with respiratory modulation."""
    resp, _ = phys._resp_terms(t)
    pulse = phys.ppg_pulse(t)
    p = conf.params
    return pulse * (1.0 + p["face_resp_am"] * resp) + p["face_resp_baseline"] * resp


# --------------------------------------------------------------------------- label


def contact_label(conf: Confounders, phys, t: np.ndarray, fs: float) -> np.ndarray:
    """Finger PPG at times ``t`` (s, sampled at ``fs`` Hz): transit delay with respiratory jitter,
    vasomotor baseline wander and probe-motion artefacts (no sensor noise: the caller adds it)."""
    p = conf.params
    resp, _ = phys._resp_terms(t)
    delay = p["label_dptt_s"] + p["label_dptt_resp_s"] * resp
    lo = phys.t[0] + phys.ppg_delay_s + 1e-6
    y = phys.ppg(np.maximum(t - delay, lo))
    rng = _stream(conf, 2)
    y = y + p["label_wander"] * slow_wave(t, rng, 0.01, 0.1, n=3)
    for t0, t1, amp in p["label_artifacts"]:
        env = envelope(t, t0, t1, 0.3)
        if env.any():
            y = y + amp * env * band_noise(t.size, fs, 0.5, min(5.0, 0.45 * fs), rng)
    return y


# --------------------------------------------------------------------------- radar


def sway(conf: Confounders, n: int, fs: float) -> np.ndarray:
    """(n,) postural sway of the chest along the line of sight (m), 0.03-0.7 Hz."""
    rng = _stream(conf, 3)
    x = band_noise(n, fs, 0.03, 0.7, rng) + 0.3 * smooth_noise(n, fs, 0.1, rng)
    return conf.params["sway_rms_m"] * x / max(float(x.std()), 1e-12)


def vehicle_vibration(conf: Confounders, n: int, fs: float) -> np.ndarray:
    """(n,) chest-radar vibration (m) in 0.7-8 Hz, displacement spectrum ~ 1/f, stop-and-go modulated."""
    rng = _stream(conf, 4)
    hi = min(8.0, 0.45 * fs)
    x = band_noise(n, fs, 0.7, hi, rng)
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(n, 1 / fs)
    spec[1:] /= np.sqrt(np.maximum(f[1:], 0.7))
    x = np.fft.irfft(spec, n)
    traffic = 0.6 + 0.4 * slow_wave(np.arange(n) / fs, rng, 0.01, 0.05, n=2)
    x = x * traffic
    return conf.params["vehicle_vib_rms_m"] * x / max(float(x.std()), 1e-12)


def range_amplitude(amp: float, range_m: float) -> float:
    """Chest amplitude scaled by the 1/R^2 law about :data:`RANGE_REF_M`."""
    return float(amp * (RANGE_REF_M / range_m) ** 2)
