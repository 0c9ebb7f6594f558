"""``rpm predict VIDEO``: heart rate from a camera alone, with a trained video student.

Steps (every one timed in ``prediction.json``):

1. decode with PyAV (:func:`pipeline.video.iter_video`: ``thread_type="AUTO"``, explicit YUV->RGB)
   and
2. crop the face with MTCNN, 128x128 (:class:`pipeline.face.FaceCropper`, detection every ~1 s), in
   one streaming pass, so only the 128x128 crops are held, never the full frames; a video whose rate
   is not the model's (30 Hz) is resampled by nearest frame in time;
3. sliding windows of the model's clip length T at a 1 s stride (plus one window flush with the
   end; :func:`pipeline.spectrum.window_starts`) through the student from ``runs/<run>/student.pt``;
4. HR per window from the band-limited PSD peak (45-180 bpm, :func:`pipeline.spectrum.hr_from_psd`),
   stamped at the window centre; the BVP trace is the overlap-average of the z-scored window outputs.

Outputs in ``--out`` (default ``<workdir>/predictions/<video stem>/``): ``hr.csv`` (time_s, hr_bpm,
window_start_s, window_end_s), ``bvp.csv`` (time_s, bvp), ``prediction.json`` (summary, timings,
detection rate, checkpoint) and ``prediction.png`` (BVP and HR against time).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.errors import RpmError
from pipeline.face import FaceNotFoundError, open_video_crops
from pipeline.paths import Workdir
from pipeline.spectrum import hr_batch, window_starts
from pipeline.video import VideoError
from train.checkpoint import load_model
from train.data import video_to_input
from train.evaluate import overlap_average


class PredictError(RpmError, RuntimeError):
    pass


@dataclass
class Prediction:
    times_s: np.ndarray  # (W,) window centres
    hr_bpm: np.ndarray  # (W,)
    starts: np.ndarray  # (W,) window start frames
    bvp_time_s: np.ndarray  # (N,)
    bvp: np.ndarray  # (N,)
    fps: float
    window_frames: int
    detection_rate: float
    timings_s: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)


def resolve_checkpoint(checkpoint: str | Path | None, workdir: Workdir) -> Path:
    """A .pt file, a run folder, or a run name under ``runs/``; default: the newest run with student.pt."""
    if checkpoint is None:
        found = (
            sorted(workdir.runs.glob("*/student.pt"), key=lambda p: p.stat().st_mtime)
            if workdir.runs.is_dir()
            else []
        )
        if not found:
            raise PredictError(f"{workdir.runs}: no runs/<name>/student.pt; train one or pass --checkpoint")
        return found[-1]
    p = Path(checkpoint)
    for cand in (p, p / "student.pt", workdir.runs / str(checkpoint) / "student.pt"):
        if cand.is_file():
            return cand
    raise PredictError(
        f"checkpoint {checkpoint!r}: neither a .pt file, a run folder with student.pt, nor a run under "
        f"{workdir.runs}"
    )


def _ckpt_label(path: Path) -> str:
    return path.parent.name if path.name == "student.pt" else path.name


def resample_index(n: int, fps: float, target_fps: float) -> np.ndarray:
    """Source frame of each output frame, nearest in time at ``target_fps`` (identity within 0.5 %)."""
    if abs(fps - target_fps) <= 0.005 * target_fps:
        return np.arange(n)
    m = int(math.floor(n / fps * target_fps))
    return np.minimum(np.round(np.arange(m) * fps / target_fps).astype(int), n - 1)


@torch.inference_mode()
def run_student(model, cfg, crops: np.ndarray, starts: list[int], device, batch_size: int = 4) -> np.ndarray:
    """(W, T - 1) student outputs for the (sorted) windows starting at ``starts``.

    Each batch's frame span is resized to the student's input size once (area averaging, as in
    training) and the overlapping windows are sliced from it.
    """
    out = []
    for i in range(0, len(starts), batch_size):
        group = starts[i : i + batch_size]
        lo, hi = group[0], group[-1] + cfg.frames
        span = video_to_input(torch.from_numpy(crops[lo:hi])[None], cfg.student_size, device)[0]
        x = torch.stack([span[:, s - lo : s - lo + cfg.frames] for s in group])
        out.append(model(x)[:, : cfg.frames - 1].float().cpu().numpy())  # PhysNet gives T samples
    return np.concatenate(out)


def plot_prediction(pred: Prediction, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 5), sharex=True, constrained_layout=True)
    a1.plot(pred.bvp_time_s, pred.bvp, lw=0.8, color="tab:red")
    a1.set_ylabel("BVP (z)")
    a1.set_title(title, fontsize=10)
    a2.plot(pred.times_s, pred.hr_bpm, "o-", ms=3, color="tab:blue")
    a2.set_ylabel("HR (bpm)")
    a2.set_xlabel("time (s)")
    a2.set_ylim(40, 185)
    a2.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# What predict writes into its output folder; prediction.json (written last) marks the folder as predict's.
OUTPUT_NAMES = ("hr.csv", "bvp.csv", "hr.json", "prediction.png", "prediction.json")


def check_own_outputs(out_dir: Path) -> None:
    """Refuse (:class:`PredictError`) to replace files with predict's output names in a folder that holds no
    ``prediction.json`` of an earlier ``rpm predict``: they are someone else's, never overwritten."""
    taken = [name for name in OUTPUT_NAMES if (out_dir / name).exists()]
    if not taken:
        return
    try:
        earlier = json.loads((out_dir / "prediction.json").read_text())
        ours = isinstance(earlier, dict) and {"video", "checkpoint", "files"} <= set(earlier)
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise PredictError(
            f"{out_dir}: already holds {', '.join(taken)}, not written by rpm predict; pass another --out"
        )


def predict_video(
    video: str | Path,
    checkpoint: str | Path | None = None,
    out: str | Path | None = None,
    workdir: Workdir | None = None,
    device: str = "cpu",
    stride_s: float = 1.0,
    fmt: str = "csv",
    log=print,
) -> Prediction:
    """Run the whole ``rpm predict`` pipeline on one video file and write the outputs (module docstring)."""
    workdir = workdir or Workdir.resolve(None)
    video = Path(video)
    out_dir = Path(out) if out else workdir.root / "predictions" / video.stem
    if out_dir.exists() and not out_dir.is_dir():  # found before the minutes of decoding, not after
        raise PredictError(f"{out_dir}: exists and is not a folder; pass another --out")
    check_own_outputs(out_dir)
    t0 = time.perf_counter()
    ckpt_path = resolve_checkpoint(checkpoint, workdir)
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    model, cfg, ckpt = load_model(ckpt_path, dev)
    if ckpt.get("kind") == "teacher":
        raise PredictError(f"{ckpt_path}: a radar teacher checkpoint; predict needs a video student")
    if getattr(model, "uses_radar_at_test", False):
        raise PredictError(
            f"{ckpt_path}: a {cfg.method} model needs the radar window at test time; predict reads a video "
            "alone (use the run's baseline.pt for its video network)"
        )
    timings = {"load_model": time.perf_counter() - t0}

    t = time.perf_counter()
    try:
        fps, cropper, blocks = open_video_crops(video, device=str(dev))
        crops = np.concatenate(list(blocks))  # decode + crop in one pass; only the crops are held
    except FaceNotFoundError as exc:
        raise PredictError(f"{video}: {exc}; predict needs a visible face") from exc
    except VideoError as exc:
        raise PredictError(str(exc)) from exc
    rate, n_frames = cropper.detection_rate, cropper.n_frames
    duration = n_frames / fps
    idx = resample_index(n_frames, fps, cfg.fs)
    timings["decode_and_face_crop"] = time.perf_counter() - t
    height, width = cropper.frame_shape[:2]
    log(
        f"decoded {video.name}: {width}x{height}, {n_frames} frames at {fps:.3g} fps "
        f"({duration:.1f} s; {len(idx)} frames at {cfg.fs:g} Hz)"
    )
    if len(idx) < cfg.frames:
        raise PredictError(
            f"{video}: {duration:.2f} s ({len(idx)} frames at {cfg.fs:g} Hz) is shorter than one window "
            f"of {cfg.frames} frames ({cfg.frames / cfg.fs:.2f} s) that the model {ckpt_path} needs"
        )
    crops = crops[idx]
    log(f"face detection rate {rate:.0%}")

    t = time.perf_counter()
    n = len(crops)
    starts = window_starts(n, cfg.frames, max(1, int(round(stride_s * cfg.fs))), flush=True)
    waves = run_student(model, cfg, crops, starts, dev)
    timings["student"] = time.perf_counter() - t
    t = time.perf_counter()
    hr = hr_batch(waves, fs=cfg.fs)
    bvp = overlap_average(waves, starts, n)
    timings["hr"] = time.perf_counter() - t
    centres = (np.asarray(starts) + cfg.frames / 2.0) / cfg.fs
    pred = Prediction(
        times_s=centres,
        hr_bpm=hr,
        starts=np.asarray(starts),
        bvp_time_s=np.arange(n) / cfg.fs,
        bvp=bvp,
        fps=float(fps),
        window_frames=cfg.frames,
        detection_rate=rate,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    hr_table = pd.DataFrame(
        {
            "time_s": centres,
            "hr_bpm": hr,
            "window_start_s": np.asarray(starts) / cfg.fs,
            "window_end_s": (np.asarray(starts) + cfg.frames) / cfg.fs,
        }
    )
    bvp_table = pd.DataFrame({"time_s": pred.bvp_time_s, "bvp": bvp})
    files = {}
    if fmt == "json":
        files["hr"] = out_dir / "hr.json"
        files["hr"].write_text(json.dumps({"hr": hr_table.to_dict("list"), "bvp": bvp_table.to_dict("list")}))
    else:
        files["hr"], files["bvp"] = out_dir / "hr.csv", out_dir / "bvp.csv"
        hr_table.to_csv(files["hr"], index=False, float_format="%.4f")
        bvp_table.to_csv(files["bvp"], index=False, float_format="%.4f")
    files["plot"] = out_dir / "prediction.png"
    plot_prediction(
        pred,
        files["plot"],
        f"{video.name}: HR {np.median(hr):.1f} bpm (median), model {_ckpt_label(ckpt_path)}",
    )
    timings["total"] = time.perf_counter() - t0
    summary = {
        "video": str(video),
        "checkpoint": str(ckpt_path),
        "source_fps": float(fps),
        "model_fs": cfg.fs,
        "n_frames": n,
        "duration_s": duration,
        "window_frames": cfg.frames,
        "stride_frames": int(round(stride_s * cfg.fs)),
        "n_windows": len(starts),
        "detection_rate": rate,
        "hr_median_bpm": float(np.median(hr)),
        "hr_mean_bpm": float(np.mean(hr)),
        "timings_s": timings,
        "realtime_factor": duration / timings["total"],
        "files": {k: str(v) for k, v in files.items()},
    }
    files["json"] = out_dir / "prediction.json"
    (files["json"]).write_text(
        json.dumps({**summary, "files": {k: str(v) for k, v in files.items()}}, indent=2) + "\n"
    )
    pred.timings_s, pred.files, pred.summary = timings, files, summary
    log(
        f"{len(starts)} windows, median HR {np.median(hr):.1f} bpm; {timings['total']:.1f} s for "
        f"{duration:.1f} s of video -> {out_dir}"
    )
    return pred
