"""``rpm study``: the grids, plan.csv, skipping / resuming / redoing runs, the paired statistics, the
per-run sync-shift probability, and (slow) a tiny study on a 2-process dask LocalCluster."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace

import pandas as pd
import pytest
from tiny_data import tiny_train_toml, write_tiny_dataset
from typer.testing import CliRunner

from cli import app
from train.config import PRESETS, TrainConfig, TrainError, resolve_config
from train.study import grid, plan_study, run_study, runner
from train.study.plan import MARKER, StudyError, read_marker, write_plan
from train.study.stats import paired_difference, verdict

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

# Tiny runs: 2 epochs x 3 steps with a meta step every 2 global steps (steps 0, 2, 4: 3 meta steps).
# 48 frames: the shortest window the report's POS / CHROM rows accept at 30 Hz.
TINY = (
    tiny_train_toml(epochs=2, max_steps_per_epoch=3)
    .replace("labeled_frac = 0.5\n", "")
    .replace("frames = 24", "frames = 48")
)
SESSION_FRAMES = 160


@pytest.fixture
def wd(tmp_path):
    workdir = write_tiny_dataset(tmp_path, frames=SESSION_FRAMES)
    (tmp_path / "tiny.toml").write_text(TINY)
    return workdir


def tiny_plan(wd, name="methods", seeds=(1,), methods=("rpm-distill", "supervised")):
    return plan_study(wd, name, list(seeds), config_path=wd.root / "tiny.toml", methods=list(methods))


# --- grids and planning ---------------------------------------------------------------------------------


def test_grids_hold_the_papers_conditions_and_comparisons():
    labels = {n: grid.condition_labels(n) for n in grid.STUDIES}
    assert labels["methods"] == [
        "rpm-distill",
        "supervised",
        "output-kd",
        "fitnets",
        "dml",
        "fusion",
        "physformer",
    ]
    assert labels["labels"] == [
        f"{k}-{f:g}" for f in grid.LABEL_FRACTIONS for k in ("distilled", "supervised")
    ]
    assert labels["ablations"] == ["full", *grid.ABLATIONS]
    assert len(labels["shift"]) == 2 * len(grid.SHIFT_PROBS)
    assert labels["all"] == [lab for n in ("methods", "labels", "ablations", "shift") for lab in labels[n]]
    comps = {n: [(c.a, c.b) for p in grid.study_parts(n) for c in p.comparisons] for n in grid.STUDIES}
    assert ("rpm-distill", "supervised") in comps["methods"]
    assert all((m, "supervised") in comps["methods"] for m in grid.KD_METHODS)
    assert all((a, "full") in comps["ablations"] for a in grid.ABLATIONS)
    assert ("no-gate-p0.4", "full-p0.4") in comps["shift"]
    assert ("distilled-0.2", "supervised-1") in comps["labels"] and (
        "supervised-1",
        "supervised-1",
    ) not in comps["labels"]
    assert (
        grid.run_name("rpm-distill", {"gate": False, "shift_prob": 0.2}, 4)
        == "study-rpm-distill-no-gate-shift0.2-s4"
    )


def test_cpu_study_size_gives_at_least_50_meta_steps():
    """The trainer counts ``step`` globally over epochs (the slow e2e test pins that: 3 meta steps in 2 x 3
    steps at interval 2), so a cpu-size distillation run takes ceil(epochs x steps / interval) meta steps
    when an epoch has at least max_steps_per_epoch batches (the 12-subject synthetic split has ~95)."""
    cfg = resolve_config({"preset": "cpu", **grid.STUDY_SIZES["cpu"]})
    assert cfg.preset == "cpu" and PRESETS["cpu"]["batch_size"] == cfg.batch_size
    meta_steps = math.ceil(cfg.epochs * cfg.max_steps_per_epoch / cfg.meta_interval)
    assert meta_steps >= grid.MIN_META_STEPS


def test_plan_is_deterministic_shares_runs_and_orders_teachers(wd):
    a = plan_study(wd, "all", [1, 2], config_path=wd.root / "tiny.toml")
    b = plan_study(wd, "all", [1, 2], config_path=wd.root / "tiny.toml")
    assert [(r.name, r.conditions, r.teacher_key, r.after) for r in a.runs] == [
        (r.name, r.conditions, r.teacher_key, r.after) for r in b.runs
    ]
    names = [r.name for r in a.runs]
    assert len(names) == len(set(names))
    assert a.size == "cpu" and not any("physformer" in n for n in names)  # left out at cpu size
    full = next(
        r for r in a.runs if r.name == "study-rpm-distill-s1"
    )  # methods, labels 1.0 and full: one run
    assert {"rpm-distill", "supervised", "distilled-1", "supervised-1", "full"} <= {
        c for c, _ in full.conditions
    }
    assert full.config.baseline and full.after is None
    for (
        r
    ) in a.runs:  # a run waits for the first run of its teacher key, which comes earlier and waits for none
        if r.after:
            lead = next(x for x in a.runs if x.name == r.after)
            assert lead.teacher_key == r.teacher_key and lead.after is None
            assert names.index(lead.name) < names.index(r.name)
    seeds = [r.seed for r in a.runs]
    assert seeds == sorted(seeds)  # seed by seed: a study stopped part way has whole seeds
    shifted = next(r for r in a.runs if r.name == "study-rpm-distill-no-gate-shift0.6-s2")
    assert (shifted.config.shift_prob, shifted.config.gate, shifted.config.seed) == (0.6, False, 2)
    full2 = next(r for r in a.runs if r.name == "study-rpm-distill-s2")
    assert shifted.teacher_key == full2.teacher_key != full.teacher_key  # one teacher per seed, shifts or not
    path = write_plan(wd, a)
    table = pd.read_csv(path)
    assert list(table.run_name) == names and set(table.status) == {"new"}
    assert json.loads(table.overrides[0])["run_name"] == names[0]


def test_plan_refuses_bad_options(wd):
    with pytest.raises(Exception, match="--methods: nope"):
        tiny_plan(wd, methods=["nope"])
    with pytest.raises(Exception, match="--dataset physdrive"):
        plan_study(wd, "methods", [1], dataset="physdrive", config_path=wd.root / "tiny.toml")
    with pytest.raises(Exception, match="--preset"):
        plan_study(wd, "methods", [1], preset="huge")
    result = CliRunner().invoke(app, ["study", "nope", "--workdir", str(wd.root)])
    assert result.exit_code == 2 and "NAME must be one of" in result.output
    result = CliRunner().invoke(app, ["study", "methods", "--scheduler", "fast", "--workdir", str(wd.root)])
    assert result.exit_code == 2 and "--scheduler" in result.output


# --- statistics -----------------------------------------------------------------------------------------


def test_paired_difference_of_known_sign_and_size():
    b = {1: 10.0, 2: 14.0, 3: 9.0, 4: 12.0}
    d = {1: -2.0, 2: -3.0, 3: -2.5, 4: -2.5}  # A is 2.5 bpm better on average, sd 0.408
    a = {s: b[s] + d[s] for s in b}
    p = paired_difference(a, {**b, 9: 1.0})  # seed 9 has no A run: not paired, left out
    assert p.n == 4 and p.mean == pytest.approx(-2.5)
    half = 3.182446305284263 * 0.408248290463863 / 2  # t(0.975, 3) * sd / sqrt(4)
    assert (p.low, p.high) == (pytest.approx(-2.5 - half), pytest.approx(-2.5 + half))
    assert p.verdict == f"lower by 2.50 bpm, CI [{-2.5 - half:+.2f}, {-2.5 + half:+.2f}]"
    assert paired_difference(b, a).verdict.startswith("higher by 2.50 bpm")


def test_paired_difference_without_a_difference_or_seeds():
    a, b = {1: 10.0, 2: 12.0, 3: 11.0}, {1: 11.0, 2: 11.0, 3: 11.0}
    p = paired_difference(a, b)
    assert p.mean == pytest.approx(0.0) and p.low < 0 < p.high
    assert p.verdict.startswith("no difference beyond seed noise (mean +0.00 bpm, CI [")
    one = paired_difference({1: 3.0}, {1: 1.0})
    assert one.n == 1 and math.isnan(one.low) and "no interval" in one.verdict
    assert paired_difference({}, b).n == 0
    assert verdict(1.0, 0.5, 1.5) == "higher by 1.00 bpm, CI [+0.50, +1.50]"


def fake_marker(wd, spec, mae: float, gates=(0.5, 0.4)) -> None:
    """A finished run's marker as the runner writes it (metrics only), and a log.jsonl with gate steps."""
    metrics = {
        "student": {"MAE": mae, "RMSE": mae + 1, "r": 0.5, "n": 10},
        "POS": {"MAE": 7.0, "RMSE": 8.0, "r": 0.1, "n": 10},
    }
    marker = {"run": spec.name, "config": json.loads(json.dumps(asdict(spec.config))), "train_seconds": 12.0,
              "results": [{"dataset": "equipleth", "methods": list(metrics), "windows": [],
                           "metrics": {"release": metrics}}]}  # fmt: skip
    out = wd.runs / spec.name
    out.mkdir(parents=True)
    (out / MARKER).write_text(json.dumps(marker))
    steps = [
        {"type": "step", "stage": "student", "epoch": 0, "step": i, "gate": g} for i, g in enumerate(gates)
    ]
    (out / "log.jsonl").write_text("\n".join(map(json.dumps, steps)) + "\n")


def test_report_tables_and_verdicts_from_markers(wd):
    from train.study.report import write_study_report

    plan = plan_study(wd, "shift", [1, 2, 3], config_path=wd.root / "tiny.toml",
                      methods=["full-p0", "no-gate-p0", "full-p1", "no-gate-p1"])  # fmt: skip
    for spec in plan.runs:  # no gate is 3 bpm worse at p 1 on every seed (+- 0.5), the same at p 0
        p, seed = spec.config.shift_prob, spec.seed
        worse = 3.0 + 0.5 * (seed - 2) if (p == 1.0 and not spec.config.gate) else 0.0
        fake_marker(wd, spec, 10.0 + seed + worse + (0.01 * seed if not spec.config.gate else 0.0))
    plan = plan_study(wd, "shift", [1, 2, 3], config_path=wd.root / "tiny.toml",
                      methods=["full-p0", "no-gate-p0", "full-p1", "no-gate-p1"])  # fmt: skip
    assert {r.status for r in plan.runs} == {"finished"}
    md = write_study_report(plan, wd).read_text()
    comps = pd.read_csv(wd.reports / "studies" / "shift" / "comparisons.csv").set_index("a")
    assert comps.loc["no-gate-p1"].mean_diff_mae == pytest.approx(3.02)
    assert comps.loc["no-gate-p1"].verdict.startswith("higher by 3.02 bpm, CI [")
    # +0.01, +0.02, +0.03 bpm over the seeds: an interval that reaches 0
    assert comps.loc["no-gate-p0"].verdict.startswith("no difference beyond seed noise (mean +0.02 bpm")
    assert "| shift_prob | full MAE | no-gate MAE |" in md and "| 1 | 12.00 ± 1.00 | 15.02 ± 1.51 |" in md
    assert "| POS (Wang et al. 2017) | 7.00 | 8.00 | 0.10 |" in md and "| full-p0 | 3 | 12.00 ± 1.00" in md
    assert "| full-p1 | 3 | 2 | 0 | 0.450 | 0.450 | n/a | n/a | n/a |" in md  # no meta steps logged here
    gate = pd.read_csv(wd.reports / "studies" / "shift" / "gate.csv")
    assert len(gate) == 12 * 2 and set(gate.gate) == {0.5, 0.4}


def test_report_only_trains_nothing_and_reports_the_finished_runs(wd):
    args = dict(config_path=wd.root / "tiny.toml", methods=["full-p1", "no-gate-p1"])
    plan = plan_study(wd, "shift", [1, 2], **args)
    for spec in plan.runs[:3]:  # one run of the four is not finished
        fake_marker(wd, spec, 10.0 + spec.seed)
    unfinished = plan.runs[3].name
    report = run_study("shift", wd, seeds=2, report_only=True, log=lambda *a: None, **args)
    assert not (wd.runs / unfinished).exists()  # nothing was trained
    assert not (wd.root / "studies" / "shift" / "plan.csv").exists()  # nor planned on disk
    md = report.read_text()
    assert "3 of 4 run(s) finished" in md


# --- the per-run sync-shift probability -------------------------------------------------------------------


def test_shift_prob_sets_the_share_of_shifted_training_windows(wd):
    from train.plan import plan_run

    base = TrainConfig(preset="cpu", frames=24, stride=4, teacher_widths=(8, 16), batch_size=2)
    shares = {}
    for p in (None, 0.0, 0.5, 1.0):
        data = plan_run(replace(base, shift_prob=p), wd, needs_teacher=True).data
        windows = data.train.windows
        shares[p] = sum(w.shift > 0 for w in windows) / len(windows)
        assert data.shift_prob == (p or 0.0)  # config.json's sync_shift_prob, which the report reads
        assert all(w.shift == 0 for w in data.labeled.dataset.windows)  # the teacher's windows stay aligned
    roomy = sum(w.start + 24 + 30 <= SESSION_FRAMES for w in windows) / len(
        windows
    )  # 30-frame shift still in the session
    assert shares[None] == shares[0.0] == 0.0 and shares[1.0] == pytest.approx(roomy)
    assert 0.0 < shares[0.5] < shares[1.0]
    with pytest.raises(TrainError, match="--shift-prob"):
        resolve_config({"shift_prob": 1.5})
    key = lambda p: plan_run(replace(base, shift_prob=p), wd, needs_teacher=True).teacher_key  # noqa: E731
    assert key(0.5) == key(None)  # the teacher is trained on aligned windows: one cache entry


# --- running: skip, resume, redo ------------------------------------------------------------------------


def test_finished_runs_are_skipped_and_unfinished_ones_resumed_or_redone(wd, capsys):
    report = run_study("methods", wd, seeds=1, config_path=wd.root / "tiny.toml", methods=["rpm-distill"],
                       log=print)  # fmt: skip
    name = "study-rpm-distill-s1"
    marker = read_marker(wd, name)
    assert marker is not None and marker["config"]["seed"] == 1 and marker["results"][0]["windows"]
    assert (wd.root / "studies" / "methods" / "plan.csv").is_file() and report.is_file()
    assert pd.read_csv(wd.root / "studies" / "methods" / "plan.csv").status.tolist() == ["done"]
    # finished: not run again (the marker and the checkpoint stay as they are)
    stamp = (wd.runs / name / "student.pt").stat().st_mtime_ns
    capsys.readouterr()
    run_study("methods", wd, seeds=1, config_path=wd.root / "tiny.toml", methods=["rpm-distill"], log=print)
    assert f"skip {name}: finished" in capsys.readouterr().out
    assert (wd.runs / name / "student.pt").stat().st_mtime_ns == stamp
    # a marker written under another config is not taken for this run
    changed = dict(marker, config={**marker["config"], "lr": 1.0})
    (wd.runs / name / MARKER).write_text(json.dumps(changed))
    with pytest.raises(StudyError, match="finished under another config"):
        tiny_plan(wd, methods=["rpm-distill"])
    # no marker, checkpoints that fit: resumed (nothing left to train), scored, marked
    (wd.runs / name / MARKER).unlink()
    plan = tiny_plan(wd, methods=["rpm-distill"])
    assert [r.status for r in plan.runs] == ["unfinished"]
    outcomes = runner.execute(plan, wd, log=print)
    assert outcomes[0]["status"] == "done" and f"resume {name}" in capsys.readouterr().out
    assert (wd.runs / name / "student.pt").stat().st_mtime_ns == stamp and read_marker(wd, name)
    # no marker, nothing resumable (killed before config.json): its own folder is emptied and trained again
    (wd.runs / name / MARKER).unlink()
    (wd.runs / name / "config.json").unlink()
    (wd.runs / name / "leftover.txt").write_text("x")
    outcomes = runner.execute(tiny_plan(wd, methods=["rpm-distill"]), wd, log=print)
    assert outcomes[0]["status"] == "done" and not (wd.runs / name / "leftover.txt").exists()
    assert read_marker(wd, name) and (wd.runs / "_teachers").is_dir()


def test_plan_csv_is_written_before_any_run(wd, monkeypatch):
    import train.study as study

    seen = {}

    def no_runs(plan, workdir, scheduler, debug, log):
        seen["plan"] = pd.read_csv(workdir.root / "studies" / plan.name / "plan.csv")
        return []

    monkeypatch.setattr(study, "execute", no_runs)
    run_study("shift", wd, seeds=2, config_path=wd.root / "tiny.toml", methods=["full-p0", "no-gate-p0"])
    assert len(seen["plan"]) == 4 and set(seen["plan"].status) == {"new"}
    assert not wd.runs.exists() or not any(wd.runs.iterdir())


# --- end to end on a 2-process dask LocalCluster ----------------------------------------------------------


@pytest.mark.slow
def test_tiny_study_on_a_local_cluster(wd):
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        result = CliRunner().invoke(
            app,
            ["study", "methods", "--seeds", "2", "--config", str(wd.root / "tiny.toml"), "--methods",
             "rpm-distill,supervised,output-kd", "--scheduler", cluster.scheduler_address,
             "--workdir", str(wd.root)],
            catch_exceptions=False,
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = wd.reports / "studies" / "methods"
    md = (out / "study.md").read_text()
    for name in ("study-rpm-distill-s1", "study-rpm-distill-s2", "study-output-kd-s1", "study-output-kd-s2"):
        assert read_marker(wd, name) is not None, name
    assert "4 of 4 run(s) finished" in md and "### Table 1: methods" in md
    assert "unit of replication" in md and "POS" in md and "![gate](gate.png)" in md
    comps = pd.read_csv(out / "comparisons.csv")
    row = comps[(comps.a == "rpm-distill") & (comps.b == "supervised")].iloc[0]
    assert row.n_seeds == 2 and math.isfinite(row.ci_low) and row.ci_low <= row.mean_diff_mae <= row.ci_high
    runs = pd.read_csv(out / "runs.csv")
    assert {"student", "baseline", "teacher", "POS"} <= set(runs.model)
    gate = pd.read_csv(out / "gate.csv")
    assert set(gate.run) == {"study-rpm-distill-s1", "study-rpm-distill-s2"}
    assert (out / "gate.png").is_file()
    # the trainer counts meta steps over global steps: 2 epochs x 3 steps at interval 2 -> steps 0, 2, 4
    log = [json.loads(x) for x in (wd.runs / "study-rpm-distill-s1" / "log.jsonl").read_text().splitlines()]
    assert sum(1 for r in log if r["type"] == "step" and r["stage"] == "student" and "meta_loss" in r) == 3
    # both seeds' teachers were trained once each and shared with output-kd
    assert len(list((wd.runs / "_teachers").iterdir())) == 2
