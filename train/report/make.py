"""``make_report``: evaluate the runs, group them and write report.md, figures and metrics."""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.paths import Workdir
from train.distributed import pick_device
from train.evaluate import PROTOCOLS
from train.report.figures import fig_agreement, fig_spectrum, fig_waveforms
from train.report.gate import gate_section
from train.report.groups import Group, group_runs, methods_of
from train.report.methods import METHODS
from train.report.outputs import metrics_doc, write_outputs
from train.report.runs import ReportError, read_splits, run_names
from train.report.schema import DATASET, LABELED_FRAC
from train.report.scoring import RunResult, evaluate_run
from train.report.sessions import corruption_source
from train.report.tables import (
    Notes,
    table_ablations,
    table_details,
    table_fraction_condition,
    table_methods_datasets,
    table_shift,
)


def _evaluate_all(workdir: Workdir, names: list[str], device: str, eval_stride: int, log) -> tuple:
    """(every run's results, dataset -> (truth, path) of the truth sidecars read)."""
    if not workdir.splits_manifest.is_file():
        raise ReportError(f"{workdir.splits_manifest}: no split; run `rpm split` first")
    read_splits(workdir)  # unusable: stop before any run is evaluated
    for folder in (workdir.reports, workdir.reports / "figures"):
        if folder.exists() and not folder.is_dir():
            raise ReportError(f"{folder}: exists and is not a folder; move it away (the report goes there)")
    dev = pick_device(device)
    results, truth_cache = [], {}
    for i, name in enumerate(names, 1):
        run_dir = workdir.runs / name
        if not run_dir.is_dir():
            raise ReportError(f"{run_dir}: no such run")
        log(f"[{i}/{len(names)}] evaluating run {name}")
        results.extend(evaluate_run(run_dir, workdir, dev, log, truth_cache, eval_stride))
    return results, truth_cache


def _header(results: list[RunResult], groups: list[Group]) -> list[str]:
    """Title, definitions, protocols, the groups table and the methods not evaluated."""
    md = [
        "# rpm report",
        "",
        f"{len(results)} run(s) in {len(groups)} group(s) (runs whose configs differ only by seed are "
        "grouped; cells are mean ± std over seeds, std with ddof 1, shown when a group has 2 or more seeds). "
        "HR = band-limited PSD peak (6th-order Butterworth, filtfilt, periodogram on a 0.1 bpm grid). "
        "MAE, RMSE and STD (ddof 0) in bpm; r = Pearson over windows; MAPE and within 10 % in percent; "
        "fairness gap = |MAE(light, Fitzpatrick < 3) - MAE(dark, >= 5)|.",
        "",
        "**Protocols**",
        "",
    ]
    md += [f"- `{p.name}`, {p.title}: {p.description}." for p in PROTOCOLS.values()]
    md += [
        "",
        "**Groups**",
        "",
        "| group | runs | seeds | trained on | tested on | labelled fraction | T |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        md.append(
            f"| {g.label} | {', '.join(g.names)} | {', '.join(map(str, g.seeds))} | "
            f"{g.config.get(DATASET, 'equipleth')} | {', '.join(sorted({r.dataset for r in g.runs}))} | "
            f"{g.config.get(LABELED_FRAC)} | {g.runs[0].frames} |"
        )
    md.append("")
    for g in groups:
        for r in g.runs:
            for kind, why in sorted(r.skipped.items()):
                md.append(f"- Run `{r.name}`: {METHODS.get(kind, kind)} not evaluated on {r.dataset}: {why}.")
    if any(r.skipped for g in groups for r in g.runs):
        md.append("")
    return md


def _tables(groups: list[Group], notes: Notes) -> list[str]:
    """Sections 1-4: methods x datasets (per protocol), labelled fraction x condition, ablations, shift."""
    md = ["## 1. Methods x datasets", ""]
    for p in PROTOCOLS.values():
        md += [f"### Protocol `{p.name}`: {p.title}", ""]
        md += table_methods_datasets(groups, p.name, notes)
        md += ["", f"Details, protocol `{p.name}` (MAE per skin group in bpm):", ""]
        md += table_details(groups, p.name, notes)
        md.append("")
    md += [
        "## 2. Labelled fraction x condition",
        "",
        "Student MAE (bpm, protocol `release`) by skin group and by the recording conditions in the store / "
        "manifest / truth sidecar.",
        "",
    ]
    md += table_fraction_condition(groups, notes)
    md += [
        "",
        "## 3. Ablations",
        "",
        "Distilled student, protocol `release`; variants named by the config flags that differ.",
        "",
    ]
    md += table_ablations(groups, notes)
    shift_lines, has_shift = table_shift(groups, notes)
    md += ["", "## 4. Sync-shift robustness", ""]
    if not has_shift:
        md += ["No run records a sync-shift probability in its config (`sync_shift_prob`).", ""]
    return md + shift_lines


def _figures(groups: list[Group], figdir: Path) -> list[str]:
    """Section 6: agreement per method, waveforms by skin type and a spectrum (first group)."""
    md = ["## 6. Figures", "", "Bland-Altman and scatter per method (protocol `release`, first group):", ""]
    main = groups[0]
    for m in methods_of([main]):
        if fig_agreement(main, m, figdir / f"agreement_{m}.png"):
            md += [f"![{m}](figures/agreement_{m}.png)", ""]
    ex = main.runs[0].examples
    if ex.get("windows"):
        fig_waveforms(ex, figdir / "waveforms_by_skin.png")
        fig_spectrum(ex, figdir / "spectrum.png")
        md += [
            f"Example waveforms by skin type, run `{main.runs[0].name}` (first test window of each skin "
            "group; z-scored and band-passed 45-180 bpm):",
            "",
            "![waveforms](figures/waveforms_by_skin.png)",
            "",
            "Spectrum of one window:",
            "",
            "![spectrum](figures/spectrum.png)",
            "",
        ]
    return md


def make_report(
    workdir: Workdir,
    runs: list[str] | None = None,
    device: str = "auto",
    eval_stride: int = 30,
    log=print,
) -> Path:
    """Evaluate the runs (``runs``, or every run with a checkpoint) and write ``reports/``; returns the
    path of ``report.md``. Raises :class:`ReportError` (one line) when there is nothing to report."""
    t0 = time.time()
    names = run_names(workdir, runs)
    results, truth_cache = _evaluate_all(workdir, names, device, eval_stride, log)
    groups = group_runs(results)
    out = workdir.reports
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    for old in figdir.glob("*.png"):
        old.unlink()
    notes = Notes()
    log(f"writing tables and figures to {out}")
    truth_info = corruption_source(workdir, sorted({r.dataset for r in results}), truth_cache)
    md = _header(results, groups) + _tables(groups, notes)
    md += ["", "## 5. Policy gate and weights", ""]
    gate_lines, gate_summary = gate_section(groups, figdir, truth_info)
    md += gate_lines + _figures(groups, figdir)
    if notes.used:
        md += ["---", "", *notes.render(), ""]
    md.append(f"_Generated in {time.time() - t0:.0f} s._")
    path = write_outputs(out, groups, results, metrics_doc(groups, gate_summary, truth_info), md)
    log(f"report: {path}")
    return path
