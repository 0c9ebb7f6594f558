"""The machine-readable outputs: ``metrics.json`` (NaN as null), ``metrics.csv`` (long form, ``n/a``
where undefined) and ``windows.csv`` (every window's HR per method)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from train.evaluate import PROTOCOLS
from train.report.groups import Group, by_name, methods_of
from train.report.schema import SEED


def _clean(x):
    """``x`` as plain JSON values: NaN and infinity as None, numpy scalars as Python ones."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, np.generic):
        return _clean(x.item())
    return x


def _group_datasets(g: Group) -> list[str]:
    return sorted({r.dataset for r in g.runs})


def metrics_long(groups: list[Group]) -> pd.DataFrame:
    """One row per (level, group, run, dataset, protocol, method, metric): run values, then group
    mean / std over seeds."""
    rows = []
    for g in groups:
        for r in g.runs:
            for p, ms in r.metrics.items():
                for m, vals in ms.items():
                    for k, v in vals.items():
                        rows.append(
                            dict(level="run", group=g.label, run=r.name, seed=r.config.get(SEED),
                                 dataset=r.dataset, protocol=p, method=m, metric=k, mean=v, std=math.nan,
                                 n_seeds=1)
                        )  # fmt: skip
        for d in _group_datasets(g):
            for p in PROTOCOLS:
                for m in methods_of([g]):
                    for k, a in g.agg(p, m, d).items():
                        rows.append(
                            dict(level="group", group=g.label, run=";".join(g.names), seed="", dataset=d,
                                 protocol=p, method=m, metric=k, mean=a["mean"], std=a["std"], n_seeds=a["n"])
                        )  # fmt: skip
    return pd.DataFrame(rows)


def metrics_doc(groups: list[Group], gate_summary: dict, truth_info: dict) -> dict:
    """The content of ``metrics.json``: protocols, per-run and per-group results, gate statistics."""
    return {
        "protocols": {p.name: {"title": p.title, "description": p.description} for p in PROTOCOLS.values()},
        "runs": {
            name: {
                "group": g.label,
                "seed": rs[0].config.get(SEED),
                "frames": rs[0].frames,
                "config": rs[0].config,
                "results": {r.dataset: r.metrics for r in rs},
            }
            for g in groups
            for name, rs in by_name(g.runs).items()
        },
        "groups": {
            g.label: {
                "runs": g.names,
                "seeds": g.seeds,
                "config": g.config,
                "results": {
                    d: {p: {m: g.agg(p, m, d) for m in methods_of([g])} for p in PROTOCOLS}
                    for d in _group_datasets(g)
                },
            }
            for g in groups
        },
        "gate": gate_summary,
        "radar_corruption_source": truth_info,
    }


def write_outputs(out: Path, groups: list[Group], results: list, doc: dict, md: list[str]) -> Path:
    """Write metrics.json, metrics.csv, windows.csv and report.md under ``out``; returns report.md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(_clean(doc), indent=2, default=str) + "\n")
    metrics_long(groups).to_csv(out / "metrics.csv", index=False, na_rep="n/a")
    pd.concat([r.windows for r in results]).to_csv(out / "windows.csv", index=False, na_rep="n/a")
    (out / "report.md").write_text("\n".join(md) + "\n")
    return out / "report.md"
