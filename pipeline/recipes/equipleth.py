"""EquiPleth recipe: the real on-disk layout -> Zarr v3 session store + sessions manifest.

Input layout (``--root``; the EquiPleth release, Vilesov et al., TOG 2022; docs/data-layouts.md)::

    rgb_files/v_<s>_<t>/rgbd_rgb_<i>.png   face crops (already MTCNN crops), i = 0.. not zero-padded
    rgb_files/v_<s>_<t>/rgbd_ppg.npy       PPG at the video rate (30 Hz)
    rf_files/<s>_<t>/rf.pkl                DCA1000 packet capture (see pipeline.dca1000)
    rf_files/<s>_<t>/vital_dict.npy        PPG fallback: ['rgbd']['NOM_PLETHWaveExport']
    fitzpatrick_labels.pkl                 {"v_<s>": 1..6}
    demo_fold.pkl                          {fold: {"train"|"val"|"test": ["v_<s>_<t>", ...]}}  (optional)

Alignment (the EquiPleth convention): the first 25 PPG samples are dropped, so label t = PPG
sample t + 25 = video frame t = radar frame 4t. Each session is stored with
T = min(frames, len(ppg) - 25, radar_frames // 4) so every array is index-aligned.

Radar: ``rf.pkl`` is decoded by byte count by default (lost packets leave marked, interpolated
frames and the 4t <-> t alignment holds); ``decoder="organizer"`` reproduces the reference
``Organizer`` exactly (everything before the first gap dropped, no placeholders), for comparison
with published numbers. The decoder is part of the stored ``params``: rerunning with the other one
redoes every session. Folds: every fold of ``demo_fold.pkl`` is recorded (column ``folds``, JSON
{fold: split}); ``fold_split`` repeats fold 0 and ``rpm split --protocol fold --fold K`` uses fold K.

The shared machinery (one dask task per session, resume, manifest, validation) is
``pipeline.recipes.base``. A session that cannot be used is recorded as ``failed`` with its reason in
the manifest; the run continues. Repairs go to the manifest's ``repairs``: lost radar frames
interpolated, PPG gaps of at most 1 s interpolated (longer gaps and a flat PPG fail), trailing
frames dropped, a subject missing from ``fitzpatrick_labels.pkl`` (skin type -1). Every pickle
(``rf.pkl``, the label pickles, ``vital_dict.npy``) is untrusted and read with
:mod:`pipeline.safe_pickle`; sessions named by ``demo_fold.pkl`` that do not exist are listed in
``<manifests>/equipleth_warnings.txt``.
"""

from __future__ import annotations

import json
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline import dca1000, radar
from pipeline.errors import DatasetError
from pipeline.face import square_resize
from pipeline.recipes.base import Job, SessionData, SessionError, run_recipe, validate_store
from pipeline.safe_pickle import UnsafePickleError, load_npy_object, load_pickle
from pipeline.store import CROP_SIZE

__all__ = [
    "SessionError",
    "prepare_equipleth",
    "validate_store",
    "iter_frames",
    "list_frames",
    "read_frames",
    "read_ppg",
    "read_radar",
]

PPG_OFFSET = 25
FPS = 30.0
RADAR_PER_FRAME = 4
MAX_PPG_GAP = 30  # non-finite PPG samples in a row that are interpolated (1 s at 30 Hz)
MAX_PPG_BAD_FRAC = 0.1  # ... and in all, as a share of the PPG
_FRAME_RE = re.compile(r"^rgbd_rgb_(\d+)\.png$")


def list_sessions(root: Path) -> list[str]:
    """Sorted ``v_<s>_<t>`` session names under ``rgb_files`` (numeric subject/trial order)."""
    rgb = root / "rgb_files"
    if not rgb.is_dir():
        raise FileNotFoundError(f"{root}: not an EquiPleth root (no rgb_files/ folder)")
    names = [p.name for p in rgb.iterdir() if p.is_dir() and re.match(r"^v_\d+_\d+$", p.name)]
    return sorted(names, key=lambda n: tuple(int(x) for x in n.split("_")[1:]))


def list_frames(session_dir: Path) -> int:
    """The number of ``rgbd_rgb_<i>.png`` frames (i = 0..T-1; a gap in the numbering fails the session)."""
    indices = sorted(int(m.group(1)) for p in session_dir.iterdir() if (m := _FRAME_RE.match(p.name)))
    if not indices:
        raise SessionError(f"{session_dir}: no rgbd_rgb_<i>.png frames")
    missing = sorted(set(range(indices[-1] + 1)) - set(indices))
    if missing:
        raise SessionError(f"{session_dir}: {len(missing)} frame(s) missing, first rgbd_rgb_{missing[0]}.png")
    return len(indices)


def iter_frames(session_dir: Path, n_frames: int, size: int = CROP_SIZE, block: int = 32):
    """Frames ``rgbd_rgb_0..n_frames-1.png`` as (<= block, size, size, 3) uint8 RGB blocks, in order.

    Frames are resized with area averaging (PIL BOX) when shrinking, bilinear when enlarging. A
    frame that is unreadable or of another size than the first raises :class:`SessionError` naming it.
    """
    out = np.empty((block, size, size, 3), dtype=np.uint8)
    first_size = None
    fill = 0
    for i in range(n_frames):
        path = session_dir / f"rgbd_rgb_{i}.png"
        try:
            with Image.open(path) as im:
                im.load()
                if first_size is None:
                    first_size = im.size
                elif im.size != first_size:
                    raise SessionError(
                        f"{path}: frame size {im.size} differs from the first frame's {first_size}"
                    )
                if im.mode != "RGB":
                    im = im.convert("RGB")
                out[fill] = np.asarray(square_resize(im, size))
        except SessionError:
            raise
        except Exception as exc:
            raise SessionError(f"{path}: unreadable PNG ({type(exc).__name__}: {exc})") from None
        fill += 1
        if fill == block:
            yield out.copy()
            fill = 0
    if fill:
        yield out[:fill].copy()


def read_frames(session_dir: Path, size: int = CROP_SIZE) -> np.ndarray:
    """All ``rgbd_rgb_<i>.png`` frames in numeric order -> (T, size, size, 3) uint8 RGB (in memory)."""
    return np.concatenate(list(iter_frames(session_dir, list_frames(session_dir), size)))


def read_ppg(root: Path, session: str, notes: list[str] | None = None) -> np.ndarray:
    """PPG at the video rate: ``rgbd_ppg.npy`` if present, else ``vital_dict.npy``.

    Repairs (appended to ``notes``, which goes to the manifest's ``repairs``): runs of non-finite
    samples up to ``MAX_PPG_GAP`` samples (1 s) long, with at most ``MAX_PPG_BAD_FRAC`` of the
    samples bad in all, are linearly interpolated. Longer gaps, and a flat PPG (an oximeter that
    dropped out), fail the session.
    """
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
            ppg = load_npy_object(source).item()["rgbd"]["NOM_PLETHWaveExport"]
        except UnsafePickleError as exc:
            raise SessionError(str(exc)) from None
        except Exception as exc:
            raise SessionError(f"{source}: no ['rgbd']['NOM_PLETHWaveExport'] ({exc})") from None
    try:
        ppg = np.asarray(ppg, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SessionError(f"{source}: PPG is not numeric ({type(exc).__name__}: {exc})") from None
    if sum(d > 1 for d in ppg.shape) > 1:  # e.g. (N, 2): flattening would interleave the columns
        raise SessionError(
            f"{source}: PPG has shape {ppg.shape}; expected one channel, (N,) at the video rate"
        )
    ppg = ppg.ravel()
    if ppg.size <= PPG_OFFSET:
        raise SessionError(
            f"{source}: PPG has {ppg.size} samples, not more than the {PPG_OFFSET}-sample offset"
        )
    bad = ~np.isfinite(ppg)
    if bad.any():
        longest = _longest_run(bad)
        if bad.all() or longest > MAX_PPG_GAP or bad.mean() > MAX_PPG_BAD_FRAC:
            raise SessionError(
                f"{source}: PPG contains {int(bad.sum())} non-finite samples (longest gap {longest}; "
                f"at most {MAX_PPG_GAP} in a row and {MAX_PPG_BAD_FRAC:.0%} in all are interpolated)"
            )
        idx = np.arange(ppg.size)
        ppg[bad] = np.interp(idx[bad], idx[~bad], ppg[~bad])
        if notes is not None:
            notes.append(f"ppg: {int(bad.sum())} non-finite samples interpolated (longest gap {longest})")
    if np.ptp(ppg[PPG_OFFSET:]) <= 1e-9 * max(1.0, float(np.abs(ppg).max())):
        raise SessionError(f"{source}: PPG is flat (constant {ppg[PPG_OFFSET]:.6g}); no pulse to learn from")
    return ppg


def _longest_run(mask: np.ndarray) -> int:
    if not mask.any():
        return 0
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return int((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max())


def read_radar(rf_path: Path, decoder: str) -> tuple[np.ndarray, np.ndarray, int, dict]:
    """rf.pkl -> (iq (N, 2, 5) float32, ok (N,) bool, chest bin, {"lost_packets", "discontinuities"}).

    The capture is one pickle of the whole recording, so it is held whole; the decoder releases the
    packets as it places them and only the ADC samples and the 19 bins near the chest outlive it.
    A capture without one complete radar frame raises :class:`pipeline.dca1000.RfFormatError`.
    """
    capture = dca1000.read_rf_pkl(rf_path)
    no_frame = dca1000.no_complete_frame_reason(capture)  # (the decode releases the packets)
    decoded = dca1000.decode_capture(capture, decoder, consume=True)
    if not decoded.valid.any():  # e.g. packets of the wrong size: all-zero radar, never "ok"
        raise dca1000.RfFormatError(rf_path, no_frame)
    iq, chest_bin = radar.chest_iq(decoded.adc, decoded.valid)
    counts = {"lost_packets": decoded.lost_packets, "discontinuities": decoded.discontinuities}
    return radar.fill_lost_frames(iq, decoded.valid), decoded.valid, chest_bin, counts


def _load_label_pickle(path: Path):
    """Restricted unpickling (untrusted input): a refused or unreadable pickle stops the run, naming it."""
    try:
        return load_pickle(path)
    except UnsafePickleError:
        raise
    except Exception as exc:
        raise DatasetError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None


def load_folds(root: Path) -> dict[str, dict[str, str]]:
    """``demo_fold.pkl`` -> {"v_<s>_<t>": {fold: split}} over every fold (empty when absent)."""
    path = root / "demo_fold.pkl"
    if not path.is_file():
        return {}
    folds = _load_label_pickle(path)
    expected = "expected {fold: {'train'|'val'|'test': [session, ...]}}"
    if not isinstance(folds, dict) or not all(isinstance(v, dict) for v in folds.values()):
        raise DatasetError(f"{path}: {expected}, got {type(folds).__name__}")
    out: dict[str, dict[str, str]] = {}
    for fold in sorted(folds, key=str):
        for split in ("train", "val", "test"):
            names = folds[fold].get(split, [])
            if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple, set, np.ndarray)):
                raise DatasetError(
                    f"{path}: fold {fold!r} {split} is {type(names).__name__}, not a list; {expected}"
                )
            for name in names:
                out.setdefault(str(name), {})[str(fold)] = split
    return out


def fitzpatrick_type(value) -> int | None:
    """Fitzpatrick skin type 1..6 from a label value (int, whole float or digit string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        n = int(value)
    elif isinstance(value, (float, np.floating)) and float(value).is_integer():
        n = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        n = int(value.strip())
    else:
        return None
    return n if 1 <= n <= 6 else None


def load_labels(root: Path) -> tuple[dict[str, int | str], dict[str, str]]:
    """Fitzpatrick types {"v_<s>": type} and fold-0 membership {"v_<s>_<t>": split}.

    A label that is not a type 1..6 maps to its ``repr`` (a string): the session is stored with skin
    type -1 and the value is noted in the manifest's ``repairs``.
    """
    skin: dict[str, int | str] = {}
    fitz = root / "fitzpatrick_labels.pkl"
    if fitz.is_file():
        labels = _load_label_pickle(fitz)
        if not isinstance(labels, dict):
            raise DatasetError(f"{fitz}: expected {{'v_<s>': type}}, got {type(labels).__name__}")
        for k, v in labels.items():
            t = fitzpatrick_type(v)
            skin[str(k)] = t if t is not None else repr(v)[:40]
    folds = load_folds(root)
    first = min((k for v in folds.values() for k in v), key=_fold_key, default=None)
    fold_of = {name: f[first] for name, f in folds.items() if first in f}
    return skin, fold_of


def _fold_key(k: str):
    return (0, int(k), k) if k.isdigit() else (1, 0, k)


def _aligned_frames(frame_dir: Path, n_video: int, radar_job, n_png: int, n_ppg: int, rf_path: Path):
    """The frames 0..T-1 for T = min(video, PPG - 25, radar frames / 4); the radar's part of T is
    awaited before frame 2 s (a shorter session fails whatever the radar says)."""
    limit, given = n_video, 0
    for block in iter_frames(frame_dir, n_video):
        if limit == n_video and given + len(block) > 2 * FPS:
            limit = min(n_video, radar_job.result()[0].shape[0] // RADAR_PER_FRAME)
            if limit < 2 * FPS:
                raise SessionError(
                    f"{rf_path.parent}: only {limit} aligned frames (< 2 s) from {n_png} frames, "
                    f"{n_ppg} PPG samples, {radar_job.result()[0].shape[0]} radar frames"
                )
        block = block[: max(0, limit - given)]
        if len(block):
            yield block
        given += len(block)
        if given >= limit:
            return


def build_session(writer, root: Path, session: str, decoder: str, notes: tuple[str, ...] = ()) -> SessionData:
    """Read, align and check one EquiPleth session (see the module docstring); the video is streamed
    into ``writer`` (a :class:`pipeline.store.SessionWriter`), only the aligned T frames are read.

    ``notes``: dataset-level remarks for this session's ``repairs`` (e.g. an unknown skin type).
    """
    frame_dir = root / "rgb_files" / session
    n_png = list_frames(frame_dir)
    ppg_notes: list[str] = []
    ppg = read_ppg(root, session, ppg_notes)
    rf_path = root / "rf_files" / session[2:] / "rf.pkl"
    n_video = min(n_png, ppg.size - PPG_OFFSET)
    # The radar decodes in a helper thread while the frames decode (numpy releases the GIL); its
    # length can only shorten the session, and it is known long before the first shard is written.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rf.pkl") as pool:
        radar_job = pool.submit(read_radar, rf_path, decoder)
        writer.write_video(_aligned_frames(frame_dir, n_video, radar_job, n_png, ppg.size, rf_path))
        iq, ok, chest_bin, counts = radar_job.result()
    t = writer.n_frames
    if t < 2 * FPS or t > iq.shape[0] // RADAR_PER_FRAME:  # (the latter only for videos under 2 s)
        raise SessionError(
            f"{rf_path.parent}: only {min(t, iq.shape[0] // RADAR_PER_FRAME)} aligned frames (< 2 s) "
            f"from {n_png} frames, {ppg.size} PPG samples, {iq.shape[0]} radar frames"
        )
    n_rf = t * RADAR_PER_FRAME
    lost_frames = int((~ok[:n_rf]).sum())
    repairs = [*notes, *ppg_notes]
    if lost_frames:
        repairs.append(f"radar: {lost_frames} lost frames interpolated")
    if n_png > t:
        repairs.append(f"video: {n_png - t} trailing frames dropped")
    return SessionData(
        bvp=ppg[PPG_OFFSET : PPG_OFFSET + t],
        radar=iq[:n_rf],
        radar_ok=ok[:n_rf],
        fps=FPS,
        radar_fps=dca1000.RADAR_FPS,
        radar_bin=chest_bin,
        radar_channel=radar.IQ_HALF_WIDTH,
        attrs={"ppg_offset": PPG_OFFSET, "rf_decoder": decoder},
        row={
            "rf_lost_packets": counts["lost_packets"],
            "rf_lost_frames": lost_frames,
            "rf_discontinuities": counts["discontinuities"],
            "repairs": "; ".join(repairs),
        },
    )


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
    ``store`` may be a path or an fsspec URL. A rerun skips sessions whose store group is complete
    and was made with the same decoder, unless ``overwrite``.
    Returns the sessions manifest (one row per session, failed ones included).
    """
    if decoder not in dca1000.DECODERS:
        raise ValueError(f"unknown rf decoder {decoder!r}; choose one of {sorted(dca1000.DECODERS)}")
    root = Path(root)
    sessions = list_sessions(root)
    if not sessions:
        raise FileNotFoundError(f"{root / 'rgb_files'}: no v_<subject>_<trial> session folders")
    skin, _ = load_labels(root)
    folds = load_folds(root)
    first = min((k for v in folds.values() for k in v), key=_fold_key, default=None)
    jobs = []
    for s in sessions:
        subject, trial = s.split("_")[1:3]
        f = folds.get(s, {})
        row = {
            "session": s,
            "dataset": "equipleth",
            "subject": subject,
            "trial": trial,
            "skin_type": skin.get(f"v_{subject}", -1),
            "fold_split": f.get(first, "") if first is not None else "",
            "folds": json.dumps(f, sort_keys=True) if f else "",
        }
        notes = ()
        if isinstance(row["skin_type"], str):  # a label that is not a type 1..6
            notes = (f"skin_type: v_{subject} is {row['skin_type']} in fitzpatrick_labels.pkl, not 1-6 "
                     "(recorded as -1)",)  # fmt: skip
            row["skin_type"] = -1
        elif row["skin_type"] == -1:
            notes = (f"skin_type: v_{subject} not in fitzpatrick_labels.pkl (recorded as -1)",)
        jobs.append(Job(row=row, build=build_session, args=(root, s, decoder, notes)))
    # version 3: short PPG gaps are interpolated, flat PPG fails, unknown skin types are noted
    # version 4: multi-column PPG and rf.pkl without a complete radar frame fail; plausibility notes
    params = {"recipe": "equipleth", "version": 4, "rf_decoder": decoder}
    manifest = run_recipe("equipleth", jobs, store, manifests_dir, params, workers, scheduler, overwrite)
    write_warnings(Path(manifests_dir) / "equipleth_warnings.txt", fold_warnings(folds, sessions))
    return manifest


def fold_warnings(folds: dict[str, dict[str, str]], sessions: list[str]) -> list[str]:
    """Sessions named by ``demo_fold.pkl`` that have no folder under ``rgb_files`` (used for nothing)."""
    missing = sorted(set(folds) - set(sessions))
    if not missing:
        return []
    shown = ", ".join(repr(m) for m in missing[:10]) + (", ..." if len(missing) > 10 else "")
    return [f"demo_fold.pkl names {len(missing)} session(s) not under rgb_files/: {shown}"]


def write_warnings(path: Path, lines: list[str]) -> None:
    """Dataset-level warnings next to the sessions manifest (the file is removed when there are none)."""
    for line in lines:
        warnings.warn(line, stacklevel=3)
    if not lines:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(path.suffix + ".partial")
    tmp.write_text("".join(f"{line}\n" for line in lines))
    tmp.replace(path)
