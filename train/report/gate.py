"""The spectral policy's gate g and weights alpha: on the test windows (rebuilt from the student's
checkpoint), by condition and by radar corruption, and during training (``log.jsonl``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from train.report.figures import fig_gate_by_condition, fig_log_steps
from train.report.groups import Group
from train.report.schema import CKPT_POLICY, GATE_KEYS


@torch.no_grad()
def policy_outputs(
    ckpt: dict, student_waves: np.ndarray, teacher_waves: np.ndarray, cfg
) -> pd.DataFrame | None:
    """Gate and weights (columns :data:`GATE_KEYS`) the saved policy gives each window; None without one.

    ``student_waves`` and ``teacher_waves``: (N, T - 1) at ``cfg.fs`` Hz.
    """
    state = ckpt.get(CKPT_POLICY)
    if not state:
        return None
    from train.losses import relation_map, spectral_features
    from train.models import SpectralPolicy

    policy = SpectralPolicy()
    policy.load_state_dict(state)
    policy.eval()
    s = spectral_features(torch.from_numpy(student_waves).float(), fs=cfg.fs)
    t = spectral_features(torch.from_numpy(teacher_waves).float(), fs=cfg.fs)
    gate, alpha = policy(relation_map(s, t))
    gate = gate.reshape(-1).numpy()
    alpha = alpha.numpy()
    return pd.DataFrame({GATE_KEYS[0]: gate, **{k: alpha[:, i] for i, k in enumerate(GATE_KEYS[1:])}})


def gate_difference(corrupted: np.ndarray, clean: np.ndarray) -> tuple[str, float, float]:
    """(verdict, mean difference corrupted - clean, its standard error) for the policy gate.

    The verdict is "lower" / "higher" only when the difference exceeds twice its (Welch) standard
    error, else "no different beyond noise": a 0.001 gap between two window means is not a finding.
    Windows overlap, so the standard error is optimistic; the verdict leans to claiming too much.
    """
    diff = float(corrupted.mean() - clean.mean())
    var = lambda x: float(x.var(ddof=1)) if len(x) > 1 else 0.0  # noqa: E731
    se = math.sqrt(var(corrupted) / len(corrupted) + var(clean) / len(clean))
    if diff < -2 * se:
        return "lower", diff, se
    if diff > 2 * se:
        return "higher", diff, se
    return "no different beyond noise", diff, se


def _by_condition(gdf: pd.DataFrame, n_runs: int, figdir: Path) -> tuple[list[str], dict]:
    by = ["skin_group", *[c for c in gdf.columns if c.startswith("cond_")]]
    fig_gate_by_condition(
        gdf, by, figdir / "gate_by_condition.png", "policy gate and weights on test windows"
    )
    lines = [
        "Gate g and weights alpha the trained policy assigns to each test window (release protocol), "
        f"from the student's and the teacher's spectra, pooled over the {n_runs} run(s) with "
        "a policy:",
        "",
        "![gate by condition](figures/gate_by_condition.png)",
        "",
        "| condition | windows | " + " | ".join(GATE_KEYS) + " |",
        "|---|---" + "|---" * len(GATE_KEYS) + "|",
    ]
    summary = {}
    for b in by:
        for v, sub in gdf.groupby(b):
            stats = " | ".join(f"{sub[k].mean():.3f}" for k in GATE_KEYS)
            lines.append(f"| {b.replace('cond_', '')} = {v} | {len(sub)} | {stats} |")
            summary[f"{b}={v}"] = {k: float(sub[k].mean()) for k in GATE_KEYS}
    return [*lines, ""], summary


def _compare_corrupted(
    gdf: pd.DataFrame, c: pd.DataFrame, k: pd.DataFrame, figdir: Path
) -> tuple[list, dict]:
    verdict, diff, se = gate_difference(c.gate.to_numpy(), k.gate.to_numpy())
    labelled = gdf.assign(radar=gdf.radar_corrupted.map({True: "corrupted", False: "clean"}))
    fig_gate_by_condition(
        labelled, ["radar"], figdir / "gate_by_corruption.png", "gate and weights by radar corruption"
    )
    lines = [
        f"Mean gate on {len(c)} windows overlapping a radar corruption: {c.gate.mean():.3f}; on "
        f"{len(k)} clean windows: {k.gate.mean():.3f} (difference {diff:+.3f}, standard error "
        f"{se:.3f}). The gate was **{verdict}** where the radar was corrupted.",
        "",
        "![gate by corruption](figures/gate_by_corruption.png)",
    ]
    summary = {
        "gate_corrupted": float(c.gate.mean()),
        "gate_clean": float(k.gate.mean()),
        "n_corrupted": int(len(c)),
        "n_clean": int(len(k)),
        "difference": diff,
        "standard_error": se,
        "verdict": verdict,
    }
    return lines, summary


def _by_corruption(gdf: pd.DataFrame, truth_info: dict, figdir: Path) -> tuple[list[str], dict | None]:
    """The gate on windows overlapping a radar corruption vs clean ones (None: no information)."""
    corr = gdf.radar_corrupted
    if not (truth_info.get("has_corruption") and corr.notna().any()):
        return [
            f"**By radar corruption:** not available. {truth_info['reason']} The report does not guess "
            "where the radar was corrupted.",
            "",
        ], None
    c, k = gdf[corr == True], gdf[corr == False]  # noqa: E712
    lines = [f"**By radar corruption** (from `{truth_info['path']}`):", ""]
    if len(c) and len(k):
        more, summary = _compare_corrupted(gdf, c, k, figdir)
        return [*lines, *more, ""], summary
    lines.append(
        f"All {len(gdf)} test windows are {'corrupted' if len(c) else 'clean'} per the sidecar, "
        "so there is nothing to compare the gate against."
    )
    return [*lines, ""], {"n_corrupted": int(len(c)), "n_clean": int(len(k))}


def _training_steps(groups: list[Group], figdir: Path) -> list[str]:
    steps = [r for g in groups for r in g.runs if r.log_steps is not None]
    if not steps:
        return [
            "No run has a `log.jsonl` with per-step gate / weight records; training-time distributions "
            "omitted.",
            "",
        ]
    sdf = pd.concat([r.log_steps.assign(run=r.name) for r in steps], ignore_index=True)
    fig_log_steps(sdf, figdir / "gate_training.png", f"training steps from log.jsonl ({len(steps)} runs)")
    return [
        f"Training-time gate and weights from `log.jsonl` ({len(sdf)} step records of "
        f"{', '.join(r.name for r in steps)}; batch means per step):",
        "",
        "![gate during training](figures/gate_training.png)",
        "",
    ]


def gate_section(groups: list[Group], figdir: Path, truth_info: dict) -> tuple[list[str], dict]:
    """Section 5 of report.md and the ``gate`` entry of metrics.json; writes its figures to ``figdir``."""
    gates = [r.gate for g in groups for r in g.runs if r.gate is not None]
    summary: dict = {}
    if gates:
        gdf = pd.concat(gates, ignore_index=True)
        lines, by_condition = _by_condition(gdf, len(gates), figdir)
        if by_condition:
            summary["by_condition"] = by_condition
        more, corruption = _by_corruption(gdf, truth_info, figdir)
        lines += more
        if corruption is not None:
            summary["corruption"] = corruption
    else:
        lines = [
            "No run has a trained policy with a teacher (e.g. `--no-policy`, or no teacher.pt), so there is "
            "no gate to show on the test windows.",
            "",
        ]
    return lines + _training_steps(groups, figdir), summary
