"""A tiny paired dataset written straight into the store format, for trainer tests and benchmarks.

Each session has a sinusoidal PPG at its own heart rate, a 72x72 video whose skin patch brightens with the
PPG (plus noise), and radar I/Q whose phase follows a chest motion with breathing and a heartbeat. No PNG,
no rf.pkl: only ``pipeline.store.write_session``, so building it takes well under a second.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.paths import Workdir
from pipeline.store import write_session


def write_tiny_dataset(
    root: Path, subjects: int = 5, frames: int = 96, size: int = 72, seed: int = 0, noise: float = 2.0
) -> Workdir:
    """Subjects 1..n-2 train, n-1 val, n test; returns the working directory."""
    wd = Workdir(Path(root))
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(1, subjects + 1):
        hr = rng.uniform(55.0, 150.0)
        t = np.arange(frames) / 30.0
        phase = 2 * math.pi * hr / 60.0 * t + rng.uniform(0, 2 * math.pi)
        bvp = np.sin(phase) + 0.25 * np.sin(2 * phase + 0.7)
        video = np.empty((frames, size, size, 3), np.float32)
        video[:] = np.array([120.0, 90.0, 80.0])
        lo, hi = size // 6, size - size // 6
        video[:, lo:hi, lo:hi] = np.array([190.0, 140.0, 120.0])
        video[:, lo:hi, lo:hi, 1] += 6.0 * bvp[:, None, None]
        video += rng.normal(0.0, noise, video.shape)
        video = np.clip(video, 0, 255).astype(np.uint8)
        t_rf = np.arange(4 * frames) / 120.0
        hb = np.interp(t_rf - 0.15, t, bvp)
        chest = 0.8 * np.sin(2 * math.pi * 0.25 * t_rf) + 0.2 * hb
        radar = np.empty((4 * frames, 2, 5), np.float32)
        for b in range(5):
            amp = 1.0 - 0.15 * abs(b - 2)
            ang = chest + 0.4 * b
            radar[:, 0, b] = amp * np.cos(ang) + rng.normal(0, 0.01, len(t_rf))
            radar[:, 1, b] = amp * np.sin(ang) + rng.normal(0, 0.01, len(t_rf))
        session = f"v_{s}_1"
        write_session(
            wd.store("equipleth"),
            session,
            video,
            bvp.astype(np.float32),
            radar,
            np.ones(4 * frames, bool),
            {
                "fps": 30,
                "radar_fps": 120,
                "radar_bin": 10,
                "radar_channel": 2,
                "subject": str(s),
                "trial": 1,
                "skin_type": 3,
                "dataset": "equipleth",
                "hr_bpm": float(hr),
            },
        )
        split = "train" if s <= subjects - 2 else ("val" if s == subjects - 1 else "test")
        rows.append({"session": session, "dataset": "equipleth", "subject": str(s), "split": split})
    wd.manifests.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(wd.splits_manifest, index=False)
    meta = {"seed": seed, "sessions_manifest": str(wd.manifests / "absent.csv"), "sessions_sha256": ""}
    wd.splits_meta.write_text(json.dumps(meta))
    return wd


def write_tiny_sessions_manifest(wd: Workdir) -> Path:
    """``manifests/equipleth_sessions.csv`` for :func:`write_tiny_dataset`'s store (so ``rpm split`` runs)."""
    from pipeline.store import open_store

    root = open_store(wd.store("equipleth"), "r")
    rows = []
    for session in sorted(root.group_keys()):
        g = root[session]
        rows.append(
            {
                "session": session,
                "dataset": "equipleth",
                "subject": str(g.attrs["subject"]),
                "trial": str(g.attrs["trial"]),
                "status": "ok",
                "skin_type": int(g.attrs["skin_type"]),
                "n_frames": int(g["video"].shape[0]),
                "fps": float(g.attrs["fps"]),
                "radar_fps": float(g.attrs["radar_fps"]),
            }
        )
    path = wd.sessions_manifest("equipleth")
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def tiny_train_toml(epochs: int = 1, max_steps_per_epoch: int = 2) -> str:
    """A ``rpm train --config`` file sized for :func:`write_tiny_dataset`: a run takes seconds on CPU."""
    return f"""
preset = "cpu"
frames = 24
stride = 16
batch_size = 2
teacher_widths = [8, 16]
teacher_epochs = 1
epochs = {epochs}
max_steps_per_epoch = {max_steps_per_epoch}
meta_interval = 2
baseline = false
labeled_frac = 0.5
"""
