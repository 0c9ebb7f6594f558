"""The report's methods: one registry of the rows of every method table, in table order.

A row is either a trained model read from a run's checkpoint (``runs/<name>/<checkpoint>``), whose
input is the face video or the radar, or a training-free method computed on the same windows: a classical
video method from the skin-ROI RGB trace, or the FFT radar baseline (:mod:`train.radar_fft`) from the
session's stored radar, which, like fusion, reads the radar at test time. Add a model to the report by
adding one :class:`ReportMethod` to :data:`REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from train.classical import METHODS as CLASSICAL_FUNCS
from train.radar_fft import radar_fft_hr_windows
from train.report.schema import (
    METHOD,
    STORE_FPS,
    STORE_RADAR,
    STORE_RADAR_ATTRS,
    STORE_RADAR_CHANNEL,
    STORE_RADAR_FPS,
    STORE_RADAR_OK,
)


def radar_attrs_present(group) -> bool:
    """Whether a store session carries the attributes :func:`radar_fft_hr_session` reads."""
    return all(k in group.attrs for k in STORE_RADAR_ATTRS)


def radar_fft_hr_session(group, starts: list[int], window: int, **band) -> np.ndarray:
    """(len(starts),) FFT radar HR (bpm) over video windows ``[s, s + window)`` of one store session.

    ``group`` is the session's zarr group: its radar I/Q, ``radar_ok``, chest bin and rates;
    :func:`train.radar_fft.radar_fft_hr_windows` does the rest (``band``: ``lo_bpm``, ``hi_bpm``). NaN
    where the radar saw nothing.
    """
    return radar_fft_hr_windows(
        np.asarray(group[STORE_RADAR][...]),
        np.asarray(group[STORE_RADAR_OK][...]),
        int(group.attrs[STORE_RADAR_CHANNEL]),
        float(group.attrs[STORE_RADAR_FPS]),
        list(starts),
        window,
        fps=float(group.attrs.get(STORE_FPS, 30.0)),
        **band,
    )


@dataclass(frozen=True)
class ReportMethod:
    """One row: ``key`` names it in metrics.json and the ``hr_<key>`` column of windows.csv."""

    key: str
    title: str  # the row label in report.md
    checkpoint: str | None = None  # a trained model: its file in runs/<name>/
    modality: str = "video"  # a trained model's input: "video" (B, 3, T, S, S) or "rf" (B, C, T_rf)
    classical: Callable | None = None  # (RGB trace (N, 3), fs in Hz) -> waveform (N,)
    # training-free radar: (store session group, video-frame starts, window frames, lo_bpm=, hi_bpm=)
    # -> (len(starts),) HR in bpm (NaN where the radar saw nothing); no waveform
    radar_hr: Callable | None = None


REGISTRY: tuple[ReportMethod, ...] = (
    ReportMethod("student", "RPM-Distill student (video only)", checkpoint="student.pt"),
    ReportMethod("baseline", "Student, supervised only (no distillation)", checkpoint="baseline.pt"),
    ReportMethod("teacher", "RF teacher (radar)", checkpoint="teacher.pt", modality="rf"),
    ReportMethod(
        "radar_fft",
        "Radar FFT (Alizadeh et al. 2019; radar at test time, no training)",
        radar_hr=radar_fft_hr_session,
    ),
    ReportMethod("POS", "POS (Wang et al. 2017)", classical=CLASSICAL_FUNCS["POS"]),
    ReportMethod("CHROM", "CHROM (de Haan & Jeanne 2013)", classical=CLASSICAL_FUNCS["CHROM"]),
    ReportMethod("GREEN", "GREEN (Verkruysse et al. 2008)", classical=CLASSICAL_FUNCS["GREEN"]),
)
BY_KEY = {m.key: m for m in REGISTRY}
METHODS = {m.key: m.title for m in REGISTRY}  # key -> row label, in table order
NEURAL = tuple(m.key for m in REGISTRY if m.checkpoint)  # read from a run's checkpoints
VIDEO_CLASSICAL = tuple(m.key for m in REGISTRY if m.classical)  # waveforms from the RGB trace
RADAR_FREE = tuple(m.key for m in REGISTRY if m.radar_hr)  # HR per window from the stored radar
# training-free rows: the same on every seed of a group, computed once per test set and shown once
CLASSICAL = tuple(m.key for m in REGISTRY if m.classical or m.radar_hr)

TABLE_METRICS = ("MAE", "RMSE", "STD", "r")
DETAIL_METRICS = ("MAPE", "within10", "MAE_light", "MAE_medium", "MAE_dark", "fairness_gap", "n")


# The student row of a run whose method is a Table 1 comparison rather than RPM-Distill: PhysFormer (video
# only) and Vilesov et al.'s fusion, which reads the radar window at test time (train.method's
# ``uses_radar_at_test``), so its row is marked as a fusion row.
STUDENT_ROWS = {
    "physformer": "PhysFormer (Yu et al. 2022; video only)",
    "fusion": "Fusion: Vilesov et al. 2022 (video + radar at test time)",
    "supervised": "Student, supervised only (video only)",
    "output-kd": "Output-KD student (waveform matching to the RF teacher; video only)",
    "fitnets": "FitNets student (Romero et al. 2015; video only)",
    "dml": "DML student (Zhang et al. 2018; video only)",
}


def method_title(key: str, config: dict) -> str:
    """The row label of ``key`` in a run or group with ``config``: :data:`METHODS`, except the student of a
    run of another method than rpm-distill, named for its method (:data:`STUDENT_ROWS`)."""
    if key == "student" and config.get(METHOD) in STUDENT_ROWS:
        return STUDENT_ROWS[config[METHOD]]
    return METHODS[key]


def short_title(key: str) -> str:
    """The row label without its parenthesis: ``RPM-Distill student``."""
    return METHODS[key].split(" (")[0]
