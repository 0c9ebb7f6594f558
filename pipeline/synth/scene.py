"""Shared physics of the synthetic datasets: recording conditions, face texture, video rendering, events.

Both generators (:mod:`pipeline.synth.equipleth`, :mod:`pipeline.synth.physdrive`) render video with
the same reflectance model, per frame and pixel (values in 8-bit DN)::

    radiance = L(t, x) * (albedo(x) - pulse(t) * P(x)) + k_s(t) * S(x) * l(t)
    frame    = quantise_8bit(radiance + sensor_noise(radiance, gain(t)))

* ``albedo``: the base face (skimage's astronaut photo) recoloured to the subject's Fitzpatrick
  type (skin and hair take the type's mean skin colour, shading kept as a ratio);
* ``P = albedo * skin_mask * w * a * h(x)``: the pulsatile term; more blood absorbs more light, so the
  pulse *lowers* the reflectance. ``w`` = (0.3, 1.0, 0.5) for (R, G, B), strongest in green; ``a``
  the green peak-to-peak contrast (0.6-1.0 % for type 1, scaled down to 45 % of that for type 6:
  melanin absorbs before the light reaches the blood); ``h`` a smooth 0.6-1.4 spatial map
  (perfusion is stronger on forehead and cheeks);
* ``S``: specular (surface, illuminant-coloured, no pulse) blobs on forehead, nose and cheekbones;
  its gain ``k_s`` follows the head rotation (the highlight lobe is ~5 degrees wide);
* ``L(t, x)``: illumination times the camera's analogue gain, per RGB channel, with the condition's
  spatial field (streetlight sweep, wiper, rain shadows), see :data:`ILLUMINATION`;
* geometry: each output pixel samples the texture through a rigid transform (translation,
  rotation, scale of the head) and, when talking, a non-rigid downward displacement of the lower
  face (jaw and lips) ``J(t) * D(x)``, with ``D`` a smooth weight from the mouth to the chin;
* sensor noise: shot noise (40 e-/DN at gain 1) + read noise (5 e-), both scaled by the gain, so
  low light with a high gain is noisy; then rounding to uint8 (8-bit quantisation, saturation at 255).

Everything is vectorised numpy: one bilinear gather of the stacked texture channels per frame.

Conditions (:class:`Conditions`): Fitzpatrick type 1-6, illumination (``indoor`` lab light,
``noon``, ``dusk``, ``night``, ``rain``), rigid head motion level (``stationary``, ``moderate``,
``large``), talking, camera vibration (px rms at a 100 px face) and extra episodes (body motion,
road bumps) passed in by the dataset generator. :func:`render_face_clip` renders an EquiPleth-style
face-crop clip for any condition in memory; the calibration tests use it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

from pipeline.synth.physio import Physiology, simulate_physiology

# --------------------------------------------------------------------------- constants

# Base face: skimage.data.astronaut(); landmarks in photo pixels (row, col).
FACE_CENTER_RC = (118.0, 226.0)
FACE_BOX_PX = 160.0  # side of the photo square an MTCNN-style crop covers
FACE_HEIGHT_PX = 110.0  # forehead to chin in the photo
MOUTH_RC = (146.0, 224.0)  # centre of the lips' contact line
MOUTH_HALF_WIDTH_PX = 14.0  # mouth ~0.25 face heights wide (anthropometry: ~5 cm of a ~20 cm face)
CHIN_ROW = 178.0
# A head turning about its vertical axis is drawn as a cylinder through the face centre: the head's
# half-width over the face height (forehead to chin), ~9 cm of a ~20 cm face (anthropometry).
HEAD_RADIUS_FACE = 0.45
SPECULAR_SPOTS = (  # (row, col, sigma_px, weight): forehead, nose tip, cheekbones
    (72.0, 226.0, 11.0, 1.0),
    (124.0, 224.0, 5.0, 0.9),
    (121.0, 197.0, 7.0, 0.5),
    (121.0, 253.0, 7.0, 0.5),
)
# Mean skin colour (8-bit sRGB DN, well exposed at noon) per Fitzpatrick type, and pulsatile scale.
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
E_PER_DN = 40.0  # electrons per DN at gain 1
READ_NOISE_E = 5.0
SODIUM_RGB = np.array([1.0, 0.62, 0.25], dtype=np.float32)  # streetlight colour

# Illumination presets. level: irradiance relative to noon; gain: camera analogue gain (auto
# exposure); tint: illuminant RGB; drift: slow relative variation (clouds, dimmers).
ILLUMINATION = {
    "indoor": dict(level=(0.80, 0.95), gain=(1.0, 1.2), tint=(1.02, 1.0, 0.95), drift=(0.01, 0.03)),
    "noon": dict(level=(0.95, 1.05), gain=(1.0, 1.0), tint=(1.0, 1.0, 1.0), drift=(0.01, 0.04)),
    "dusk": dict(level=(0.22, 0.35), gain=(2.2, 3.2), tint=(1.12, 0.95, 0.76), drift=(0.05, 0.10)),
    "night": dict(level=(0.05, 0.08), gain=(6.5, 9.0), tint=(0.85, 0.95, 1.15), drift=(0.02, 0.05)),
    "rain": dict(level=(0.35, 0.55), gain=(1.5, 2.2), tint=(0.92, 0.98, 1.10), drift=(0.03, 0.07)),
}
ILLUMINATIONS = tuple(ILLUMINATION)
# Rigid head motion: (translation as a fraction of face height, rotation deg, scale fraction, f_max Hz).
MOTION = {
    "stationary": (0.006, 0.6, 0.004, 0.25),
    "moderate": (0.04, 3.0, 0.025, 1.0),
    "large": (0.10, 8.0, 0.06, 2.0),
}
MOTION_LEVELS = tuple(MOTION)


@dataclass(frozen=True)
class Conditions:
    """Recording conditions of one trial / session (all JSON-serialisable)."""

    skin_type: int = 1
    illumination: str = "noon"
    motion: str = "stationary"
    talking: bool = False
    vibration_px: float = 0.0  # camera shake rms in px for a 100 px face (vehicle vibration)

    def __post_init__(self):
        if self.skin_type not in SKIN_ALBEDO:
            raise ValueError(f"skin_type must be 1..6, got {self.skin_type}")
        if self.illumination not in ILLUMINATION:
            raise ValueError(f"illumination must be one of {ILLUMINATIONS}, got {self.illumination!r}")
        if self.motion not in MOTION:
            raise ValueError(f"motion must be one of {MOTION_LEVELS}, got {self.motion!r}")

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- helpers


def child_seq(seq: np.random.SeedSequence, k: int) -> np.random.SeedSequence:
    """The k-th child of ``seq`` as a fresh ``seq.spawn()`` would give it, without spawning: ``spawn``
    advances the parent, so calling a generator twice on the same plan drew other noise the second
    time; this is the same on every call (and equal to the first call's draw before)."""
    return np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, k), pool_size=seq.pool_size)


def slow_wave(t: np.ndarray, rng: np.random.Generator, f_lo: float, f_hi: float, n: int = 3) -> np.ndarray:
    """Random-phase sum of sinusoids in [f_lo, f_hi] Hz, peak |x| = 1 over ``t``."""
    f = rng.uniform(f_lo, f_hi, n)
    ph = rng.uniform(0, 2 * np.pi, n)
    w = rng.uniform(0.5, 1.0, n)
    x = (w[:, None] * np.sin(2 * np.pi * f[:, None] * t[None, :] + ph[:, None])).sum(0)
    return x / max(float(np.abs(x).max()), 1e-12)


def smooth_noise(n: int, fs: float, f_hi: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise low-passed below ``f_hi`` Hz (FFT brick wall), unit rms."""
    x = rng.standard_normal(n)
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(n, 1 / fs) > f_hi] = 0
    y = np.fft.irfft(spec, n)
    return y / max(float(y.std()), 1e-12)


def band_noise(n: int, fs: float, f_lo: float, f_hi: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise band-limited to [f_lo, f_hi] Hz, unit rms."""
    x = rng.standard_normal(n)
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(n, 1 / fs)
    spec[(f < f_lo) | (f > f_hi)] = 0
    y = np.fft.irfft(spec, n)
    return y / max(float(y.std()), 1e-12)


def envelope(t: np.ndarray, start: float, end: float, ramp: float = 0.3) -> np.ndarray:
    """1 inside [start, end], raised-cosine ramps of ``ramp`` s outside, 0 elsewhere."""
    e = np.zeros_like(t)
    inside = (t >= start) & (t <= end)
    e[inside] = 1.0
    for edge, sign in ((start, -1.0), (end, 1.0)):
        d = sign * (t - edge)
        m = (d > 0) & (d < ramp)
        e[m] = np.maximum(e[m], 0.5 + 0.5 * np.cos(np.pi * d[m] / ramp))
    return e


def plan_events(
    duration: float,
    rng: np.random.Generator,
    rate_per_min: float,
    kinds: dict[str, float],
    length_s: tuple[float, float],
    margin_s: float = 1.0,
    gap_s: float = 2.0,
) -> list[dict]:
    """Non-overlapping random episodes {kind, start_s, end_s} in [margin, duration - margin]."""
    names = sorted(kinds)
    p = np.array([kinds[k] for k in names], dtype=np.float64)
    p /= p.sum()
    count = int(rng.poisson(rate_per_min * duration / 60.0))
    events: list[dict] = []
    for _ in range(count):
        length = float(rng.uniform(*length_s))
        kind = names[int(rng.choice(len(names), p=p))]
        for _try in range(20):
            if duration - 2 * margin_s - length <= 0:
                break
            s = float(rng.uniform(margin_s, duration - margin_s - length))
            if all(s + length + gap_s < e["start_s"] or s > e["end_s"] + gap_s for e in events):
                events.append({"kind": kind, "start_s": round(s, 3), "end_s": round(s + length, 3)})
                break
    return sorted(events, key=lambda e: e["start_s"])


# --------------------------------------------------------------------------- base photo and texture


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
def base_photo() -> dict[str, np.ndarray]:
    """Astronaut photo (float32 DN) and photo-space maps: skin, head, specular, jaw, person alpha."""
    from skimage.data import astronaut

    photo = astronaut().astype(np.float32)
    rr, cc = np.mgrid[0 : photo.shape[0], 0 : photo.shape[1]].astype(np.float32)
    r0, c0 = FACE_CENTER_RC
    near_face = ((rr - r0) / 95.0) ** 2 + ((cc - c0) / 85.0) ** 2 <= 1.0
    skin = ndi.binary_opening(skin_rule(photo) & near_face, iterations=2)
    skin = ndi.binary_closing(_largest_component(skin), iterations=2)
    _, cb, cr = _ycbcr(photo)
    loose = (cb >= 77) & (cb <= 117) & (cr >= 137) & (cr <= 173)
    head_ellipse = ((rr - (r0 - 15.0)) / 110.0) ** 2 + ((cc - c0) / 85.0) ** 2 <= 1.0
    head = _largest_component(ndi.binary_opening(loose & head_ellipse, iterations=1) | skin)
    holes = ndi.binary_fill_holes(head) & ~head
    lab, n = ndi.label(holes)
    if n:
        small = np.flatnonzero(ndi.sum(holes, lab, index=np.arange(1, n + 1)) < 100) + 1
        head |= np.isin(lab, small)
    spec = np.zeros(photo.shape[:2], dtype=np.float32)
    for r, c, s, w in SPECULAR_SPOTS:
        spec += w * np.exp(-0.5 * (((rr - r) / s) ** 2 + ((cc - c) / (1.3 * s)) ** 2))
    # Jaw/lip displacement weight: 0 above the upper lip, 1 from the lower lip to the chin, fading
    # below the chin and sideways beyond the jaw line.
    mr, mc = MOUTH_RC
    ramp = np.clip((rr - (mr - 6.0)) / 12.0, 0.0, 1.0)
    below = np.clip(1.0 - (rr - CHIN_ROW) / 14.0, 0.0, 1.0)
    side = np.exp(-0.5 * ((cc - mc) / 32.0) ** 2)
    jaw = (ramp * below * side).astype(np.float32)
    # Mouth: signed distance below the lips' contact line (face heights) and the width profile of the
    # opening (1 at the centre, 0 at the corners; the mouth is ~0.25 face heights wide, anthropometric
    # proportion). Used by the realistic world's mouth interior (:class:`MouthInterior`).
    mouth_dy = ((rr - mr) / FACE_HEIGHT_PX).astype(np.float32)
    mouth_taper = np.sqrt(np.clip(1.0 - ((cc - mc) / MOUTH_HALF_WIDTH_PX) ** 2, 0.0, 1.0)).astype(np.float32)
    # Person (head + shoulders) alpha for compositing into a cabin: head ellipse + torso ellipse.
    head_e = ((rr - 108.0) / 100.0) ** 2 + ((cc - c0) / 82.0) ** 2 <= 1.0
    torso = (((rr - 360.0) / 200.0) ** 2 + ((cc - 235.0) / 175.0) ** 2 <= 1.0) & (rr > 150)
    alpha = ndi.gaussian_filter((head_e | torso).astype(np.float32), 3.0)
    # Head alone (down to the upper neck) for a head that moves over a static body.
    head_alpha = ndi.gaussian_filter(
        ((((rr - 112.0) / 100.0) ** 2 + ((cc - c0) / 80.0) ** 2) <= 1.0).astype(np.float32), 5.0
    )
    return {
        "photo": photo,
        "skin": ndi.gaussian_filter(skin.astype(np.float32), 1.5),
        "head": ndi.gaussian_filter(head.astype(np.float32), 1.5),
        "spec": spec,
        "jaw": jaw,
        "mouth_dy": mouth_dy,
        "mouth_taper": mouth_taper,
        "alpha": alpha,
        "head_alpha": head_alpha,
    }


@dataclass
class Texture:
    """Subject appearance sampled on a texture grid; ``stack`` channels:
    0-2 albedo (DN at noon), 3-5 pulsatile P (DN per unit pulse), 6 specular S, 7 alpha."""

    stack: np.ndarray  # (H, W, 8) float32
    jaw: np.ndarray  # (H, W) float32 displacement weight
    anchor_rc: tuple[float, float]  # face centre in texture px
    face_px: float  # face height (forehead to chin) in texture px
    skin_type: int
    pulse_pp_green: float
    mouth_dy: np.ndarray | None = None  # (H, W) distance below the lips' contact line, face heights
    mouth_taper: np.ndarray | None = None  # (H, W) width profile of the mouth opening, 0..1


def make_texture(
    rng: np.random.Generator,
    skin_type: int,
    size_hw: tuple[int, int],
    src_px: float,
    anchor_rc: tuple[float, float],
    src_center_rc: tuple[float, float] = FACE_CENTER_RC,
    jitter: bool = True,
    alpha: str = "alpha",
) -> Texture:
    """Recolour and warp the base photo for one subject onto a (H, W) texture grid.

    ``src_px`` photo pixels per texture pixel; the photo point ``src_center_rc`` (plus a per-subject
    offset) lands on ``anchor_rc``. Per subject: albedo of the Fitzpatrick type, background tint,
    scale, aspect, rotation, offset, mirror and the pulsatile contrast. ``alpha``: "alpha" (head and
    shoulders) or "head_alpha" (head only) for channel 7.
    """
    base = base_photo()
    photo, skin, head = base["photo"], base["skin"], base["head"]
    mean_skin = (photo * skin[..., None]).sum((0, 1)) / skin.sum()
    albedo = np.array(SKIN_ALBEDO[skin_type]) * rng.uniform(0.95, 1.05, 3)
    gain = (albedo / mean_skin).astype(np.float32)
    bg_gain = (rng.uniform(0.8, 1.1) * rng.uniform(0.93, 1.07, 3)).astype(np.float32)
    head3 = head[..., None]
    coloured = photo * (1.0 + head3 * (gain - 1.0)) * (1.0 + (1.0 - head3) * (bg_gain - 1.0))

    h, w = size_hw
    scale = rng.uniform(0.92, 1.08) if jitter else 1.0
    aspect = rng.uniform(0.95, 1.05) if jitter else 1.0
    angle = np.deg2rad(rng.uniform(-6.0, 6.0)) if jitter else 0.0
    off = rng.uniform(-5.0, 5.0, 2) if jitter else np.zeros(2)
    mirror = (-1.0 if rng.random() < 0.5 else 1.0) if jitter else 1.0
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    u = (u - anchor_rc[1]) * src_px / scale * mirror
    v = (v - anchor_rc[0]) * src_px / (scale * aspect)
    ca, sa = np.cos(angle), np.sin(angle)
    coords = np.stack(
        [src_center_rc[0] + off[0] + sa * u + ca * v, src_center_rc[1] + off[1] + ca * u - sa * v]
    )
    sigma = max(0.0, 0.45 * (src_px / scale - 1.0))  # anti-alias before down-sampling

    def sample(img: np.ndarray, mode: str = "reflect") -> np.ndarray:
        src = ndi.gaussian_filter(img, sigma) if sigma > 0 else img
        return ndi.map_coordinates(src, coords, order=1, mode=mode).astype(np.float32)

    stack = np.zeros((h, w, 8), dtype=np.float32)
    for ch in range(3):
        stack[..., ch] = np.clip(sample(coloured[..., ch]), 0, 255)
    skin_t = np.clip(sample(skin, "constant"), 0, 1)
    pulse_pp = rng.uniform(*GREEN_PULSE_PP_RANGE) * PULSE_SCALE[skin_type]
    perfusion = 1.0 + 0.4 * _smooth_field(rng, (h, w), max(h, w) / 6.0)
    stack[..., 3:6] = (
        stack[..., :3] * (skin_t * perfusion)[..., None] * (pulse_pp * CHANNEL_WEIGHTS)[None, None, :]
    )
    stack[..., 6] = sample(base["spec"], "constant")
    stack[..., 7] = np.clip(sample(base[alpha], "constant"), 0, 1)
    jaw = sample(base["jaw"], "constant")
    return Texture(
        stack=stack,
        jaw=jaw,
        anchor_rc=(float(anchor_rc[0]), float(anchor_rc[1])),
        face_px=FACE_HEIGHT_PX * scale / src_px,
        skin_type=skin_type,
        pulse_pp_green=float(pulse_pp),
        mouth_dy=sample(base["mouth_dy"], "nearest"),
        mouth_taper=sample(base["mouth_taper"], "constant"),
    )


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth random field in [-1, 1]."""
    f = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return f / max(float(np.abs(f).max()), 1e-12)


# --------------------------------------------------------------------------- per-frame tracks


@dataclass(frozen=True)
class MouthInterior:
    """What shows between the lips when the jaw drops (realistic world, :mod:`pipeline.synth.confounders`).

    The gap between the fixed upper lip and the lower lip, which moves with the jaw, shows the upper
    teeth in its top ``teeth_frac`` and the dark oral cavity below; neither carries a pulse. Albedos in
    DN at noon, like the skin's.
    """

    cavity_rgb: tuple[float, float, float]
    teeth_rgb: tuple[float, float, float]
    teeth_frac: float


@dataclass
class Track:
    """Per-frame scene state (n frames at ``fps``) plus the video episodes it contains."""

    fps: float
    ty: np.ndarray  # head translation, output px (down)
    tx: np.ndarray  # head translation, output px (right)
    rot: np.ndarray  # head roll, rad
    scale: np.ndarray  # head scale factor
    jaw: np.ndarray  # jaw drop, fraction of face height
    shake: np.ndarray  # (n, 2) camera shake, output px
    ambient: np.ndarray  # (n, 3) illuminant RGB x gain (multiplies albedo)
    gain: np.ndarray  # (n,) analogue gain (noise)
    street: np.ndarray  # (n,) streetlight amplitude (x gain, relative to noon)
    street_x: np.ndarray  # (n,) streetlight sweep centre, fraction of width
    wiper: np.ndarray  # (n,) wiper shadow depth
    wiper_x: np.ndarray  # (n,) wiper position, fraction of width
    shadow_depth: float
    shadow_shift: np.ndarray  # (n,) rain-shadow texture offset in px (rows)
    spec_gain: np.ndarray  # (n,) specular intensity, DN at noon
    events: list[dict] = field(default_factory=list)
    mouth: MouthInterior | None = None  # what an open mouth shows (realistic world); None: lip texture
    yaw: np.ndarray | None = None  # (n,) head turn about the vertical axis, rad (realistic world)
    wb_gains: np.ndarray | None = None  # (3,) camera white-balance gains on the noisy image (realistic)

    @property
    def n(self) -> int:
        return self.ty.size


def make_track(
    cond: Conditions,
    n: int,
    fps: float,
    rng: np.random.Generator,
    face_out_px: float,
    episodes: list[dict] | None = None,
    t0: float = 0.0,
) -> Track:
    """Draw head motion, talking, camera shake and lighting for ``n`` frames.

    ``face_out_px``: face height in output pixels (motion amplitudes scale with it). ``episodes``:
    externally planned events that also move the head (``body_motion``: large rigid motion;
    ``road_bump``: strong camera shake), given as {kind, start_s, end_s} on the same clock.
    """
    t = t0 + np.arange(n) / fps
    tr_frac, rot_deg, sc_frac, f_max = MOTION[cond.motion]
    tr = tr_frac * face_out_px * rng.uniform(0.6, 1.0)
    ty = tr * slow_wave(t, rng, 0.02, f_max) * rng.uniform(0.5, 1.0)
    tx = tr * slow_wave(t, rng, 0.02, f_max)
    rot = np.deg2rad(rot_deg * rng.uniform(0.6, 1.0)) * slow_wave(t, rng, 0.02, f_max)
    scale = 1.0 + sc_frac * rng.uniform(0.6, 1.0) * slow_wave(t, rng, 0.02, f_max)
    events: list[dict] = []
    if cond.motion != "stationary":
        events.append(_event(f"head_motion_{cond.motion}", t[0], t[-1]))

    jaw = np.zeros(n)
    if cond.talking:
        amp = rng.uniform(0.025, 0.05)
        env = np.zeros(n)
        s = t[0] + rng.uniform(0.0, 1.5)
        while s < t[-1]:
            e = min(s + rng.uniform(2.0, 6.0), t[-1])
            env = np.maximum(env, envelope(t, s, e, 0.15))
            events.append(_event("talking", s, e))
            s = e + rng.uniform(0.4, 2.0)
        syll = rng.uniform(3.0, 6.0) * (1.0 + 0.15 * slow_wave(t, rng, 0.1, 0.5))
        syll_phase = 2 * np.pi * np.cumsum(syll) / fps
        periodic = 0.5 - 0.5 * np.cos(syll_phase)
        broadband = np.abs(smooth_noise(n, fps, 8.0, rng))
        jaw = amp * env * (0.6 * periodic + 0.4 * np.clip(broadband / 2.0, 0, 1))
        # Talking also nods the head a little (0.5-3 Hz).
        nod = 0.012 * face_out_px * env * band_noise(n, fps, 0.5, 3.0, rng)
        ty = ty + nod
        rot = rot + np.deg2rad(1.0) * env * band_noise(n, fps, 0.5, 3.0, rng)

    shake = np.zeros((n, 2))
    if cond.vibration_px > 0:
        vib = cond.vibration_px * face_out_px / 100.0
        shake = vib * np.stack([band_noise(n, fps, 1.0, 12.0, rng), band_noise(n, fps, 1.0, 12.0, rng)], 1)

    for ep in episodes or []:
        env = envelope(t, ep["start_s"], ep["end_s"], 0.4)
        if not env.any():
            continue
        if ep["kind"] == "body_motion":  # turning, reaching, shifting in the seat
            a = 0.12 * face_out_px
            ty = ty + a * env * band_noise(n, fps, 0.1, 2.0, rng)
            tx = tx + 1.5 * a * env * band_noise(n, fps, 0.1, 2.0, rng)
            rot = rot + np.deg2rad(8.0) * env * band_noise(n, fps, 0.1, 2.0, rng)
        elif ep["kind"] == "road_bump":
            a = 0.06 * face_out_px
            bump = a * env * band_noise(n, fps, 1.0, 6.0, rng)
            shake = shake + np.stack([bump, 0.5 * bump], 1)

    light = make_lighting(cond.illumination, t, fps, rng)
    events.extend(light.pop("events"))
    spec0 = rng.uniform(10.0, 30.0)
    spec_gain = spec0 * np.exp(-0.5 * ((rot - rng.uniform(-0.03, 0.03)) / np.deg2rad(5.0)) ** 2)
    return Track(
        fps=fps,
        ty=ty,
        tx=tx,
        rot=rot,
        scale=scale,
        jaw=jaw,
        shake=shake,
        spec_gain=spec_gain,
        events=sorted(events, key=lambda e: e["start_s"]),
        **light,
    )


def _event(kind: str, start: float, end: float, modality: str = "video") -> dict:
    return {
        "kind": kind,
        "start_s": round(float(start), 3),
        "end_s": round(float(end), 3),
        "modality": modality,
    }


def make_lighting(name: str, t: np.ndarray, fps: float, rng: np.random.Generator) -> dict:
    """Illumination of one recording: global RGB x gain, streetlights, wiper, rain shadows."""
    p = ILLUMINATION[name]
    n = t.size
    level = rng.uniform(*p["level"])
    gain = rng.uniform(*p["gain"])
    tint = np.array(p["tint"]) * (1.0 + rng.uniform(-0.03, 0.03, 3))
    drift = rng.uniform(*p["drift"]) * slow_wave(t, rng, 0.005, 0.05, n=2)
    var = 1.0 + drift
    events: list[dict] = []
    if name == "dusk":  # low sun through trees and buildings: mid-frequency flicker
        var = var * (1.0 + rng.uniform(0.04, 0.10) * smooth_noise(n, fps, 1.0, rng).clip(-2.5, 2.5) / 2.5)
    ambient = (level * gain) * tint[None, :] * var[:, None]
    street = np.zeros(n)
    street_x = np.zeros(n)
    if name == "night":  # passing streetlights: sodium-coloured pulses sweeping across the face
        nearest = np.full(n, np.inf)
        s = t[0] + rng.uniform(0.0, 2.0)
        while s < t[-1] + 1.0:
            width = rng.uniform(0.25, 0.6)
            amp = rng.uniform(0.05, 0.12) * gain
            d = np.abs(t - s)
            street += amp * np.exp(-0.5 * (d / width) ** 2)
            m = d < nearest
            street_x[m] = 0.5 + (t[m] - s) / (3 * width)
            nearest[m] = d[m]
            if s - width <= t[-1] and s + width >= t[0]:
                events.append(_event("streetlight", s - width, s + width))
            s += rng.uniform(1.5, 4.0)
    wiper = np.zeros(n)
    wiper_x = np.zeros(n)
    shadow_depth = 0.0
    shadow_shift = np.zeros(n)
    if name == "rain":  # drops on the windscreen cast moving shadows; the wiper sweeps periodically
        shadow_depth = rng.uniform(0.10, 0.25)
        shadow_shift = np.cumsum(np.full(n, rng.uniform(20.0, 60.0) / fps))
        period = rng.uniform(1.5, 3.0)
        first = t[0] - rng.uniform(0, period)  # start of the pass in progress at t[0]
        frac = ((t - first) / period) % 1.0
        sweep = frac < 0.35
        wiper[sweep] = rng.uniform(0.25, 0.45) * np.sin(np.pi * frac[sweep] / 0.35)
        wiper_x[sweep] = frac[sweep] / 0.35 * 1.4 - 0.2
        start = first
        while start <= t[-1]:
            if start + 0.35 * period >= t[0]:
                events.append(_event("wiper", max(start, t[0]), start + 0.35 * period))
            start += period
    return {
        "ambient": ambient.astype(np.float32),
        "gain": np.full(n, gain, dtype=np.float32),
        "street": street.astype(np.float32),
        "street_x": street_x.astype(np.float32),
        "wiper": wiper.astype(np.float32),
        "wiper_x": wiper_x.astype(np.float32),
        "shadow_depth": float(shadow_depth),
        "shadow_shift": shadow_shift,
        "events": events,
    }


# --------------------------------------------------------------------------- renderer


class Renderer:
    """Renders frames of size ``out_hw``: a background (optional) plus the warped subject texture.

    ``face_rc``: where the texture anchor sits in the output at rest; ``tex_per_out``: texture px
    per output px; ``box``: (y0, y1, x0, x1) output region the subject can cover (default: all).
    """

    def __init__(
        self,
        tex: Texture,
        track: Track,
        pulse: np.ndarray,
        out_hw: tuple[int, int],
        face_rc: tuple[float, float],
        tex_per_out: float = 1.0,
        background: np.ndarray | None = None,
        box: tuple[int, int, int, int] | None = None,
        noise_seq: np.random.SeedSequence | None = None,
    ):
        self.tex, self.track = tex, track
        self.pulse = np.asarray(pulse, dtype=np.float32)
        self.h, self.w = out_hw
        self.face_rc = face_rc
        self.k = float(tex_per_out)
        self.bg = background  # (h + 2m, w + 2m, 3) float32 albedo, m = self.margin, or None
        self.margin = 0 if background is None else (background.shape[0] - self.h) // 2
        self.box = box or (0, self.h, 0, self.w)
        y0, y1, x0, x1 = self.box
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        self.yy, self.xx = yy.ravel(), xx.ravel()
        th, tw, nc = tex.stack.shape
        # Gathered per frame, bilinear: albedo (3), specular and alpha over a background; nearest
        # neighbour: the pulsatile map (a 1 % modulation, its sub-pixel detail does not matter).
        flat = tex.stack.reshape(th * tw, nc)
        keep = [0, 1, 2, 6, 7] if background is not None else [0, 1, 2, 6]
        self.flat = np.ascontiguousarray(flat[:, keep])
        self.flat_pulse = np.ascontiguousarray(flat[:, 3:6])
        self.jaw_flat = tex.jaw.ravel()
        self.mouth_flat = None
        if track.mouth is not None and tex.mouth_dy is not None:
            self.mouth_flat = (tex.mouth_dy.ravel(), tex.mouth_taper.ravel())
        self.tex_hw = (th, tw)
        # Per-frame noise seeds by :func:`child_seq`, not ``spawn`` (which advances the plan's sequence, so
        # a second renderer of the same plan drew other noise); the same seeds a first ``spawn`` gave.
        seq = noise_seq or np.random.SeedSequence(0)
        self.frame_seqs = [child_seq(seq, i) for i in range(track.n)]
        self.xnorm = (np.arange(self.w, dtype=np.float32) + 0.5) / self.w
        if background is not None:
            brng = np.random.default_rng(child_seq(self.frame_seqs[0], 1))
            self.bank = brng.standard_normal((2, self.h + 32, self.w + 32, 3), dtype=np.float32)
        if track.shadow_depth > 0:
            # child 2 after the bank's two children, child 0 without a background (as spawn numbered them)
            srng = np.random.default_rng(child_seq(self.frame_seqs[0], 2 if background is not None else 0))
            tall = self.h * 4
            f = _smooth_field(srng, (tall, self.w), max(3.0, self.w / 25.0))
            self.shadow_tex = np.clip((f - 0.2) * 3.0, 0.0, 1.0).astype(np.float32)
        else:
            self.shadow_tex = None

    def _warp(self, i: int) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        """Texture sampled for the output box at frame i: (N, 4 or 5) bilinear channels (albedo,
        specular, alpha), (N, 3) pulsatile map, and the (N,) bool masks of open-mouth pixels that show
        the teeth and the cavity (None when the track has no :class:`MouthInterior` or the jaw is shut)."""
        tr = self.track
        cy = self.face_rc[0] + tr.ty[i] + tr.shake[i, 0]
        cx = self.face_rc[1] + tr.tx[i] + tr.shake[i, 1]
        c, s = np.float32(np.cos(tr.rot[i])), np.float32(np.sin(tr.rot[i]))
        g = np.float32(self.k / tr.scale[i])
        dy, dx = self.yy - np.float32(cy), self.xx - np.float32(cx)
        th, tw = self.tex_hw
        r = self.tex.anchor_rc[0] + g * (c * dy + s * dx)
        q = g * (-s * dy + c * dx)
        if tr.yaw is not None and tr.yaw[i] != 0.0:
            # Out-of-plane turn: the face is a cylinder of radius R about the vertical axis through its
            # centre, seen from the front. The image column x (texture px from the axis) shows the
            # surface point at angle asin(x / R) - yaw, which the frontal photo has at column
            # R sin(that) = x cos(yaw) - sqrt(R^2 - x^2) sin(yaw): the near cheek widens, the far one
            # narrows and slides behind the nose line, skin and hair cross the crop's fixed skin ROI.
            # Outside the cylinder (hair edge, shoulders, background) the mapping is x cos(yaw), continuous
            # at |x| = R.
            rad = np.float32(HEAD_RADIUS_FACE * self.tex.face_px)
            cy_, sy_ = np.float32(np.cos(tr.yaw[i])), np.float32(np.sin(tr.yaw[i]))
            depth = np.sqrt(np.maximum(rad * rad - q * q, np.float32(0.0)))
            q = q * cy_ - depth * sy_
        q = q + np.float32(self.tex.anchor_rc[1])
        mouth = None
        if tr.jaw[i] != 0.0:
            ri = np.clip(r.astype(np.int32), 0, th - 1)
            qi = np.clip(q.astype(np.int32), 0, tw - 1)
            at = ri * tw + qi
            weight = self.jaw_flat[at]
            r = r - np.float32(tr.jaw[i] * self.tex.face_px) * weight
            if self.mouth_flat is not None:
                # A point d face heights below the lips' contact line moves down by jaw * weight: where
                # that is more than d (times the opening's width profile), the lower lip has moved past
                # it and the point looks into the mouth.
                dy = self.mouth_flat[0][at]
                opening = np.float32(tr.jaw[i]) * weight * self.mouth_flat[1][at]
                inside = (dy > 0) & (dy < opening)
                if inside.any():
                    teeth = inside & (dy < np.float32(tr.mouth.teeth_frac) * opening)
                    mouth = (teeth, inside & ~teeth)
        r = np.clip(r, 0, th - 1.001)
        q = np.clip(q, 0, tw - 1.001)
        r0 = r.astype(np.int32)
        q0 = q.astype(np.int32)
        idx = r0 * tw + q0
        fr = r - r0
        fq = q - q0
        w11 = (fr * fq)[:, None]
        w10 = fr[:, None] - w11
        w01 = fq[:, None] - w11
        w00 = 1 - fr[:, None] - w01
        f = self.flat
        out = np.take(f, idx, axis=0) * w00
        out += np.take(f, idx + 1, axis=0) * w01
        out += np.take(f, idx + tw, axis=0) * w10
        out += np.take(f, idx + tw + 1, axis=0) * w11
        nearest = idx + (fr >= 0.5) * tw + (fq >= 0.5)
        return out, np.take(self.flat_pulse, nearest, axis=0), mouth

    def _light_field(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(h, w, 3) or (1, w, 3) multiplicative illumination for frame i, and the specular colour."""
        tr = self.track
        amb = tr.ambient[i]
        field_ = np.broadcast_to(amb[None, None, :], (1, 1, 3)).astype(np.float32)
        if tr.street[i] > 0:
            sweep = np.exp(-0.5 * ((self.xnorm - tr.street_x[i]) / 0.35) ** 2)
            field_ = field_ + (tr.street[i] * sweep)[None, :, None] * SODIUM_RGB[None, None, :]
        if tr.wiper[i] > 0:
            band = 1.0 - tr.wiper[i] * np.exp(-0.5 * ((self.xnorm - tr.wiper_x[i]) / 0.12) ** 2)
            field_ = field_ * band[None, :, None]
        if self.shadow_tex is not None:
            off = int(tr.shadow_shift[i]) % (self.shadow_tex.shape[0] - self.h)
            shade = 1.0 - tr.shadow_depth * self.shadow_tex[off : off + self.h]
            field_ = field_ * shade[:, :, None]
        spec_rgb = amb + tr.street[i] * SODIUM_RGB * 0.5
        return field_, spec_rgb

    def frame(self, i: int) -> np.ndarray:
        """(h, w, 3) uint8 frame i."""
        tr = self.track
        y0, y1, x0, x1 = self.box
        samp, puls, mouth = self._warp(i)
        samp = samp.reshape(y1 - y0, x1 - x0, -1)
        diffuse = samp[..., :3] - self.pulse[i] * puls.reshape(y1 - y0, x1 - x0, 3)
        if mouth is not None:  # teeth and oral cavity: no pulse, no skin specular
            flat_diffuse = diffuse.reshape(-1, 3)
            flat_diffuse[mouth[0]] = np.asarray(tr.mouth.teeth_rgb, dtype=np.float32)
            flat_diffuse[mouth[1]] = np.asarray(tr.mouth.cavity_rgb, dtype=np.float32)
            samp.reshape(-1, samp.shape[-1])[mouth[0] | mouth[1], 3] = 0.0
        field_, spec_rgb = self._light_field(i)
        spec_rgb = (np.float32(tr.spec_gain[i]) * spec_rgb.astype(np.float32))[None, None, :]
        gain = float(tr.gain[i])
        shot, read = np.float32(gain / E_PER_DN), np.float32((gain * READ_NOISE_E / E_PER_DN) ** 2)
        rng = np.random.default_rng(self.frame_seqs[i])
        if self.bg is None:
            clean = diffuse * field_ + samp[..., 3:4] * spec_rgb
            sigma = np.sqrt(np.maximum(clean, 0.0) * shot + read)
            clean += sigma * rng.standard_normal(clean.shape, dtype=np.float32)
        else:
            # Whole frame: the (shaken) background under the light field; the head box is then
            # blended in. Noise: fresh Gaussian draws inside the head box, elsewhere a randomly
            # offset window into a per-session bank of Gaussian draws (a speed trade-off).
            m = self.margin
            oy = int(np.clip(round(tr.shake[i, 0]), -m, m))
            ox = int(np.clip(round(tr.shake[i, 1]), -m, m))
            clean = self.bg[m - oy : m - oy + self.h, m - ox : m - ox + self.w] * field_
            fbox = field_[y0:y1] if field_.shape[0] > 1 else field_
            fbox = fbox[:, x0:x1] if fbox.shape[1] > 1 else fbox
            a = samp[..., 4:5]
            box = clean[y0:y1, x0:x1]
            box *= 1 - a
            box += a * (diffuse * fbox + samp[..., 3:4] * spec_rgb)
            sigma = clean * shot
            sigma += read
            np.sqrt(sigma, out=sigma)
            k, by, bx = rng.integers(0, self.bank.shape[0]), rng.integers(0, 32), rng.integers(0, 32)
            sigma *= self.bank[k, by : by + self.h, bx : bx + self.w]
            sigma[y0:y1, x0:x1] = np.sqrt(box * shot + read) * rng.standard_normal(
                box.shape, dtype=np.float32
            )
            clean += sigma
        if tr.wb_gains is not None:
            # The camera's white balance: digital R/G/B gains applied after the sensor (and its noise),
            # before the 8-bit output and the encoder.
            clean *= np.asarray(tr.wb_gains, dtype=np.float32)
        clean += 0.5
        np.clip(clean, 0, 255, out=clean)
        return clean.astype(np.uint8)


# --------------------------------------------------------------------------- convenience


def render_face_clip(
    cond: Conditions,
    seconds: float,
    seed: int,
    size: int = 64,
    fps: float = 30.0,
    mean_hr_bpm: float | None = None,
) -> tuple[np.ndarray, dict]:
    """Render an EquiPleth-style face-crop clip in memory: (frames (n, size, size, 3) uint8, truth).

    Physiology and subject look depend on ``seed`` only, so the same seed under other conditions
    shows the same person with the same heart: a paired comparison of conditions.
    """
    ss_phys, ss_look, ss_track, ss_noise = np.random.SeedSequence([seed, 9001]).spawn(4)
    n = int(round(seconds * fps))
    phys: Physiology = simulate_physiology(
        n / fps, np.random.default_rng(ss_phys), t0=0.0, mean_hr_bpm=mean_hr_bpm
    )
    pad = int(np.ceil(0.15 * size)) + 2
    big = size + 2 * pad
    tex = make_texture(
        np.random.default_rng(ss_look),
        cond.skin_type,
        (big, big),
        FACE_BOX_PX / size,
        ((big - 1) / 2, (big - 1) / 2),
    )
    face_out = tex.face_px
    track = make_track(cond, n, fps, np.random.default_rng(ss_track), face_out)
    t = np.arange(n) / fps
    r = Renderer(
        tex, track, phys.ppg_pulse(t), (size, size), ((size - 1) / 2, (size - 1) / 2), 1.0, noise_seq=ss_noise
    )
    frames = np.stack([r.frame(i) for i in range(n)])
    truth = phys.truth(0.0, n / fps)
    truth["conditions"] = cond.to_dict()
    truth["events"] = track.events
    return frames, truth
