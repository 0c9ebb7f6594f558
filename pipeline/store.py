"""Zarr v3 session store: one group per session, one writer per session.

Layout of ``data/<dataset>.zarr`` (one group per session, e.g. ``v_3_1/`` or ``AFH1_AS/``):

=========  ===============================  =======  ==========================================
array      shape                            dtype    meaning
=========  ===============================  =======  ==========================================
video      (T, 128, 128, 3)                 uint8    RGB face crops, frame t at ``fps`` (30 Hz)
bvp        (T,)                             float32  PPG/BVP aligned to video frame t (raw units)
radar      (T_rf, 2, bins)                  float32  [I, Q] of range bins at ``radar_fps``;
                                                     radar frame j <-> time j / radar_fps on the
                                                     video clock (EquiPleth: T_rf = 4 T, 5 bins
                                                     r-2..r+2 at 120 Hz, scaled by 1/1.255e5;
                                                     PhysDrive: 8 range bins at 20 Hz)
radar_ok   (T_rf,)                          bool     False where a radar frame was lost/not
                                                     covered (stored as zeros or interpolated)
=========  ===============================  =======  ==========================================

``video`` is chunked 32 frames in time and stored as one shard per session (one file), so a
random training window is a handful of chunk reads. Group attributes: ``fps``, ``radar_fps``,
``radar_bin``, ``radar_channel`` (index of the chosen bin on the ``bins`` axis), ``subject``,
``trial``, ``skin_type``, ``dataset``, ``conditions``, ``params`` (what produced the group),
``manifest_row`` and ``complete``. ``complete`` is set only after every array is written: a
missing shard reads back as zeros in zarr, so readers must check it, and a rerun redoes any group
without it.

The store may be a local path or any fsspec URL zarr accepts (``s3://bucket/x.zarr``,
``memory://x``); ``file://`` URLs are treated as local paths.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import zarr
import zarr.errors
from zarr.codecs import BloscCodec

VIDEO_CHUNK_FRAMES = 32
CROP_SIZE = 128
# lz4 level 1: half the write time of level 5 on video, reads as fast (byte-shuffle does nothing for uint8)
_COMPRESSOR = BloscCodec(cname="lz4", clevel=1, shuffle="noshuffle")


class StoreError(RuntimeError):
    pass


def local_path(path: str | Path) -> Path | None:
    """The local filesystem path of a store location, or None for a remote fsspec URL."""
    text = str(path)
    if text.startswith("file://"):
        return Path(text[len("file://") :])
    if "://" in text:
        return None
    return Path(text)


def store_exists(path: str | Path) -> bool:
    local = local_path(path)
    if local is not None:
        return local.exists()
    try:
        zarr.open_group(str(path), mode="r", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return False
    return True


def open_store(path: str | Path, mode: str = "a") -> zarr.Group:
    local = local_path(path)
    if mode == "r" and not store_exists(path):
        raise StoreError(f"{path}: no such store; run `rpm preprocess` first")
    target = str(local) if local is not None else str(path)
    return zarr.open_group(target, mode=mode, zarr_format=3)


def is_complete(root: zarr.Group, group_name: str) -> bool:
    try:
        return bool(root[group_name].attrs.get("complete", False))
    except KeyError:
        return False


def check_group_name(group_name: str) -> str:
    """A session group is one plain path segment: never empty, ``.``/``..``, absolute or nested."""
    name = str(group_name)
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise StoreError(f"{name!r}: not a valid session group name (one plain path segment)")
    return name


def remove_group(store_path: str | Path, group_name: str) -> None:
    """Delete a (partial) session group, including zarr's leftover ``*.partial`` temp files."""
    check_group_name(group_name)  # never rmtree outside the store
    local = local_path(store_path)
    if local is not None:
        target = local / group_name
        if target.exists():
            shutil.rmtree(target)
        return
    root = open_store(store_path, mode="a")
    if group_name in root:
        del root[group_name]


def write_session(
    store_path: str | Path,
    group_name: str,
    video: np.ndarray,
    bvp: np.ndarray,
    radar: np.ndarray,
    radar_ok: np.ndarray,
    attrs: dict,
) -> None:
    """Write one session group, then mark it complete. Any earlier partial group is replaced."""
    check_group_name(group_name)
    t = video.shape[0]
    if bvp.shape != (t,) or radar.shape[0] != radar_ok.shape[0]:
        raise StoreError(
            f"{group_name}: inconsistent lengths video {video.shape}, bvp {bvp.shape}, "
            f"radar {radar.shape}, radar_ok {radar_ok.shape}"
        )
    remove_group(store_path, group_name)
    root = open_store(store_path, mode="a")
    g = root.create_group(group_name)
    shard_frames = int(np.ceil(t / VIDEO_CHUNK_FRAMES) * VIDEO_CHUNK_FRAMES)
    v = g.create_array(
        "video",
        shape=video.shape,
        dtype="uint8",
        chunks=(VIDEO_CHUNK_FRAMES, *video.shape[1:]),
        shards=(shard_frames, *video.shape[1:]),
        compressors=[_COMPRESSOR],
    )
    v[...] = video
    b = g.create_array("bvp", shape=bvp.shape, dtype="float32", chunks=bvp.shape)
    b[...] = bvp.astype(np.float32)
    r = g.create_array("radar", shape=radar.shape, dtype="float32", chunks=radar.shape)
    r[...] = radar.astype(np.float32)
    ok = g.create_array("radar_ok", shape=radar_ok.shape, dtype="bool", chunks=radar_ok.shape)
    ok[...] = radar_ok
    g.attrs.update({**attrs, "complete": False})
    # The completion marker goes last, after every array is on disk.
    g.attrs["complete"] = True
