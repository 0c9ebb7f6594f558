"""Planning a study: every run's resolved config, name, conditions and teacher key; ``plan.csv``.

Config precedence of each run: field defaults <- preset (``--preset``; auto: paper with CUDA, else cpu)
<- the study size (:data:`train.study.grid.STUDY_SIZES`) <- ``--config`` TOML <- the run's own overrides
(seed, dataset, device and the condition's method / switches / labelled fraction / shift probability),
resolved by :func:`train.config.resolve_config`, the path ``rpm train`` takes, so a study run and the same
``rpm train`` command train the same thing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pandas as pd
import torch

from pipeline.errors import OptionError, RpmError
from pipeline.paths import Workdir
from pipeline.split import SplitError, file_sha256, labeled_subjects, read_split_meta, read_split_table
from train.checkpoint import teacher_cache_key
from train.config import RESUME_MUTABLE, TrainConfig, load_config_file, resolve_config
from train.study.grid import CPU_EXCLUDED, STUDY_SIZES, Part, condition_labels, run_name, study_parts

MARKER = "study_done.json"  # runs/<run>/study_done.json: written last, when the run is trained and scored
PLAN_COLUMNS = ["run_name", "seed", "method", "conditions", "overrides", "teacher_key", "after", "status"]
# Config keys that may differ between a finished run and the plan without making it another run.
IGNORED_KEYS = RESUME_MUTABLE | {"run_name"}


class StudyError(RpmError, RuntimeError):
    """A study that cannot be planned or run; one line naming the cause."""


@dataclass
class RunSpec:
    """One training run of a study (shared by every condition whose config resolves to it)."""

    name: str
    seed: int
    overrides: dict  # TrainConfig keys set by the study (the --config file and the preset fill the rest)
    config: TrainConfig  # resolved (on this machine)
    conditions: list[tuple[str, str]] = field(default_factory=list)  # (condition label, model kind)
    teacher_key: str | None = None  # runs/_teachers/<key>: None when the method needs no teacher
    after: str | None = None  # the run that trains this run's teacher first (same key, same study)
    status: str = "new"  # new | unfinished | finished (then: done | failed | skipped after running)


@dataclass
class StudyPlan:
    name: str
    parts: list[Part]
    runs: list[RunSpec]
    seeds: list[int]
    size: str  # cpu | paper
    config_path: Path | None
    split: dict  # splits.json

    def by_condition(self) -> dict[tuple[str, int], tuple[RunSpec, str]]:
        """(condition label, seed) -> (the run, the model kind that is the row)."""
        return {(label, r.seed): (r, kind) for r in self.runs for label, kind in r.conditions}


def study_dir(workdir: Workdir, name: str) -> Path:
    return workdir.root / "studies" / name


def study_size(preset: str | None, config_path: Path | None) -> str:
    """The preset the study resolves to: ``--preset``, else the config file's, else auto (paper with CUDA)."""
    if preset is None and config_path is not None:
        preset = load_config_file(config_path).get("preset")
    preset = preset or "auto"
    if preset == "auto":
        return "paper" if torch.cuda.is_available() else "cpu"
    if preset not in STUDY_SIZES:
        raise OptionError(f"--preset must be auto, cpu or paper, got {preset!r}")
    return preset


def chosen_labels(name: str, size: str, methods: list[str] | None) -> list[str]:
    """The condition labels to run: ``methods`` (checked against the study's), else every one except, at
    cpu size, :data:`~train.study.grid.CPU_EXCLUDED`."""
    labels = condition_labels(name)
    if methods:
        unknown = [m for m in methods if m not in labels]
        if unknown:
            raise OptionError(
                f"--methods: {', '.join(unknown)} not in study {name}; choose from {', '.join(labels)}"
            )
        return [m for m in labels if m in methods]
    return [m for m in labels if not (size == "cpu" and m in CPU_EXCLUDED)]


def _check_split(workdir: Workdir, dataset: str | None, protocol: str | None) -> tuple[dict, list[str], str]:
    """(splits.json, the training subjects, the dataset trained on); the options checked against the split."""
    try:
        meta = read_split_meta(workdir.splits_meta)
        table = read_split_table(workdir.splits_manifest)
    except SplitError as exc:
        raise StudyError(f"{exc} (a study trains and scores every run on the split of `rpm split`)") from None
    source = (meta.get("source") or [None])[0] or (table.dataset.iloc[0] if len(table) else "equipleth")
    if dataset is not None and dataset != source:
        raise OptionError(
            f"--dataset {dataset}: the split in {workdir.splits_meta} trains on {source}; "
            f"rerun `rpm split --dataset {dataset}` or leave --dataset out"
        )
    made = meta.get("protocol")
    if protocol not in (None, "auto") and protocol != made:
        raise OptionError(
            f"--protocol {protocol}: the split in {workdir.splits_meta} was made with protocol "
            f"{made}; rerun `rpm split --protocol {protocol}` first"
        )
    train = table[(table.split == "train") & (table.dataset == source)].subject.tolist()
    if not train:
        raise StudyError(f"{workdir.splits_manifest}: no training subjects for {source}")
    return meta, train, source


def plan_study(
    workdir: Workdir,
    name: str,
    seeds: list[int],
    dataset: str | None = None,
    protocol: str | None = None,
    preset: str | None = None,
    config_path: Path | None = None,
    methods: list[str] | None = None,
    device: str | None = None,
) -> StudyPlan:
    """Resolve and check every run of study ``name`` for ``seeds``; reads the split, writes nothing."""
    size = study_size(preset, config_path)
    labels = set(chosen_labels(name, size, methods))
    meta, train_subjects, source = _check_split(workdir, dataset, protocol)
    from_file = load_config_file(config_path) if config_path else {}
    common = {k: v for k, v in STUDY_SIZES[size].items() if k not in from_file}
    common.update(preset=size, dataset=source, device=device)
    parts = study_parts(name)
    for p in parts:
        p.conditions = [c for c in p.conditions if c.label in labels]
        kept = {c.label for c in p.conditions}
        p.comparisons = [c for c in p.comparisons if c.a in kept and c.b in kept]
    parts = [p for p in parts if p.conditions]
    splits_sha = file_sha256(workdir.splits_manifest)
    runs: dict[str, RunSpec] = {}
    for seed in seeds:
        base = resolve_config({**common, "seed": seed}, config_file=config_path)
        for part in parts:
            for cond in part.conditions:
                given = cond.config
                changed = {k: v for k, v in given.items() if k != "baseline" and getattr(base, k) != v}
                rname = run_name(given.get("method", base.method), changed, seed)
                overrides = {**common, **given, "seed": seed, "run_name": rname}
                if rname in runs:
                    spec = runs[rname]
                    if given.get("baseline") and not spec.config.baseline:
                        spec.overrides["baseline"] = True
                        spec.config.baseline = True
                else:
                    cfg = resolve_config(overrides, config_file=config_path)
                    spec = runs[rname] = RunSpec(rname, seed, overrides, cfg)
                    spec.teacher_key = _teacher_key(cfg, splits_sha, train_subjects)
                if (cond.label, cond.kind) not in spec.conditions:
                    spec.conditions.append((cond.label, cond.kind))
    ordered = _teacher_first(list(runs.values()))
    for spec in ordered:
        spec.status = run_status(workdir, spec)
    return StudyPlan(name, parts, ordered, list(seeds), size, config_path, meta)


def _teacher_key(cfg: TrainConfig, splits_sha: str, train_subjects: list[str]) -> str | None:
    from train.method import METHOD_IMPLS

    if not METHOD_IMPLS[cfg.method].needs_teacher:
        return None
    try:
        labeled = labeled_subjects(train_subjects, cfg.labeled_frac, cfg.seed)
    except SplitError as exc:
        raise StudyError(str(exc)) from None
    return teacher_cache_key(cfg, splits_sha, labeled)[0]


def _teacher_first(runs: list[RunSpec]) -> list[RunSpec]:
    """The runs seed by seed with, for each teacher key, the first run that trains that teacher ahead of the
    others of the key, which wait for it (``after``): two workers never train the same teacher at once."""
    first: dict[str, RunSpec] = {}
    for r in runs:
        if r.teacher_key is None:
            continue
        if r.teacher_key in first:
            r.after = first[r.teacher_key].name
        else:
            first[r.teacher_key] = r
    # Seed by seed (each seed's teacher-training runs first), so a study stopped part way has whole seeds,
    # i.e. complete pairs for its comparisons; on a cluster the ``after`` links, not this order, decide
    # what runs at once.
    return sorted(runs, key=lambda r: (r.seed, r.after is not None))


# ----------------------------------------------------------------------------------------------- status


def comparable(config: dict) -> dict:
    """A config as JSON values, without the keys that may change between a plan and its finished run."""
    known = {f.name for f in fields(TrainConfig)}
    return {k: v for k, v in json.loads(json.dumps(config)).items() if k in known and k not in IGNORED_KEYS}


def read_marker(workdir: Workdir, name: str) -> dict | None:
    """A finished run's ``study_done.json`` (None when absent or unreadable: the run is then redone)."""
    path = workdir.runs / name / MARKER
    try:
        marker = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return marker if isinstance(marker, dict) and "results" in marker else None


def run_status(workdir: Workdir, spec: RunSpec) -> str:
    """finished (marker present and written under the same config), unfinished (a run folder without a
    marker: killed, or a dead worker) or new. A marker written under another config is an error: the run
    name would stand for two different runs."""
    marker = read_marker(workdir, spec.name)
    if marker is not None:
        then, now = comparable(marker.get("config", {})), comparable(asdict(spec.config))
        diff = sorted(k for k in set(then) | set(now) if then.get(k) != now.get(k))
        if diff:
            detail = ", ".join(f"{k}: {then.get(k)!r} -> {now.get(k)!r}" for k in diff[:4])
            raise StudyError(
                f"{workdir.runs / spec.name}: finished under another config ({detail}); use another "
                "--workdir for this study, or move that run away to redo it"
            )
        return "finished"
    return "unfinished" if (workdir.runs / spec.name).exists() else "new"


def write_plan(workdir: Workdir, plan: StudyPlan) -> Path:
    """``studies/<name>/plan.csv``: one row per run (columns :data:`PLAN_COLUMNS`), written whole."""
    out = study_dir(workdir, plan.name)
    out.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "run_name": r.name,
            "seed": r.seed,
            "method": r.config.method,
            "conditions": ";".join(f"{label}:{kind}" for label, kind in r.conditions),
            "overrides": json.dumps({k: v for k, v in r.overrides.items() if v is not None}, sort_keys=True),
            "teacher_key": r.teacher_key or "",
            "after": r.after or "",
            "status": r.status,
        }
        for r in plan.runs
    ]
    path = out / "plan.csv"
    pd.DataFrame(rows, columns=PLAN_COLUMNS).to_csv(path.with_suffix(".csv.partial"), index=False)
    path.with_suffix(".csv.partial").replace(path)
    return path
