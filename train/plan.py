"""Everything a training run needs, read and checked before anything is written.

:func:`plan_run` reads the split, builds the window datasets, draws the labelled subjects, decides
where the teacher comes from and, for ``--resume``, loads and checks every checkpoint and the log. It
writes nothing: a run refused here (a bad split, a missing store, an unsafe or unreadable checkpoint,
a resume under another config) leaves ``runs/`` and the teacher cache exactly as they were.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd
from torch.utils.data import Dataset, Subset

from pipeline.paths import Workdir
from pipeline.split import (
    SplitError,
    SyncShifts,
    file_sha256,
    labeled_subjects,
    read_split_meta,
    read_split_table,
)
from train.checkpoint import (
    MODEL_KEYS,
    CheckpointError,
    load_checkpoint,
    load_training_state,
    teacher_cache_key,
)
from train.config import RESUME_MUTABLE, TrainConfig, TrainError
from train.data import WindowDataset
from train.runlog import read_log_records

TEACHERS = "_teachers"  # runs/_teachers/<key>/teacher.pt: the teacher cache


@dataclass
class RunData:
    """The windows of one run (see the trainer's module docstring for who learns from which)."""

    train: Dataset  # the student's training windows (with the split's sync shifts, when it has them)
    labeled: Dataset  # aligned training windows of the labelled subjects (teacher, supervised stages)
    val: WindowDataset  # non-overlapping validation windows (model selection, the meta step)
    labeled_subjects: list[str]
    shift_prob: float  # share of training clips whose radar window is shifted (0: none)


@dataclass
class Stage:
    """One student stage: ``student`` (the run's method) or ``baseline`` (the supervised-only student)."""

    kind: str
    cfg: TrainConfig  # the run's config; the baseline's has method supervised and mode sup_only
    train: Dataset
    resume_from: dict | None = None  # the checked ``<kind>_last.pt`` state, when resuming one


@dataclass
class TeacherPlan:
    path: Path  # the cached teacher (or the run's own with --no-teacher-cache)
    reuse: bool  # True: load ``path``; False: train it and save it there
    payload: dict  # what the cache key hashes
    history: list[dict]  # the reused teacher's epoch records


@dataclass
class RunPlan:
    cfg: TrainConfig
    out: Path  # runs/<name>
    data: RunData
    stages: list[Stage]
    teacher_key: str  # runs/_teachers/<key>/ (see train.checkpoint.teacher_cache_key)
    teacher: TeacherPlan | None  # None: the run needs no teacher (method supervised)
    log_records: list[dict]  # a resumed run's log


def plan_run(cfg: TrainConfig, workdir: Workdir, needs_teacher: bool) -> RunPlan:
    """Read and check everything the run needs; raise :class:`TrainError` before any write."""
    out = _run_folder(cfg, workdir)
    meta, splits = _read_split(workdir, cfg.dataset)
    data = _run_data(cfg, workdir, meta, splits)
    stages = student_stages(cfg, data)
    key, payload = teacher_cache_key(cfg, file_sha256(workdir.splits_manifest), data.labeled_subjects)
    records: list[dict] = []
    if cfg.resume:
        for stage in stages:
            stage.resume_from = _resume_state(out, stage)
        if not any(stage.resume_from for stage in stages):  # killed before a stage's first epoch ended
            _check_resume_config(_saved_config(out), cfg, out / "config.json")
        records = read_log_records(out / "log.jsonl")
    teacher = None
    if needs_teacher:
        cached = workdir.runs / TEACHERS / key / "teacher.pt" if cfg.teacher_cache else out / "teacher.pt"
        reuse = cached.is_file() and (cfg.teacher_cache or cfg.resume)
        teacher = TeacherPlan(cached, reuse, payload, _cached_history(cached, payload) if reuse else [])
    return RunPlan(cfg, out, data, stages, key, teacher, records)


def student_stages(cfg: TrainConfig, data: RunData) -> list[Stage]:
    """The student stage, then (unless the method learns from labels alone or ``baseline`` is off) the
    baseline. Method ``fusion`` trains the baseline first, always: its model fuses that video network."""
    supervised = dataclasses.replace(cfg, method="supervised", mode="sup_only")
    if cfg.method == "fusion":
        return [Stage("baseline", supervised, data.labeled), Stage("student", cfg, data.labeled)]
    if cfg.method in ("supervised", "physformer"):  # the student itself is the supervised-only model
        return [Stage("student", cfg, data.labeled)]
    stages = [Stage("student", cfg, data.train)]
    if cfg.baseline:
        stages.append(Stage("baseline", supervised, data.labeled))
    return stages


# ----------------------------------------------------------------------------------------------- reading


def _run_folder(cfg: TrainConfig, workdir: Workdir) -> Path:
    out = workdir.runs / cfg.run_name
    for path in (workdir.runs, out, workdir.runs / TEACHERS):
        if path.exists() and not path.is_dir():
            raise TrainError(f"{path}: exists and is not a folder; move it away to train here")
    if cfg.resume and not (out / "config.json").is_file():
        raise TrainError(f"{out}: nothing to resume (no config.json)")
    return out


def _read_split(workdir: Workdir, dataset: str) -> tuple[dict, pd.DataFrame]:
    """(splits.json, the dataset's rows of splits.csv), both checked by :mod:`pipeline.split`'s readers."""
    meta = read_split_meta(workdir.splits_meta)
    sessions_csv = Path(str(meta["sessions_manifest"]))
    if sessions_csv.is_file() and file_sha256(sessions_csv) != meta["sessions_sha256"]:
        raise TrainError(f"{sessions_csv} changed after the split was made; rerun `rpm split`")
    path = workdir.splits_manifest
    splits = read_split_table(path)
    splits = splits[splits.dataset == dataset]
    for split in ("train", "val"):
        if not (splits.split == split).any():
            what = "training" if split == "train" else "validation"
            raise TrainError(f"{path}: the {what} split is empty")
    return meta, splits


def _run_data(cfg: TrainConfig, workdir: Workdir, meta: dict, splits: pd.DataFrame) -> RunData:
    """The run's windows, all cut by :func:`pipeline.split.session_windows` at the run's frames and stride.

    Labelled subjects: :func:`pipeline.split.labeled_subjects` over the split's training subjects with
    the run's ``labeled_frac`` and ``seed``. Sync shifts: the split's schedule (``splits.json``), or with
    ``cfg.shift_prob`` set that probability with the split's shift seed and frames, applied to the
    student's training windows only; ``clips.csv`` is not read (where its frames and stride are
    the run's, its training rows are exactly these windows).
    """
    train_rows = splits[splits.split == "train"]
    try:
        labeled = labeled_subjects(train_rows.subject.tolist(), cfg.labeled_frac, cfg.seed)
        shifts = SyncShifts.from_meta(meta, str(workdir.splits_meta))
        if cfg.shift_prob is not None:  # the run's own probability, drawn with the split's seed and frames
            drawn_with_seed = (meta.get("shift") or {}).get("seed") is not None
            seed = shifts.seed if drawn_with_seed else int(meta.get("seed", 0))
            shifts = SyncShifts(seed, cfg.shift_prob, shifts.frames)
    except SplitError as exc:
        raise TrainError(str(exc)) from None
    store = workdir.store(cfg.dataset)
    sessions = train_rows.session.tolist()
    # Aligned training windows: the teacher and the supervised stages always learn from these.
    aligned = WindowDataset(store, sessions, cfg.frames, cfg.stride, labeled_subjects=set(labeled))
    train: Dataset = aligned
    if shifts.prob > 0:
        # Sync-shift injection (robustness study): the same windows, a share of them with the radar window
        # shifted (the student's video-radar pairs); the stored data are unshifted.
        train = WindowDataset(
            store, sessions, cfg.frames, cfg.stride, labeled_subjects=set(labeled), shifts=shifts
        )
    # Validation (model selection and the meta step) uses non-overlapping windows.
    val = WindowDataset(store, splits.loc[splits.split == "val", "session"].tolist(), cfg.frames, cfg.frames)
    if len(train) == 0 or len(val) == 0:
        raise TrainError(
            f"no {cfg.frames}-frame windows in the train ({len(train)}) or val ({len(val)}) "
            "split; sessions are shorter than one window"
        )
    labeled_idx = [i for i, w in enumerate(aligned.windows) if w.subject in set(labeled)]
    return RunData(train, Subset(aligned, labeled_idx), val, labeled, shifts.prob)


# ----------------------------------------------------------------------------------------------- resume


def _saved_config(out: Path) -> dict:
    path = out / "config.json"
    try:
        saved = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainError(f"{path}: not valid JSON ({exc}); the run cannot be resumed") from None
    if not isinstance(saved, dict):
        raise TrainError(f"{path}: not a JSON object; the run cannot be resumed")
    return saved


def _check_resume_config(saved: dict, cfg: TrainConfig, path: Path) -> None:
    """Refuse a run saved under another config (``cfg.force``: warn and go on)."""
    known = {f.name for f in fields(TrainConfig)}
    now = json.loads(json.dumps(asdict(cfg)))
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not dataclasses.MISSING}
    # A key missing from an older checkpoint had its default value (e.g. ``student``).
    then = {**json.loads(json.dumps(defaults)), **json.loads(json.dumps(saved))}
    diff = sorted(k for k in known if k not in RESUME_MUTABLE and now.get(k) != then.get(k))
    if diff:
        detail = ", ".join(f"{k}: {then.get(k)!r} -> {now.get(k)!r}" for k in diff)
        if cfg.force:
            print(f"warning: {path}: resuming with a different config because of --force ({detail})")
            return
        raise TrainError(
            f"{path}: cannot resume with a different config ({detail}); "
            "pass --force to resume anyway, or train a new run (--name)"
        )


def _resume_state(out: Path, stage: Stage) -> dict | None:
    """The checked training state ``<kind>_last.pt`` of ``stage`` (None before its first epoch ended).

    The stage's selected model ``<kind>.pt``, reloaded when the stage ends, is checked to load as well.
    """
    path, best = out / f"{stage.kind}_last.pt", out / f"{stage.kind}.pt"
    if best.exists():
        load_checkpoint(best, MODEL_KEYS)
    if not path.exists():
        return None
    state = load_training_state(path, ["model", "optimizer"])
    if not isinstance(state["config"], dict):
        raise CheckpointError(f"{path}: its config is not a dict")
    _check_resume_config(state["config"], stage.cfg, path)
    return state


def _cached_history(path: Path, payload: dict) -> list[dict]:
    """The epoch records of a reusable teacher checkpoint, checked to match this run's teacher settings."""
    ckpt = load_checkpoint(path, MODEL_KEYS)
    if ckpt.get("cache_payload") != payload:
        raise TrainError(f"{path}: trained with other teacher settings; delete it or change the run")
    history = ckpt.get("history", [])
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise CheckpointError(f"{path}: its training history is not a list of records")
    return history
