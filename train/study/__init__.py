"""``rpm study NAME``: the paper's comparisons as seeded, resumable sweeps of training runs (docs/study.md).

Modules: :mod:`~train.study.grid` (study name -> conditions and comparisons; the study sizes),
:mod:`~train.study.plan` (resolved run configs, names, teacher keys, ``studies/<name>/plan.csv``),
:mod:`~train.study.runner` (one dask task per run; skip / resume / redo), :mod:`~train.study.stats`
(paired differences across seeds) and :mod:`~train.study.report` (``reports/studies/<name>/``).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.paths import Workdir
from train.study.grid import STUDIES
from train.study.plan import StudyError, StudyPlan, plan_study, write_plan
from train.study.report import write_study_report
from train.study.runner import execute

__all__ = ["STUDIES", "StudyError", "StudyPlan", "plan_study", "run_study"]


def run_study(
    name: str,
    workdir: Workdir,
    seeds: int = 3,
    seed: int = 1,
    dataset: str | None = None,
    protocol: str | None = None,
    preset: str | None = None,
    config_path: Path | None = None,
    methods: list[str] | None = None,
    scheduler: str = "local",
    device: str | None = None,
    debug: bool = False,
    log=print,
    report_only: bool = False,
) -> Path:
    """Plan study ``name`` for training seeds ``seed .. seed + seeds - 1``, write ``studies/<name>/plan.csv``,
    run every unfinished run (``scheduler``: local or a dask address) and write the study report; returns
    ``reports/studies/<name>/study.md``. Raises :class:`StudyError` after the report when a run failed.
    ``report_only``: train nothing and leave ``plan.csv`` as it is; the report covers the finished runs."""
    if name not in STUDIES:
        from pipeline.errors import OptionError

        raise OptionError(f"NAME must be one of {', '.join(STUDIES)}, got {name!r}")
    plan = plan_study(
        workdir,
        name,
        list(range(seed, seed + seeds)),
        dataset,
        protocol,
        preset,
        config_path,
        methods,
        device,
    )
    counts = {s: sum(r.status == s for r in plan.runs) for s in ("finished", "unfinished", "new")}
    summary = (
        f"study {name}: {len(plan.runs)} runs ({counts['finished']} finished, {counts['unfinished']} "
        f"unfinished, {counts['new']} new), size {plan.size}"
    )
    if report_only:
        log(summary + "; report only, nothing is trained")
        report = write_study_report(plan, workdir, None)
        log(f"study report: {report}")
        return report
    path = write_plan(workdir, plan)
    log(f"{summary} -> {path}")
    outcomes = execute(plan, workdir, scheduler, debug, log)
    for o in outcomes:
        next(r for r in plan.runs if r.name == o["run"]).status = o["status"]
    write_plan(workdir, plan)
    report = write_study_report(plan, workdir, outcomes)
    log(f"study report: {report}")
    failed = [o["run"] for o in outcomes if o["status"] == "failed"]
    if failed:
        raise StudyError(
            f"{len(failed)} run(s) failed ({', '.join(failed[:3])}{', ...' if len(failed) > 3 else ''}); "
            f"see {report}; rerun `rpm study {name}` to redo them"
        )
    return report
