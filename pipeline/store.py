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

``video`` is chunked 32 frames in time and sharded 256 frames (8 chunks) per file, so a session
is a handful of files and a random training window a handful of chunk reads. A shard per whole
session would need the session's video in memory before its one write (zarr encodes a shard in one
piece); 256-frame shards let :class:`SessionWriter` stream a video of any length in bounded memory.

Group attributes: ``fps``, ``radar_fps``, ``radar_bin``, ``radar_channel`` (index of the chosen
bin on the ``bins`` axis), ``subject``, ``trial``, ``skin_type``, ``dataset``, ``conditions``,
``params`` (what produced the group), ``manifest_row`` and ``complete``. ``complete`` is set only
after every array is written: a missing shard reads back as zeros in zarr, so readers must check
it, and a rerun redoes any group without it.

The store may be a local path or any fsspec URL zarr accepts (``s3://bucket/x.zarr``,
``memory://x``); ``file://`` URLs are treated as local paths.

Ownership: rpm writes only into a store it made. The root group carries the attribute
``rpm_store = {"version": 1}`` (:data:`STORE_MARKER`), set when rpm creates the store. Before anything
is written, :func:`claim_store` accepts a path that is absent, an empty folder or a marked store, and
refuses anything else with a :class:`StoreError` naming the path, so a mistyped ``--store`` (say, a raw
dataset folder) is never touched. A store made before the marker existed is adopted (marked) when it
looks exactly like rpm's: a root group without attributes whose every entry is a session group holding
nothing but rpm's arrays (``video``, ``bvp``, ``radar``, ``radar_ok``), ``zarr.json`` and zarr's
``*.partial`` temp files. :func:`remove_group` deletes a group only inside a marked store and only if
the group holds nothing else. Remote (URL) stores are checked through zarr's own listing of groups and
arrays.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import google_crc32c
import numcodecs
import numpy as np
import zarr
import zarr.errors
from zarr.codecs import BloscCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from pipeline.errors import RpmError

VIDEO_CHUNK_FRAMES = 32
# 8 chunks (8.5 s at 30 fps, 12 MiB raw) per shard: a session is a handful of files, and the writer
# never has to assemble a whole session in memory (a shard is written in one piece)
SHARD_FRAMES = 256
CROP_SIZE = 128
# lz4 level 1: half the write time of level 5 on video, reads as fast (byte-shuffle does nothing for uint8)
_COMPRESSOR = BloscCodec(cname="lz4", clevel=1, shuffle="noshuffle")


# Root-group attribute that marks a store rpm made (see the module docstring).
STORE_MARKER = "rpm_store"
STORE_VERSION = 1
# What a session group holds: its arrays (zarr.json and zarr's ``*.partial`` temp files besides).
SESSION_ARRAYS = ("video", "bvp", "radar", "radar_ok")


class StoreError(RpmError, RuntimeError):
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


def _entries_are_rpms(names: Iterable[str], allowed: Iterable[str]) -> bool:
    """Every name is ``zarr.json``, a zarr temp file (``*.partial``) or one of ``allowed``."""
    allowed = {"zarr.json", *allowed}
    return all(n in allowed or n.endswith(".partial") for n in names)


def _local_meta(folder: Path) -> dict | None:
    """The Zarr v3 metadata (``zarr.json``) of a local node, or None if missing or not Zarr v3."""
    try:
        meta = json.loads((folder / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("zarr_format") == 3 else None


def _looks_like_session_group(attrs: dict, members: Iterable[str]) -> bool:
    """A group SessionWriter made: its attributes (none yet, or ``complete``) and only its arrays."""
    return (not attrs or "complete" in attrs) and _entries_are_rpms(members, SESSION_ARRAYS)


def _local_state(local: Path) -> str:
    if not local.exists():
        return "absent"
    if not local.is_dir():
        raise StoreError(f"{local}: is a file, not a Zarr store folder; give a new or empty folder")
    meta = _local_meta(local)
    is_group = meta is not None and meta.get("node_type") == "group"
    attrs = (meta.get("attributes") or {}) if is_group else {}
    if is_group and isinstance(attrs, dict) and STORE_MARKER in attrs:
        return "rpm"  # the common case, decided without listing the store
    entries = sorted(p.name for p in local.iterdir())
    if not entries:
        return "empty"
    if is_group:
        if not attrs and all(
            name == "zarr.json"
            or name.endswith(".partial")
            or (
                (sub := _local_meta(local / name)) is not None
                and sub.get("node_type") == "group"
                and _looks_like_session_group(
                    sub.get("attributes") or {}, [p.name for p in (local / name).iterdir()]
                )
            )
            for name in entries
        ):
            return "legacy"
    raise StoreError(
        f"{local}: exists, is not empty and is not a Zarr store made by rpm; refusing to write into it "
        "(give a new or empty folder for the store)"
    )


def _remote_state(path: str) -> str:
    try:
        root = zarr.open_group(path, mode="r", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return "absent"
    except (zarr.errors.BaseZarrError, ValueError) as exc:
        raise StoreError(f"{path}: not a Zarr group ({exc}); refusing to write into it") from exc
    if STORE_MARKER in root.attrs:
        return "rpm"
    if not dict(root.attrs) and all(
        isinstance(g, zarr.Group)
        and _looks_like_session_group(dict(g.attrs), [k for k, _ in g.members()])
        and all(isinstance(a, zarr.Array) for _, a in g.members())
        for _, g in root.members()
    ):
        return "legacy"
    raise StoreError(f"{path}: is a Zarr group not made by rpm; refusing to write into it")


def store_state(path: str | Path) -> str:
    """What is at a store location, read-only: ``absent``, ``empty`` (an empty folder), ``rpm`` (a store
    rpm made) or ``legacy`` (a store made by rpm before the marker existed, see the module docstring).
    Anything else raises :class:`StoreError` naming the path."""
    local = local_path(path)
    if local is not None:
        return _local_state(local)
    return _remote_state(str(path))


def claim_store(path: str | Path, clean_temp: bool = False) -> zarr.Group:
    """Open a store to write, creating and marking it if absent or empty and marking an adoptable
    ``legacy`` store; refuses (:class:`StoreError`) anything not made by rpm before writing a byte.
    A marked store is opened without any write. Returns its root group.

    ``clean_temp`` (the one claim before any writer starts, with the store's lock held): remove the root's
    leftover zarr temp files of a killed run."""
    state = store_state(path)
    root = open_store(path, mode="a")
    if state != "rpm":
        root.attrs[STORE_MARKER] = {"version": STORE_VERSION}
        return root
    marker = root.attrs[STORE_MARKER]
    version = marker.get("version", 0) if isinstance(marker, dict) else 0
    if not isinstance(version, int) or version > STORE_VERSION:
        raise StoreError(f"{path}: store version {version!r} is not one this rpm writes ({STORE_VERSION})")
    local = local_path(path) if clean_temp else None
    if local is not None:
        # A run killed while zarr rewrote the root's zarr.json leaves its temp file (zarr.<hex>.partial)
        # beside it; callers hold the store's lock, so no other writer can own one now.
        for stale in sorted(local.glob("zarr.*.partial")):
            stale.unlink(missing_ok=True)
    return root


def remove_group(store_path: str | Path, group_name: str) -> None:
    """Delete a (partial) session group, including zarr's leftover ``*.partial`` temp files.

    Only inside a store rpm made (:data:`STORE_MARKER`) and only a group that holds nothing but rpm's
    arrays; anything else raises :class:`StoreError` and deletes nothing. A missing group is fine."""
    check_group_name(group_name)  # never rmtree outside the store
    local = local_path(store_path)
    if local is not None:
        target = local / group_name
        if not target.exists():
            return
        if store_state(local) != "rpm":
            raise StoreError(f"{local}: not a store made by rpm; refusing to delete {group_name}")
        if not target.is_dir() or not _entries_are_rpms([p.name for p in target.iterdir()], SESSION_ARRAYS):
            raise StoreError(f"{target}: holds files rpm did not write; refusing to delete it")
        shutil.rmtree(target)
        return
    if not store_exists(store_path):
        return
    root = open_store(store_path, mode="a")
    if group_name not in root:
        return
    if STORE_MARKER not in root.attrs:
        raise StoreError(f"{store_path}: not a store made by rpm; refusing to delete {group_name}")
    group = root[group_name]
    members = [k for k, _ in group.members()] if isinstance(group, zarr.Group) else ["<array>"]
    if not _entries_are_rpms(members, SESSION_ARRAYS):
        raise StoreError(f"{store_path}/{group_name}: holds data rpm did not write; refusing to delete it")
    del root[group_name]


class SessionWriter:
    """Writes one session group: the video streamed shard by shard, then the rest, then ``complete``.

    ::

        writer = SessionWriter(store, "v_3_1")      # any earlier (partial) group is removed
        t = writer.write_video(blocks)             # blocks: (n, 128, 128, 3) uint8, any n
        writer.finish(bvp, radar, radar_ok, attrs)  # bvp (t,); sets ``complete`` last

    Frames are gathered into shard-sized buffers (``SHARD_FRAMES``) and each full shard is written
    by a helper thread while the next one fills, so at most two shards (2 x 12 MiB) are held,
    whatever the video's length, and decoding overlaps the compression and the write. A caller
    that gives up on the session calls :meth:`close` before removing the group.
    """

    def __init__(self, store_path: str | Path, group_name: str):
        self.store_path, self.group_name = store_path, check_group_name(group_name)
        claim_store(store_path)
        remove_group(store_path, group_name)
        self.group = open_store(store_path, mode="a").create_group(group_name)
        self.group.attrs["complete"] = False
        self.video = None  # created with the first block's frame size
        self.frame_shape: tuple[int, ...] = ()
        self.n_frames = 0  # frames taken by write_video
        self._written = 0  # frames in the store
        self._pool: ThreadPoolExecutor | None = None
        self._pending = None

    def _create_video(self, frame_shape: tuple[int, ...]) -> None:
        self.frame_shape = tuple(frame_shape)
        self.video = self.group.create_array(
            "video",
            shape=(0, *frame_shape),
            dtype="uint8",
            chunks=(VIDEO_CHUNK_FRAMES, *frame_shape),
            shards=(SHARD_FRAMES, *frame_shape),
            compressors=[_COMPRESSOR],
        )

    def write_video(self, blocks: Iterable[np.ndarray]) -> int:
        """Append every frame of ``blocks`` ((n, H, W, 3) uint8, the same H, W throughout; the
        recipes write 128x128) to ``video``; returns the number of frames taken. The last shard may
        still be on its way to the store: :meth:`finish` (or :meth:`close`) waits for it. A second
        call continues the video only if the first ended on a shard boundary."""
        if self.n_frames % SHARD_FRAMES:
            raise StoreError(
                f"{self.group_name}: the video already ends in a partial shard; write it in one call"
            )
        buffers: list[np.ndarray] = []
        fill, which = 0, 0
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zarr-shard")
        for block in blocks:
            block = np.asarray(block)
            if self.video is None and block.ndim == 4:
                self._create_video(block.shape[1:])
            if not buffers:
                buffers = [np.empty((SHARD_FRAMES, *self.frame_shape), np.uint8) for _ in range(2)]
            if block.ndim != 4 or block.shape[1:] != self.frame_shape or block.dtype != np.uint8:
                raise StoreError(
                    f"{self.group_name}: video block is {block.shape} {block.dtype}, "
                    f"expected (n, {', '.join(map(str, self.frame_shape))}) uint8"
                )
            pos = 0
            while pos < len(block):
                take = min(len(block) - pos, SHARD_FRAMES - fill)
                buffers[which][fill : fill + take] = block[pos : pos + take]
                fill, pos, self.n_frames = fill + take, pos + take, self.n_frames + take
                if fill == SHARD_FRAMES:
                    self._submit(buffers[which], fill)
                    which, fill = 1 - which, 0
        if fill:
            self._submit(buffers[which], fill)
        return self.n_frames

    def _submit(self, frames: np.ndarray, n: int) -> None:
        if self._pending is not None:
            self._pending.result()  # the other buffer is free again (and a write error surfaces here)
        self._pending = self._pool.submit(self._append, frames, n)

    def _append(self, frames: np.ndarray, n: int) -> None:
        start = self._written
        self.video.resize((start + n, *self.frame_shape))
        if self.direct_shards:
            self._put_shard(start // SHARD_FRAMES, frames, n)
        else:
            self.video[start : start + n] = frames[:n]
        self._written = start + n

    # The video array's codecs are fixed here (sharding -> bytes -> Blosc lz4, index bytes + crc32c at
    # the end), so a shard can be encoded directly: numcodecs compresses the 8 chunks with the GIL
    # released and the store gets one write, where zarr's generic path runs a few hundred lines of
    # Python per chunk that contend for the GIL with the decoders (85 % vs 40 % overhead at 2
    # workers). tests/test_store.py checks the bytes equal zarr's own encoding of the same frames.
    direct_shards = True
    _blosc = numcodecs.Blosc(cname="lz4", clevel=1, shuffle=numcodecs.Blosc.NOSHUFFLE, blocksize=0)

    def _put_shard(self, shard: int, frames: np.ndarray, n: int) -> None:
        """Encode frames[:n] as shard ``shard`` exactly as zarr would and store it under its key."""
        per_shard = SHARD_FRAMES // VIDEO_CHUNK_FRAMES
        index = np.full((per_shard, *([1] * len(self.frame_shape)), 2), 2**64 - 1, dtype="<u8")
        parts, offset = [], 0
        for c in range(-(-n // VIDEO_CHUNK_FRAMES)):
            chunk = frames[c * VIDEO_CHUNK_FRAMES : (c + 1) * VIDEO_CHUNK_FRAMES]
            if (c + 1) * VIDEO_CHUNK_FRAMES > n:  # the array's edge: zarr pads the chunk with the fill value
                chunk = chunk.copy()
                chunk[n - c * VIDEO_CHUNK_FRAMES :] = 0
            if not chunk.any():  # zarr does not write a chunk that is all fill value
                continue
            encoded = self._blosc.encode(np.ascontiguousarray(chunk).reshape(-1))
            index[c].flat[:] = (offset, len(encoded))
            parts.append(encoded)
            offset += len(encoded)
        key = self.video.metadata.encode_chunk_key((shard, *([0] * len(self.frame_shape))))
        target = self.video.store_path / key
        if not parts:
            sync(target.delete())
            return
        index_bytes = index.tobytes()
        crc = np.uint32(google_crc32c.value(index_bytes)).astype("<u4").tobytes()
        data = b"".join([*map(bytes, parts), index_bytes, crc])
        sync(target.set(default_buffer_prototype().buffer.from_bytes(data)))

    def close(self, wait_errors: bool = True) -> None:
        """Wait for the shard in flight and stop the writer thread; ``wait_errors=False`` drops a
        write error (the caller is already failing the session for another reason)."""
        pending, self._pending = self._pending, None
        try:
            if pending is not None:
                if wait_errors:
                    pending.result()
                else:
                    pending.exception()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def finish(self, bvp: np.ndarray, radar: np.ndarray, radar_ok: np.ndarray, attrs: dict) -> None:
        """Write ``bvp`` (T,), ``radar`` (T_rf, 2, bins), ``radar_ok`` (T_rf,) and the attributes, then
        set ``complete``."""
        self.close()
        t = self.n_frames
        if self.video is None:
            self._create_video((CROP_SIZE, CROP_SIZE, 3))
        if self._written != t:
            raise StoreError(f"{self.group_name}: {self._written} of {t} video frames reached the store")
        if bvp.shape != (t,) or radar.shape[0] != radar_ok.shape[0]:
            raise StoreError(
                f"{self.group_name}: inconsistent lengths video {t} frames, bvp {bvp.shape}, "
                f"radar {radar.shape}, radar_ok {radar_ok.shape}"
            )
        g = self.group
        b = g.create_array("bvp", shape=bvp.shape, dtype="float32", chunks=bvp.shape)
        b[...] = bvp.astype(np.float32)
        r = g.create_array("radar", shape=radar.shape, dtype="float32", chunks=radar.shape)
        r[...] = radar.astype(np.float32)
        ok = g.create_array("radar_ok", shape=radar_ok.shape, dtype="bool", chunks=radar_ok.shape)
        ok[...] = radar_ok
        g.attrs.update({**attrs, "complete": False})
        # The completion marker goes last, after every array is on disk.
        g.attrs["complete"] = True


def write_session(
    store_path: str | Path,
    group_name: str,
    video: np.ndarray,
    bvp: np.ndarray,
    radar: np.ndarray,
    radar_ok: np.ndarray,
    attrs: dict,
) -> None:
    """Write one in-memory session (video (T, 128, 128, 3) uint8) with :class:`SessionWriter`."""
    writer = SessionWriter(store_path, group_name)
    try:
        writer.write_video([video])
        writer.finish(bvp, radar, radar_ok, attrs)
    finally:
        writer.close(wait_errors=False)


SESSION_ARRAYS = ("video", "bvp", "radar", "radar_ok")


def session_group(root: zarr.Group, store_path: str | Path, name: str) -> zarr.Group:
    """Session ``name`` of the open store ``root`` (at ``store_path``), complete and with every array of
    :data:`SESSION_ARRAYS`; a :class:`StoreError` naming it otherwise (a group deleted or damaged after
    preprocessing, so the manifests and the store disagree)."""
    where = f"{store_path}/{name}"
    try:
        g = root[name]
    except KeyError:
        raise StoreError(
            f"{where}: no such session in the store (deleted after preprocessing?); rerun `rpm preprocess`"
        ) from None
    if not isinstance(g, zarr.Group):
        raise StoreError(f"{where}: not a session group; rerun `rpm preprocess --overwrite`")
    if not g.attrs.get("complete", False):
        raise StoreError(f"{where}: session is not complete in the store; rerun `rpm preprocess`")
    missing = [a for a in SESSION_ARRAYS if a not in g]
    if missing:
        raise StoreError(
            f"{where}: array(s) {', '.join(missing)} missing from the session; "
            "rerun `rpm preprocess --overwrite`"
        )
    return g
