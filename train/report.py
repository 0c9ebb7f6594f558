"""``rpm report``: evaluate trained runs on their held-out test windows and write the report.

For every run in ``runs/`` (or the ones named) and every checkpoint it holds (student, baseline,
teacher) the held-out test sessions are cut into ``frames``-long windows at stride ``eval_stride``
(the release's per-window protocol), each method predicts a waveform, and HR comes from the
band-limited PSD peak (train.evaluate). Outputs, under ``reports/``:

* ``report.md``: a methods x metrics table per run (MAE, RMSE, STD in bpm, Pearson r, MAPE %, within-10 %);
* ``metrics.json`` and ``metrics.csv``: the same numbers, machine-readable;
* ``windows.csv``: per-window HR estimates and truth.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pipeline.paths import Workdir
from train.data import WindowDataset, video_to_input
from train.evaluate import hr_batch, hr_metrics
from train.trainer import load_model, pick_device

METHODS = {
    "student": "RPM-Distill student (video only)",
    "baseline": "Student, supervised only (no distillation)",
    "teacher": "RF teacher (radar)",
}


class ReportError(RuntimeError):
    pass


@torch.no_grad()
def predict_windows(kind: str, model, cfg, ds, device) -> np.ndarray:
    """(N, T - 1) waveforms for every window of ``ds``."""
    out = []
    for batch in DataLoader(ds, batch_size=cfg.batch_size, shuffle=False):
        if kind == "teacher":
            wave = model(batch["rf"].to(device))[:, : cfg.frames - 1]
        else:
            wave = model(video_to_input(batch["video"], cfg.student_size, device))
        out.append(wave.float().cpu().numpy())
    return np.concatenate(out)


def evaluate_run(run_dir: Path, workdir: Workdir, device, eval_stride: int = 30) -> tuple[dict, pd.DataFrame]:
    ckpts = [k for k in METHODS if (run_dir / f"{k}.pt").is_file()]
    if not ckpts:
        raise ReportError(
            f"{run_dir}: no checkpoint (student.pt / baseline.pt / teacher.pt); run `rpm train`"
        )
    splits = pd.read_csv(workdir.splits_manifest, dtype={"subject": str}, keep_default_na=False)
    metrics, frames = {}, []
    truth = None
    for kind in tqdm(ckpts, desc=f"evaluate {run_dir.name}"):
        model, cfg, _ = load_model(run_dir / f"{kind}.pt", device)
        test = splits.loc[(splits.split == "test") & (splits.dataset == cfg.dataset), "session"].tolist()
        ds = WindowDataset(workdir.store(cfg.dataset), test, cfg.frames, eval_stride)
        if len(ds) == 0:
            raise ReportError(f"{run_dir}: the test split has no {cfg.frames}-frame windows")
        if truth is None:
            gt_waves = np.stack([ds[i]["bvp"].numpy()[: cfg.frames - 1] for i in range(len(ds))])
            truth = hr_batch(gt_waves, fs=cfg.fs)
            windows = pd.DataFrame(
                [
                    {"session": w.session, "subject": w.subject, "start": w.start, "skin_type": w.skin_type}
                    for w in ds.windows
                ]
            )
            windows["hr_true"] = truth
        hr = hr_batch(predict_windows(kind, model, cfg, ds, device), fs=cfg.fs)
        windows[f"hr_{kind}"] = hr
        metrics[kind] = hr_metrics(hr, truth)
    windows.insert(0, "run", run_dir.name)
    frames.append(windows)
    return metrics, pd.concat(frames)


def _fmt(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def render_markdown(all_metrics: dict[str, dict]) -> str:
    lines = [
        "# rpm report",
        "",
        "Heart rate per held-out test window (T-frame windows, stride 30; HR = band-limited PSD peak, "
        "45-180 bpm, 6th-order Butterworth, 0.1 bpm grid). MAE, RMSE and STD (ddof 0) in bpm; "
        "r = Pearson over windows (n/a when a method's HR is constant).",
        "",
    ]
    for run, metrics in all_metrics.items():
        n = next(iter(metrics.values()))["n"]
        lines += [
            f"## Run `{run}` ({n} test windows)",
            "",
            "| method | MAE | RMSE | STD | r | MAPE % | within 10 % |",
            "|---|---|---|---|---|---|---|",
        ]
        for kind, m in metrics.items():
            lines.append(
                f"| {METHODS[kind]} | {_fmt(m['MAE'])} | {_fmt(m['RMSE'])} | {_fmt(m['STD'])} | "
                f"{_fmt(m['r'])} | {_fmt(m['MAPE'])} | {_fmt(m['within10'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def make_report(
    workdir: Workdir, runs: list[str] | None = None, device: str = "auto", eval_stride: int = 30
) -> Path:
    names = list(runs or [])
    if not names and workdir.runs.is_dir():
        names = sorted(p.name for p in workdir.runs.iterdir() if p.is_dir())
    if not names:
        raise ReportError(f"{workdir.runs}: no runs to report; run `rpm train` first")
    dev = pick_device(device)
    all_metrics, windows = {}, []
    for name in names:
        run_dir = workdir.runs / name
        if not run_dir.is_dir():
            raise ReportError(f"{run_dir}: no such run")
        metrics, win = evaluate_run(run_dir, workdir, dev, eval_stride)
        all_metrics[name] = metrics
        windows.append(win)
    out = workdir.reports
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(all_metrics, indent=2) + "\n")
    rows = [{"run": run, "method": kind, **m} for run, ms in all_metrics.items() for kind, m in ms.items()]
    pd.DataFrame(rows).to_csv(out / "metrics.csv", index=False)
    pd.concat(windows).to_csv(out / "windows.csv", index=False)
    (out / "report.md").write_text(render_markdown(all_metrics))
    return out / "report.md"
