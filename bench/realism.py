"""Calibration of the synthetic world against the published unsupervised baselines (issue 16).

One command::

    python bench/realism.py            # default size (below), several seeds, both layouts
    python bench/realism.py --small    # a quick check (minutes, large seed noise)

For every seed and layout it runs the real pipeline as a user would (``rpm synth`` then ``rpm
preprocess``, MTCNN face crops for PhysDrive) in a scratch work directory, then evaluates POS and
CHROM (:mod:`train.classical`, one skin ROI per session as the report does) and the FFT radar
baseline (:mod:`train.radar_fft`) on every 256-frame window at stride 30 of every session, with the
report's HR estimator (:func:`train.evaluate.hr_batch`, 45-180 bpm) against the HR of the stored
label window. Metrics per method x layout, and MAE per condition (skin group, illumination,
motion / talking), are written to ``bench/results/realism.json`` and ``bench/results/realism.md``
next to the published figures (RPM-Distill paper Tables 1 and 2). The spread over seeds (sample
std of the per-seed MAE) is reported so the reader can see how much of a gap is seed noise.

Conditions come from the truth sidecar ``synth_truth.json`` (the bench is for synthetic data only).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.spectrum import hr_batch, zscore  # noqa: E402
from train.classical import METHODS, rgb_trace  # noqa: E402
from train.evaluate import hr_metrics, skin_group  # noqa: E402
from train.radar_fft import radar_fft_hr_windows  # noqa: E402

WINDOW, STRIDE, FS = 256, 30, 30.0
SIZES = {  # per seed
    "small": {
        "equipleth": dict(subjects=6, trials=2, seconds=30),
        "physdrive": dict(subjects=4, sessions=2, seconds=30),
    },
    "default": {
        "equipleth": dict(subjects=24, trials=2, seconds=30),
        "physdrive": dict(subjects=8, sessions=6, seconds=30),
    },
}
# RPM-Distill paper, Table 1 (unsupervised rows: MAE / RMSE / r per window) and Table 2
# (FactorizePhys per condition on PhysDrive, MAE).
PUBLISHED = {
    "equipleth": {
        "POS": {"MAE": 4.64, "RMSE": 15.07, "r": 0.68},
        "CHROM": {"MAE": 7.31, "RMSE": 17.42, "r": 0.54},
        "FFT radar": {"MAE": 12.82, "RMSE": 15.53, "r": 0.32},
    },
    "physdrive": {
        "POS": {"MAE": 17.38, "RMSE": 24.38, "r": 0.20},
        "CHROM": {"MAE": 16.72, "RMSE": 23.97, "r": 0.19},
        "FFT radar": {"MAE": 20.60, "RMSE": 24.29, "r": 0.10},
        "FactorizePhys (supervised, Table 2)": {
            "noon": 13.3,
            "night": 20.5,
            "stationary": 13.6,
            "talking": 18.3,
        },
    },
}
METHOD_NAMES = ("POS", "CHROM", "FFT radar")


def _rpm(*args: str, workdir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-c", "from cli import app; app()", *args, "--workdir", str(workdir)]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)


def build(layout: str, seed: int, dims: dict, scratch: Path, difficulty: str | None) -> Path:
    """Synthesise and preprocess one seed of ``layout`` under ``scratch``; returns the work dir."""
    wd = scratch / f"{layout}_s{seed}"
    args = ["synth", layout, "--seed", str(seed)]
    for k, v in dims.items():
        args += [f"--{k}", str(v)]
    if difficulty:
        args += ["--difficulty", difficulty]
    if not (wd / "data" / f"{layout}.zarr").exists():
        _rpm(*args, workdir=wd)
        _rpm("preprocess", layout, workdir=wd)
    return wd


def _conditions(layout: str, truth: dict, session: str) -> dict:
    if layout == "equipleth":
        t = truth["trials"][session]
        c = t["conditions"]
        motion = "talking" if c["talking"] else ("stationary" if c["motion"] == "stationary" else "moving")
        return {"skin_type": t["skin_type"], "illumination": c["illumination"], "motion": motion}
    subj, sess = session.split("_")
    t = truth["sessions"][f"{subj}/{sess}"]
    c = t["conditions"]
    return {
        "skin_type": t["skin_type"],
        "illumination": c["illumination"],
        "motion": "talking" if c["talking"] else "stationary",
    }


def evaluate_store(layout: str, wd: Path) -> list[dict]:
    """One row per (session, window): true HR, POS / CHROM / FFT radar HR and the conditions."""
    import zarr

    truth = json.loads((wd / "data" / "raw" / layout / "synth_truth.json").read_text())
    root = zarr.open_group(str(wd / "data" / f"{layout}.zarr"), mode="r")
    rows = []
    for session in sorted(root.group_keys()):
        g = root[session]
        if not g.attrs.get("complete"):
            continue
        video, bvp = g["video"], np.asarray(g["bvp"][...], dtype=np.float64)
        n = min(video.shape[0], bvp.size)
        starts = list(range(0, n - WINDOW + 1, STRIDE))
        if not starts:
            continue
        trace = rgb_trace(video[...])  # one skin ROI per session, as the report does
        T = WINDOW - 1  # the report scores T - 1 samples per window
        gt = hr_batch(np.stack([zscore(bvp[s : s + T]) for s in starts]), fs=FS)
        est = {
            m: hr_batch(np.stack([METHODS[m](trace[s : s + WINDOW], FS)[:T] for s in starts]), fs=FS)
            for m in ("POS", "CHROM")
        }
        radar = np.asarray(g["radar"][...])
        ok = np.asarray(g["radar_ok"][...])
        est["FFT radar"] = radar_fft_hr_windows(
            radar, ok, int(g.attrs["radar_channel"]), float(g.attrs["radar_fps"]), starts, WINDOW, FS
        )
        cond = _conditions(layout, truth, session)
        for i, s in enumerate(starts):
            rows.append(
                {
                    "session": session,
                    "start": s,
                    "hr_true": float(gt[i]),
                    **{m: float(est[m][i]) for m in est},
                    **cond,
                }
            )
    return rows


def _metrics(rows: list[dict], method: str) -> dict:
    est = np.array([r[method] for r in rows], dtype=np.float64)
    gt = np.array([r["hr_true"] for r in rows], dtype=np.float64)
    keep = np.isfinite(est)
    if not keep.any():
        return {"n": 0}
    m = hr_metrics(est[keep], gt[keep])
    m["median_AE"] = float(np.median(np.abs(est[keep] - gt[keep])))
    return {k: m[k] for k in ("MAE", "RMSE", "r", "median_AE", "n")}


def summarise(per_seed: dict[int, list[dict]]) -> dict:
    """Pooled metrics, per-seed MAE spread and per-condition MAE for one layout."""
    pooled = [r for rows in per_seed.values() for r in rows]
    out = {"windows": len(pooled), "seeds": sorted(per_seed), "methods": {}}
    for m in METHOD_NAMES:
        res = _metrics(pooled, m)
        maes = [_metrics(rows, m).get("MAE", math.nan) for rows in per_seed.values()]
        res["MAE_seed_std"] = float(np.std(maes, ddof=1)) if len(maes) > 1 else math.nan
        res["MAE_per_seed"] = maes
        by = {}
        for key, groups in (
            ("skin", lambda r: skin_group(r["skin_type"])),
            ("illumination", lambda r: r["illumination"]),
            ("motion", lambda r: r["motion"]),
        ):
            vals = sorted({groups(r) for r in pooled})
            by[key] = {v: _metrics([r for r in pooled if groups(r) == v], m) for v in vals}
        res["by_condition"] = by
        out["methods"][m] = res
    return out


def _f(x, d: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{d}f}"


def markdown(results: dict) -> str:
    lines = [
        "# Synthetic world vs published unsupervised baselines",
        "",
        f"Per 256-frame window at stride 30, report HR estimator (45-180 bpm). Size per seed: "
        f"{json.dumps(results['size'])}; seeds {results['seeds']}.",
        "",
        "| layout | method | synthetic MAE / RMSE / r (median AE) | seed std of MAE "
        "| published MAE / RMSE / r |",
        "|---|---|---|---|---|",
    ]
    for layout, res in results["layouts"].items():
        for m in METHOD_NAMES:
            s, p = res["methods"][m], PUBLISHED[layout][m]
            lines.append(
                f"| {layout} | {m} | {_f(s.get('MAE'))} / {_f(s.get('RMSE'))} / {_f(s.get('r'))} "
                f"({_f(s.get('median_AE'))}) | {_f(s.get('MAE_seed_std'))} | "
                f"{p['MAE']} / {p['RMSE']} / {p.get('r', '–')} |"
            )
    lines += ["", "MAE by condition (windows in brackets):", ""]
    for layout, res in results["layouts"].items():
        for m in METHOD_NAMES:
            parts = []
            for key, vals in res["methods"][m]["by_condition"].items():
                parts.append(
                    f"{key}: "
                    + ", ".join(f"{v} {_f(x.get('MAE'))} ({x.get('n', 0)})" for v, x in vals.items())
                )
            lines.append(f"- {layout} {m}: " + "; ".join(parts))
    fp = PUBLISHED["physdrive"]["FactorizePhys (supervised, Table 2)"]
    lines += [
        "",
        "Published per-condition figures on PhysDrive (FactorizePhys, supervised, Table 2): "
        + ", ".join(f"{k} {v}" for k, v in fp.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="quick check: one seed, small datasets")
    ap.add_argument("--seeds", type=int, nargs="+", help="seeds (default: 101 102, --small: 101)")
    ap.add_argument("--layouts", nargs="+", default=["equipleth", "physdrive"])
    ap.add_argument("--scratch", type=Path, default=ROOT / "bench" / "scratch" / "realism")
    ap.add_argument("--difficulty", default=None, help="pass --difficulty to rpm synth")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    a = ap.parse_args()
    size = "small" if a.small else "default"
    seeds = a.seeds or ([101] if a.small else [101, 102])
    results = {
        "size": {k: SIZES[size][k] for k in a.layouts},
        "seeds": seeds,
        "layouts": {},
        "published": PUBLISHED,
        "window": WINDOW,
        "stride": STRIDE,
    }
    t0 = time.time()
    for layout in a.layouts:
        per_seed = {}
        for seed in seeds:
            wd = build(layout, seed, SIZES[size][layout], a.scratch / size, a.difficulty)
            per_seed[seed] = evaluate_store(layout, wd)
            print(
                f"{layout} seed {seed}: {len(per_seed[seed])} windows ({time.time() - t0:.0f} s)", flush=True
            )
        results["layouts"][layout] = summarise(per_seed)
    results["seconds"] = round(time.time() - t0, 1)
    a.out.mkdir(parents=True, exist_ok=True)
    stem = "realism_small" if a.small else "realism"
    (a.out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    (a.out / f"{stem}.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
