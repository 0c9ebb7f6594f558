"""Scoring one run: every method on its test windows under both protocols of
:data:`train.evaluate.PROTOCOLS`, with per-window HR, skin type, conditions and radar corruption."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.paths import Workdir
from pipeline.spectrum import hr_batch
from pipeline.store import open_store
from train.classical import min_frames, rgb_trace, skin_roi
from train.evaluate import PROTOCOLS, fairness, hr_metrics, overlap_average, skin_group, whole_video_hr
from train.report.gate import policy_outputs
from train.report.methods import BY_KEY, CLASSICAL, NEURAL, RADAR_FREE, VIDEO_CLASSICAL, radar_attrs_present
from train.report.runs import (
    ReportError,
    load_run_models,
    read_log_steps,
    read_splits,
    run_checkpoints,
    run_config,
    test_sessions,
)
from train.report.schema import DATASET, STORE_BVP, STORE_RADAR_ATTRS, STORE_VIDEO
from train.report.sessions import corrupted, load_truth, session_table
from train.report.windows import predict_windows, release_windows, session_clips


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


@dataclass
class RunInputs:
    """What scoring one run on one dataset needs, read once per run."""

    run_dir: Path
    workdir: Workdir
    models: dict  # kind -> (model, TrainConfig, checkpoint dict)
    config: dict  # the run's config (checkpoint config updated with config.json)
    device: object
    log: object
    eval_stride: int | None

    @property
    def cfg(self):
        """The first checkpoint's TrainConfig: clip length ``frames`` and rate ``fs`` of every method."""
        return next(iter(self.models.values()))[1]


def evaluate_run(
    run_dir: Path,
    workdir: Workdir,
    device,
    log=print,
    truth_cache: dict | None = None,
    eval_stride: int | None = None,
) -> list[RunResult]:
    """Every method of one run on its test sessions under both protocols (see :mod:`train.report`).

    One result per dataset with test sessions in ``splits.csv`` (two under the cross-dataset protocol).
    ``truth_cache`` (dataset -> (truth, path)) is filled as truth sidecars are read.
    """
    kinds = run_checkpoints(run_dir)
    splits = read_splits(workdir)
    models = load_run_models(run_dir, kinds, device)
    run = RunInputs(run_dir, workdir, models, run_config(run_dir, models), device, log, eval_stride)
    tests = test_sessions(splits, workdir.splits_manifest)
    truth_cache = {} if truth_cache is None else truth_cache
    results = []
    for dataset, sessions in tests.items():
        if dataset not in truth_cache:
            truth_cache[dataset] = load_truth(workdir, dataset)
        results.append(evaluate_dataset(run, dataset, sessions, truth_cache[dataset][0]))
    return results


def _trained_waves(run: RunInputs, ds, dataset: str, rel: pd.DataFrame, fs: float) -> tuple[dict, dict]:
    """(kind -> (N, T - 1) waveforms, kind -> why it was skipped); adds ``hr_<kind>`` columns to ``rel``.

    A radar model whose input width does not fit this dataset's radar (cross-dataset) is skipped.
    """
    waves, skipped = {}, {}
    for kind in run.models:
        run.log(f"  {run.run_dir.name}: {kind} on {len(ds)} {dataset} test windows (release protocol)")
        model, kcfg, _ = run.models[kind]
        wanted = getattr(model, "in_channels", None)
        if BY_KEY[kind].modality == "rf" and wanted is not None and ds[0]["rf"].shape[0] != wanted:
            # cross-dataset: a teacher trained on another radar layout (e.g. EquiPleth's 10 I/Q
            # channels at 120 Hz) has no input for the target's radar (PhysDrive's 16 at 20 Hz)
            skipped[kind] = (
                f"it takes {wanted} radar channels and {dataset} has {ds[0]['rf'].shape[0]} "
                f"(trained on {run.config.get(DATASET, 'equipleth')})"
            )
            run.log(f"  {run.run_dir.name}: {kind} not evaluated on {dataset}: {skipped[kind]}")
            continue
        waves[kind] = predict_windows(kind, model, kcfg, ds, run.device)
        rel[f"hr_{kind}"] = hr_batch(waves[kind], fs=fs)
    return waves, skipped


def _examples(ds, gt_waves: np.ndarray, waves: dict, fs: float) -> dict:
    """The first window of each skin group: truth and every method's waveform, for the figures."""
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
    return examples


def _release(run: RunInputs, dataset: str, test: list[str], root) -> tuple:
    """Release protocol on T-frame windows: (windows table, method -> (N, T - 1) waves, skipped kinds,
    examples, session -> RGB trace)."""
    fs, T = run.cfg.fs, run.cfg.frames
    if T < min_frames(fs):
        raise ReportError(
            f"{run.run_dir}: its {T}-frame windows are shorter than the {min_frames(fs)} frames the POS and "
            f"CHROM baselines need at {fs:g} Hz; a reportable run has --frames {min_frames(fs)} or more"
        )
    ds = release_windows(run.workdir.store(dataset), test, T, run.eval_stride or PROTOCOLS["release"].stride)
    if len(ds) == 0:
        raise ReportError(f"{run.run_dir}: the test split has no {T}-frame windows")
    gt_waves = np.stack([ds[i]["bvp"].numpy()[: T - 1] for i in range(len(ds))])
    rel = pd.DataFrame([{"session": w.session, "subject": w.subject, "start": w.start} for w in ds.windows])
    rel["hr_true"] = hr_batch(gt_waves, fs=fs)
    waves, skipped = _trained_waves(run, ds, dataset, rel, fs)
    traces = {s: rgb_trace(root[s][STORE_VIDEO][...]) for s in test}
    for m in VIDEO_CLASSICAL:
        cw = [BY_KEY[m].classical(traces[w.session][w.start : w.start + T], fs)[: T - 1] for w in ds.windows]
        waves[m] = np.stack(cw)
        rel[f"hr_{m}"] = hr_batch(waves[m], fs=fs)
    no_radar = [s for s in test if not radar_attrs_present(root[s])]
    for m in RADAR_FREE:  # an HR per window, no waveform
        if no_radar:
            attrs = "/".join(STORE_RADAR_ATTRS)
            skipped[m] = f"the store's session {no_radar[0]} lacks {attrs} (rerun rpm preprocess)"
            run.log(f"  {run.run_dir.name}: {m} not evaluated on {dataset}: {skipped[m]}")
            continue
        rel[f"hr_{m}"] = np.nan
        for s, idx in rel.groupby("session", sort=False).groups.items():
            rel.loc[idx, f"hr_{m}"] = BY_KEY[m].radar_hr(root[s], rel.loc[idx, "start"].tolist(), T)
    rel["protocol"] = "release"
    return rel, waves, skipped, _examples(ds, gt_waves, waves, fs), traces


def _whole_video(run: RunInputs, kinds: list[str], store, root, session: str, trace) -> dict:
    """Method -> one waveform over the whole session (n - 1 samples): trained models' clips averaged."""
    T, fs = run.cfg.frames, run.cfg.fs
    full = {}
    n = root[session][STORE_VIDEO].shape[0]
    for kind in kinds:
        sds = session_clips(store, session, T)
        if not len(sds):
            break
        model, kcfg, _ = run.models[kind]
        pw = predict_windows(kind, model, kcfg, sds, run.device)
        full[kind] = overlap_average(pw, [w.start for w in sds.windows], n - 1)
    for m in VIDEO_CLASSICAL:
        full[m] = BY_KEY[m].classical(trace, fs)[: n - 1]
    return full


def _equipleth(
    run: RunInputs, kinds, dataset: str, test: list[str], traces: dict, sessions, skipped: dict
) -> pd.DataFrame:
    """EquiPleth protocol: whole-video prediction cut into 300-sample windows at stride 128 (the training-free
    radar rows: their HR on the same 300-frame windows, in the protocol's band)."""
    proto, fs = PROTOCOLS["equipleth"], run.cfg.fs
    store = run.workdir.store(dataset)
    root = open_store(store, "r")
    rows = []
    for s in test:
        full = _whole_video(run, kinds, store, root, s, traces[s])
        n = root[s][STORE_VIDEO].shape[0]
        bvp = root[s][STORE_BVP][...][: n - 1].astype(np.float64)
        hr_gt = None
        for m, wave in full.items():
            hp, hg, starts = whole_video_hr(wave, bvp, fs, proto)
            if hr_gt is None:
                hr_gt = hg
                block = pd.DataFrame({"session": s, "start": starts, "hr_true": hg})
            block[f"hr_{m}"] = hp
        if hr_gt is not None and len(hr_gt):
            for m in (m for m in RADAR_FREE if m not in skipped):
                band = dict(lo_bpm=proto.lo_bpm, hi_bpm=proto.hi_bpm)
                block[f"hr_{m}"] = BY_KEY[m].radar_hr(root[s], block.start.tolist(), proto.window, **band)
            block["subject"] = sessions.loc[s, "subject"]
            rows.append(block)
    ep = pd.concat(rows) if rows else pd.DataFrame(columns=["session", "start", "hr_true", "subject"])
    ep["protocol"] = "equipleth"
    return ep


def _annotate(windows: pd.DataFrame, sessions: pd.DataFrame, T: int, fs: float, run_name: str) -> None:
    """Add skin type and group, radar corruption flag, ``cond_<key>`` columns and the run name."""
    windows["skin_type"] = windows.session.map(sessions.skin_type).astype(int)
    windows["skin_group"] = windows.session.map(sessions.skin_group)
    lengths = windows.protocol.map({"release": T, "equipleth": PROTOCOLS["equipleth"].window})
    windows["radar_corrupted"] = [
        corrupted(sessions.loc[s, "corruptions"], int(st), int(ln), fs)
        for s, st, ln in zip(windows.session, windows.start, lengths, strict=True)
    ]
    cond_keys = sorted({k for c in sessions.conditions for k in c})
    for k in cond_keys:
        windows[f"cond_{k}"] = windows.session.map(lambda s, k=k: sessions.loc[s, "conditions"].get(k, ""))
    windows.insert(0, "run", run_name)


def _metrics(windows: pd.DataFrame, methods: list[str]) -> dict:
    """protocol -> method -> HR and fairness metrics over its windows ({"n": 0} without any).

    A window without an estimate (NaN: the FFT radar row where the radar saw nothing) is left out of that
    method's metrics; its ``n`` counts the windows kept.
    """
    metrics = {}
    for p in PROTOCOLS:
        sub = windows[windows.protocol == p]
        metrics[p] = {}
        for m in methods:
            keep = sub[np.isfinite(sub[f"hr_{m}"].to_numpy(np.float64))] if f"hr_{m}" in sub else sub.iloc[:0]
            if len(keep) == 0:
                metrics[p][m] = {"n": 0}
                continue
            est, gt = keep[f"hr_{m}"].to_numpy(np.float64), keep.hr_true.to_numpy()
            metrics[p][m] = {**hr_metrics(est, gt), **fairness(est, gt, keep.skin_type.to_numpy())}
    return metrics


def _policy_gate(run: RunInputs, kinds: list[str], waves: dict) -> pd.DataFrame | None:
    """The policy's gate and weights per release window (None without student, teacher or policy)."""
    if "student" not in kinds or "teacher" not in kinds:
        return None
    try:
        return policy_outputs(run.models["student"][2], waves["student"], waves["teacher"], run.cfg)
    except (RuntimeError, KeyError, ValueError) as exc:
        run.log(f"  {run.run_dir.name}: policy could not be rebuilt ({exc}); gate statistics skipped")
        return None


def _gate_windows(gate: pd.DataFrame | None, windows: pd.DataFrame) -> pd.DataFrame | None:
    """The release rows of ``windows`` with the gate and weights beside them."""
    if gate is None:
        return None
    rel_idx = windows.index[windows.protocol == "release"]
    gate.index = rel_idx
    return pd.concat([windows.loc[rel_idx], gate], axis=1)


def evaluate_dataset(run: RunInputs, dataset: str, test: list[str], truth: dict | None) -> RunResult:
    """Every method of ``run`` on the test sessions ``test`` of ``dataset``, both protocols."""
    cfg = run.cfg
    sessions = session_table(run.workdir, dataset, test, truth).set_index("session")
    root = open_store(run.workdir.store(dataset), "r")
    rel, waves, skipped, examples, traces = _release(run, dataset, test, root)
    kinds = [k for k in run.models if k not in skipped]
    gate = _policy_gate(run, kinds, waves)
    ep = _equipleth(run, kinds, dataset, test, traces, sessions, skipped)
    windows = pd.concat([rel, ep], ignore_index=True)
    _annotate(windows, sessions, cfg.frames, cfg.fs, run.run_dir.name)
    methods = [*kinds, *(m for m in CLASSICAL if m not in skipped)]
    examples["skin_roi_share"] = {s: float(skin_roi(root[s][STORE_VIDEO][:64]).mean()) for s in test}
    return RunResult(
        name=run.run_dir.name,
        config=run.config,
        dataset=dataset,
        frames=cfg.frames,
        methods=methods,
        windows=windows,
        metrics=_metrics(windows, methods),
        gate=_gate_windows(gate, windows),
        log_steps=read_log_steps(run.run_dir),
        examples=examples,
        missing=[k for k in NEURAL if k not in kinds],
        skipped=skipped,
    )
