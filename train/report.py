"""``rpm report``: evaluate trained runs on their held-out test sets; write tables, figures and metrics.

For every run in ``runs/`` (or the ones named) the test sessions of ``manifests/splits.csv`` are
evaluated under both windowing protocols of :data:`train.evaluate.PROTOCOLS` (``release``: T-frame
windows at stride 30; ``equipleth``: whole-video prediction, 300-sample windows at stride 128) for

* the run's checkpoints: the distilled student, the supervised-only student and the RF teacher (a run of
  method ``physformer`` has PhysFormer as its student; one of method ``fusion`` has Vilesov et al.'s
  RGB-radar fusion, fed the video and the radar window, and its row is marked as using radar at test);
* the classical baselines POS, CHROM and GREEN (:mod:`train.classical`) on the same windows.

Runs whose configs differ only by seed (and run name / device / labelled subjects) form a group;
a group's numbers are mean +- std over its seeds. Outputs, under ``reports/``:

* ``report.md``: the paper-shaped tables (methods x datasets; labelled fraction x condition;
  ablations; sync-shift probability x {full, no gate}), gate / weight statistics by condition and by
  radar corruption (when the synthetic truth sidecar says where the radar was corrupted), and
  figures; undefined cells read ``n/a`` with a footnote;
* ``figures/*.png``: Bland-Altman + scatter per method, gate and weights by condition (test windows
  and, when ``runs/<name>/log.jsonl`` has them, training steps), waveforms by skin type, a spectrum;
* ``metrics.json``: per run and per group, per protocol and method (NaN written as null);
* ``metrics.csv``: the same numbers in long form (level, group, run, protocol, method, metric, mean,
  std, n_seeds; undefined values as ``n/a``);
* ``windows.csv``: every window's HR per method, truth, skin type, conditions and corruption flag.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from pipeline.paths import Workdir
from pipeline.spectrum import CARDIAC_BAND_BPM, HR_FILTER_ORDER, bandpass, hr_batch, power_spectrum, zscore
from pipeline.store import open_store
from train.build import stage_forward
from train.checkpoint import load_model
from train.classical import METHODS as CLASSICAL_FUNCS
from train.classical import rgb_trace, skin_roi
from train.data import WindowDataset
from train.distributed import pick_device
from train.evaluate import (
    PROTOCOLS,
    SKIN_GROUPS,
    aggregate_seeds,
    fairness,
    hr_metrics,
    overlap_average,
    skin_group,
    whole_video_hr,
)

METHODS = {
    "student": "RPM-Distill student (video only)",
    "baseline": "Student, supervised only (no distillation)",
    "teacher": "RF teacher (radar)",
    "POS": "POS (Wang et al. 2017)",
    "CHROM": "CHROM (de Haan & Jeanne 2013)",
    "GREEN": "GREEN (Verkruysse et al. 2008)",
}
# The student row of a run whose method is a Table 1 comparison rather than RPM-Distill.
STUDENT_ROWS = {
    "physformer": "PhysFormer (Yu et al. 2022; video only)",
    "fusion": "Fusion: Vilesov et al. 2022 (video + radar at test time)",
}
NEURAL = ("student", "baseline", "teacher")
CLASSICAL = tuple(CLASSICAL_FUNCS)
TABLE_METRICS = ("MAE", "RMSE", "STD", "r")
DETAIL_METRICS = ("MAPE", "within10", "MAE_light", "MAE_medium", "MAE_dark", "fairness_gap", "n")
# Config keys that never make two runs different experiments.
NOT_EXPERIMENT = {
    "seed",
    "run_name",
    "device",
    "device_resolved",
    "labeled_subjects",
    "num_workers",
    "resume",
    "teacher_key",
    "world_size",
    "amp",
    "teacher_cache",
    "baseline",  # whether the supervised-only student was also trained: not a property of the student
}
CONDITION_KEYS = ("illumination", "motion", "talking", "road")
GATE_KEYS = ("gate", "alpha_peak", "alpha_background", "alpha_morphology")


class ReportError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------ footnotes


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


# ------------------------------------------------------------------------------------------ sessions


def _categorical(d: dict) -> dict[str, str]:
    out = {}
    for k in CONDITION_KEYS:
        v = d.get(k)
        if isinstance(v, bool):
            out[k] = k if v else f"no {k}"
        elif isinstance(v, str) and v:
            out[k] = v
    return out


def load_truth(workdir: Workdir, dataset: str) -> tuple[dict | None, Path]:
    path = workdir.raw(dataset) / "synth_truth.json"
    if not path.is_file():
        return None, path
    try:
        return json.loads(path.read_text()), path
    except (OSError, json.JSONDecodeError):
        return None, path


def radar_corruptions(trial: dict) -> list[tuple[float, float, str]] | None:
    """Radar corruption intervals (start_s, end_s, kind) of one truth trial; None without such info."""
    entries = None
    for key in ("corruptions", "corruption", "radar_corruptions", "radar_events"):
        if key in trial:
            entries = trial[key]
            break
    if entries is None:
        return None
    out = []
    for e in entries if isinstance(entries, list) else []:
        if not isinstance(e, dict) or e.get("modality", "radar") != "radar":
            continue
        try:
            out.append((float(e["start_s"]), float(e["end_s"]), str(e.get("kind", "corruption"))))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def session_table(workdir: Workdir, dataset: str, sessions: list[str], truth: dict | None) -> pd.DataFrame:
    """Per test session: subject, skin type and group, conditions, radar corruption intervals."""
    root = open_store(workdir.store(dataset), "r")
    manifest = None
    if workdir.sessions_manifest(dataset).is_file():
        manifest = pd.read_csv(workdir.sessions_manifest(dataset), dtype=str, keep_default_na=False)
        manifest = manifest.set_index("session") if "session" in manifest else None
    rows = []
    trials = {**(truth or {}).get("sessions", {}), **(truth or {}).get("trials", {})}
    for s in sorted(sessions):
        attrs = dict(root[s].attrs)
        cond = {}
        if manifest is not None and s in manifest.index:
            cond.update(_categorical({k: manifest.loc[s].get(k, "") for k in CONDITION_KEYS}))
        c = attrs.get("conditions")
        if isinstance(c, str):
            try:
                c = json.loads(c)
            except json.JSONDecodeError:
                c = {}
        cond.update(_categorical(c if isinstance(c, dict) else {}))
        cond.update(_categorical(attrs))
        tr = trials.get(s) or trials.get(s.replace("_", "/", 1)) or {}  # PhysDrive: "SUBJ/SESSION"
        cond.update(_categorical(tr.get("conditions", {}) if isinstance(tr.get("conditions"), dict) else {}))
        skin = int(attrs.get("skin_type", -1))
        rows.append(
            {
                "session": s,
                "subject": str(attrs.get("subject", "")),
                "skin_type": skin,
                "skin_group": skin_group(skin),
                "conditions": cond,
                "corruptions": radar_corruptions(tr) if tr else None,
                "fps": float(attrs.get("fps", 30.0)),
            }
        )
    return pd.DataFrame(rows)


def _corrupted(corr: list | None, start: int, length: int, fs: float):
    if corr is None:
        return None
    a, b = start / fs, (start + length) / fs
    return any(s < b and e > a for s, e, _ in corr)


# ------------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def predict_windows(kind: str, model, cfg, ds, device) -> np.ndarray:
    """(N, T - 1) waveforms for every window of ``ds``."""
    out = []
    for batch in DataLoader(ds, batch_size=cfg.batch_size, shuffle=False):
        wave = stage_forward(model, batch, cfg, device, radar=kind == "teacher")[:, : cfg.frames - 1]
        out.append(wave.float().cpu().numpy())
    return np.concatenate(out)


@torch.no_grad()
def policy_outputs(
    ckpt: dict, student_waves: np.ndarray, teacher_waves: np.ndarray, cfg
) -> pd.DataFrame | None:
    """Gate and weights the saved policy gives each test window (None when the run has no policy)."""
    state = ckpt.get("policy")
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
    return pd.DataFrame(
        {
            "gate": gate,
            "alpha_peak": alpha[:, 0],
            "alpha_background": alpha[:, 1],
            "alpha_morphology": alpha[:, 2],
        }
    )


def _session_windows(store, session: str, frames: int) -> WindowDataset:
    """Consecutive clips tiling a session (stride T - 1) plus one flush with its end."""
    return WindowDataset(store, [session], frames, frames - 1, flush=True)


@dataclass
class RunResult:
    name: str
    config: dict
    dataset: str
    frames: int
    methods: list[str]
    windows: pd.DataFrame  # one row per (protocol, window)
    metrics: dict  # protocol -> method -> metrics
    gate: pd.DataFrame | None = None  # release-protocol test windows with gate / alpha
    log_steps: pd.DataFrame | None = None
    examples: dict = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # method -> why it was not evaluated


def read_log_steps(run_dir: Path) -> pd.DataFrame | None:
    """Per-step records of ``log.jsonl`` that carry a gate or weights (None when absent)."""
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return None
    rows = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("type", "step") == "step" and any(k in rec for k in GATE_KEYS):
            rows.append(rec)
    if not rows:
        return None
    df = pd.DataFrame(rows)
    return df.rename(columns={"alpha_bg": "alpha_background", "alpha_morph": "alpha_morphology"})


def run_config(run_dir: Path, ckpt_config: dict) -> dict:
    cfg = dict(ckpt_config)
    if (run_dir / "config.json").is_file():
        try:
            cfg.update(json.loads((run_dir / "config.json").read_text()))
        except json.JSONDecodeError:
            pass
    return cfg


def evaluate_run(
    run_dir: Path,
    workdir: Workdir,
    device,
    log=print,
    truth_cache: dict | None = None,
    eval_stride: int | None = None,
) -> list[RunResult]:
    """Every method of one run on its test sessions under both protocols (see the module docstring).

    One result per dataset with test sessions in ``splits.csv`` (two under the cross-dataset protocol).
    """
    kinds = [k for k in NEURAL if (run_dir / f"{k}.pt").is_file()]
    if not kinds:
        raise ReportError(
            f"{run_dir}: no checkpoint (student.pt / baseline.pt / teacher.pt); run `rpm train`"
        )
    splits = pd.read_csv(workdir.splits_manifest, dtype={"subject": str}, keep_default_na=False)
    models = {k: load_model(run_dir / f"{k}.pt", device) for k in kinds}
    config = run_config(run_dir, models[kinds[0]][2]["config"])
    test_rows = splits[splits.split == "test"]
    if test_rows.empty:
        raise ReportError(f"{workdir.splits_manifest}: no test sessions")
    truth_cache = {} if truth_cache is None else truth_cache
    results = []
    for dataset, rows in test_rows.groupby("dataset", sort=True):
        if dataset not in truth_cache:
            truth_cache[dataset] = load_truth(workdir, dataset)
        results.append(
            _evaluate_dataset(
                run_dir,
                workdir,
                models,
                config,
                str(dataset),
                rows.session.tolist(),
                truth_cache[dataset][0],
                device,
                log,
                eval_stride,
            )  # fmt: skip
        )
    return results


def _evaluate_dataset(
    run_dir, workdir, models, config, dataset, test, truth, device, log, eval_stride
) -> RunResult:
    kinds = list(models)
    cfg = models[kinds[0]][1]
    store = workdir.store(dataset)
    sessions = session_table(workdir, dataset, test, truth).set_index("session")
    fs, T = cfg.fs, cfg.frames

    # ---- release protocol: T-frame windows at stride 30
    proto = PROTOCOLS["release"]
    ds = WindowDataset(store, test, T, eval_stride or proto.stride)
    if len(ds) == 0:
        raise ReportError(f"{run_dir}: the test split has no {T}-frame windows")
    gt_waves = np.stack([ds[i]["bvp"].numpy()[: T - 1] for i in range(len(ds))])
    rel = pd.DataFrame([{"session": w.session, "subject": w.subject, "start": w.start} for w in ds.windows])
    rel["hr_true"] = hr_batch(gt_waves, fs=fs)
    waves, skipped = {}, {}
    for kind in list(kinds):
        log(f"  {run_dir.name}: {kind} on {len(ds)} {dataset} test windows (release protocol)")
        model, kcfg, _ = models[kind]
        wanted = getattr(model, "in_channels", None)
        if kind == "teacher" and wanted is not None and ds[0]["rf"].shape[0] != wanted:
            # cross-dataset: a teacher trained on another radar layout (e.g. EquiPleth's 10 I/Q
            # channels at 120 Hz) has no input for the target's radar (PhysDrive's 16 at 20 Hz)
            skipped[kind] = (
                f"it takes {wanted} radar channels and {dataset} has {ds[0]['rf'].shape[0]} "
                f"(trained on {config.get('dataset', 'equipleth')})"
            )
            log(f"  {run_dir.name}: {kind} not evaluated on {dataset}: {skipped[kind]}")
            kinds.remove(kind)
            continue
        waves[kind] = predict_windows(kind, model, kcfg, ds, device)
        rel[f"hr_{kind}"] = hr_batch(waves[kind], fs=fs)
    root = open_store(store, "r")
    traces = {s: rgb_trace(root[s]["video"][...]) for s in test}
    rois = {s: float(skin_roi(root[s]["video"][:64]).mean()) for s in test}
    for m, func in CLASSICAL_FUNCS.items():
        cw = [func(traces[w.session][w.start : w.start + T], fs)[: T - 1] for w in ds.windows]
        waves[m] = np.stack(cw)
        rel[f"hr_{m}"] = hr_batch(waves[m], fs=fs)
    rel["protocol"] = "release"

    gate = None
    if "student" in kinds and "teacher" in kinds:
        try:
            gate = policy_outputs(models["student"][2], waves["student"], waves["teacher"], cfg)
        except (RuntimeError, KeyError, ValueError) as exc:
            log(f"  {run_dir.name}: policy could not be rebuilt ({exc}); gate statistics skipped")
    examples = {"fs": fs, "windows": {}}
    for i, w in enumerate(ds.windows):
        g = skin_group(w.skin_type)
        if g not in examples["windows"]:
            examples["windows"][g] = {
                "session": w.session,
                "start": w.start,
                "skin_type": w.skin_type,
                "truth": gt_waves[i],
                **{m: waves[m][i] for m in waves},
            }

    # ---- EquiPleth protocol: whole-video prediction, 300-sample windows at stride 128
    proto = PROTOCOLS["equipleth"]
    rows = []
    for s in test:
        full = {}
        n = root[s]["video"].shape[0]
        for kind in kinds:
            sds = _session_windows(store, s, T)
            if not len(sds):
                break
            model, kcfg, _ = models[kind]
            pw = predict_windows(kind, model, kcfg, sds, device)
            full[kind] = overlap_average(pw, [w.start for w in sds.windows], n - 1)
        for m, func in CLASSICAL_FUNCS.items():
            full[m] = func(traces[s], fs)[: n - 1]
        bvp = root[s]["bvp"][...][: n - 1].astype(np.float64)
        hr_gt = None
        for m, wave in full.items():
            hp, hg, starts = whole_video_hr(wave, bvp, fs, proto)
            if hr_gt is None:
                hr_gt = hg
                block = pd.DataFrame({"session": s, "start": starts, "hr_true": hg})
            block[f"hr_{m}"] = hp
        if hr_gt is not None and len(hr_gt):
            block["subject"] = sessions.loc[s, "subject"]
            rows.append(block)
    ep = pd.concat(rows) if rows else pd.DataFrame(columns=["session", "start", "hr_true", "subject"])
    ep["protocol"] = "equipleth"

    windows = pd.concat([rel, ep], ignore_index=True)
    windows["skin_type"] = windows.session.map(sessions.skin_type).astype(int)
    windows["skin_group"] = windows.session.map(sessions.skin_group)
    lengths = windows.protocol.map({"release": T, "equipleth": PROTOCOLS["equipleth"].window})
    windows["radar_corrupted"] = [
        _corrupted(sessions.loc[s, "corruptions"], int(st), int(ln), fs)
        for s, st, ln in zip(windows.session, windows.start, lengths, strict=True)
    ]
    cond_keys = sorted({k for c in sessions.conditions for k in c})
    for k in cond_keys:
        windows[f"cond_{k}"] = windows.session.map(lambda s, k=k: sessions.loc[s, "conditions"].get(k, ""))
    windows.insert(0, "run", run_dir.name)
    if gate is not None:
        rel_idx = windows.index[windows.protocol == "release"]
        gate.index = rel_idx
        gate = pd.concat([windows.loc[rel_idx], gate], axis=1)

    methods = [*kinds, *CLASSICAL]
    metrics = {}
    for p in PROTOCOLS:
        sub = windows[windows.protocol == p]
        metrics[p] = {}
        for m in methods:
            if len(sub) == 0 or f"hr_{m}" not in sub:
                metrics[p][m] = {"n": 0}
                continue
            metrics[p][m] = {
                **hr_metrics(sub[f"hr_{m}"].to_numpy(), sub.hr_true.to_numpy()),
                **fairness(sub[f"hr_{m}"].to_numpy(), sub.hr_true.to_numpy(), sub.skin_type.to_numpy()),
            }
    examples["skin_roi_share"] = rois
    return RunResult(
        name=run_dir.name,
        config=config,
        dataset=dataset,
        frames=T,
        methods=methods,
        windows=windows,
        metrics=metrics,
        gate=gate,
        log_steps=read_log_steps(run_dir),
        examples=examples,
        missing=[k for k in NEURAL if k not in kinds],
        skipped=skipped,
    )


# ------------------------------------------------------------------------------------------ groups


@dataclass
class Group:
    label: str
    key: str
    config: dict
    runs: list[RunResult]

    @property
    def seeds(self) -> list:
        return [rs[0].config.get("seed") for rs in _by_name(self.runs).values()]

    @property
    def names(self) -> list[str]:
        return list(_by_name(self.runs))

    def agg(self, protocol: str, method: str, dataset: str | None = None) -> dict:
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


def _experiment_config(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in NOT_EXPERIMENT}


def _flatten(cfg: dict) -> dict:
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in _flatten(v).items()})
        else:
            out[k] = v
    return out


def group_runs(results: list[RunResult]) -> list[Group]:
    buckets: dict[str, list[RunResult]] = defaultdict(list)
    for r in results:
        buckets[json.dumps(_experiment_config(_flatten(r.config)), sort_keys=True, default=str)].append(r)
    keys = list(buckets)
    flat = {k: json.loads(k) for k in keys}
    varying = sorted(
        {k for c in flat.values() for k in c if len({json.dumps(flat[g].get(k)) for g in keys}) > 1}
    )

    def part(key: str, value, verbose: bool) -> str | None:
        if value is None:
            return f"{key} unset" if verbose else None
        if isinstance(value, bool) and not verbose:
            return None if value else f"no {key}"
        return f"{key}={value}"

    groups = []
    for verbose in (False, True):  # short labels unless two groups would read the same
        labels = [
            ", ".join(p for v in varying if (p := part(v, flat[k].get(v), verbose))) or "full" for k in keys
        ]
        if len(set(labels)) == len(labels):
            break
    for k, label in zip(keys, labels, strict=True):
        groups.append(Group(label, k, flat[k], sorted(buckets[k], key=lambda r: str(r.config.get("seed")))))
    return groups


def _shift_key(cfg: dict) -> str | None:
    for k in cfg:
        if "shift" in k.lower() and ("prob" in k.lower() or k.lower().endswith("shift")):
            return k
    return None


def _gate_on(cfg: dict) -> bool:
    return bool(cfg.get("gate", True)) and bool(cfg.get("policy", True)) and not cfg.get("no_gate", False)


# ------------------------------------------------------------------------------------------ figures


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
                ax.plot(
                    t, _display(ex[m], fs), color=color, lw=0.9, alpha=0.85, label=METHODS[m].split(" (")[0]
                )
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


# ------------------------------------------------------------------------------------------ markdown


def _methods_of(groups: list[Group]) -> list[str]:
    seen = []
    for g in groups:
        for r in g.runs:
            for m in r.methods:
                if m not in seen:
                    seen.append(m)
    return [m for m in METHODS if m in seen]


def method_title(method: str, config: dict) -> str:
    """A report row's method name: :data:`METHODS`, or for the student of a physformer / fusion run its
    :data:`STUDENT_ROWS` name (``config``: the run or group config, with its ``method``)."""
    if method == "student" and config.get("method") in STUDENT_ROWS:
        return STUDENT_ROWS[config["method"]]
    return METHODS[method]


def _row_label(group: Group, method: str, many: bool) -> str:
    base = method_title(method, group.config)
    return f"{base} [{group.label}]" if many and method in NEURAL else base


def table_methods_datasets(groups: list[Group], protocol: str, notes: Notes) -> list[str]:
    datasets = sorted({r.dataset for g in groups for r in g.runs})
    head = "| method | " + " | ".join(f"{d} {m}" for d in datasets for m in TABLE_METRICS) + " |"
    lines = [head, "|---" * (1 + len(datasets) * len(TABLE_METRICS)) + "|"]
    many = len(groups) > 1
    shown_classical = set()
    for g in groups:
        for m in _methods_of([g]):
            if m in CLASSICAL:
                key = (m, g.runs[0].frames if protocol == "release" else 0)
                if key in shown_classical:
                    continue
                shown_classical.add(key)
            cells = []
            for d in datasets:
                if d not in {r.dataset for r in g.runs}:
                    cells += [notes.na("norun")] * len(TABLE_METRICS)
                    continue
                agg = g.agg(protocol, m, d)
                for k in TABLE_METRICS:
                    reason = (
                        "short" if protocol == "equipleth" and not agg else ("r" if k == "r" else "empty")
                    )
                    cells.append(cell(agg.get(k), notes, reason))
            label = _row_label(g, m, many)
            if (
                m in CLASSICAL
                and protocol == "release"
                and len({r.frames for x in groups for r in x.runs}) > 1
            ):
                label += f" (T={g.runs[0].frames})"
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def table_details(groups: list[Group], protocol: str, notes: Notes) -> list[str]:
    names = {"within10": "within 10 %", "MAPE": "MAPE %", "fairness_gap": "fairness gap", "n": "windows"}
    lines = [
        "| method | " + " | ".join(names.get(k, k.replace("_", " ")) for k in DETAIL_METRICS) + " |",
        "|---" * (1 + len(DETAIL_METRICS)) + "|",
    ]
    many = len(groups) > 1
    for g in groups:
        for m in _methods_of([g]):
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


def _condition_columns(groups: list[Group]) -> list[tuple[str, object]]:
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
    cols = _condition_columns(groups)
    lines = [
        "| labelled fraction | method | " + " | ".join(c for c, _ in cols) + " |",
        "|---|---" + "|---" * len(cols) + "|",
    ]
    others = {g.key: g.label for g in groups}
    order = sorted(groups, key=lambda g: (float(g.config.get("labeled_frac", 1.0)), g.label))
    for g in order:
        frac = g.config.get("labeled_frac")
        frac = f"{float(frac):.0%}" if isinstance(frac, int | float) else "unknown"
        extra = others[g.key] if len(groups) > 1 else ""
        for m in ("student", "baseline"):
            if not any(f"hr_{m}" in r.windows for r in g.runs):
                continue
            cells = [cell(g.agg_windows("release", m, sel), notes, "empty") for _, sel in cols]
            name = METHODS[m].split(" (")[0]
            label = f"{name} [{extra}]" if extra else name
            lines.append(f"| {frac} | {label} | " + " | ".join(cells) + " |")
    return lines


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
    keys = sorted(
        {
            k
            for g in groups
            for k in g.config
            if k != "labeled_frac"
            and _shift_key({k: 0}) is None
            and len({json.dumps(x.config.get(k)) for x in groups}) > 1
        }
    )
    # Default-valued flags read as "full": drop a bool key from a label where it is True.
    lines = ["| variant | runs (seeds) | MAE | RMSE | STD | r |", "|---|---|---|---|---|---|"]
    for g in groups:
        agg = g.agg("release", "student")
        label = ablation_label(g.config, [k for k in keys if g.config.get(k) is not True])
        if len(groups) > 1 and len({x.config.get("labeled_frac") for x in groups}) > 1:
            label += f" (labelled {g.config.get('labeled_frac')})"
        cells = [cell(agg.get(k), notes, "r" if k == "r" else "empty") for k in TABLE_METRICS]
        if "student" not in {m for r in g.runs for m in r.methods}:
            cells = [notes.na("missing")] * len(TABLE_METRICS)
        lines.append(
            f"| {label} | {len(g.names)} ({', '.join(map(str, g.seeds))}) | " + " | ".join(cells) + " |"
        )
    return lines


def table_shift(groups: list[Group], notes: Notes) -> tuple[list[str], bool]:
    rows: dict[float, dict[str, list[Group]]] = defaultdict(lambda: {"full": [], "no gate": []})
    for g in groups:
        k = _shift_key(g.config)
        if k is None:
            continue
        try:
            p = float(g.config[k])
        except (TypeError, ValueError):
            continue
        rows[p]["full" if _gate_on(g.config) else "no gate"].append(g)
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


# ------------------------------------------------------------------------------------------ json / csv


def _clean(x):
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, np.generic):
        return _clean(x.item())
    return x


def _by_name(results: list[RunResult]) -> dict[str, list[RunResult]]:
    out: dict[str, list[RunResult]] = defaultdict(list)
    for r in results:
        out[r.name].append(r)
    return dict(out)


def metrics_long(groups: list[Group]) -> pd.DataFrame:
    rows = []
    for g in groups:
        for r in g.runs:
            for p, ms in r.metrics.items():
                for m, vals in ms.items():
                    for k, v in vals.items():
                        rows.append(
                            dict(level="run", group=g.label, run=r.name, seed=r.config.get("seed"),
                                 dataset=r.dataset, protocol=p, method=m, metric=k, mean=v, std=math.nan,
                                 n_seeds=1)
                        )  # fmt: skip
        for d in sorted({r.dataset for r in g.runs}):
            for p in PROTOCOLS:
                for m in _methods_of([g]):
                    for k, a in g.agg(p, m, d).items():
                        rows.append(
                            dict(level="group", group=g.label, run=";".join(g.names), seed="", dataset=d,
                                 protocol=p, method=m, metric=k, mean=a["mean"], std=a["std"], n_seeds=a["n"])
                        )  # fmt: skip
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ main


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


def _gate_section(
    groups: list[Group], figdir: Path, notes: Notes, truth_info: dict, log
) -> tuple[list[str], dict]:
    lines, summary = [], {}
    gates = [r.gate for g in groups for r in g.runs if r.gate is not None]
    if gates:
        gdf = pd.concat(gates, ignore_index=True)
        by = ["skin_group", *[c for c in gdf.columns if c.startswith("cond_")]]
        fig_gate_by_condition(
            gdf, by, figdir / "gate_by_condition.png", "policy gate and weights on test windows"
        )
        lines += [
            "Gate g and weights alpha the trained policy assigns to each test window (release protocol), "
            f"from the student's and the teacher's spectra, pooled over the {len(gates)} run(s) with "
            "a policy:",
            "",
            "![gate by condition](figures/gate_by_condition.png)",
            "",
            "| condition | windows | " + " | ".join(GATE_KEYS) + " |",
            "|---|---" + "|---" * len(GATE_KEYS) + "|",
        ]
        for b in by:
            for v, sub in gdf.groupby(b):
                stats = " | ".join(f"{sub[k].mean():.3f}" for k in GATE_KEYS)
                lines.append(f"| {b.replace('cond_', '')} = {v} | {len(sub)} | {stats} |")
                summary.setdefault("by_condition", {})[f"{b}={v}"] = {
                    k: float(sub[k].mean()) for k in GATE_KEYS
                }
        lines.append("")
        corr = gdf.radar_corrupted
        if truth_info.get("has_corruption") and corr.notna().any():
            c, k = gdf[corr == True], gdf[corr == False]  # noqa: E712
            lines.append(f"**By radar corruption** (from `{truth_info['path']}`):")
            lines.append("")
            if len(c) and len(k):
                verdict, diff, se = gate_difference(c.gate.to_numpy(), k.gate.to_numpy())
                labelled = gdf.assign(radar=corr.map({True: "corrupted", False: "clean"}))
                fig_gate_by_condition(
                    labelled,
                    ["radar"],
                    figdir / "gate_by_corruption.png",
                    "gate and weights by radar corruption",
                )
                lines += [
                    f"Mean gate on {len(c)} windows overlapping a radar corruption: {c.gate.mean():.3f}; on "
                    f"{len(k)} clean windows: {k.gate.mean():.3f} (difference {diff:+.3f}, standard error "
                    f"{se:.3f}). The gate was **{verdict}** where the radar was corrupted.",
                    "",
                    "![gate by corruption](figures/gate_by_corruption.png)",
                ]
                summary["corruption"] = {
                    "gate_corrupted": float(c.gate.mean()),
                    "gate_clean": float(k.gate.mean()),
                    "n_corrupted": int(len(c)),
                    "n_clean": int(len(k)),
                    "difference": diff,
                    "standard_error": se,
                    "verdict": verdict,
                }
            else:
                lines.append(
                    f"All {len(gdf)} test windows are {'corrupted' if len(c) else 'clean'} per the sidecar, "
                    "so there is nothing to compare the gate against."
                )
                summary["corruption"] = {"n_corrupted": int(len(c)), "n_clean": int(len(k))}
        else:
            lines.append(
                f"**By radar corruption:** not available. {truth_info['reason']} The report does not guess "
                "where the radar was corrupted."
            )
        lines.append("")
    else:
        lines += [
            "No run has a trained policy with a teacher (e.g. `--no-policy`, or no teacher.pt), so there is "
            "no gate to show on the test windows.",
            "",
        ]
    steps = [(g, r) for g in groups for r in g.runs if r.log_steps is not None]
    if steps:
        sdf = pd.concat([r.log_steps.assign(run=r.name) for _, r in steps], ignore_index=True)
        fig_log_steps(sdf, figdir / "gate_training.png", f"training steps from log.jsonl ({len(steps)} runs)")
        lines += [
            f"Training-time gate and weights from `log.jsonl` ({len(sdf)} step records of "
            f"{', '.join(r.name for _, r in steps)}; batch means per step):",
            "",
            "![gate during training](figures/gate_training.png)",
            "",
        ]
    else:
        lines += [
            "No run has a `log.jsonl` with per-step gate / weight records; training-time distributions "
            "omitted.",
            "",
        ]
    return lines, summary


def make_report(
    workdir: Workdir,
    runs: list[str] | None = None,
    device: str = "auto",
    eval_stride: int = 30,
    log=print,
) -> Path:
    """Evaluate the runs and write ``reports/``; returns the path of ``report.md``."""
    t0 = time.time()
    names = list(runs or [])
    if not names and workdir.runs.is_dir():
        names = sorted(
            p.name
            for p in workdir.runs.iterdir()
            if p.is_dir()
            and not p.name.startswith((".", "_"))
            and any((p / f"{k}.pt").is_file() for k in NEURAL)
        )
    if not names:
        raise ReportError(f"{workdir.runs}: no runs to report; run `rpm train` first")
    if not workdir.splits_manifest.is_file():
        raise ReportError(f"{workdir.splits_manifest}: no split; run `rpm split` first")
    dev = pick_device(device)
    results, truth_cache = [], {}
    for i, name in enumerate(names, 1):
        run_dir = workdir.runs / name
        if not run_dir.is_dir():
            raise ReportError(f"{run_dir}: no such run")
        log(f"[{i}/{len(names)}] evaluating run {name}")
        results.extend(evaluate_run(run_dir, workdir, dev, log, truth_cache, eval_stride))
    groups = group_runs(results)
    out = workdir.reports
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    for old in figdir.glob("*.png"):
        old.unlink()
    notes = Notes()
    log(f"writing tables and figures to {out}")

    datasets = sorted({r.dataset for r in results})
    truth_info = {"has_corruption": False, "path": "", "reason": ""}
    for d in datasets:
        truth, path = truth_cache.get(d, (None, workdir.raw(d) / "synth_truth.json"))
        if truth is None:
            truth_info["reason"] = f"No truth sidecar `{path}` (real data carry none)."
        elif not any(
            radar_corruptions(t) is not None
            for t in [*truth.get("trials", {}).values(), *truth.get("sessions", {}).values()]
        ):
            truth_info["reason"] = f"The sidecar `{path}` lists no radar corruption intervals."
        else:
            truth_info.update(has_corruption=True, path=str(path))

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
    for p in PROTOCOLS.values():
        md.append(f"- `{p.name}`, {p.title}: {p.description}.")
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
            f"{g.config.get('dataset', 'equipleth')} | {', '.join(sorted({r.dataset for r in g.runs}))} | "
            f"{g.config.get('labeled_frac')} | {g.runs[0].frames} |"
        )
    md.append("")
    for g in groups:
        for r in g.runs:
            for kind, why in sorted(r.skipped.items()):
                md.append(f"- Run `{r.name}`: {METHODS.get(kind, kind)} not evaluated on {r.dataset}: {why}.")
    if any(r.skipped for g in groups for r in g.runs):
        md.append("")

    md += ["## 1. Methods x datasets", ""]
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
        md += ["No run records a sync-shift probability in its config (a key containing `shift_prob`).", ""]
    md += shift_lines
    md += ["", "## 5. Policy gate and weights", ""]
    gate_lines, gate_summary = _gate_section(groups, figdir, notes, truth_info, log)
    md += gate_lines

    md += ["## 6. Figures", "", "Bland-Altman and scatter per method (protocol `release`, first group):", ""]
    main = groups[0]
    for m in _methods_of([main]):
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
    if notes.used:
        md += ["---", "", *notes.render(), ""]
    md.append(f"_Generated in {time.time() - t0:.0f} s._")

    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "protocols": {p.name: {"title": p.title, "description": p.description} for p in PROTOCOLS.values()},
        "runs": {
            name: {
                "group": g.label,
                "seed": rs[0].config.get("seed"),
                "frames": rs[0].frames,
                "config": rs[0].config,
                "results": {r.dataset: r.metrics for r in rs},
            }
            for g in groups
            for name, rs in _by_name(g.runs).items()
        },
        "groups": {
            g.label: {
                "runs": g.names,
                "seeds": g.seeds,
                "config": g.config,
                "results": {
                    d: {p: {m: g.agg(p, m, d) for m in _methods_of([g])} for p in PROTOCOLS}
                    for d in sorted({r.dataset for r in g.runs})
                },
            }
            for g in groups
        },
        "gate": gate_summary,
        "radar_corruption_source": truth_info,
    }
    (out / "metrics.json").write_text(json.dumps(_clean(doc), indent=2, default=str) + "\n")
    metrics_long(groups).to_csv(out / "metrics.csv", index=False, na_rep="n/a")
    pd.concat([r.windows for r in results]).to_csv(out / "windows.csv", index=False, na_rep="n/a")
    (out / "report.md").write_text("\n".join(md) + "\n")
    log(f"report: {out / 'report.md'}")
    return out / "report.md"
