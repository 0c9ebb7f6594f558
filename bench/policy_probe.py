"""Does the spectral policy's input separate clean training windows from radar-shifted ones? (issue #18)

For a trained rpm-distill run, every training window (the run's frames and stride, as ``rpm train`` cuts
them) is scored twice: aligned, and with its radar window shifted ``--shift`` video frames later (the
sync-shift corruption of ``pipeline.split.SyncShifts`` with probability 1; windows where the shifted
radar would run past the session's end are left out). The student sees the same video both times, so any
difference comes from the frozen teacher's waveform on the shifted radar. Per window:

* the relation map the policy reads (``train.losses.relation_map`` of the student's and the teacher's
  ``spectral_features``: channels [l_s, l_t, |l_s - l_t|] over the F band bins);
* two scalar summaries of it: the mean of the |l_s - l_t| channel, and the Pearson correlation of l_s
  and l_t over the band;
* the gate g and weights alpha of the run's saved policy (``student.pt``) on that map.

Separability, clean (0) against shifted (1): the rank AUC (Mann-Whitney; 0.5 = none, 1 or 0 = full) and
Cohen's d (difference of means over the pooled sd) of each scalar, and a leave-one-subject-out AUC of a
nearest-class-mean classifier on the whole flattened map (:func:`centroid_auc`, numpy only). Writes
bench/results/policy_probe.json.

    .venv/bin/python bench/policy_probe.py -w /tmp/demo --run demo --max-windows 96
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rank_auc(neg: np.ndarray, pos: np.ndarray) -> float:
    """P(pos > neg) + 0.5 P(pos == neg) over all pairs (the Mann-Whitney AUC)."""
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def cohen_d(neg: np.ndarray, pos: np.ndarray) -> float:
    pooled = np.sqrt((neg.var(ddof=1) + pos.var(ddof=1)) / 2)
    return float((pos.mean() - neg.mean()) / pooled) if pooled > 0 else float("nan")


def centroid_auc(x: np.ndarray, label: np.ndarray, groups: np.ndarray) -> float:
    """Leave-one-subject-out AUC of a nearest-class-mean classifier on standardised features (B, D).

    For each held-out subject: standardise with the other subjects' mean and sd, score each held-out
    window by (distance to the clean mean - distance to the shifted mean); the AUC is over all scores.
    """
    scores = np.zeros(len(label))
    for g in sorted(set(groups)):
        test, fit = groups == g, groups != g
        mu, sd = x[fit].mean(0), x[fit].std(0) + 1e-8
        z = (x - mu) / sd
        c0, c1 = z[fit & (label == 0)].mean(0), z[fit & (label == 1)].mean(0)
        scores[test] = np.linalg.norm(z[test] - c0, axis=1) - np.linalg.norm(z[test] - c1, axis=1)
    return rank_auc(scores[label == 0], scores[label == 1])


def probe(workdir: Path, run: str, shift: int, max_windows: int, batch: int) -> dict:
    import pandas as pd
    import torch

    from pipeline.paths import Workdir
    from pipeline.split import SyncShifts
    from train.build import student_length
    from train.checkpoint import load_checkpoint, load_model
    from train.data import WindowDataset, video_to_input
    from train.losses import relation_map, spectral_features
    from train.models import SpectralPolicy

    wd = Workdir(Path(workdir))
    run_dir = wd.root / "runs" / run
    student, cfg, _ = load_model(run_dir / "student.pt")
    teacher, _, _ = load_model(run_dir / "teacher.pt")
    policy_state = load_checkpoint(run_dir / "student.pt").get("policy")
    policy = None
    if policy_state:
        policy = SpectralPolicy()
        policy.load_state_dict(policy_state)
        policy.eval()
    splits = pd.read_csv(wd.splits_manifest, dtype=str)
    sessions = splits.loc[(splits.split == "train") & (splits.dataset == cfg.dataset), "session"].tolist()
    store = wd.store(cfg.dataset)
    clean = WindowDataset(store, sessions, cfg.frames, cfg.stride)
    shifted = WindowDataset(store, sessions, cfg.frames, cfg.stride, shifts=SyncShifts(cfg.seed, 1.0, shift))
    pairs = [i for i, w in enumerate(shifted.windows) if w.shift == shift]
    if len(pairs) > max_windows:  # evenly spaced, deterministic
        pairs = [pairs[int(k)] for k in np.linspace(0, len(pairs) - 1, max_windows)]
    length = student_length(cfg)
    rows: dict[str, list] = {"label": [], "subject": [], "map": [], "mean_absdiff": [], "corr": []}
    rows |= {"gate": [], "alpha_peak": [], "alpha_background": [], "alpha_morphology": []}
    with torch.no_grad():
        for b0 in range(0, len(pairs), batch):
            idx = pairs[b0 : b0 + batch]
            items = {0: [clean[i] for i in idx], 1: [shifted[i] for i in idx]}
            video = torch.stack([it["video"] for it in items[0]])
            pred = student(video_to_input(video, cfg.student_size, torch.device("cpu")))[:, :length]
            fs_s = spectral_features(pred.float(), fs=cfg.fs)
            for label, its in items.items():
                wave = teacher(torch.stack([it["rf"] for it in its]))[:, :length]
                rel = relation_map(fs_s, spectral_features(wave.float(), fs=cfg.fs))  # (B, 3, F)
                ls, lt = rel[:, 0], rel[:, 1]
                corr = ((ls - ls.mean(1, keepdim=True)) * (lt - lt.mean(1, keepdim=True))).mean(1) / (
                    ls.std(1, unbiased=False) * lt.std(1, unbiased=False)
                ).clamp_min(1e-12)
                rows["label"] += [label] * len(its)
                rows["subject"] += [clean.windows[i].subject for i in idx]
                rows["map"] += list(rel.flatten(1).numpy())
                rows["mean_absdiff"] += rel[:, 2].mean(1).tolist()
                rows["corr"] += corr.tolist()
                if policy is not None:
                    g, a = policy(rel)
                    rows["gate"] += g.tolist()
                    for k, name in enumerate(("peak", "background", "morphology")):
                        rows[f"alpha_{name}"] += a[:, k].tolist()
    label = np.array(rows["label"])
    out: dict = {
        "run": str(run_dir),
        "shift_frames": shift,
        "windows": int(len(pairs)),
        "frames": cfg.frames,
        "stride": cfg.stride,
    }
    scalars = ["mean_absdiff", "corr"]
    if policy is not None:
        scalars += ["gate", "alpha_peak", "alpha_background", "alpha_morphology"]
    for key in scalars:
        v = np.array(rows[key])
        neg, pos = v[label == 0], v[label == 1]
        out[key] = {
            "clean_mean": float(neg.mean()),
            "shifted_mean": float(pos.mean()),
            "clean_sd": float(neg.std(ddof=1)),
            "shifted_sd": float(pos.std(ddof=1)),
            "auc_shifted_higher": rank_auc(neg, pos),
            "cohen_d": cohen_d(neg, pos),
        }
    x, groups = np.stack(rows["map"]), np.array(rows["subject"])
    out["map_centroid_auc_loso"] = centroid_auc(x, label, groups)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-w", "--workdir", type=Path, required=True)
    ap.add_argument("--run", required=True, help="run name under <workdir>/runs (rpm-distill, with a policy)")
    ap.add_argument("--shift", type=int, default=30, help="radar shift in video frames")
    ap.add_argument("--max-windows", type=int, default=96, help="training windows probed (evenly spaced)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "policy_probe.json")
    args = ap.parse_args()
    import torch

    torch.manual_seed(0)
    t0 = time.time()
    result = probe(args.workdir, args.run, args.shift, args.max_windows, args.batch)
    result["command"] = "python bench/policy_probe.py " + " ".join(sys.argv[1:])
    result["seconds"] = round(time.time() - t0, 1)
    result["date"] = time.strftime("%Y-%m-%d %H:%M")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
