"""Folder recipe: your own recordings in a simple layout -> Zarr v3 session store + manifest.

Layout (``--root``), one folder per session (the folder name is the session name)::

    <root>/<session>/video.mp4   any video PyAV reads (.mp4, .mkv, .avi, .mov, .webm; the first
                                 file named video.*), full frames (faces found with MTCNN) or
                                 ready-made face crops (``"face_crops": true``)
    <root>/<session>/radar.npy   radar, one row per radar frame: (N,) or (N, bins) complex, or
                                 (N, 2, bins) real [I, Q]
    <root>/<session>/ppg.csv     header ``time_s,ppg``: PPG samples, time in seconds on the video
                                 clock (video frame i is at i / fps), at least 6 Hz (samples
                                 further apart, e.g. times in milliseconds, fail the session)
    <root>/<session>/meta.json   {"radar_fps": 120.0,            required: radar frame rate (Hz)
                                  "radar_start_s": 0.0,          radar frame 0 on the video clock
                                  "subject": "alice",            default: the session name
                                  "skin_type": 3,                Fitzpatrick 1-6, default -1
                                  "face_crops": false}           true: frames are already crops

Processing: the video is face-cropped in one streaming pass with MTCNN (as for PhysDrive; a session whose
detection rate is below ``min_face_rate`` is failed, never stored with full frames) or, with
``face_crops``, area-resized to 128x128. Video frames outside the PPG's time span are dropped (a
repair noted in the manifest) and the PPG is linearly interpolated onto the kept frame times.
The radar is placed on the video clock: stored radar frame j is at (f0 + j * fps / radar_fps) /
fps for f0 the first kept video frame, taken from radar.npy frame round((f0/fps - radar_start_s)
* radar_fps + j); frames outside the recording are zeros with ``radar_ok`` False. Up to 16 bins are
stored as given; wider radar (e.g. full range profiles) is reduced to the 5 bins around the
strongest bin at index >= 2. ``radar_bin`` is the bin with the most energy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.face import square_resize
from pipeline.recipe import Job, SessionData, SessionError, run_recipe

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")
# A PPG must resolve the fastest heart rate (3 Hz, 180 bpm): twice that, by Nyquist.
MIN_PPG_RATE_HZ = 6.0
MAX_STORED_BINS = 16


def list_sessions(root: Path) -> list[str]:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_meta(sdir: Path) -> dict:
    path = sdir / "meta.json"
    if not path.is_file():
        raise SessionError(f"{path}: missing (needs at least radar_fps)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SessionError(f"{path}: not JSON ({exc})") from None
    try:
        rate = float(meta["radar_fps"])
    except (KeyError, TypeError, ValueError):
        raise SessionError(f"{path}: radar_fps missing or not a number") from None
    if not rate > 0:
        raise SessionError(f"{path}: radar_fps must be positive, got {rate}")
    return meta


def find_video(sdir: Path) -> Path:
    found = sorted(p for p in sdir.iterdir() if p.stem == "video" and p.suffix.lower() in VIDEO_SUFFIXES)
    if not found:
        raise SessionError(f"{sdir}: no video.* file ({', '.join(VIDEO_SUFFIXES)})")
    return found[0]


def read_radar(path: Path) -> np.ndarray:
    """radar.npy -> (N, 2, bins) float32 I/Q."""
    if not path.is_file():
        raise SessionError(f"{path}: missing")
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise SessionError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if np.iscomplexobj(x):
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2:
            raise SessionError(f"{path}: complex radar must be (N,) or (N, bins), got {x.shape}")
        iq = np.stack([x.real, x.imag], axis=1)
    elif x.ndim == 3 and x.shape[1] == 2:
        iq = x
    else:
        raise SessionError(
            f"{path}: expected complex (N,)/(N, bins) or real (N, 2, bins), got {x.shape} {x.dtype}"
        )
    if iq.shape[0] < 2 or not np.isfinite(iq).all():
        raise SessionError(f"{path}: radar has {iq.shape[0]} frames or non-finite values")
    return iq.astype(np.float32)


def read_ppg(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise SessionError(f"{path}: missing")
    try:
        df = pd.read_csv(path)
        t = df["time_s"].to_numpy(np.float64)
        v = df["ppg"].to_numpy(np.float64)
    except KeyError:
        raise SessionError(f"{path}: needs columns time_s and ppg") from None
    except Exception as exc:
        raise SessionError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    keep = np.isfinite(t) & np.isfinite(v)
    t, v = t[keep], v[keep]
    if t.size < 2:
        raise SessionError(f"{path}: fewer than 2 valid samples")
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    steps = np.diff(t)
    step = float(np.median(steps[steps > 0])) if (steps > 0).any() else 0.0
    if not step > 0:
        raise SessionError(f"{path}: every sample has the same time_s ({t[0]:g})")
    if 1.0 / step < MIN_PPG_RATE_HZ:  # e.g. time in milliseconds read as seconds
        raise SessionError(
            f"{path}: samples {step:g} s apart ({1.0 / step:.3g} Hz) cannot carry a pulse (at least "
            f"{MIN_PPG_RATE_HZ:g} Hz needed); time_s must be in seconds (milliseconds? divide by 1000)"
        )
    return t, v


def _resize(frames: np.ndarray, size: int = 128) -> np.ndarray:
    out = np.empty((frames.shape[0], size, size, 3), np.uint8)
    for i, f in enumerate(frames):
        out[i] = np.asarray(square_resize(Image.fromarray(f), size))
    return out


def _resized_blocks(frames, block: int = 32):
    """Full frames (ready-made face crops) -> (<= block, 128, 128, 3) blocks, area-resized."""
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == block:
            yield _resize(np.stack(batch))
            batch = []
    if batch:
        yield _resize(np.stack(batch))


class PpgSpan:
    """Keeps the frames whose time i / fps lies inside the PPG's time span (a filter on crop blocks).

    After the blocks are consumed: ``seen`` frames in the video, ``first`` the first kept frame.
    """

    def __init__(self, t_first: float, t_last: float):
        self.t_first, self.t_last = t_first, t_last
        self.seen, self.first = 0, None

    def __call__(self, blocks, fps: float):
        for block in blocks:
            times = (self.seen + np.arange(len(block))) / fps
            inside = np.flatnonzero((times >= self.t_first - 1e-9) & (times <= self.t_last + 1e-9))
            if inside.size:
                if self.first is None:
                    self.first = self.seen + int(inside[0])
                yield block[inside[0] : inside[-1] + 1]
            self.seen += len(block)


def build_session(
    writer, root: Path, session: str, min_face_rate: float, min_face_frac: float = 0.1
) -> SessionData:
    sdir = root / session
    meta = read_meta(sdir)
    radar_fps = float(meta["radar_fps"])
    video_path = find_video(sdir)
    t_ppg, ppg = read_ppg(sdir / "ppg.csv")
    span = PpgSpan(t_ppg[0], t_ppg[-1])
    if meta.get("face_crops", False):
        from pipeline.video import VideoError, iter_video

        try:
            fps, frames = iter_video(video_path)
            writer.write_video(span(_resized_blocks(frames), fps))
        except VideoError as exc:
            raise SessionError(str(exc)) from None
        face_rate = float("nan")
    else:
        from pipeline.physdrive import stream_face_crops

        fps, face_rate = stream_face_crops(
            writer, video_path, min_face_rate, min_face_frac, frame_filter=span
        )
    if span.first is None:
        raise SessionError(f"{sdir / 'ppg.csv'}: PPG times {t_ppg[0]:.2f}..{t_ppg[-1]:.2f} s miss the video")
    f0, f1 = span.first, span.first + writer.n_frames
    repairs = []
    if f0 > 0 or f1 < span.seen:
        repairs.append(f"video: {f0} leading and {span.seen - f1} trailing frames without PPG dropped")
    bvp = np.interp(np.arange(f0, f1) / fps, t_ppg, ppg)

    raw = read_radar(sdir / "radar.npy")
    bins = raw.shape[2]
    energy = np.sum(raw.astype(np.float64) ** 2, axis=(0, 1))
    attrs = {"radar_start_s": float(meta.get("radar_start_s", 0.0))}
    if bins > MAX_STORED_BINS:
        centre = int(np.argmax(energy[2:])) + 2
        idx = np.arange(centre - 2, centre + 3)
        window = np.zeros((raw.shape[0], 2, 5), np.float32)
        valid = (idx >= 0) & (idx < bins)
        window[:, :, valid] = raw[:, :, idx[valid]]
        raw, radar_bin, channel = window, centre, 2
        attrs["radar_bins"] = idx.tolist()
    else:
        radar_bin = channel = int(np.argmax(energy))
    n_rf = int(round(writer.n_frames * radar_fps / fps))
    k0 = int(round((f0 / fps - attrs["radar_start_s"]) * radar_fps))
    src = k0 + np.arange(n_rf)
    ok = (src >= 0) & (src < raw.shape[0])
    radar = np.zeros((n_rf, 2, raw.shape[2]), np.float32)
    radar[ok] = raw[src[ok]]
    if not ok.all():
        repairs.append(f"radar: {int((~ok).sum())} of {n_rf} frames outside the recording")
    return SessionData(
        bvp=bvp,
        radar=radar,
        radar_ok=ok,
        fps=fps,
        radar_fps=radar_fps,
        radar_bin=radar_bin,
        radar_channel=channel,
        attrs=attrs,
        row={
            "face_detection_rate": round(face_rate, 4) if np.isfinite(face_rate) else face_rate,
            "repairs": "; ".join(repairs),
        },
    )


def _subject_and_skin(root: Path, session: str) -> tuple[str, int]:
    try:
        meta = json.loads((root / session / "meta.json").read_text())
        return str(meta.get("subject", session)), int(meta.get("skin_type", -1))
    except (OSError, ValueError, TypeError):
        return session, -1


def prepare_folder(
    root: str | Path,
    store: str | Path,
    manifests_dir: str | Path,
    workers: int = 2,
    scheduler: str = "threads",
    overwrite: bool = False,
    min_face_rate: float = 0.5,
    min_face_frac: float = 0.1,
    dataset: str = "folder",
) -> pd.DataFrame:
    """Preprocess a folder of own recordings into ``store``; writes ``<dataset>_sessions.csv``."""
    root = Path(root)
    sessions = list_sessions(root)
    if not sessions:
        raise FileNotFoundError(f"{root}: no session folders")
    jobs = []
    for s in sessions:
        subject, skin = _subject_and_skin(root, s)
        row = {"session": s, "dataset": dataset, "subject": subject, "trial": s, "skin_type": skin}
        jobs.append(Job(row=row, build=build_session, args=(root, s, min_face_rate, min_face_frac)))
    # version 2: one streaming face-crop pass (smoothing across the whole video, not per block)
    # version 3: keyframes searched around the newest known face first (boxes move by a few pixels)
    # version 4: faces tracked between keyframes with MTCNN's O-Net (boxes move by a few per cent)
    # version 5: PPG under 6 Hz (time in ms) and sessions without radar data fail; plausibility notes
    params = {
        "recipe": "folder",
        "version": 5,
        "min_face_rate": min_face_rate,
        "min_face_frac": min_face_frac,
    }
    return run_recipe(dataset, jobs, store, manifests_dir, params, workers, scheduler, overwrite)
