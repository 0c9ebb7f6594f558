"""What every dataset recipe shares: one dask task per session, resume, manifest, validation.

A recipe (``pipeline.recipes.equipleth``, ``.physdrive``, ``.folder``) lists its sessions
as :class:`Job` objects: a manifest row with the identity columns filled in and a module-level
``build(writer, *args)`` function that reads the raw files, streams the session's 128x128 video
into ``writer.write_video(blocks)`` (a :class:`pipeline.store.SessionWriter`) and returns a
:class:`SessionData` with the rest (or raises :class:`SessionError`). :func:`run_recipe` then

1. skips a session whose store group is ``complete`` and was made with the same ``params``
   (unless ``overwrite``): its manifest row is read back from the group, so a rerun is a no-op;
2. otherwise builds it (any partial or stale group is removed first; the video goes to the store
   as it is decoded, so memory does not grow with the video's length), computes the radar SNR and
   video-radar lag (``pipeline.quality``), writes the other arrays and sets ``complete`` last;
3. records a session that cannot be used as ``failed`` with its reason (and removes any group it
   had), and carries on with the others;
4. writes ``<manifests>/<dataset>_sessions.csv`` atomically, after checking every ``ok`` row
   against the store (:func:`validate_store`).

Exactly one task writes one session group, so no two writers ever touch a shard; and one process
writes one local store: :func:`run_recipe` holds ``<store>.lock`` (:mod:`pipeline.lock`) from its
first write to the manifest's, so a second run on the same store stops at once with a message naming
the PID holding it. Remote (URL) stores are not locked. A store path that holds anything but an rpm
store is refused before any write (:func:`pipeline.store.claim_store`).

Schedulers: ``threads`` (default: no start-up cost, and decoding, MTCNN and compression release
the GIL), ``processes``, ``sync``, ``distributed`` (a local dask.distributed cluster of
``workers`` single-threaded processes) or the address of a running scheduler (``tcp://...``).
"""

from __future__ import annotations

import errno
import json
import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import dask
import dask.local
import dask.multiprocessing
import dask.threaded
import numpy as np
import pandas as pd
from dask.callbacks import Callback

from manifests import SESSION_COLUMNS, empty_session_row
from pipeline.errors import OptionError, RpmError
from pipeline.lock import hold_lock
from pipeline.paths import lock_beside
from pipeline.quality import plausibility_notes, session_quality
from pipeline.store import (
    SessionWriter,
    StoreError,
    claim_store,
    is_complete,
    local_path,
    open_store,
    remove_group,
    store_exists,
    store_state,
)

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class SessionError(RpmError, RuntimeError):
    """A session that cannot be used; the message names the file and the problem."""


@dataclass
class SessionData:
    """One session's arrays beside its video (already in the writer); ``row`` holds extra manifest
    columns (bins, repairs, ...). T is the number of video frames the build wrote."""

    bvp: np.ndarray  # (T,)
    radar: np.ndarray  # (T_rf, 2, bins)
    radar_ok: np.ndarray  # (T_rf,) bool
    fps: float
    radar_fps: float
    radar_bin: int
    radar_channel: int
    attrs: dict = field(default_factory=dict)
    row: dict = field(default_factory=dict)


@dataclass
class Job:
    row: dict  # identity columns: session, dataset, subject, trial, skin_type, conditions ...
    build: Callable[..., SessionData]  # build(writer, *args)
    args: tuple = ()


def _jsonable(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _stored_row(store, group: str) -> dict:
    row = json.loads(open_store(store, "r")[group].attrs["manifest_row"])
    return {k: (float("nan") if v is None else v) for k, v in row.items()}


def run_session(store: str, job: Job, params: dict, overwrite: bool) -> dict:
    """Build, check and write one session (one dask task). Returns its manifest row."""
    row = {**empty_session_row(), **job.row}
    group = row["store_group"] = row.get("store_group") or row["session"]
    if not overwrite and store_exists(store):
        root = open_store(store, "r")
        if is_complete(root, group) and root[group].attrs.get("params") == params:
            return _stored_row(store, group)
    writer = None
    try:
        writer = SessionWriter(store, group)
        data = job.build(writer, *job.args)
        t = writer.n_frames
        if writer.frame_shape != (128, 128, 3):
            raise SessionError(f"{row['session']}: video frames are {writer.frame_shape}, not (128, 128, 3)")
        if t < 2 * data.fps:
            raise SessionError(f"{row['session']}: only {t} aligned frames (< 2 s)")
        if not np.any(data.radar_ok):
            raise SessionError(
                f"{row['session']}: none of its {np.size(data.radar_ok)} radar frames holds data "
                "(radar coverage 0); not stored"
            )
        quality = session_quality(
            data.bvp, data.fps, data.radar, data.radar_fps, data.radar_channel, data.radar_ok
        )
        row.update(data.row)
        notes = plausibility_notes(data.bvp, data.fps, data.radar_ok)
        row["repairs"] = "; ".join(n for n in [row.get("repairs", ""), *notes] if n)
        row.update(
            status="ok",
            reason="",
            n_frames=t,
            fps=data.fps,
            n_radar_frames=int(data.radar.shape[0]),
            radar_fps=data.radar_fps,
            radar_bin=int(data.radar_bin),
            radar_coverage=round(float(data.radar_ok.mean()), 4) if data.radar_ok.size else 0.0,
            **quality,
        )
        row = {k: _jsonable(v) for k, v in row.items()}
        attrs = {
            "dataset": row["dataset"],
            "subject": row["subject"],
            "trial": row["trial"],
            "skin_type": int(row["skin_type"]),
            "fps": float(data.fps),
            "radar_fps": float(data.radar_fps),
            "radar_bin": int(data.radar_bin),
            "radar_channel": int(data.radar_channel),
            "conditions": {k: row.get(k, "") for k in ("car", "sex", "illumination", "road", "motion")},
            **data.attrs,
            "params": params,
            "manifest_row": json.dumps(row, sort_keys=True),
        }
        writer.finish(data.bvp, data.radar, data.radar_ok, attrs)
        return _stored_row(store, group)  # exactly what a rerun will read back
    except OSError as exc:
        _stop(writer)
        if exc.errno not in DISK_FULL:
            return _failed(store, group, row, exc)
        # A full disk is not this session's fault and would fail every later one: stop with a clear error.
        # Sessions completed earlier keep their ``complete`` groups; a rerun resumes after them.
        remove_group(store, group)
        raise StoreError(
            f"{store}/{group}: no space left on the device while writing this session ({exc}); "
            "sessions completed before it are kept: free space and rerun to resume"
        ) from exc
    except Exception as exc:  # one bad session never stops the run; the reason goes to the manifest
        _stop(writer)
        return _failed(store, group, row, exc)


def _stop(writer: SessionWriter | None) -> None:
    """Let a failing session's shard in flight land before its group is removed."""
    if writer is not None:
        writer.close(wait_errors=False)


def _failed(store: str, group: str, row: dict, exc: Exception) -> dict:
    """The manifest row of a session that cannot be used (any partial group is removed)."""
    remove_group(store, group)
    reason = str(exc) if isinstance(exc, RpmError) else f"{type(exc).__name__}: {exc}"
    row.update(status="failed", reason=reason or type(exc).__name__)
    for key in ("n_frames", "n_radar_frames"):
        row[key] = 0
    return row


LOCAL_SCHEDULERS = ("threads", "processes", "sync", "synchronous", "single-threaded")
SCHEDULER_ADDRESSES = ("tcp://", "tls://", "inproc://", "ucx://")


def check_scheduler(scheduler: str) -> None:
    """Refuse a ``--scheduler`` that :func:`compute` cannot run, naming the option."""
    if scheduler in (*LOCAL_SCHEDULERS, "distributed") or scheduler.startswith(SCHEDULER_ADDRESSES):
        return
    raise OptionError(
        f"--scheduler must be threads, processes, sync, distributed or tcp://host:port, got {scheduler!r}"
    )


def compute(tasks: list, scheduler: str, workers: int, label: str = "sessions") -> list:
    """Run dask delayed ``tasks`` on the chosen scheduler with a progress bar."""
    check_scheduler(scheduler)
    if scheduler.startswith(SCHEDULER_ADDRESSES) or scheduler == "distributed":
        from dask.distributed import Client, LocalCluster, progress

        if scheduler == "distributed":
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            client = Client(cluster)
        else:
            cluster, client = None, Client(scheduler)
        try:
            futures = client.compute(tasks)
            progress(futures)
            return client.gather(futures)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    # The scheduler function itself, not its name: a name makes dask import dask.distributed to look
    # for a client (0.4 s per run).
    get = {"threads": dask.threaded.get, "processes": dask.multiprocessing.get}.get(
        scheduler, dask.local.get_sync
    )
    with _SessionBar(tasks, label):
        return list(dask.compute(*tasks, scheduler=get, num_workers=workers))


class _SessionBar(Callback):
    """A tqdm bar over the session tasks of a local dask run, shown once the run passes 1 s.

    It moves when a session finishes. dask's own ``ProgressBar`` redraws from a thread that sleeps
    0.1 s between ticks and is joined at the end, so every run lasted until the next tick: up to
    0.1 s per run (10 % of a 30 s session's preprocessing here).
    """

    def __init__(self, tasks: list, label: str):
        super().__init__()
        self._keys = {t.key for t in tasks}
        self._label = label
        self._bar = None

    def _start(self, dsk) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=len(self._keys), desc=self._label, unit="session", delay=1.0)

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        if key in self._keys:
            self._bar.update(1)

    def _finish(self, dsk, state, errored) -> None:
        self._bar.close()


def validate_store(store: str, manifest: pd.DataFrame) -> None:
    """Every ``ok`` row must be a complete group with the manifest's lengths and sane content."""
    if not (manifest.status == "ok").any():
        return
    root = open_store(store, "r")
    for row in manifest[manifest.status == "ok"].itertuples():
        g = root[row.store_group]
        where = f"{store}/{row.store_group}"
        if not g.attrs.get("complete", False):
            raise RuntimeError(f"{where}: marked ok but not complete")
        shapes = (g["video"].shape[0], g["bvp"].shape[0], g["radar"].shape[0], g["radar_ok"].shape[0])
        expect = (row.n_frames, row.n_frames, row.n_radar_frames, row.n_radar_frames)
        if shapes != expect:
            raise RuntimeError(f"{where}: array lengths {shapes} disagree with the manifest {expect}")
        if g["video"].shape[1:] != (128, 128, 3) or g["video"].dtype != np.uint8:
            raise RuntimeError(f"{where}: video is {g['video'].shape} {g['video'].dtype}")
        if not np.isfinite(g["bvp"][...]).all() or not np.isfinite(g["radar"][...]).all():
            raise RuntimeError(f"{where}: non-finite values in bvp or radar")
        if not 0 <= g.attrs["radar_channel"] < g["radar"].shape[2]:
            raise RuntimeError(f"{where}: radar_channel outside the stored bins")


def run_recipe(
    dataset: str,
    jobs: list[Job],
    store: str | Path,
    manifests_dir: str | Path,
    params: dict,
    workers: int = 2,
    scheduler: str = "threads",
    overwrite: bool = False,
) -> pd.DataFrame:
    """Process ``jobs`` into ``store`` and write ``<manifests_dir>/<dataset>_sessions.csv``.

    Refuses (:class:`StoreError`) a store path that holds anything but an rpm store before writing,
    and raises :class:`pipeline.lock.LockedError` if another process is writing the same local store."""
    check_scheduler(scheduler)  # before the store is created
    store = str(store)
    manifests_dir = Path(manifests_dir)
    if not jobs:
        raise FileNotFoundError(f"{dataset}: no sessions found")
    store_state(store)  # refuse a path that is not rpm's before even a lock file appears beside it
    local = local_path(store)
    with hold_lock(lock_beside(local), f"store {store}") if local is not None else nullcontext():
        return _run_locked(dataset, jobs, store, manifests_dir, params, workers, scheduler, overwrite)


def _run_locked(
    dataset: str,
    jobs: list[Job],
    store: str,
    manifests_dir: Path,
    params: dict,
    workers: int,
    scheduler: str,
    overwrite: bool,
) -> pd.DataFrame:
    claim_store(store, clean_temp=True)  # create (and mark) the root once, before any writer starts
    tasks = [dask.delayed(run_session)(store, job, params, overwrite) for job in jobs]
    rows = compute(tasks, scheduler, workers)
    manifest = pd.DataFrame(rows, columns=SESSION_COLUMNS)
    validate_store(store, manifest)
    manifests_dir.mkdir(parents=True, exist_ok=True)
    out = manifests_dir / f"{dataset}_sessions.csv"
    tmp = out.with_suffix(".csv.partial")
    try:
        manifest.to_csv(tmp, index=False)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in DISK_FULL:
            raise StoreError(
                f"{out}: no space left on the device while writing the manifest ({exc}); the store is "
                "complete and the previous manifest is untouched: free space and rerun"
            ) from exc
        raise
    tmp.replace(out)
    return manifest
