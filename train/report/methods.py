"""The report's methods: one registry of the rows of every method table, in table order.

A row is either a trained model read from a run's checkpoint (``runs/<name>/<checkpoint>``), whose
input is the face video or the radar, or a classical method computed from the skin-ROI RGB trace of the
same windows. Add a model to the report by adding one :class:`ReportMethod` to :data:`REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from train.classical import METHODS as CLASSICAL_FUNCS
from train.report.schema import METHOD


@dataclass(frozen=True)
class ReportMethod:
    """One row: ``key`` names it in metrics.json and the ``hr_<key>`` column of windows.csv."""

    key: str
    title: str  # the row label in report.md
    checkpoint: str | None = None  # a trained model: its file in runs/<name>/
    modality: str = "video"  # a trained model's input: "video" (B, 3, T, S, S) or "rf" (B, C, T_rf)
    classical: Callable | None = None  # (RGB trace (N, 3), fs in Hz) -> waveform (N,)


REGISTRY: tuple[ReportMethod, ...] = (
    ReportMethod("student", "RPM-Distill student (video only)", checkpoint="student.pt"),
    ReportMethod("baseline", "Student, supervised only (no distillation)", checkpoint="baseline.pt"),
    ReportMethod("teacher", "RF teacher (radar)", checkpoint="teacher.pt", modality="rf"),
    ReportMethod("POS", "POS (Wang et al. 2017)", classical=CLASSICAL_FUNCS["POS"]),
    ReportMethod("CHROM", "CHROM (de Haan & Jeanne 2013)", classical=CLASSICAL_FUNCS["CHROM"]),
    ReportMethod("GREEN", "GREEN (Verkruysse et al. 2008)", classical=CLASSICAL_FUNCS["GREEN"]),
)
BY_KEY = {m.key: m for m in REGISTRY}
METHODS = {m.key: m.title for m in REGISTRY}  # key -> row label, in table order
NEURAL = tuple(m.key for m in REGISTRY if m.checkpoint)  # read from a run's checkpoints
CLASSICAL = tuple(m.key for m in REGISTRY if m.classical)  # the same on every seed of a group

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
