"""Diagnostics of one trained run: how good its RF teacher is on the windows it was trained on.

A student distils from the teacher, so the teacher must know at least what the radar and the video say
without learning. :func:`train_subject_quality` scores, on the run's *training* subjects' windows, the
run's teacher (``teacher.pt``), the training-free FFT radar baseline (:mod:`train.radar_fft`) and POS
(:mod:`train.classical`) against the PPG, with the report's own HR estimator and metrics
(:func:`pipeline.spectrum.hr_batch`, :func:`train.evaluate.hr_metrics`) on the report's window cut
(:func:`train.report.windows.release_windows`, i.e. :func:`pipeline.split.session_windows`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.paths import Workdir
from pipeline.spectrum import hr_batch
from pipeline.store import open_store
from train.checkpoint import load_model
from train.classical import rgb_trace
from train.evaluate import hr_metrics
from train.report.methods import BY_KEY, radar_attrs_present
from train.report.runs import ReportError, read_splits
from train.report.schema import CONFIG_JSON, DATASET, LABELED_SUBJECTS, SPLIT, SPLIT_DATASET, STORE_VIDEO
from train.report.windows import predict_windows, release_windows

SOURCES = ("teacher", "radar_fft", "pos")
SUBJECT_SETS = ("labelled", "unlabelled", "all")
QUALITY_COLUMNS = ("source", "subjects", "n_windows", "mae", "rmse", "r")


def _run_config(run_dir: Path) -> dict:
    path = run_dir / CONFIG_JSON
    if not path.is_file():
        raise ReportError(f"{path}: missing; train the run with `rpm train` first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc})") from None


def train_window_hrs(workdir: Workdir, run_dir: Path, device="cpu", split: str = "train") -> pd.DataFrame:
    """One row per window of the run's ``split`` sessions (``frames`` long at the run's ``stride``, no sync
    shift): session, subject, start, labelled, hr_true and hr_<source> (bpm) for :data:`SOURCES`
    (``hr_teacher`` only when the run has ``teacher.pt``; ``hr_radar_fft`` NaN where the radar saw
    nothing)."""
    cfg = _run_config(run_dir)
    dataset = cfg.get(DATASET, "equipleth")
    frames, stride, fs = int(cfg["frames"]), int(cfg["stride"]), float(cfg.get("fs", 30.0))
    labelled = {str(s) for s in cfg.get(LABELED_SUBJECTS, [])}
    splits = read_splits(workdir)
    sessions = splits.loc[(splits[SPLIT] == split) & (splits[SPLIT_DATASET] == dataset), "session"].tolist()
    if not sessions:
        raise ReportError(f"{workdir.splits_manifest}: no {split} sessions of {dataset}")
    store = workdir.store(dataset)
    ds = release_windows(store, sessions, frames, stride)
    if len(ds) == 0:
        raise ReportError(f"{run_dir}: the {split} sessions have no {frames}-frame windows")
    rows = pd.DataFrame([{"session": w.session, "subject": w.subject, "start": w.start} for w in ds.windows])
    rows["labelled"] = rows.subject.astype(str).isin(labelled)
    truth = np.stack([ds[i]["bvp"].numpy()[: frames - 1] for i in range(len(ds))])
    rows["hr_true"] = hr_batch(truth, fs=fs)
    teacher_path = run_dir / BY_KEY["teacher"].checkpoint
    if teacher_path.is_file():
        model, kcfg, _ = load_model(teacher_path, device)
        rows["hr_teacher"] = hr_batch(predict_windows("teacher", model, kcfg, ds, device), fs=fs)
    root = open_store(store, "r")
    fft, pos = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
    for s, idx in rows.groupby("session", sort=False).groups.items():
        starts = rows.loc[idx, "start"].tolist()
        if radar_attrs_present(root[s]):  # else NaN: a store without the chest bin has no FFT estimate
            fft[idx] = BY_KEY["radar_fft"].radar_hr(root[s], starts, frames)
        trace = rgb_trace(root[s][STORE_VIDEO][...])
        waves = np.stack([BY_KEY["POS"].classical(trace[a : a + frames], fs)[: frames - 1] for a in starts])
        pos[idx] = hr_batch(waves, fs=fs)
    rows["hr_radar_fft"], rows["hr_pos"] = fft, pos
    return rows


def quality_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of :func:`train_window_hrs` -> :data:`QUALITY_COLUMNS`: each source x subject set.

    Windows where a source has no estimate (NaN) are left out of its metrics; ``n_windows`` counts the
    rest. A set with no window gives n_windows 0 and NaN metrics.
    """
    out = []
    sets = {"labelled": rows.labelled, "unlabelled": ~rows.labelled, "all": rows.labelled | ~rows.labelled}
    for source in SOURCES:
        col = f"hr_{source}"
        if col not in rows:
            continue
        for name in SUBJECT_SETS:
            sub = rows[sets[name] & np.isfinite(rows[col])]
            rec = {"source": source, "subjects": name, "n_windows": len(sub)}
            if len(sub):
                m = hr_metrics(sub[col].to_numpy(), sub.hr_true.to_numpy())
                rec.update(mae=m["MAE"], rmse=m["RMSE"], r=m["r"])
            else:
                rec.update(mae=np.nan, rmse=np.nan, r=np.nan)
            out.append(rec)
    return pd.DataFrame(out, columns=list(QUALITY_COLUMNS))


def train_subject_quality(workdir: Workdir, run_dir: Path) -> pd.DataFrame:
    """HR error of the run's teacher, the FFT radar baseline and POS on the run's training windows.

    ``run_dir`` is ``runs/<name>`` (its ``config.json`` gives dataset, frames, stride and the labelled
    subjects); windows are every ``frames``-long window at ``stride`` of the ``train`` sessions of
    ``manifests/splits.csv``. Columns: source (teacher | radar_fft | pos), subjects (labelled |
    unlabelled | all), n_windows, mae, rmse (bpm), r (Pearson over windows). No teacher rows when the run
    has no ``teacher.pt``. Raises :class:`ReportError` (one line) when the run or split is unusable.
    """
    return quality_table(train_window_hrs(workdir, Path(run_dir)))
