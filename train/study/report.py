"""The study report: ``reports/studies/<name>/`` with study.md, runs.csv, comparisons.csv, gate.csv, gate.png.

Every number comes from the runs' ``study_done.json`` markers, which hold what ``rpm report``'s scorer
(:func:`train.report.evaluate_run`) measured on the split's test windows (protocol ``release``), and from
``runs/<run>/log.jsonl`` (the gate per training step).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from pipeline.errors import RpmError
from pipeline.paths import Workdir
from train.config import first_line
from train.evaluate import PROTOCOLS
from train.report.methods import METHODS
from train.report.runs import read_log_steps
from train.study.plan import StudyPlan, read_marker
from train.study.stats import mean_sd, paired_difference

TABLE_METRICS = ("MAE", "RMSE", "r")
TRAINED = ("student", "baseline", "teacher")  # per-run models; every other method row is seed-independent
PROTOCOL = "release"  # the per-window protocol the comparisons use


def report_dir(workdir: Workdir, name: str) -> Path:
    return workdir.reports / "studies" / name


def runs_table(plan: StudyPlan, workdir: Workdir) -> pd.DataFrame:
    """One row per (finished run, test dataset, protocol, model): MAE, RMSE, r, n, seed, conditions."""
    rows = []
    for r in plan.runs:
        marker = read_marker(workdir, r.name)
        if marker is None:
            continue
        for res in marker["results"]:
            for protocol, by_method in res["metrics"].items():
                for method, m in by_method.items():
                    rows.append(
                        {
                            "run": r.name,
                            "seed": r.seed,
                            "conditions": ";".join(label for label, kind in r.conditions if kind == method),
                            "dataset": res["dataset"],
                            "protocol": protocol,
                            "model": method,
                            **{k: m.get(k, math.nan) for k in (*TABLE_METRICS, "n")},
                            "train_seconds": marker.get("train_seconds", math.nan),
                        }
                    )
    cols = ["run", "seed", "conditions", "dataset", "protocol", "model", *TABLE_METRICS, "n", "train_seconds"]
    return pd.DataFrame(rows, columns=cols)


def condition_values(plan: StudyPlan, runs: pd.DataFrame, label: str, dataset: str, metric: str) -> dict:
    """seed -> ``metric`` of condition ``label`` on ``dataset`` (protocol release), finished seeds only."""
    out = {}
    for (lab, seed), (spec, kind) in plan.by_condition().items():
        if lab != label:
            continue
        sel = runs[
            (runs.run == spec.name)
            & (runs.dataset == dataset)
            & (runs.protocol == PROTOCOL)
            & (runs.model == kind)
        ]
        if len(sel):
            out[seed] = float(sel[metric].iloc[0])
    return out


def comparisons_table(plan: StudyPlan, runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for dataset in sorted(runs.dataset.unique()):
        for part in plan.parts:
            for c in part.comparisons:
                a = condition_values(plan, runs, c.a, dataset, "MAE")
                b = condition_values(plan, runs, c.b, dataset, "MAE")
                p = paired_difference(a, b)
                rows.append(
                    {
                        "part": part.name,
                        "dataset": dataset,
                        "a": c.a,
                        "b": c.b,
                        "claim": c.what,
                        "n_seeds": p.n,
                        "mean_diff_mae": p.mean,
                        "ci_low": p.low,
                        "ci_high": p.high,
                        "verdict": p.verdict,
                    }
                )
    cols = ["part", "dataset", "a", "b", "claim", "n_seeds", "mean_diff_mae", "ci_low", "ci_high", "verdict"]
    return pd.DataFrame(rows, columns=cols)


def _column(steps: pd.DataFrame, key: str) -> pd.Series:
    """``steps[key]`` as floats, NaN on steps (or whole logs) without the key."""
    return steps[key].astype(float) if key in steps else pd.Series(math.nan, index=steps.index)


def gate_table(plan: StudyPlan, workdir: Workdir) -> pd.DataFrame:
    """The gate per training step of every finished rpm-distill run (``log.jsonl``, student stage)."""
    frames = []
    for r in plan.runs:
        if r.config.method != "rpm-distill" or read_marker(workdir, r.name) is None:
            continue
        steps = read_log_steps(workdir.runs / r.name)
        if steps is None or "gate" not in steps:
            continue
        steps = steps[steps.stage == "student"]
        label = ";".join(lab for lab, kind in r.conditions if kind == "student")

        frames.append(
            pd.DataFrame(
                {
                    "run": r.name,
                    "condition": label,
                    "seed": r.seed,
                    "step": steps.step.astype(int),
                    "gate": steps.gate.astype(float),
                    "meta_grad_norm": _column(steps, "meta_grad_norm"),  # on meta steps only
                    "sup": _column(steps, "sup"),  # L_sup of the batch's labelled clips
                    # lambda * L_distill, g and alpha included
                    "distill_weighted": _column(steps, "distill") * r.config.lambda_distill,
                }
            )
        )
    cols = ["run", "condition", "seed", "step", "gate", "meta_grad_norm", "sup", "distill_weighted"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def _fmt(mean: float, sd: float, n: int) -> str:
    if not n or not math.isfinite(mean):
        return "n/a"
    return f"{mean:.2f} ± {sd:.2f}" if math.isfinite(sd) else f"{mean:.2f}"


def _condition_table(plan: StudyPlan, part, runs: pd.DataFrame, dataset: str) -> list[str]:
    """Rows = conditions; MAE, RMSE, r as mean ± sd over seeds; the mean training time of their runs."""
    head = "| condition | seeds | " + " | ".join(TABLE_METRICS) + " | train s / run |"
    md = [head, "|---|---" + "|---" * len(TABLE_METRICS) + "|---|"]
    for cond in part.conditions:
        cells, n = [], 0
        for metric in TABLE_METRICS:
            mean, sd, n = mean_sd(condition_values(plan, runs, cond.label, dataset, metric).values())
            cells.append(_fmt(mean, sd, n))
        seconds = mean_sd(condition_values(plan, runs, cond.label, dataset, "train_seconds").values())[0]
        took = f"{seconds:.0f}" if math.isfinite(seconds) else "n/a"
        md.append(f"| {cond.label} | {n} | " + " | ".join(cells) + f" | {took} |")
    return md


def _axis_table(plan: StudyPlan, part, runs: pd.DataFrame, dataset: str) -> list[str]:
    """The paper's layout of an axis study: rows = the axis value (labelled fraction, shift probability),
    columns = the variants (distilled / supervised, full / no gate); cells MAE mean ± sd over seeds."""
    rows: dict[object, dict[str, str]] = {}
    variants: list[str] = []
    for cond in part.conditions:
        value = cond.config.get(part.axis)
        variant = cond.label.rsplit("-", 1)[0].removesuffix("-p").removesuffix("-")
        if variant not in variants:
            variants.append(variant)
        mean, sd, n = mean_sd(condition_values(plan, runs, cond.label, dataset, "MAE").values())
        rows.setdefault(value, {})[variant] = _fmt(mean, sd, n)
    md = [
        f"| {part.axis} | " + " | ".join(f"{v} MAE" for v in variants) + " |",
        "|---" * (len(variants) + 1) + "|",
    ]
    for value, cells in rows.items():
        md.append(f"| {value:g} | " + " | ".join(cells.get(v, "n/a") for v in variants) + " |")
    return md


def _reference_rows(runs: pd.DataFrame, dataset: str) -> list[str]:
    """The RF teacher (mean ± sd over the distinct teachers) and the seed-independent rows, once each."""
    sub = runs[(runs.dataset == dataset) & (runs.protocol == PROTOCOL)]
    md = ["| reference | " + " | ".join(TABLE_METRICS) + " |", "|---" + "|---" * len(TABLE_METRICS) + "|"]
    teachers = sub[sub.model == "teacher"].drop_duplicates(["seed", "MAE"])
    if len(teachers):
        cells = [_fmt(*mean_sd(teachers[m])) for m in TABLE_METRICS]
        md.append(f"| {METHODS['teacher']} ({len(teachers)} teacher(s)) | " + " | ".join(cells) + " |")
    for model in [m for m in dict.fromkeys(sub.model) if m not in TRAINED]:
        row = sub[sub.model == model].iloc[0]
        md.append(
            f"| {METHODS.get(model, model)} | "
            + " | ".join(_fmt(row[m], math.nan, 1) for m in TABLE_METRICS)
            + " |"
        )
    return md


def _comparison_lines(comps: pd.DataFrame) -> list[str]:
    md = [
        "| A | B | claim tested | seeds | mean A - B (bpm) | 95 % CI | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in comps.itertuples():
        ci = f"[{c.ci_low:+.2f}, {c.ci_high:+.2f}]" if math.isfinite(c.ci_low) else "n/a"
        mean = f"{c.mean_diff_mae:+.2f}" if math.isfinite(c.mean_diff_mae) else "n/a"
        md.append(f"| {c.a} | {c.b} | {c.claim} | {c.n_seeds} | {mean} | {ci} | {c.verdict} |")
    return md


def _gate_figure(gate: pd.DataFrame, path: Path) -> bool:
    if gate.empty:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for cond, g in gate.groupby("condition", sort=True):
        mean = g.groupby("step").gate.mean()
        ax.plot(mean.index, mean.values, label=f"{cond} (mean of {g.seed.nunique()} seed(s))")
    ax.set_xlabel("training step (student stage)")
    ax.set_ylabel("gate g (batch mean)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _gate_summary(gate: pd.DataFrame) -> list[str]:
    """Per condition: the gate at the start and the end, the policy's meta-gradient norm (mean over meta
    steps), and the scale of the distillation term against L_sup (mean of lambda * L_distill over the
    steps / mean of L_sup; L_sup, an SNR loss in dB plus a Pearson term, can be negative, so this is a
    scale, not a share)."""
    md = [
        "| condition | seeds | steps | meta steps | gate, first 10 steps | gate, last 10 steps "
        "| meta-gradient norm | lambda * L_distill | L_sup |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def num(x: float, digits: int = 3) -> str:
        return f"{x:.{digits}f}" if math.isfinite(x) else "n/a"

    for cond, g in gate.groupby("condition", sort=True):
        first = g[g.step < g.step.min() + 10].gate.mean()
        last = g[g.step > g.step.max() - 10].gate.mean()
        meta = g.meta_grad_norm.dropna()
        fewest = int(g.groupby("run").meta_grad_norm.count().min())  # meta steps of the shortest run
        md.append(
            f"| {cond} | {g.seed.nunique()} | {g.step.max() + 1} | {fewest} "
            f"| {first:.3f} | {last:.3f} | {num(meta.mean())} | {num(g.distill_weighted.mean())} "
            f"| {num(g.sup.mean())} |"
        )
    return md


def _training_subjects(plan: StudyPlan, workdir: Workdir) -> list[str]:
    """Teacher vs radar FFT vs video (POS) on the training subjects, when the diagnostics module exists."""
    md = ["## Teacher vs radar FFT vs video on the training subjects", ""]
    try:
        from train.report.diagnostics import train_subject_quality
    except ImportError:
        return md + ["Missing: this build has no `train.report.diagnostics.train_subject_quality`.", ""]
    frames, skipped = [], []
    for r in plan.runs:
        if r.teacher_key and read_marker(workdir, r.name) is not None and r.after is None:
            try:
                quality = train_subject_quality(workdir, workdir.runs / r.name)
            except RpmError as exc:  # e.g. a run folder without its checkpoints: say so, keep the report
                skipped.append(f"- `{r.name}`: not scored: {first_line(exc)}")
                continue
            frames.append(quality.assign(run=r.name, seed=r.seed))
    if not frames:
        return md + ["No finished run with a teacher could be scored.", "", *skipped, ""]
    df = pd.concat(frames, ignore_index=True)
    df = df[df.n_windows > 0]  # e.g. no unlabelled subjects at labelled fraction 1.0
    md += ["One row per teacher (the first run of each teacher key) and source; MAE and RMSE in bpm.", ""]
    md += ["| run | source | subjects | windows | MAE | RMSE | r |", "|---|---|---|---|---|---|---|"]
    for row in df.itertuples():
        md.append(
            f"| {row.run} | {row.source} | {row.subjects} | {row.n_windows} | {row.mae:.2f} | "
            f"{row.rmse:.2f} | {row.r:.3f} |"
        )
    return md + ["", *skipped, ""] if skipped else md + [""]


def write_study_report(plan: StudyPlan, workdir: Workdir, outcomes: list | None = None) -> Path:
    """Write ``reports/studies/<name>/`` from the finished runs of ``plan``; returns study.md's path."""
    out = report_dir(workdir, plan.name)
    out.mkdir(parents=True, exist_ok=True)
    runs = runs_table(plan, workdir)
    comps = comparisons_table(plan, runs)
    gate = gate_table(plan, workdir)
    runs.to_csv(out / "runs.csv", index=False)
    comps.to_csv(out / "comparisons.csv", index=False)
    gate.to_csv(out / "gate.csv", index=False)
    finished = runs.run.nunique() if len(runs) else 0
    md = [
        f"# Study `{plan.name}`",
        "",
        f"{finished} of {len(plan.runs)} run(s) finished; seeds {', '.join(map(str, plan.seeds))}; size "
        f"`{plan.size}`; split protocol `{plan.split.get('protocol')}` "
        f"(split seed {plan.split.get('seed')}). "
        f"Cells: mean ± sd over seeds (sd ddof 1) of each run's metric over the test windows of protocol "
        f"`{PROTOCOL}` ({PROTOCOLS[PROTOCOL].description}). MAE and RMSE in bpm, r = Pearson over windows.",
        "",
        "**Statistics.** Every run of a seed is scored on the same test windows (one split), so each "
        "comparison is paired: d_s = MAE_A,s - MAE_B,s per seed, mean and 95 % CI = mean ± t(0.975, n-1) "
        "· sd/√n over the n seeds where both runs finished (no interval with n < 2). Test windows overlap "
        "(stride below their length), which is why the seed, not the window, is the unit of replication: "
        "a seed's MAE over all its windows is one number, so the overlap cannot shrink the interval.",
        "",
    ]
    failed = [o for o in outcomes or [] if o["status"] == "failed"]
    if failed:
        md += ["**Failed runs** (rerun the study to redo them):", ""]
        md += [f"- `{o['run']}`: {o['error']}" for o in failed] + [""]
    for dataset in sorted(runs.dataset.unique()) if len(runs) else []:
        md += [f"## Tested on {dataset}", ""]
        for part in plan.parts:
            md += [f"### {part.title}", ""]
            if part.axis:
                md += _axis_table(plan, part, runs, dataset) + [""]
            md += _condition_table(plan, part, runs, dataset) + [""]
            sub = comps[(comps.part == part.name) & (comps.dataset == dataset)]
            if len(sub):
                md += ["Paired comparisons (A - B in MAE; negative: A is better):", ""]
                md += _comparison_lines(sub) + [""]
        md += ["### Reference rows", ""] + _reference_rows(runs, dataset) + [""]
    md += ["## Gate during training", ""]
    if _gate_figure(gate, out / "gate.png"):
        md += [
            "Gate g per training step (batch mean, student stage) from `runs/<run>/log.jsonl`, averaged "
            "over seeds; per-step values in `gate.csv`. The table adds the policy's meta-gradient norm "
            "(mean over meta steps) and the scale of the distillation term: the mean over steps of "
            "lambda * L_distill (g and alpha included) beside the mean of L_sup.",
            "",
            "![gate](gate.png)",
            "",
        ]
        md += _gate_summary(gate) + [""]
    else:
        md += ["No finished rpm-distill run logged a gate.", ""]
    md += _training_subjects(plan, workdir)
    path = out / "study.md"
    path.write_text("\n".join(md) + "\n")
    return path
