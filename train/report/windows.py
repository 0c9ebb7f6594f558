"""Cutting test sessions into windows and running a method over them.

The two cuts the report makes (:func:`release_windows`, :func:`session_clips`) are here and nowhere
else, so the windows it scores can be made to agree with training's in one place.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from train.build import stage_forward
from train.data import WindowDataset
from train.report.methods import BY_KEY


def release_windows(store, sessions: list[str], frames: int, stride: int) -> WindowDataset:
    """The ``release`` protocol's test windows: ``frames`` long at ``stride`` over each session."""
    return WindowDataset(store, sessions, frames, stride)


def session_clips(store, session: str, frames: int) -> WindowDataset:
    """Consecutive clips tiling a session (stride T - 1) plus one flush with its end (whole-video)."""
    return WindowDataset(store, [session], frames, frames - 1, flush=True)


@torch.no_grad()
def predict_windows(kind: str, model, cfg, ds: WindowDataset, device) -> np.ndarray:
    """(N, T - 1) waveforms of trained method ``kind`` for every window of ``ds`` (T = ``cfg.frames``)."""
    out = []
    for batch in DataLoader(ds, batch_size=cfg.batch_size, shuffle=False):
        # radar rows read the radar; a fusion model (uses_radar_at_test) reads video and radar
        radar = BY_KEY[kind].modality == "rf"
        wave = stage_forward(model, batch, cfg, device, radar)[:, : cfg.frames - 1]
        out.append(wave.float().cpu().numpy())
    return np.concatenate(out)
