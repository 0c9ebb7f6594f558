"""The report's figures (PNG, 100 dpi, matplotlib's Agg backend): agreement per method, the policy's
gate and weights by condition and during training, example waveforms by skin type and one spectrum."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.spectrum import CARDIAC_BAND_BPM, HR_FILTER_ORDER, bandpass, power_spectrum, zscore
from train.evaluate import SKIN_GROUPS
from train.report.groups import Group
from train.report.methods import method_title, short_title
from train.report.schema import GATE_KEYS


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fig_agreement(group: Group, method: str, path: Path) -> bool:
    """Scatter (estimate vs truth) and Bland-Altman (difference vs mean, bias and 1.96 SD limits)."""
    df = pd.concat([r.windows[r.windows.protocol == "release"] for r in group.runs])
    col = f"hr_{method}"
    if col not in df or df[col].isna().all():
        return False
    df = df[[col, "hr_true"]].dropna()
    est, gt = df[col].to_numpy(), df.hr_true.to_numpy()
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.8), constrained_layout=True)
    lo, hi = min(est.min(), gt.min()) - 5, max(est.max(), gt.max()) + 5
    a1.scatter(gt, est, s=10, alpha=0.6)
    a1.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    a1.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="true HR (bpm)", ylabel="estimated HR (bpm)", title="scatter")
    mean, diff = (est + gt) / 2, est - gt
    bias, sd = diff.mean(), diff.std()
    a2.scatter(mean, diff, s=10, alpha=0.6)
    for y, ls in ((bias, "-"), (bias + 1.96 * sd, "--"), (bias - 1.96 * sd, "--")):
        a2.axhline(y, color="k", ls=ls, lw=0.8)
    a2.set(xlabel="mean of estimate and truth (bpm)", ylabel="estimate - truth (bpm)")
    a2.set_title(f"Bland-Altman: bias {bias:.1f}, LoA ±{1.96 * sd:.1f} bpm", fontsize=10)
    fig.suptitle(f"{method_title(method, group.config)}: {len(est)} windows ({group.label})", fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _box_by(ax, df: pd.DataFrame, key: str, by: str, title: str) -> None:
    cats = [c for c in sorted(df[by].dropna().unique(), key=str)]
    data = [df.loc[df[by] == c, key].to_numpy() for c in cats]
    ax.boxplot(data, tick_labels=[str(c) for c in cats])
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelsize=8)


def fig_gate_by_condition(gate: pd.DataFrame, by: list[str], path: Path, title: str) -> None:
    plt = _plt()
    keys = [k for k in GATE_KEYS if k in gate]
    fig, axes = plt.subplots(len(by), len(keys), figsize=(3 * len(keys), 2.6 * len(by)), squeeze=False)
    for i, b in enumerate(by):
        for j, k in enumerate(keys):
            _box_by(axes[i, j], gate, k, b, f"{k} by {b.replace('cond_', '')}")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fig_log_steps(steps: pd.DataFrame, path: Path, title: str) -> None:
    plt = _plt()
    keys = [k for k in GATE_KEYS if k in steps]
    fig, axes = plt.subplots(1, len(keys), figsize=(3 * len(keys), 2.8), squeeze=False)
    for j, k in enumerate(keys):
        axes[0, j].hist(steps[k].dropna().to_numpy(), bins=20, range=(0, 1))
        axes[0, j].set_title(f"{k} over {steps[k].notna().sum()} steps", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _display(x: np.ndarray, fs: float) -> np.ndarray:
    """z-scored and band-passed 45-180 bpm (the HR estimator's filter), for plotting."""
    return zscore(bandpass(zscore(x), fs, order=HR_FILTER_ORDER))


def fig_waveforms(examples: dict, path: Path) -> None:
    plt = _plt()
    groups = [g for g in (*SKIN_GROUPS, "unknown") if g in examples["windows"]]
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, 2.3 * len(groups)), squeeze=False)
    fs = examples["fs"]
    for ax, g in zip(axes[:, 0], groups, strict=True):
        ex = examples["windows"][g]
        t = np.arange(len(ex["truth"])) / fs
        ax.plot(t, _display(ex["truth"], fs), "k", lw=1.2, label="PPG (truth)")
        for m, color in (("student", "tab:red"), ("baseline", "tab:green"), ("POS", "tab:blue")):
            if m in ex:
                ax.plot(t, _display(ex[m], fs), color=color, lw=0.9, alpha=0.85, label=short_title(m))
        ax.set_title(
            f"{g} skin (Fitzpatrick {ex['skin_type']}): {ex['session']} from frame {ex['start']}", fontsize=9
        )
        ax.set_ylabel("z")
    axes[-1, 0].set_xlabel("time (s)")
    axes[0, 0].legend(fontsize=7, ncol=4, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fig_spectrum(examples: dict, path: Path) -> None:
    plt = _plt()
    g = next(iter(examples["windows"]))
    ex = examples["windows"][g]
    fs = examples["fs"]
    fig, ax = plt.subplots(figsize=(7, 3.4), constrained_layout=True)
    for m, color in (("truth", "k"), ("student", "tab:red"), ("teacher", "tab:purple"), ("POS", "tab:blue")):
        if m not in ex:
            continue
        f, p = power_spectrum(zscore(ex[m]), fs)
        band = (f >= 0.5) & (f <= 3.5)
        ax.plot(
            f[band] * 60,
            p[band] / p[band].max(),
            color=color,
            lw=1,
            label="PPG (truth)" if m == "truth" else m,
        )
    ax.axvspan(*CARDIAC_BAND_BPM, color="0.9", zorder=0)
    ax.set(xlabel="frequency (bpm)", ylabel="normalised power")
    ax.set_title(
        f"Spectrum of one window ({ex['session']}, frame {ex['start']}); band 45-180 bpm shaded", fontsize=9
    )
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
