"""Running a study's runs through dask: one task per run, on this machine or on a cluster.

A task (:func:`run_one`) holds the run's lock (``runs/<run>.lock``, the one ``rpm train`` takes), resolves
the run's config the way ``rpm train`` does, trains it (:func:`train.trainer.train`), scores it on the
split's test windows with ``rpm report``'s scorer (:func:`train.report.evaluate_run`) and writes
``runs/<run>/study_done.json`` last. A run whose marker exists is skipped. A run folder without the marker
(a killed study, a dead worker) is continued from its epoch checkpoints with the trainer's ``--resume``
when they fit the run's config, else it is trained again from the start: its own folder ``runs/<run>``
(a study run name, ``study-...``) is emptied first; nothing else is ever deleted.

Schedulers: ``local`` runs the tasks one after another in this process (dask's synchronous scheduler,
a tqdm bar over runs); ``tcp://host:port`` submits them to an existing ``dask.distributed`` cluster. A
run whose config asks for CUDA is submitted with ``resources={"GPU": 1}``, so start GPU workers with
``dask worker tcp://host:port --resources GPU=1 --nthreads 1``. Runs that share a teacher wait for the
first run of their teacher key (``RunSpec.after``), which trains and caches it.
"""

from __future__ import annotations

import json
import shutil
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path

import dask
from tqdm.auto import tqdm

from pipeline.lock import hold_lock
from pipeline.paths import Workdir
from train.config import first_line, resolve_config
from train.study.plan import MARKER, RunSpec, StudyError, StudyPlan, read_marker

SCHEDULERS = ("local",)
SCHEDULER_ADDRESSES = ("tcp://", "tls://", "inproc://", "ucx://")


def check_scheduler(scheduler: str) -> None:
    from pipeline.errors import OptionError

    if scheduler not in SCHEDULERS and not scheduler.startswith(SCHEDULER_ADDRESSES):
        raise OptionError(
            f"--scheduler must be local or a dask scheduler address tcp://host:port, got {scheduler!r}"
        )


def run_one(spec: dict, root: str, *after) -> dict:
    """Train, score and mark one run (``spec``: :func:`task_spec`); returns its outcome, never raises.

    ``after``: outcomes of the runs this one waits for (their values are not used). Outcome keys: run,
    status (done / skipped / failed), seconds, error (failed only).
    """
    wd, name, t0 = Workdir(Path(root)), spec["name"], time.time()
    try:
        if read_marker(wd, name) is not None:
            print(f"skip {name}: finished")
            return {"run": name, "status": "skipped", "seconds": 0.0}
        with hold_lock(wd.run_lock(name), f"run {wd.run(name)}"):
            cfg = _train_or_resume(spec, wd)
            _score_and_mark(cfg, wd, spec, time.time() - t0)
        return {"run": name, "status": "done", "seconds": time.time() - t0}
    except Exception as exc:  # a failed run must not stop the others; the rerun redoes it
        if spec.get("debug"):
            traceback.print_exc()
        return {"run": name, "status": "failed", "seconds": time.time() - t0, "error": first_line(exc, 300)}


def _train_or_resume(spec: dict, wd: Workdir):
    """Resolve the run's config (as ``rpm train`` does) and train it: resumed when its folder holds a
    config.json and checkpoints the trainer accepts for this config, else from the start."""
    from train.method import METHOD_IMPLS
    from train.plan import plan_run
    from train.trainer import train

    name = spec["name"]
    cfg = resolve_config(dict(spec["overrides"]), config_file=spec.get("config_path"))
    out = wd.run(name)
    if (out / "config.json").is_file():
        # A run that cannot start at all (no store, a bad split) fails here, before its folder is touched;
        # only a refused resume (other config, unreadable checkpoints) leads to training it again.
        plan_run(cfg, wd, needs_teacher=METHOD_IMPLS[cfg.method].needs_teacher)
        resumed = replace(cfg, resume=True)
        try:
            plan_run(resumed, wd, needs_teacher=METHOD_IMPLS[cfg.method].needs_teacher)
        except Exception as exc:
            print(f"redo {name}: its checkpoints cannot be resumed ({first_line(exc)}); training it again")
        else:
            print(f"resume {name}: continuing from its last epoch checkpoint")
            train(resumed, wd)
            return resumed
    if out.exists():
        if not name.startswith("study-"):
            raise StudyError(f"{out}: not a study run; refusing to empty it")
        shutil.rmtree(out)
    train(cfg, wd)
    return cfg


def _score_and_mark(cfg, wd: Workdir, spec: dict, seconds: float) -> None:
    """Score the run on the split's test windows (``rpm report``'s scorer) and write the marker last."""
    from train.distributed import pick_device
    from train.report import evaluate_run

    run_dir = wd.run(spec["name"])
    results = evaluate_run(run_dir, wd, pick_device(cfg.device), log=lambda *a: None)
    marker = {
        "run": spec["name"],
        "seed": cfg.seed,
        "conditions": spec["conditions"],
        "config": json.loads(json.dumps(asdict(cfg))),
        "train_seconds": seconds,
        "results": [result_record(r) for r in results],
    }
    tmp = run_dir / (MARKER + ".partial")
    tmp.write_text(json.dumps(marker, allow_nan=True) + "\n")
    tmp.replace(run_dir / MARKER)


def result_record(result) -> dict:
    """What the study report needs of one :class:`~train.report.RunResult`: the release protocol's windows
    (session, start, truth and every method's HR) and both protocols' metrics per method."""
    rel = result.windows[result.windows.protocol == "release"]
    cols = [
        "session",
        "subject",
        "start",
        "hr_true",
        *[f"hr_{m}" for m in result.methods if f"hr_{m}" in rel],
    ]
    if "radar_corrupted" in rel:
        cols.append("radar_corrupted")
    return {
        "dataset": result.dataset,
        "methods": list(result.methods),
        "windows": json.loads(rel[cols].to_json(orient="records")),
        "metrics": json.loads(json.dumps(result.metrics, default=float)),
    }


def task_spec(spec: RunSpec, plan: StudyPlan, debug: bool = False) -> dict:
    """The plain-data form of a run that travels to a dask worker."""
    return {
        "name": spec.name,
        "overrides": dict(spec.overrides),
        "config_path": str(plan.config_path) if plan.config_path else None,
        "conditions": [list(c) for c in spec.conditions],
        "debug": debug,
    }


def wants_gpu(spec: RunSpec) -> bool:
    """A run to send to a GPU worker: its device is cuda, or auto at the paper preset."""
    device = spec.overrides.get("device") or "auto"
    return device.startswith("cuda") or (device == "auto" and spec.config.preset == "paper")


def execute(
    plan: StudyPlan, workdir: Workdir, scheduler: str = "local", debug: bool = False, log=print
) -> list:
    """Run every unfinished run of ``plan``; returns the outcomes (dicts of :func:`run_one`) in plan order."""
    check_scheduler(scheduler)
    todo = [r for r in plan.runs if r.status != "finished"]
    for r in plan.runs:
        if r.status == "finished":
            log(f"skip {r.name}: finished")
    if not todo:
        return []
    root = str(workdir.root)
    if scheduler == "local":
        outcomes = []
        for r in tqdm(todo, desc=f"study {plan.name}", unit="run"):
            log(f"run {r.name} ({', '.join(label for label, _ in r.conditions)})")
            task = dask.delayed(run_one, pure=False)(task_spec(r, plan, debug), root)
            outcomes.append(task.compute(scheduler="synchronous"))
            _log_outcome(outcomes[-1], log)
        return outcomes
    return _distributed(plan, todo, root, scheduler, debug, log)


def _distributed(plan: StudyPlan, todo: list[RunSpec], root: str, address: str, debug: bool, log) -> list:
    from dask.distributed import Client, as_completed

    try:
        client = Client(address, timeout="30s")
    except (OSError, TimeoutError) as exc:
        raise StudyError(
            f"--scheduler {address}: cannot reach the dask scheduler ({first_line(exc)})"
        ) from None
    try:
        futures = {}
        for r in todo:
            deps = [futures[r.after]] if r.after in futures else []
            resources = {"GPU": 1} if wants_gpu(r) else None
            futures[r.name] = client.submit(
                run_one,
                task_spec(r, plan, debug),
                root,
                *deps,
                key=f"study-run-{r.name}-{time.time_ns()}",
                pure=False,
                resources=resources,
            )
        outcomes = {}
        for fut in tqdm(as_completed(list(futures.values())), total=len(futures), desc=f"study {plan.name}"):
            name = next(n for n, f in futures.items() if f is fut)
            try:
                outcomes[name] = fut.result()
            except Exception as exc:  # the worker died (KilledWorker) or the task was lost
                outcomes[name] = {"run": name, "status": "failed", "seconds": 0.0, "error": first_line(exc)}
            _log_outcome(outcomes[name], log)
        return [outcomes[r.name] for r in todo]
    finally:
        client.close()


def _log_outcome(outcome: dict, log) -> None:
    if outcome["status"] == "failed":
        log(f"failed {outcome['run']}: {outcome['error']}")
    elif outcome["status"] == "done":
        log(f"done {outcome['run']} in {outcome['seconds']:.0f} s")
