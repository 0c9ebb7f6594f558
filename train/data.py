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
import math
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


# Frames per chunk of the CPU area resize are chosen so that one chunk's float frames fit in this many bytes
# (3 MiB: 16 frames at 128 px): the chunk's float copy, its row sums and the output stay in the last-level
# cache between the three steps instead of travelling to main memory and back (issue 15).
_RESIZE_CHUNK_BYTES = 3 << 20

# The exact resize is used where the window pattern repeats every at most this many output pixels (16 -> 9
# at 128 -> 72 px, 4 -> 3 at 96 -> 72 px); a longer period makes the block matrices mostly zeros.
_AREA_MAX_PERIOD = 16


def area_windows(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """The area resize's pixel windows along one axis: output pixel i averages input pixels
    [start[i], end[i]), with start = floor(i * n_in / n_out) and end = ceil((i + 1) * n_in / n_out), the
    windows of ``F.interpolate(mode="area")`` (adaptive average pooling). Two int64 arrays of length n_out."""
    i = np.arange(n_out, dtype=np.int64)
    return (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)


def _area_block(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """One period of the area windows as a 0/1 matrix and the window lengths, or None if the period is
    longer than :data:`_AREA_MAX_PERIOD`.

    The windows repeat every n_in / g input and n_out / g output pixels (g = gcd(n_in, n_out)), and no
    window crosses a period's edge, so the resize along this axis is one (n_out / g, n_in / g) 0/1 matrix
    applied to each period. Returns (that matrix, float32; window lengths (n_out,), float32).
    """
    g = math.gcd(n_in, n_out)
    period_in, period_out = n_in // g, n_out // g
    if period_out > _AREA_MAX_PERIOD:
        return None
    start, end = area_windows(n_in, n_out)
    block = torch.zeros(period_out, period_in)
    for i in range(period_out):
        block[i, start[i] : end[i]] = 1.0
    return block, torch.from_numpy(end - start).float()


def _exact_area_resize(video: torch.Tensor, size: int, out: torch.Tensor) -> bool:
    """Area resize of (N, H, W, C) uint8 frames into ``out`` (N, size, size, C) float32 as x / 255, on CPU;
    False (``out`` untouched) where the window pattern's period is too long.

    Each value is the exact window mean rounded once: the 0/1 block matrices sum integer pixel values, and
    every partial sum (at most 255 * 9 at 128 -> 72 px) is an integer that float32 holds exactly, whatever
    order the matrix product adds in; the one division by 255 * kh * kw then rounds correctly. The frames
    go a cache-sized chunk at a time (:data:`_RESIZE_CHUNK_BYTES`): uint8 -> float, the row windows (a
    batched product over each period of rows), the column windows (one product with the block matrix
    repeated per colour, kron(block^T, I_C)), the division.
    """
    n, h, w, c = video.shape
    rows, cols = _area_block(h, size), _area_block(w, size)
    if rows is None or cols is None:
        return False
    row_block, row_len = rows
    col_block, col_len = cols
    # kron(col_block^T, I_C): row (input pixel i, colour a), column (output pixel o, colour a)
    col_matrix = (col_block.T[:, None, :, None] * torch.eye(c)[None, :, None, :]).reshape(
        col_block.shape[1] * c, col_block.shape[0] * c
    )
    divisor = (255.0 * row_len[:, None] * col_len[None, :])[:, :, None]  # (size, size, 1)
    row_in = row_block.shape[1]
    col_in = col_block.shape[1] * c
    chunk = max(1, _RESIZE_CHUNK_BYTES // (h * w * c * 4))
    buf = torch.empty(min(chunk, n), h, w, c)
    for lo in range(0, n, chunk):
        frames = video[lo : lo + chunk]
        k = frames.shape[0]
        x = buf[:k]
        x.copy_(frames)  # uint8 -> float, exact
        row_sums = torch.matmul(row_block, x.view(k * h // row_in, row_in, w * c))  # (k * periods, out, W*C)
        sums = torch.mm(row_sums.view(-1, col_in), col_matrix)  # (k * size * W / period, out * C)
        torch.div(sums.view(k, size, size, c), divisor, out=out[lo : lo + k])
    return True


def _fp32_matmul_is_ieee() -> bool:
    """Whether CPU float32 matrix products run in float32 (a user may allow bf16 or tf32 inside them, which
    would round the resize's integer sums)."""
    if torch.get_float32_matmul_precision() != "highest":
        return False
    mkldnn_matmul = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    return getattr(mkldnn_matmul, "fp32_precision", "none") in ("none", "ieee")


def video_to_input(
    video: torch.Tensor, size: int, device: torch.device, channels_last: bool = False
) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, 3, T, size, size) float in [0, 1] on ``device`` (area resize).

    On CPU the frames are resized in their own (T, H, W, C) memory order by :func:`_exact_area_resize`:
    every value is the window mean of x / 255 rounded once (the float64 area mean rounded to float32),
    about 1.7x faster than pooling (21 against 36 ms for T 128 x B 4, 128 -> 72 px) and without the two
    transposed copies the pooling kernel needed to see wide vectors (issue 15). Where that does not apply
    (a window period over :data:`_AREA_MAX_PERIOD`, or float32 products allowed to round internally) and
    on other devices, ``F.interpolate(mode="area")`` on x / 255, within 3 ulps of 0.5 of the exact mean.
    ``channels_last``: return the tensor in ``torch.channels_last_3d`` memory format (what a channels-last
    student wants), else contiguous; the values are the same either way.
    """
    b, t, h, w, c = video.shape
    video = video.to(device, non_blocking=True)
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    if (h, w) != (size, size) and device.type == "cpu" and _fp32_matmul_is_ieee():
        out = torch.empty(b, t, size, size, c)
        if _exact_area_resize(video.reshape(b * t, h, w, c), size, out.view(b * t, size, size, c)):
            return out.permute(0, 4, 1, 2, 3).contiguous(memory_format=fmt)  # (B, C, T, S, S)
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
