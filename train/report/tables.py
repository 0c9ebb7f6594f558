"""The markdown tables of report.md: methods x datasets, details, labelled fraction x condition,
ablations and sync-shift probability; undefined cells read ``n/a`` with a footnote (:class:`Notes`)."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np
import pandas as pd

from train.evaluate import SKIN_GROUPS, aggregate_seeds
from train.report.groups import Group, gate_on, methods_of, shift_prob
from train.report.methods import CLASSICAL, DETAIL_METRICS, NEURAL, TABLE_METRICS, method_title, short_title
from train.report.schema import LABELED_FRAC, SYNC_SHIFT_PROB


class Notes:
    """Markdown footnotes for undefined cells: ``n/a[^k]`` and a numbered list at the end."""

    TEXT = {
        "r": "Pearson r is undefined when the estimates or the truth are constant over the windows.",
        "empty": "No test window falls in this group or condition.",
        "gap": "The fairness gap needs test windows of both light (Fitzpatrick < 3) and dark (>= 5) skin.",
        "short": "The test sessions are shorter than one 300-sample window of this protocol.",
        "missing": "The run has no checkpoint of this kind.",
        "norun": "No run with this setting exists.",
    }

    def __init__(self):
        self.used: dict[str, int] = {}

    def na(self, key: str) -> str:
        if key not in self.used:
            self.used[key] = len(self.used) + 1
        return f"n/a[^{self.used[key]}]"

    def render(self) -> list[str]:
        return [f"[^{i}]: {self.TEXT[k]}" for k, i in sorted(self.used.items(), key=lambda kv: kv[1])]


def _finite(v) -> bool:
    return v is not None and isinstance(v, int | float) and math.isfinite(v)


def cell(agg: dict | float | None, notes: Notes, reason: str = "empty", digits: int = 2) -> str:
    """``mean ± std`` (std shown with 2+ seeds), a plain value, or ``n/a`` with a footnote."""
    if isinstance(agg, dict):
        mean, std, n = agg.get("mean"), agg.get("std"), agg.get("n", 1)
    else:
        mean, std, n = agg, None, 1
    if not _finite(mean):
        return notes.na(reason)
    text = f"{mean:.{digits}f}"
    if n and n > 1 and _finite(std):
        text += f" ± {std:.{digits}f}"
    return text


def _row_label(group: Group, method: str, many: bool) -> str:
    base = method_title(method, group.config)
    return f"{base} [{group.label}]" if many and method in NEURAL else base


# ------------------------------------------------------------------------------ 1. methods x datasets


def _dataset_cells(g: Group, m: str, protocol: str, datasets: list[str], notes: Notes) -> list[str]:
    cells = []
    for d in datasets:
        if d not in {r.dataset for r in g.runs}:
            cells += [notes.na("norun")] * len(TABLE_METRICS)
            continue
        agg = g.agg(protocol, m, d)
        for k in TABLE_METRICS:
            reason = "short" if protocol == "equipleth" and not agg else ("r" if k == "r" else "empty")
            cells.append(cell(agg.get(k), notes, reason))
    return cells


def table_methods_datasets(groups: list[Group], protocol: str, notes: Notes) -> list[str]:
    """Methods (rows; trained ones per group) x datasets and TABLE_METRICS (columns)."""
    datasets = sorted({r.dataset for g in groups for r in g.runs})
    head = "| method | " + " | ".join(f"{d} {m}" for d in datasets for m in TABLE_METRICS) + " |"
    lines = [head, "|---" * (1 + len(datasets) * len(TABLE_METRICS)) + "|"]
    many = len(groups) > 1
    several_t = len({r.frames for x in groups for r in x.runs}) > 1
    shown_classical = set()
    for g in groups:
        for m in methods_of([g]):
            if m in CLASSICAL:  # the same for every group of one clip length: shown once
                key = (m, g.runs[0].frames if protocol == "release" else 0)
                if key in shown_classical:
                    continue
                shown_classical.add(key)
            cells = _dataset_cells(g, m, protocol, datasets, notes)
            label = _row_label(g, m, many)
            if m in CLASSICAL and protocol == "release" and several_t:
                label += f" (T={g.runs[0].frames})"
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def table_details(groups: list[Group], protocol: str, notes: Notes) -> list[str]:
    """MAPE, within 10 %, MAE per skin group, fairness gap and window count per method."""
    names = {"within10": "within 10 %", "MAPE": "MAPE %", "fairness_gap": "fairness gap", "n": "windows"}
    lines = [
        "| method | " + " | ".join(names.get(k, k.replace("_", " ")) for k in DETAIL_METRICS) + " |",
        "|---" * (1 + len(DETAIL_METRICS)) + "|",
    ]
    many = len(groups) > 1
    for g in groups:
        for m in methods_of([g]):
            if m in CLASSICAL and g is not groups[0]:
                continue
            agg = g.agg(protocol, m)
            cells = []
            for k in DETAIL_METRICS:
                reason = "gap" if k == "fairness_gap" else ("short" if not agg else "empty")
                if k == "n":
                    cells.append(str(int(agg["n"]["mean"])) if "n" in agg else notes.na(reason))
                else:
                    cells.append(cell(agg.get(k), notes, reason))
            lines.append(f"| {_row_label(g, m, many)} | " + " | ".join(cells) + " |")
    return lines


# ------------------------------------------------------------------------------ 2. fraction x condition


def _condition_columns(groups: list[Group]) -> list[tuple[str, object]]:
    """(column title, window selector) for all windows, each skin group and each condition value."""
    cols: list[tuple[str, object]] = [("all", lambda df: np.ones(len(df), bool))]
    present = set()
    for g in groups:
        for r in g.runs:
            present |= set(r.windows.skin_group.unique())
    for sg in (*SKIN_GROUPS, "unknown"):
        if sg in present:
            cols.append((f"{sg} skin", lambda df, sg=sg: (df.skin_group == sg).to_numpy()))
    conds = {}
    for g in groups:
        for r in g.runs:
            for c in r.windows.columns:
                if c.startswith("cond_"):
                    conds.setdefault(c, set()).update(v for v in r.windows[c].unique() if v)
    for c in sorted(conds):
        for v in sorted(conds[c], key=str):
            cols.append(
                (f"{v}", lambda df, c=c, v=v: (df.get(c, pd.Series("", index=df.index)) == v).to_numpy())
            )
    return cols


def table_fraction_condition(groups: list[Group], notes: Notes) -> list[str]:
    """Student and supervised-only MAE per labelled fraction, by skin group and condition."""
    cols = _condition_columns(groups)
    lines = [
        "| labelled fraction | method | " + " | ".join(c for c, _ in cols) + " |",
        "|---|---" + "|---" * len(cols) + "|",
    ]
    others = {g.key: g.label for g in groups}
    order = sorted(groups, key=lambda g: (float(g.config.get(LABELED_FRAC, 1.0)), g.label))
    for g in order:
        frac = g.config.get(LABELED_FRAC)
        frac = f"{float(frac):.0%}" if isinstance(frac, int | float) else "unknown"
        extra = others[g.key] if len(groups) > 1 else ""
        for m in ("student", "baseline"):
            if not any(f"hr_{m}" in r.windows for r in g.runs):
                continue
            cells = [cell(g.agg_windows("release", m, sel), notes, "empty") for _, sel in cols]
            label = f"{short_title(m)} [{extra}]" if extra else short_title(m)
            lines.append(f"| {frac} | {label} | " + " | ".join(cells) + " |")
    return lines


# ------------------------------------------------------------------------------ 3. ablations


def ablation_label(cfg: dict, varying: list[str]) -> str:
    parts = []
    for k in varying:
        v = cfg.get(k)
        if v is None:
            continue
        if isinstance(v, bool):
            parts.append(f"no {k}" if not v else k)
        else:
            parts.append(f"{k}={v}")
    return ", ".join(parts) if parts else "full"


def table_ablations(groups: list[Group], notes: Notes) -> list[str]:
    """The distilled student per group, named by the config keys that differ (labelled fraction and
    sync-shift probability have their own tables)."""
    keys = sorted(
        {
            k
            for g in groups
            for k in g.config
            if k not in (LABELED_FRAC, SYNC_SHIFT_PROB)
            and len({json.dumps(x.config.get(k)) for x in groups}) > 1
        }
    )
    # Default-valued flags read as "full": drop a bool key from a label where it is True.
    lines = ["| variant | runs (seeds) | MAE | RMSE | STD | r |", "|---|---|---|---|---|---|"]
    for g in groups:
        agg = g.agg("release", "student")
        label = ablation_label(g.config, [k for k in keys if g.config.get(k) is not True])
        if len(groups) > 1 and len({x.config.get(LABELED_FRAC) for x in groups}) > 1:
            label += f" (labelled {g.config.get(LABELED_FRAC)})"
        cells = [cell(agg.get(k), notes, "r" if k == "r" else "empty") for k in TABLE_METRICS]
        if "student" not in {m for r in g.runs for m in r.methods}:
            cells = [notes.na("missing")] * len(TABLE_METRICS)
        lines.append(
            f"| {label} | {len(g.names)} ({', '.join(map(str, g.seeds))}) | " + " | ".join(cells) + " |"
        )
    return lines


# ------------------------------------------------------------------------------ 4. sync shift


def table_shift(groups: list[Group], notes: Notes) -> tuple[list[str], bool]:
    """Student MAE per sync-shift probability, full vs no gate; (lines, whether any run records one)."""
    rows: dict[float, dict[str, list[Group]]] = defaultdict(lambda: {"full": [], "no gate": []})
    for g in groups:
        p = shift_prob(g.config)
        if p is not None:
            rows[p]["full" if gate_on(g.config) else "no gate"].append(g)
    lines = ["| shift probability | full (student MAE) | no gate (student MAE) |", "|---|---|---|"]
    if not rows:
        lines.append(f"| {notes.na('norun')} | {notes.na('norun')} | {notes.na('norun')} |")
        return lines, False
    for p in sorted(rows):
        cells = []
        for col in ("full", "no gate"):
            gs = rows[p][col]
            if not gs:
                cells.append(notes.na("norun"))
                continue
            per = [
                r.metrics["release"]["student"]
                for g in gs
                for r in g.runs
                if "student" in r.metrics["release"]
            ]
            cells.append(cell(aggregate_seeds(per).get("MAE", {}) if per else None, notes, "missing"))
        lines.append(f"| {p:g} | " + " | ".join(cells) + " |")
    return lines, True
