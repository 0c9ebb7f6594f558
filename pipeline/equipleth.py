"""EquiPleth recipe: the real on-disk layout -> Zarr v3 session store + sessions manifest.

Input layout (``--root``, see reference section b.1)::

    rgb_files/v_<s>_<t>/rgbd_rgb_<i>.png   face crops (already MTCNN crops), i = 0.. not zero-padded
    rgb_files/v_<s>_<t>/rgbd_ppg.npy       PPG at the video rate (30 Hz)
    rf_files/<s>_<t>/rf.pkl                DCA1000 packet capture (see pipeline.dca1000)
    rf_files/<s>_<t>/vital_dict.npy        PPG fallback: ['rgbd']['NOM_PLETHWaveExport']
    fitzpatrick_labels.pkl                 {"v_<s>": 1..6}
    demo_fold.pkl                          {fold: {"train"|"val"|"test": ["v_<s>_<t>", ...]}}  (optional)

Alignment (the EquiPleth convention): the first 25 PPG samples are dropped, so label t = PPG
sample t + 25 = video frame t = radar frame 4t. Each session is stored with
T = min(frames, len(ppg) - 25, radar_frames // 4) so every array is index-aligned.

One dask task processes and writes one session (never two writers to a group). A session that
cannot be used is recorded as ``failed`` with its reason in the manifest; the run continues.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import dask
import numpy as np
import pandas as pd
from dask.diagnostics import ProgressBar
from PIL import Image

from manifests import SESSION_COLUMNS
from pipeline import dca1000, radar
from pipeline.store import CROP_SIZE, is_complete, open_store, write_session

PPG_OFFSET = 25
FPS = 30.0
RADAR_PER_FRAME = 4
_FRAME_RE = re.compile(r"^rgbd_rgb_(\d+)\.png$")


class SessionError(RuntimeError):
    """A session that cannot be used; the message names the file and the problem."""


def list_sessions(root: Path) -> list[str]:
    """Sorted ``v_<s>_<t>`` session names under ``rgb_files`` (numeric subject/trial order)."""
    rgb = root / "rgb_files"
    if not rgb.is_dir():
        raise FileNotFoundError(f"{root}: not an EquiPleth root (no rgb_files/ folder)")
    names = [p.name for p in rgb.iterdir() if p.is_dir() and re.match(r"^v_\d+_\d+$", p.name)]
    return sorted(names, key=lambda n: tuple(int(x) for x in n.split("_")[1:]))


def read_frames(session_dir: Path, size: int = CROP_SIZE) -> np.ndarray:
    """All ``rgbd_rgb_<i>.png`` frames in numeric order -> (T, size, size, 3) uint8 RGB.

    Frames are resized with area averaging (PIL BOX) when shrinking, bilinear when enlarging.
    """
    indices = sorted(int(m.group(1)) for p in session_dir.iterdir() if (m := _FRAME_RE.match(p.name)))
    if not indices:
        raise SessionError(f"{session_dir}: no rgbd_rgb_<i>.png frames")
    missing = sorted(set(range(indices[-1] + 1)) - set(indices))
    if missing:
        raise SessionError(f"{session_dir}: {len(missing)} frame(s) missing, first rgbd_rgb_{missing[0]}.png")
    out = np.empty((len(indices), size, size, 3), dtype=np.uint8)
    first_size = None
    for i in indices:
        path = session_dir / f"rgbd_rgb_{i}.png"
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if first_size is None:
                    first_size = im.size
                elif im.size != first_size:
                    raise SessionError(
                        f"{path}: frame size {im.size} differs from the first frame's {first_size}"
                    )
                shrink = im.size[0] >= size and im.size[1] >= size
                im = im.resize((size, size), Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR)
                out[i] = np.asarray(im)
        except SessionError:
            raise
        except Exception as exc:
            raise SessionError(f"{path}: unreadable PNG ({type(exc).__name__}: {exc})") from None
    return out


def read_ppg(root: Path, session: str) -> np.ndarray:
    """PPG at the video rate: ``rgbd_ppg.npy`` if present, else ``vital_dict.npy``."""
    direct = root / "rgb_files" / session / "rgbd_ppg.npy"
    if direct.is_file():
        try:
            ppg = np.load(direct)
        except Exception as exc:
            raise SessionError(f"{direct}: unreadable ({exc})") from None
        source = direct
    else:
        source = root / "rf_files" / session[2:] / "vital_dict.npy"
        if not source.is_file():
            raise SessionError(f"{direct}: missing, and no {source.name} fallback")
        try:
            ppg = np.load(source, allow_pickle=True).item()["rgbd"]["NOM_PLETHWaveExport"]
        except Exception as exc:
            raise SessionError(f"{source}: no ['rgbd']['NOM_PLETHWaveExport'] ({exc})") from None
    ppg = np.asarray(ppg, dtype=np.float64).ravel()
    if ppg.size <= PPG_OFFSET:
        raise SessionError(
            f"{source}: PPG has {ppg.size} samples, not more than the {PPG_OFFSET}-sample offset"
        )
    if not np.isfinite(ppg).all():
        raise SessionError(f"{source}: PPG contains {int((~np.isfinite(ppg)).sum())} non-finite samples")
    return ppg


def read_radar(rf_path: Path, decoder: str) -> tuple[np.ndarray, np.ndarray, int, int]:
    """rf.pkl -> (iq (N, 2, 5) float32, ok (N,) bool, chest bin, lost packets)."""
    decoded = dca1000.decode_capture(dca1000.read_rf_pkl(rf_path), decoder)
    profiles = radar.range_fft(decoded.adc)
    chest_bin = radar.find_chest_bin(profiles, decoded.valid)
    iq = radar.fill_lost_frames(radar.iq_window(profiles, chest_bin), decoded.valid)
    return iq, decoded.valid, chest_bin, decoded.lost_packets


def load_labels(root: Path) -> tuple[dict[str, int], dict[str, str]]:
    """Fitzpatrick types {"v_<s>": type} and demo-fold membership {"v_<s>_<t>": split} (fold 0)."""
    skin: dict[str, int] = {}
    fitz = root / "fitzpatrick_labels.pkl"
    if fitz.is_file():
        with open(fitz, "rb") as f:
            skin = {str(k): int(v) for k, v in dict(pickle.load(f)).items()}
    fold_of: dict[str, str] = {}
    fold = root / "demo_fold.pkl"
    if fold.is_file():
        with open(fold, "rb") as f:
            folds = pickle.load(f)
        first = folds[sorted(folds)[0]]
        for split in ("train", "val", "test"):
            for name in first.get(split, []):
                fold_of[str(name)] = split
    return skin, fold_of


def _process_session(
    root: Path, store: Path, session: str, skin_type: int, fold_split: str, decoder: str, overwrite: bool
) -> dict:
    subject, trial = session.split("_")[1:3]
    row = {
        "session": session,
        "dataset": "equipleth",
        "subject": subject,
        "trial": trial,
        "status": "failed",
        "reason": "",
        "skin_type": skin_type,
        "fold_split": fold_split,
        "n_frames": 0,
        "n_radar_frames": 0,
        "radar_bin": -1,
        "rf_lost_packets": 0,
        "rf_lost_frames": 0,
        "store_group": session,
    }
    if not overwrite and store.exists() and is_complete(open_store(store, "r"), session):
        return {**row, **json.loads(open_store(store, "r")[session].attrs["manifest_row"])}
    try:
        frames = read_frames(root / "rgb_files" / session)
        ppg = read_ppg(root, session)
        rf_path = root / "rf_files" / session[2:] / "rf.pkl"
        iq, ok, chest_bin, lost_packets = read_radar(rf_path, decoder)
        t = min(frames.shape[0], ppg.size - PPG_OFFSET, iq.shape[0] // RADAR_PER_FRAME)
        if t < 2 * FPS:
            raise SessionError(
                f"{root / 'rf_files' / session[2:]}: only {t} aligned frames (< 2 s) "
                f"from {frames.shape[0]} frames, {ppg.size} PPG samples, {iq.shape[0]} radar frames"
            )
        n_rf = t * RADAR_PER_FRAME
        row.update(
            status="ok",
            n_frames=t,
            n_radar_frames=n_rf,
            radar_bin=chest_bin,
            rf_lost_packets=lost_packets,
            rf_lost_frames=int((~ok[:n_rf]).sum()),
        )
        attrs = {
            "dataset": "equipleth",
            "subject": subject,
            "trial": trial,
            "skin_type": skin_type,
            "fps": FPS,
            "radar_fps": dca1000.RADAR_FPS,
            "radar_bin": chest_bin,
            "ppg_offset": PPG_OFFSET,
            "manifest_row": json.dumps(row),
        }
        write_session(
            store, session, frames[:t], ppg[PPG_OFFSET : PPG_OFFSET + t], iq[:n_rf], ok[:n_rf], attrs
        )
    except (SessionError, dca1000.RfFormatError) as exc:
        row["reason"] = str(exc)
    return row


def _compute(tasks: list, scheduler: str, workers: int) -> list:
    if scheduler.startswith(("tcp://", "tls://", "inproc://")) or scheduler == "distributed":
        from dask.distributed import Client, LocalCluster, progress

        if scheduler == "distributed":
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)
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
    with ProgressBar(minimum=1.0):
        return list(dask.compute(*tasks, scheduler=scheduler, num_workers=workers))


def prepare_equipleth(
    root: str | Path,
    store: str | Path,
    manifests_dir: str | Path,
    workers: int = 2,
    scheduler: str = "threads",
    overwrite: bool = False,
    decoder: str = "bytecount",
) -> pd.DataFrame:
    """Preprocess an EquiPleth root into ``store`` and write ``<manifests_dir>/equipleth_sessions.csv``.

    scheduler: ``threads`` (default), ``processes``, ``sync``, ``distributed`` (a local
    dask.distributed cluster with ``workers`` processes) or a scheduler address (``tcp://...``).
    A rerun skips sessions whose store group is complete unless ``overwrite``.
    Returns the sessions manifest (one row per session, failed ones included).
    """
    root, store, manifests_dir = Path(root), Path(store), Path(manifests_dir)
    sessions = list_sessions(root)
    if not sessions:
        raise FileNotFoundError(f"{root / 'rgb_files'}: no v_<subject>_<trial> session folders")
    skin, fold_of = load_labels(root)
    open_store(store, mode="a")  # create the root group once, before any writer starts
    tasks = [
        dask.delayed(_process_session)(
            root, store, s, skin.get("_".join(s.split("_")[:2]), -1), fold_of.get(s, ""), decoder, overwrite
        )
        for s in sessions
    ]
    rows = _compute(tasks, scheduler, workers)
    manifest = pd.DataFrame(rows, columns=SESSION_COLUMNS)
    validate_store(store, manifest)
    manifests_dir.mkdir(parents=True, exist_ok=True)
    out = manifests_dir / "equipleth_sessions.csv"
    tmp = out.with_suffix(".csv.partial")
    manifest.to_csv(tmp, index=False)
    tmp.replace(out)
    return manifest


def validate_store(store: Path, manifest: pd.DataFrame) -> None:
    """Check that every ``ok`` session is complete in the store with the manifest's shapes."""
    root = open_store(store, "r")
    for row in manifest[manifest.status == "ok"].itertuples():
        g = root[row.store_group]
        if not g.attrs.get("complete", False):
            raise RuntimeError(f"{store}/{row.store_group}: marked ok but not complete")
        shapes = (g["video"].shape[0], g["bvp"].shape[0], g["radar"].shape[0])
        if shapes != (row.n_frames, row.n_frames, row.n_radar_frames):
            raise RuntimeError(
                f"{store}/{row.store_group}: array lengths {shapes} disagree with the manifest"
            )
