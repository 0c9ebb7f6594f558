"""Finding runs and reading what ``rpm train`` left in one: checkpoints, config and training log.

Key names come from :mod:`train.report.schema`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.errors import RpmError
from pipeline.paths import Workdir
from pipeline.split import read_split_table
from train.checkpoint import load_model
from train.report.methods import BY_KEY, NEURAL
from train.report.schema import (
    CKPT_CONFIG,
    CONFIG_JSON,
    GATE_KEYS,
    LOG_FILE,
    LOG_STEP,
    LOG_TYPE,
    SPLIT,
    SPLIT_DATASET,
    SPLIT_SESSION,
    TEST,
)


class ReportError(RpmError, RuntimeError):
    """A report that cannot be made; the message is one line naming the file and the problem."""


def has_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / BY_KEY[k].checkpoint).is_file() for k in NEURAL)


def run_names(workdir: Workdir, runs: list[str] | None) -> list[str]:
    """``runs``, or else every run folder under ``runs/`` with a checkpoint (sorted; not ``.``/``_``)."""
    names = list(runs or [])
    if not names and workdir.runs.is_dir():
        names = sorted(
            p.name
            for p in workdir.runs.iterdir()
            if p.is_dir() and not p.name.startswith((".", "_")) and has_checkpoint(p)
        )
    if not names:
        raise ReportError(f"{workdir.runs}: no runs to report; run `rpm train` first")
    return names


def run_checkpoints(run_dir: Path) -> list[str]:
    """The kinds (:data:`NEURAL` keys) whose checkpoint the run has; :class:`ReportError` if none."""
    kinds = [k for k in NEURAL if (run_dir / BY_KEY[k].checkpoint).is_file()]
    if not kinds:
        files = " / ".join(BY_KEY[k].checkpoint for k in NEURAL)
        raise ReportError(f"{run_dir}: no checkpoint ({files}); run `rpm train`")
    return kinds


def load_run_models(run_dir: Path, kinds: list[str], device) -> dict[str, tuple]:
    """kind -> (model in eval mode on ``device``, its TrainConfig, its checkpoint dict)."""
    return {k: load_model(run_dir / BY_KEY[k].checkpoint, device) for k in kinds}


def run_config(run_dir: Path, models: dict[str, tuple]) -> dict:
    """The first checkpoint's config updated with ``config.json`` (which adds the trainer's keys)."""
    cfg = dict(next(iter(models.values()))[2][CKPT_CONFIG])
    if (run_dir / CONFIG_JSON).is_file():
        try:
            cfg.update(json.loads((run_dir / CONFIG_JSON).read_text()))
        except json.JSONDecodeError:
            pass
    return cfg


def read_log_steps(run_dir: Path) -> pd.DataFrame | None:
    """Per-step records of ``log.jsonl`` that carry a gate or weights (None when absent).

    Lines that are not JSON (a run killed mid-write) are skipped.
    """
    path = run_dir / LOG_FILE
    if not path.is_file():
        return None
    rows = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get(LOG_TYPE) == LOG_STEP and any(k in rec for k in GATE_KEYS):
            rows.append(rec)
    return pd.DataFrame(rows) if rows else None


def read_splits(workdir: Workdir) -> pd.DataFrame:
    """``splits.csv``, checked (:func:`pipeline.split.read_split_table`: one line naming it when unusable)."""
    return read_split_table(workdir.splits_manifest)


def test_sessions(splits: pd.DataFrame, path: Path) -> dict[str, list[str]]:
    """dataset -> its test sessions in ``splits`` (read from ``path``), datasets sorted."""
    rows = splits[splits[SPLIT] == TEST]
    if rows.empty:
        raise ReportError(f"{path}: no test sessions")
    return {str(d): g[SPLIT_SESSION].tolist() for d, g in rows.groupby(SPLIT_DATASET, sort=True)}
