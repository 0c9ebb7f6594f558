"""Grouping runs into experiments: runs whose configs differ only by seed (and the keys of
:data:`~train.report.schema.NOT_EXPERIMENT`) form a group, reported as mean ± std over its seeds."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from train.evaluate import aggregate_seeds
from train.report.methods import CLASSICAL, METHODS
from train.report.schema import GATE, NOT_EXPERIMENT, POLICY, SEED, SYNC_SHIFT_PROB

if TYPE_CHECKING:
    from train.report.scoring import RunResult


def by_name(results: list[RunResult]) -> dict[str, list[RunResult]]:
    """Run name -> its results (one per dataset it was tested on), in first-seen order."""
    out: dict[str, list[RunResult]] = defaultdict(list)
    for r in results:
        out[r.name].append(r)
    return dict(out)


@dataclass
class Group:
    label: str  # the config keys that set it apart ("no gate, sync_shift_prob=0.5"), or "full"
    key: str  # its experiment config as sorted JSON
    config: dict  # the experiment config, flattened (extra.k)
    runs: list[RunResult]  # sorted by seed

    @property
    def seeds(self) -> list:
        return [rs[0].config.get(SEED) for rs in by_name(self.runs).values()]

    @property
    def names(self) -> list[str]:
        return list(by_name(self.runs))

    def agg(self, protocol: str, method: str, dataset: str | None = None) -> dict:
        """Metric -> {mean, std, n} over the group's runs (on ``dataset``, or all); {} without any."""
        runs = [r for r in self.runs if dataset is None or r.dataset == dataset]
        if method in CLASSICAL:  # deterministic: the same on every seed, so one run's windows
            runs = list({(r.dataset, r.frames): r for r in reversed(runs)}.values())
        per = [r.metrics[protocol][method] for r in runs if method in r.metrics.get(protocol, {})]
        per = [m for m in per if m.get("n", 0) > 0]
        return aggregate_seeds(per) if per else {}

    def agg_windows(self, protocol: str, method: str, select) -> dict:
        """Mean ± std over seeds of the MAE on the windows ``select(df)`` picks."""
        vals = []
        for r in self.runs:
            df = r.windows[r.windows.protocol == protocol]
            df = df[select(df)]
            if len(df) and f"hr_{method}" in df:
                vals.append({"MAE": float(np.mean(np.abs(df[f"hr_{method}"] - df.hr_true)))})
        return aggregate_seeds(vals).get("MAE", {}) if vals else {}


def _flatten(cfg: dict) -> dict:
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in _flatten(v).items()})
        else:
            out[k] = v
    return out


def _experiment_key(cfg: dict) -> str:
    flat = _flatten(cfg)
    return json.dumps({k: v for k, v in flat.items() if k not in NOT_EXPERIMENT}, sort_keys=True, default=str)


def _label_part(key: str, value, verbose: bool) -> str | None:
    if value is None:
        return f"{key} unset" if verbose else None
    if isinstance(value, bool) and not verbose:
        return None if value else f"no {key}"
    return f"{key}={value}"


def _labels(flat: dict[str, dict]) -> list[str]:
    """A label per group from the keys that vary: short unless two groups would read the same."""
    keys = list(flat)
    varying = sorted(
        {k for c in flat.values() for k in c if len({json.dumps(flat[g].get(k)) for g in keys}) > 1}
    )
    for verbose in (False, True):
        labels = [
            ", ".join(p for v in varying if (p := _label_part(v, flat[k].get(v), verbose))) or "full"
            for k in keys
        ]
        if len(set(labels)) == len(labels):
            break
    return labels


def group_runs(results: list[RunResult]) -> list[Group]:
    """Groups in order of first appearance; runs within a group sorted by seed."""
    buckets: dict[str, list[RunResult]] = defaultdict(list)
    for r in results:
        buckets[_experiment_key(r.config)].append(r)
    flat = {k: json.loads(k) for k in buckets}
    return [
        Group(label, k, flat[k], sorted(buckets[k], key=lambda r: str(r.config.get(SEED))))
        for k, label in zip(flat, _labels(flat), strict=True)
    ]


def methods_of(groups: list[Group]) -> list[str]:
    """The methods any run of ``groups`` was scored on, in table order."""
    seen = {m for g in groups for r in g.runs for m in r.methods}
    return [m for m in METHODS if m in seen]


def shift_prob(cfg: dict) -> float | None:
    """The run's sync-shift probability (config.json ``sync_shift_prob``); None when not recorded."""
    value = cfg.get(SYNC_SHIFT_PROB)
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def gate_on(cfg: dict) -> bool:
    """Whether the run's policy gates the distillation term (``gate`` and ``policy`` both on)."""
    return bool(cfg.get(GATE, True)) and bool(cfg.get(POLICY, True))
