"""PhysDrive recipe: the public on-disk layout -> Zarr v3 session store + sessions manifest.

Input layout (``--root``; the PhysDrive release, Wang et al., NeurIPS 2025; docs/data-layouts.md)::

    RGB and IR/<SUBJ>/<SESSION>/RGB.mp4        full-frame H.264 video (30 fps); faces found with MTCNN
    RGB and IR/<SUBJ>/<SESSION>/Label/BVP.mat  key 'BVP': 1-D BVP covering the video, rate not stated
    mmWave/<SUBJ>/<SUBJ>_<kk>/mmwave.mat       key 'mmwave': (n_frames, 2, 8, 16, 8) =
                                               (frames, real/imag, 8 Doppler, 16 angle, 8 range), 20 Hz
    pairing.csv                                one row per radar clip: subject, session, clip,
                                               video_start (ISO, ms), radar_start (ISO, whole s),
                                               radar_fps

Subject code ``<car><sex><illum><n>`` (``AFH1``: car A, female, dusk, subject 1) and session code
``<road><motion>`` (``AS``: flat unobstructed road, stationary); the conditions go to the manifest
(car A/B/C = Segment-A0 / Segment-B / Segment-C SUV; illumination Z noon, H dusk & early morning,
W midnight, Y rainy & cloudy; road A flat, B congested, C bumpy; motion S stationary, T talking).
Codes that do not parse leave the condition columns empty.

One store group ``<SUBJ>_<SESSION>`` per video session:

* **video**: ``RGB.mp4`` is decoded with PyAV (``thread_type="AUTO"``, explicit YUV->RGB matrix
  from :mod:`pipeline.video`) and cropped in one streaming pass by
  :class:`pipeline.face.FaceCropper` (MTCNN every ~1 s, smoothed, 1.5x, 128x128; a few seconds of
  full frames in memory at most), the crops going straight to the store shard by shard. A session
  whose detection rate is below ``min_face_rate`` is marked failed and not stored: a full frame is
  never stored as a face.
* **bvp**: BVP.mat, taken to cover the video's duration evenly (sample i at i * D / L for D the video
  duration and L the sample count), linearly interpolated onto the video frame times.
* **radar**: each clip's cube becomes complex (frames, Doppler, angle, range). The subject's angle
  bin is the one with the most energy over all of the session's clips. **Doppler reduction:** the
  complex sum over the 8 Doppler bins (the inverse DFT at zero lag, i.e. one complex slow-time
  sample per frame and range bin, phase kept), giving a range-time I/Q tensor (frames, 2, 8) at the
  radar rate. Clips are placed on the video clock at round((radar_start - video_start) * radar_fps)
  (``radar_start`` has whole-second resolution, so the recorded lag estimate matters); frames no
  clip covers are zeros with ``radar_ok`` False. ``radar_bin`` is the range bin (0..7 of the crop)
  with the most energy at the chosen angle, and ``radar_channel`` equals it.
"""

from __future__ import annotations

import csv
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io

from pipeline.errors import DatasetError
from pipeline.paths import PathEscapeError, safe_join
from pipeline.recipes.base import Job, SessionData, SessionError, run_recipe

RGB_DIR = "RGB and IR"
RADAR_DIR = "mmWave"
CUBE_SHAPE = (2, 8, 16, 8)  # real/imag, Doppler, angle, range
DEFAULT_RADAR_FPS = 20.0
DEFAULT_MIN_FACE_RATE = 0.5

_SUBJECT_RE = re.compile(r"^([ABC])([MF])([ZHWY])(\d+)$")
_SESSION_RE = re.compile(r"^([ABC])([ST])$")
CARS = {"A": "Segment-A0", "B": "Segment-B", "C": "Segment-C SUV"}
SEXES = {"M": "male", "F": "female"}
ILLUMINATIONS = {"Z": "noon", "H": "dusk", "W": "midnight", "Y": "rainy"}
ROADS = {"A": "flat", "B": "congested", "C": "bumpy"}
MOTIONS = {"S": "stationary", "T": "talking"}


def parse_conditions(subject: str, session: str) -> dict[str, str]:
    """Conditions from the subject code <car><sex><illum><n> and session code <road><motion>."""
    out = {"car": "", "sex": "", "illumination": "", "road": "", "motion": ""}
    if m := _SUBJECT_RE.match(subject):
        out.update(car=CARS[m.group(1)], sex=SEXES[m.group(2)], illumination=ILLUMINATIONS[m.group(3)])
    if m := _SESSION_RE.match(session):
        out.update(road=ROADS[m.group(1)], motion=MOTIONS[m.group(2)])
    return out


def list_sessions(root: Path) -> list[tuple[str, str]]:
    """Sorted (subject, session) pairs under ``RGB and IR/``."""
    rgb = root / RGB_DIR
    if not rgb.is_dir():
        raise FileNotFoundError(f"{root}: not a PhysDrive root (no '{RGB_DIR}/' folder)")
    pairs = [
        (subj.name, sess.name)
        for subj in rgb.iterdir()
        if subj.is_dir()
        for sess in subj.iterdir()
        if sess.is_dir()
    ]
    return sorted(pairs)


def _parse_time(text: str, path: Path, column: str) -> datetime:
    try:
        return datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise SessionError(f"{path}: {column} {text!r} is not an ISO date-time") from None


def read_pairing(root: Path) -> pd.DataFrame:
    """pairing.csv as strings (empty frame with the columns when the file is absent)."""
    cols = ["subject", "session", "clip", "video_start", "radar_start", "radar_fps"]
    path = root / "pairing.csv"
    if not path.is_file():
        return pd.DataFrame(columns=cols)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a readable CSV table ({exc})") from None
    df = pd.DataFrame(rows, dtype=str)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DatasetError(f"{path}: missing columns {missing}")
    return df[cols]


def _clip_dir(root: Path, subject: str, clip: str) -> Path:
    names = [clip, f"{subject}_{clip}"]
    if clip.isdigit():
        names += [f"{subject}_{int(clip):02d}", f"{subject}_{int(clip)}"]
    try:  # names from pairing.csv never lead outside mmWave/<SUBJ>/
        base = safe_join(root, RADAR_DIR, subject, source=root / "pairing.csv")
        candidates = [safe_join(base, n, source=root / "pairing.csv") for n in names]
    except PathEscapeError as exc:
        raise SessionError(str(exc)) from None
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[1]


def load_cube(path: Path) -> np.ndarray:
    """mmwave.mat -> complex64 (frames, Doppler, angle, range)."""
    if not path.is_file():
        raise SessionError(f"{path}: missing")
    try:
        mat = scipy.io.loadmat(str(path))
    except NotImplementedError:
        raise SessionError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; re-save as v7") from None
    except Exception as exc:
        raise SessionError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if "mmwave" not in mat:
        raise SessionError(
            f"{path}: no 'mmwave' key (keys: {sorted(k for k in mat if not k.startswith('_'))})"
        )
    cube = np.asarray(mat["mmwave"])
    if cube.ndim != 5 or cube.shape[1:] != CUBE_SHAPE:
        raise SessionError(
            f"{path}: 'mmwave' is {cube.shape}, expected (n_frames, {', '.join(map(str, CUBE_SHAPE))})"
        )
    if not np.isfinite(cube).all():
        raise SessionError(f"{path}: 'mmwave' holds non-finite values")
    return (cube[:, 0] + 1j * cube[:, 1]).astype(np.complex64)


def angle_energy(cube: np.ndarray) -> np.ndarray:
    """(frames, Doppler, angle, range) complex -> (angle,) energy summed over frames, Doppler, range."""
    return np.sum(np.abs(cube) ** 2, axis=(0, 1, 3))


def doppler_sum(cube: np.ndarray) -> np.ndarray:
    """(frames, Doppler, angle, range) -> (frames, angle, range) complex64: the Doppler reduction."""
    return cube.sum(axis=1).astype(np.complex64)


def angle_iq(summed: np.ndarray, angle_bin: int) -> np.ndarray:
    """(frames, angle, range) complex -> (frames, 2, range) float32 I/Q at ``angle_bin``."""
    z = summed[:, angle_bin, :]
    return np.stack([z.real, z.imag], axis=1).astype(np.float32)


def read_bvp(path: Path, n_frames: int, fps: float) -> tuple[np.ndarray, str]:
    """BVP.mat resampled onto the frame times; returns (bvp (T,), repair note)."""
    if not path.is_file():
        raise SessionError(f"{path}: missing")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:
        raise SessionError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if "BVP" not in mat:
        raise SessionError(f"{path}: no 'BVP' key")
    bvp = np.asarray(mat["BVP"], dtype=np.float64).ravel()
    if bvp.size < 2:
        raise SessionError(f"{path}: 'BVP' has {bvp.size} samples")
    bad = ~np.isfinite(bvp)
    note = ""
    if bad.any():
        if bad.mean() > 0.1:
            raise SessionError(f"{path}: {int(bad.sum())} of {bvp.size} BVP samples are not finite")
        idx = np.arange(bvp.size)
        bvp[bad] = np.interp(idx[bad], idx[~bad], bvp[~bad])
        note = f"bvp: {int(bad.sum())} non-finite samples interpolated"
    duration = n_frames / fps
    src_t = np.arange(bvp.size) * (duration / bvp.size)
    return np.interp(np.arange(n_frames) / fps, src_t, bvp), note


def stream_face_crops(
    writer, path: Path, min_face_rate: float, min_face_frac: float = 0.1, frame_filter=None
) -> tuple[float, float]:
    """Decode ``path``, MTCNN-crop it (:class:`pipeline.face.FaceCropper`) and stream the crops into
    ``writer``; returns (fps, detection rate). ``frame_filter(blocks, fps)`` may drop crops before
    they are written (the folder recipe keeps the frames its PPG covers).

    Errors name ``path``: not a video, no frames, no face, or a detection rate below ``min_face_rate``
    (the session fails; a full frame is never stored as a face).
    """
    from pipeline.face import FaceNotFoundError, open_video_crops
    from pipeline.video import VideoError

    try:
        fps, cropper, blocks = open_video_crops(path, min_face_frac=min_face_frac)
        writer.write_video(frame_filter(blocks, fps) if frame_filter else blocks)
    except VideoError as exc:
        raise SessionError(str(exc)) from None
    except FaceNotFoundError:
        raise SessionError(f"{path}: MTCNN found no face in any frame") from None
    rate = cropper.detection_rate
    if rate < min_face_rate:
        raise SessionError(
            f"{path}: face found in {100 * rate:.1f}% of detection frames "
            f"(< {100 * min_face_rate:.0f}%); not stored"
        )
    return fps, rate


def build_session(
    writer,
    root: Path,
    subject: str,
    session: str,
    clips: list[dict],
    min_face_rate: float,
    min_face_frac: float,
) -> SessionData:
    sdir = root / RGB_DIR / subject / session
    fps, face_rate = stream_face_crops(writer, sdir / "RGB.mp4", min_face_rate, min_face_frac)
    t = writer.n_frames
    bvp, bvp_note = read_bvp(sdir / "Label" / "BVP.mat", t, fps)
    repairs = [bvp_note] if bvp_note else []

    rates = {float(c["radar_fps"]) for c in clips if str(c.get("radar_fps", "")).strip()}
    if len(rates) > 1:
        raise SessionError(f"{root / 'pairing.csv'}: {subject}/{session} clips disagree on radar_fps {rates}")
    radar_fps = rates.pop() if rates else DEFAULT_RADAR_FPS
    loaded = []
    for c in sorted(clips, key=lambda c: str(c["clip"])):
        path = _clip_dir(root, subject, str(c["clip"])) / "mmwave.mat"
        try:
            cube = load_cube(path)
        except SessionError as exc:
            repairs.append(f"radar clip {c['clip']} skipped ({exc})")
            continue
        # keep only the Doppler sum (1/8 of the cube) and the per-angle energy of each clip
        energy, cube = angle_energy(cube), doppler_sum(cube)
        v0 = _parse_time(c["video_start"], root / "pairing.csv", "video_start")
        r0 = _parse_time(c["radar_start"], root / "pairing.csv", "radar_start")
        loaded.append((int(round((r0 - v0).total_seconds() * radar_fps)), cube, energy, c["clip"]))

    n_rf = int(round(t * radar_fps / fps))
    radar = np.zeros((n_rf, 2, CUBE_SHAPE[3]), np.float32)
    ok = np.zeros(n_rf, bool)
    # the subject's angle bin: the most energy over all of the session's clips
    angle_bin = int(np.argmax(sum(e for _, _, e, _ in loaded))) if loaded else -1
    for k0, summed, _, name in loaded:
        iq = angle_iq(summed, angle_bin)
        lo, hi = max(0, k0), min(n_rf, k0 + iq.shape[0])
        if hi <= lo:
            repairs.append(f"radar clip {name} outside the video")
            continue
        if ok[lo:hi].any():
            repairs.append(f"radar clip {name} overlaps an earlier clip by {int(ok[lo:hi].sum())} frames")
        radar[lo:hi] = iq[lo - k0 : hi - k0]
        ok[lo:hi] = True
    if not loaded:
        repairs.append("radar: no paired clip")
    elif not ok.all():
        repairs.append(f"radar: {int((~ok).sum())} of {n_rf} frames not covered by a clip")
    if ok.any():
        energy = np.sum(radar[ok] ** 2, axis=(0, 1))
        range_bin = int(np.argmax(energy))
    else:
        range_bin = CUBE_SHAPE[3] // 2
    return SessionData(
        bvp=bvp,
        radar=radar,
        radar_ok=ok,
        fps=fps,
        radar_fps=radar_fps,
        radar_bin=range_bin if ok.any() else -1,
        radar_channel=range_bin,
        attrs={"radar_angle_bin": angle_bin, "doppler_reduction": "complex sum over Doppler bins"},
        row={
            "radar_angle_bin": angle_bin,
            "face_detection_rate": round(face_rate, 4),
            "repairs": "; ".join(repairs),
        },
    )


def prepare_physdrive(
    root: str | Path,
    store: str | Path,
    manifests_dir: str | Path,
    workers: int = 2,
    scheduler: str = "threads",
    overwrite: bool = False,
    min_face_rate: float = DEFAULT_MIN_FACE_RATE,
    min_face_frac: float = 0.1,
) -> pd.DataFrame:
    """Preprocess a PhysDrive root into ``store`` and write ``<manifests_dir>/physdrive_sessions.csv``.

    See the module docstring for the layout and processing, :func:`pipeline.recipes.base.run_recipe` for
    schedulers, resume and ``overwrite``. Returns the sessions manifest (failed sessions included).
    """
    root = Path(root)
    sessions = list_sessions(root)
    if not sessions:
        raise FileNotFoundError(f"{root / RGB_DIR}: no <SUBJ>/<SESSION> folders")
    pairing = read_pairing(root)
    jobs = []
    for subject, session in sessions:
        clips = pairing[(pairing.subject == subject) & (pairing.session == session)].to_dict("records")
        row = {
            "session": f"{subject}_{session}",
            "dataset": "physdrive",
            "subject": subject,
            "trial": session,
            "skin_type": -1,
            **parse_conditions(subject, session),
        }
        jobs.append(
            Job(
                row=row,
                build=build_session,
                args=(root, subject, session, clips, min_face_rate, min_face_frac),
            )
        )
    # version 2: one streaming face-crop pass (smoothing across the whole video, not per block)
    # version 3: keyframes searched around the newest known face first (boxes move by a few pixels)
    # version 4: faces tracked between keyframes with MTCNN's O-Net (boxes move by a few per cent)
    params = {
        "recipe": "physdrive",
        "version": 4,
        "min_face_rate": min_face_rate,
        "min_face_frac": min_face_frac,
    }
    return run_recipe("physdrive", jobs, store, manifests_dir, params, workers, scheduler, overwrite)
