"""Training windows streamed from the Zarr session store.

A window of ``frames`` video frames starting at frame s yields

* ``video``: (T, 128, 128, 3) uint8, one contiguous slab read from the sharded store;
* ``bvp``:   (T,) float32 PPG, z-scored within the window (Pearson, SNR and HR are scale-free);
* ``rf``:    (10, T) float32 teacher input: radar frames 4s, 4s+4, ... (120 Hz -> 30 Hz by taking
  every 4th frame, as the reference does), laid out [I of bins r-2..r+2, Q of bins r-2..r+2];
* ``labeled``: whether the window's subject is in the labelled subset;
* ``index``: position in the dataset's window list (for reports).

Windows are cut by :func:`pipeline.split.session_windows`, the function ``rpm split`` lists
``clips.csv`` with: over the same sessions with the same ``frames``, ``stride`` and sync-shift schedule
(:class:`pipeline.split.SyncShifts`, passed for training windows only) a :class:`WindowDataset` holds
exactly the table's windows, shifts included, and for any other window length the same
(session, start) gets the same shift. A shifted window's radar window starts ``shift`` video frames
later and is resampled to the video rate by taking the radar frame nearest each video frame time
(every 4th at 120 Hz, as above); the stored data are never shifted.
:meth:`WindowDataset.from_clips` reads the windows of a clips table instead (for inspection and
tests; ``rpm train`` cuts its own).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from pipeline.spectrum import zscore
from pipeline.split import SyncShifts, session_windows
from pipeline.store import open_store, session_group

RADAR_PER_FRAME = 4


@dataclass(frozen=True)
class Window:
    session: str
    subject: str
    start: int
    skin_type: int
    shift: int = 0  # radar window shifted forward by this many video frames (sync-shift injection)
    labeled: bool | None = None  # from the clips manifest; None: decided by labeled_subjects


class WindowDataset(Dataset):
    """Windows over the given sessions; the store is opened lazily in each worker process.

    Each session (sorted by name) gives the windows of :func:`pipeline.split.session_windows`
    (``frames`` long at ``stride``; with ``flush``, plus one window flush with the session's end; with
    ``shifts``, the split's sync shifts: pass them for training windows only).
    """

    def __init__(
        self,
        store_path,
        sessions: list[str],
        frames: int,
        stride: int,
        labeled_subjects: set[str] | None = None,
        flush: bool = False,
        shifts: SyncShifts | None = None,
    ):
        self.store_path = str(store_path)
        self.frames = frames
        root = open_store(self.store_path, "r")
        self.windows: list[Window] = []
        for session in sorted(sessions):
            g = session_group(root, self.store_path, session)
            n = g["video"].shape[0]
            subject, skin = str(g.attrs["subject"]), int(g.attrs.get("skin_type", -1))
            for s, shift in session_windows(n, frames, stride, shifts, session, flush):
                self.windows.append(Window(session, subject, s, skin, shift))
        self.labeled_subjects = labeled_subjects
        self._root = None
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def from_clips(
        cls,
        store_path,
        clips,
        split: str,
        dataset: str | None = None,
        labeled_subjects: set[str] | None = None,
    ) -> WindowDataset:
        """Windows of ``split`` from a clips table (DataFrame or path to clips.csv), shifts included.

        Labels follow the table's ``labeled`` column, or with ``labeled_subjects`` that set instead.
        """
        import pandas as pd

        if not isinstance(clips, pd.DataFrame):
            clips = pd.read_csv(clips, dtype={"subject": str, "session": str}, keep_default_na=False)
        clips = clips[clips.split == split]
        if dataset is not None:
            clips = clips[clips.dataset == dataset]
        if clips.frames.nunique() > 1:
            raise ValueError(f"clips of {split} have mixed lengths {sorted(clips.frames.unique())}")
        frames = int(clips.frames.iloc[0]) if len(clips) else 1
        self = cls(store_path, [], frames, frames, labeled_subjects=labeled_subjects)
        root = open_store(self.store_path, "r")
        skin: dict[str, int] = {}
        for c in clips.itertuples():
            if c.session not in skin:
                g = session_group(root, self.store_path, c.session)
                skin[c.session] = int(g.attrs.get("skin_type", -1))
            if labeled_subjects is not None:
                labeled = None  # decided by labeled_subjects
            else:
                labeled = c.labeled if isinstance(c.labeled, bool) else str(c.labeled).lower() == "true"
            self.windows.append(
                Window(c.session, str(c.subject), int(c.start), skin[c.session], int(c.shift_frames), labeled)
            )
        return self

    def __len__(self) -> int:
        return len(self.windows)

    def _rates(self, session: str, g) -> float:
        """Radar frames per video frame of ``session`` (4.0 for EquiPleth)."""
        rates = self.__dict__.setdefault("_rate_cache", {})
        if session not in rates:
            rates[session] = float(g.attrs.get("radar_fps", 120.0)) / float(g.attrs.get("fps", 30.0))
        return rates[session]

    def _session(self, session: str):
        if self._root is None:
            self._root = open_store(self.store_path, "r")
        if session not in self._cache:  # bvp and radar are small: keep them in memory
            g = self._root[session]
            self._cache[session] = (g["bvp"][...], g["radar"][...])
        return self._root[session], *self._cache[session]

    def __getitem__(self, i: int) -> dict:
        w = self.windows[i]
        g, bvp, radar = self._session(w.session)
        s, t = w.start, self.frames
        video = g["video"][s : s + t]
        label = zscore(bvp[s : s + t], dtype=np.float32)
        if w.shift == 0 and self._rates(w.session, g) == RADAR_PER_FRAME:
            rf = radar[RADAR_PER_FRAME * s : RADAR_PER_FRAME * (s + t) : RADAR_PER_FRAME]  # (T, 2, 5)
        else:  # nearest radar frame to each (shifted) video frame time; clamped at the end
            idx = np.rint((s + w.shift + np.arange(t)) * self._rates(w.session, g)).astype(int)
            rf = radar[np.clip(idx, 0, radar.shape[0] - 1)]
        rf = np.ascontiguousarray(rf.transpose(1, 2, 0).reshape(-1, t))  # (2 * bins, T)
        if w.labeled is not None:
            labeled = w.labeled
        else:
            labeled = self.labeled_subjects is None or w.subject in self.labeled_subjects
        return {
            "video": torch.from_numpy(np.ascontiguousarray(video)),
            "bvp": torch.from_numpy(label),
            "rf": torch.from_numpy(rf.astype(np.float32)),
            "labeled": torch.tensor(labeled),
            "index": i,
        }


def video_to_input(
    video: torch.Tensor, size: int, device: torch.device, channels_last: bool = False
) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, 3, T, size, size) float in [0, 1] on ``device`` (area resize).

    On CPU the frames are resized as the channels of one image: a (1, B*T*3, H, W) channels-last tensor
    (one transposed uint8 copy), so the pooling kernel adds whole vectors of B*T*3 values per pixel instead
    of 3 (about 2x faster at B*T = 512, 128 -> 72 px). The window sums are the same; the kernel's vector
    path divides them by kh*kw at once where its scalar path divides by kh, then by kw, so a 3x3 window's
    mean can differ by 1 ulp from the per-frame resize (issue 15). On other devices the frames are resized
    in their own (T, H, W, C) layout. ``channels_last``: return the tensor in ``torch.channels_last_3d``
    memory format (what a channels-last student wants), else contiguous.
    """
    b, t, h, w, c = video.shape
    video = video.to(device, non_blocking=True)
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    if (h, w) != (size, size) and device.type == "cpu":
        frames = video.permute(2, 3, 0, 1, 4).reshape(1, h, w, b * t * c).permute(0, 3, 1, 2)
        x = torch.nn.functional.interpolate(frames.float().div_(255.0), size=(size, size), mode="area")
        x = x.permute(0, 2, 3, 1).reshape(size, size, b, t, c).permute(2, 4, 3, 0, 1)  # (B, C, T, S, S)
        return x.contiguous(memory_format=fmt)
    frames = video.reshape(b * t, h, w, c).permute(0, 3, 1, 2)  # NCHW view
    x = frames.float().div_(255.0)  # keeps the (N, H, W, C) memory order
    if (h, w) != (size, size):
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
    x = x.permute(0, 2, 3, 1).reshape(b, t, size, size, c).permute(0, 4, 1, 2, 3)  # (B, C, T, S, S)
    return x.contiguous(memory_format=fmt)


# ----------------------------------------------------------------------------------------------- loaders


def shuffled_loader(ds, cfg, dist, device: torch.device, seed: int) -> tuple[DataLoader, DistributedSampler]:
    """Shuffled batches of ``cfg.batch_size``; the order is a function of (seed, epoch) via
    ``sampler.set_epoch``.

    The same DistributedSampler serves one process (num_replicas 1) and DDP (each rank its share, padded
    to equal length so every rank takes the same number of steps).
    """
    sampler = DistributedSampler(
        ds, num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=seed, drop_last=False
    )
    loader = DataLoader(
        ds,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
    )
    return loader, sampler


def eval_loader(ds, cfg, dist, device: torch.device) -> DataLoader:
    """Every window once (rank r takes windows r, r + world, ...); no padding, so means are exact."""
    share = Subset(ds, list(range(dist.rank, len(ds), dist.world))) if dist.world > 1 else ds
    return DataLoader(
        share,
        batch_size=cfg.batch_size,
        shuffle=False,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
    )


def forever(loader: DataLoader, sampler: DistributedSampler, first_epoch: int) -> Iterator[dict]:
    """Endless batches, reshuffled (deterministically) at every pass."""
    for e in itertools.count(first_epoch):
        sampler.set_epoch(e)
        yield from loader
