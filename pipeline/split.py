"""Subject-level splits, sync-shift injection, the one window cutter and the one labelled-subject draw.

Who owns what:

* ``rpm split`` owns the **subjects** (train / val / test, :func:`make_splits`) and the **sync-shift
  schedule** (:class:`SyncShifts`: seed, probability, shift; stored in ``splits.json["shift"]``).
* **Windows** are cut by one function, :func:`session_windows` (starts from
  :func:`pipeline.spectrum.window_starts`, the shift of each training window from the schedule), for
  any window length: ``clips.csv`` (``rpm split``), the trainer's windows and the report's test windows
  (both through :class:`train.data.WindowDataset`) all come from it. ``clips.csv`` lists the windows at
  ``rpm split --frames/--stride`` (default 256 / 30); a run that trains on other windows (the cpu
  preset's 128 / 32) cuts its own with the same function and the same shifts, so it needs no second
  split. Where lengths and strides agree, the run's windows are exactly the table's rows.
* **Labelled subjects** are drawn in one place, :func:`labeled_subjects`, from the split's training
  subjects, a fraction and a seed. The fraction is a training choice: ``rpm train --labeled-frac F``
  (with its ``--seed``) decides which labels a run uses. ``rpm split --labeled-frac`` (deprecated) only
  fills ``clips.csv``'s ``labeled`` column for inspection, with the same draw and the split's seed.

Every subject's sessions land in exactly one split. Subject lists are sorted before any seeded
shuffle, so the same seed gives the same split on every machine.

Protocols for choosing test subjects (intra-dataset unless ``cross``):
  * ``fold``: the subjects of ``demo_fold.pkl``'s test list (fold ``fold``, default the first;
    a subject with any test session goes wholly to test, so the split stays subject-disjoint);
  * ``holdout``: a seeded ``test_frac`` of subjects;
  * ``auto``: ``fold`` when the manifest names test sessions, else ``holdout``;
  * ``cross``: train and val come from the source dataset (every subject), and every ok session of
    the target dataset is test.
The non-test subjects are split train:val = (1 - val_frac):val_frac (default 4:1) with the seed.

Labelled subjects: a seeded ceil(F * n) of the training subjects; val and test windows are always
labelled (their labels select and evaluate models).

Sync-shift injection (:class:`SyncShifts`): every possible start frame s of a session draws
u ~ U[0, 1) from a generator seeded by (split seed, session name), so the draw of the window
(session, s) does not depend on the window length, the stride or the other sessions. A training
window starting at s is shifted when u < P and the shifted radar window still fits in the session
(s + shift + T <= n): its radar window then starts ``shift`` video frames later (``shift_frames``,
``radar_start`` in ``clips.csv``). Val and test windows are never shifted, and the stored data never are.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from manifests import CLIP_COLUMNS, SPLIT_COLUMNS, SPLITS, read_sessions
from pipeline.errors import RpmError
from pipeline.spectrum import window_starts


class SplitError(RpmError, ValueError):
    """A split that cannot be made or read; the message names the file or option and the problem."""


# Columns a sessions manifest must have for a split (the rest of manifests.SESSION_COLUMNS is optional).
SPLIT_INPUT_COLUMNS = ("session", "dataset", "subject", "status", "n_frames")


def _read_csv_table(path: Path, columns, rerun: str, reader) -> pd.DataFrame:
    """``reader(path)`` with every way a CSV can be unusable turned into one :class:`SplitError`."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "missing"
        raise SplitError(f"{path}: {what}; run `{rerun}` first")
    try:
        table = reader(path)
    except pd.errors.EmptyDataError:
        raise SplitError(f"{path}: empty file; rerun `{rerun}`") from None
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError) as exc:
        problem = " ".join(str(exc).split())
        raise SplitError(f"{path}: not a readable CSV table ({problem}); rerun `{rerun}`") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise SplitError(f"{path}: missing column(s) {', '.join(missing)}; rerun `{rerun}`")
    return table


def load_sessions_manifest(path: Path) -> pd.DataFrame:
    """A sessions manifest for splitting: readable, with :data:`SPLIT_INPUT_COLUMNS` (else SplitError)."""
    table = _read_csv_table(path, SPLIT_INPUT_COLUMNS, "rpm preprocess", read_sessions)
    ok = table[table.status == "ok"]
    if pd.to_numeric(ok.n_frames, errors="coerce").isna().any():
        raise SplitError(
            f"{path}: column n_frames is not a whole number on every ok row; rerun `rpm preprocess`"
        )
    return table


def read_split_table(path: Path) -> pd.DataFrame:
    """``splits.csv`` (session, dataset, subject, split as strings); SplitError naming it when unusable."""
    table = _read_csv_table(
        path,
        SPLIT_COLUMNS,
        "rpm split",
        lambda p: pd.read_csv(p, dtype={c: str for c in SPLIT_COLUMNS}, keep_default_na=False),
    )
    unknown = sorted(set(table.split) - set(SPLITS))
    if unknown:
        raise SplitError(
            f"{path}: unknown split name(s) {unknown} (expected {', '.join(SPLITS)}); rerun `rpm split`"
        )
    return table


def read_split_meta(path: Path, required=("sessions_manifest", "sessions_sha256")) -> dict:
    """``splits.json`` as a dict with the ``required`` keys; SplitError naming it when missing, not a
    JSON object or without one of them."""
    path = Path(path)
    if not path.is_file():
        raise SplitError(f"{path}: missing; rerun `rpm split`")
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SplitError(f"{path}: not valid JSON ({exc}); rerun `rpm split`") from None
    if not isinstance(meta, dict):
        raise SplitError(f"{path}: expected a JSON object, got {type(meta).__name__}; rerun `rpm split`")
    missing = [k for k in required if k not in meta]
    if missing:
        raise SplitError(f"{path}: no {', '.join(missing)}; rerun `rpm split`")
    return meta


def _subject_key(s: str):
    return (0, int(s), s) if str(s).isdigit() else (1, 0, str(s))


def sorted_subjects(subjects) -> list[str]:
    return sorted({str(s) for s in subjects}, key=_subject_key)


def train_val_subjects(subjects: list[str], seed: int, val_ratio: float = 0.2) -> tuple[list[str], list[str]]:
    """Seeded subject-level 4:1 split (at least one val subject when there are two or more)."""
    subjects = sorted_subjects(subjects)
    if len(subjects) < 2:
        raise SplitError(f"need at least 2 non-test subjects for a train/val split, have {len(subjects)}")
    if not 0.0 < val_ratio < 1.0:
        raise SplitError(f"val fraction must be in (0, 1), got {val_ratio}")
    order = np.random.default_rng(seed).permutation(len(subjects))
    n_val = min(len(subjects) - 1, max(1, int(round(len(subjects) * val_ratio))))
    val = sorted_subjects(subjects[i] for i in order[:n_val])
    train = sorted_subjects(subjects[i] for i in order[n_val:])
    return train, val


def labeled_subjects(train_subjects: list[str], frac: float, seed: int) -> list[str]:
    """A seeded ceil(frac * n) subset of the (sorted) training subjects: the one labelled-subject draw.

    ``rpm train`` calls it with the split's training subjects, its ``--labeled-frac`` and ``--seed``;
    ``rpm split --labeled-frac`` (deprecated) with the split's seed, for ``clips.csv``'s ``labeled``
    column only. Raises SplitError unless 0 < frac <= 1 selects at least one subject."""
    subjects = sorted_subjects(train_subjects)
    n = math.ceil(frac * len(subjects) - 1e-9) if 0.0 < frac <= 1.0 else 0  # (NaN included)
    if n == 0:
        raise SplitError(f"labelled fraction {frac} selects zero of {len(subjects)} training subjects")
    order = np.random.default_rng(seed).permutation(len(subjects))
    return sorted_subjects(subjects[i] for i in order[:n])


_SHIFT_STREAM = 0x5F1F7  # keeps the shift draws apart from every other use of the split seed


@dataclass(frozen=True)
class SyncShifts:
    """The split's sync-shift schedule (module docstring): ``prob`` P, ``frames`` the forward radar shift
    in video frames, ``seed`` the split's seed. Raises :class:`SplitError` for P outside [0, 1] or a
    negative shift."""

    seed: int
    prob: float = 0.0
    frames: int = 30

    def __post_init__(self):
        if not (math.isfinite(self.prob) and 0.0 <= self.prob <= 1.0):
            raise SplitError(f"shift probability must be in [0, 1], got {self.prob}")
        if self.frames < 0:
            raise SplitError(f"shift frames must be >= 0, got {self.frames}")

    def drawn(self, session: str, n: int) -> np.ndarray:
        """(n,) bool: whether a training window of ``session`` (n frames) starting at frame s draws a shift.

        Entry s depends only on (seed, session, s) and P: the same for every window length and stride.
        """
        if self.prob == 0.0:
            return np.zeros(n, dtype=bool)
        key = int.from_bytes(hashlib.sha256(str(session).encode()).digest()[:8], "little")
        rng = np.random.default_rng(np.random.SeedSequence([int(self.seed), _SHIFT_STREAM, key]))
        return rng.random(n) < self.prob

    def to_meta(self) -> dict:
        """The settings as ``splits.json["shift"]`` stores them (statistics are added beside them)."""
        return {"prob": self.prob, "frames": self.frames, "seed": self.seed}

    @classmethod
    def from_meta(cls, meta: dict, where: str = "splits.json") -> SyncShifts:
        """The schedule of a ``splits.json`` (read from ``where``; no ``shift`` entry: no shifts).

        Raises :class:`SplitError` for malformed settings, or for shifts from an older ``rpm split``
        that drew them in clip order (no ``shift.seed``): those cannot be reproduced for other windows.
        """
        shift = meta.get("shift") or {}
        if not isinstance(shift, dict):
            raise SplitError(f"{where}: shift is not an object ({shift!r}); rerun `rpm split`")
        try:
            prob, frames = float(shift.get("prob", 0.0)), int(shift.get("frames", 30))
            seed = shift.get("seed")
            seed = int(seed) if seed is not None else None
        except (TypeError, ValueError):
            raise SplitError(f"{where}: malformed shift settings {shift}; rerun `rpm split`") from None
        if seed is None:
            if prob > 0:
                raise SplitError(
                    f"{where}: sync shifts from an older `rpm split` (no shift seed); rerun `rpm split "
                    f"--seed {meta.get('seed', 3)} --shift-prob {prob:g} --shift-frames {frames}`"
                )
            seed = 0
        try:
            return cls(seed, prob, frames)
        except SplitError as exc:
            raise SplitError(f"{where}: {exc}; rerun `rpm split`") from None


def session_windows(
    n: int,
    frames: int,
    stride: int,
    shifts: SyncShifts | None = None,
    session: str = "",
    flush: bool = False,
) -> list[tuple[int, int]]:
    """(start, shift_frames) of every window of one ``n``-frame session: the one window cutter.

    Starts are :func:`pipeline.spectrum.window_starts` (n, frames, stride, flush). With a schedule
    (pass it for training windows only) a window starting at s is shifted by ``shifts.frames`` when
    ``shifts.drawn(session, n)[s]`` and s + shifts.frames + frames <= n; otherwise its shift is 0.
    ``clips.csv``, the trainer and the report all cut their windows here.
    """
    starts = window_starts(n, frames, stride, flush)
    if shifts is None or shifts.prob == 0.0 or not starts:
        return [(s, 0) for s in starts]
    drawn = shifts.drawn(session, n)
    return [(s, shifts.frames if drawn[s] and s + shifts.frames + frames <= n else 0) for s in starts]


def _fold_test_subjects(ok: pd.DataFrame, fold: str | None) -> list[str]:
    if fold is None or "folds" not in ok:
        col = ok.fold_split.fillna("") if "fold_split" in ok else pd.Series("", index=ok.index)
        return sorted_subjects(ok.loc[col == "test", "subject"])
    test = [
        subj
        for subj, folds in zip(ok.subject, ok.folds.fillna(""), strict=True)
        if folds and json.loads(folds).get(str(fold)) == "test"
    ]
    return sorted_subjects(test)


def make_splits(
    sessions: pd.DataFrame,
    seed: int,
    protocol: str = "auto",
    test_frac: float = 0.2,
    val_frac: float = 0.2,
    fold: str | int | None = None,
    target: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Assign each ok session to train / val / test by subject. Returns (splits, meta).

    ``target`` (the target dataset's sessions manifest) is required by, and only used by, ``cross``.
    """
    ok = sessions[sessions.status == "ok"].copy()
    ok["subject"] = ok["subject"].astype(str)
    if ok.empty:
        raise SplitError("the sessions manifest has no ok sessions to split")
    subjects = sorted_subjects(ok.subject)
    fold = None if fold is None else str(fold)
    fold_test = _fold_test_subjects(ok, fold)
    if protocol == "auto":  # a fold asked for by name is never replaced by a holdout split
        protocol = "fold" if fold_test or fold is not None else "holdout"
    target_ok = None
    if protocol == "fold":
        if not fold_test:
            which = f"fold {fold}" if fold is not None else "demo_fold.pkl"
            raise SplitError(f"protocol 'fold' needs test sessions named by {which}; none were found")
        test = fold_test
    elif protocol == "holdout":
        if not 0.0 < test_frac < 1.0:
            raise SplitError(f"test fraction must be in (0, 1), got {test_frac}")
        order = np.random.default_rng(seed + 1_000_003).permutation(len(subjects))
        n_test = max(1, int(math.floor(len(subjects) * test_frac)))
        test = sorted_subjects(subjects[i] for i in order[:n_test])
    elif protocol == "cross":
        if target is None:
            raise SplitError("protocol 'cross' needs a target dataset (--target)")
        target_ok = target[target.status == "ok"].copy()
        target_ok["subject"] = target_ok["subject"].astype(str)
        if target_ok.empty:
            raise SplitError("the target sessions manifest has no ok sessions to test on")
        if set(target_ok.dataset) & set(ok.dataset):
            raise SplitError(
                f"cross protocol: source and target are the same dataset {sorted(set(ok.dataset))}"
            )
        test = []
    else:
        raise SplitError(f"unknown protocol {protocol!r}; choose auto, fold, holdout or cross")
    train, val = train_val_subjects([s for s in subjects if s not in set(test)], seed, val_frac)
    split_of = {**{s: "train" for s in train}, **{s: "val" for s in val}, **{s: "test" for s in test}}
    ok["split"] = ok.subject.map(split_of)
    parts = [ok[SPLIT_COLUMNS]]
    if target_ok is not None:
        target_ok["split"] = "test"
        parts.append(target_ok[SPLIT_COLUMNS])
        test = sorted_subjects(target_ok.subject)
    splits = pd.concat(parts).sort_values(["split", "dataset", "session"]).reset_index(drop=True)
    meta = {
        "seed": seed,
        "protocol": protocol,
        "test_frac": test_frac,
        "val_frac": val_frac,
        "fold": fold,
        "source": sorted(set(ok.dataset)),
        "target": sorted(set(target_ok.dataset)) if target_ok is not None else sorted(set(ok.dataset)),
        "subjects": {"train": train, "val": val, "test": test},
    }
    return splits, meta


def _radar_ok_fracs(store: str | None, session: str, starts, frames: int, radar_fps: float, fps: float):
    if store is None:
        return None
    from pipeline.store import open_store, session_group, store_exists

    if not store_exists(store):
        return None
    ok = session_group(open_store(store, "r"), store, session)["radar_ok"][...]
    cum = np.concatenate([[0], np.cumsum(ok)])
    n = int(round(frames * radar_fps / fps))
    out = []
    for s in starts:
        a = min(int(round(s * radar_fps / fps)), ok.size)
        b = min(a + n, ok.size)
        out.append(float((cum[b] - cum[a]) / n) if n else float("nan"))
    return out


def make_clips(
    splits: pd.DataFrame,
    sessions: pd.DataFrame,
    seed: int,
    frames: int = 256,
    stride: int = 30,
    labeled: list[str] | None = None,
    shift_prob: float = 0.0,
    shift_frames: int = 30,
    stores: dict[str, str] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """The clips table (see the module docstring and ``manifests``). Returns (clips, shift stats).

    Windows of every split session: :func:`session_windows` (``frames``, ``stride``), with the schedule
    ``SyncShifts(seed, shift_prob, shift_frames)`` on training sessions. ``labeled``: the training
    subjects whose ``labeled`` flag is set (None: all). Stats count training clips: ``train_clips``,
    ``shiftable`` (room for the shift), ``shifted``, ``drawn_but_no_room``.
    """
    if frames < 1 or stride < 1:
        raise SplitError(f"clip frames and stride must be >= 1, got {frames}, {stride}")
    schedule = SyncShifts(seed, shift_prob, shift_frames)
    info = sessions.set_index(["dataset", "session"])
    labeled_set = None if labeled is None else set(labeled)
    rows, stats = [], {"train_clips": 0, "shiftable": 0, "shifted": 0, "drawn_but_no_room": 0}
    for sp in splits.sort_values(["dataset", "session"]).itertuples():
        r = info.loc[(sp.dataset, sp.session)]
        n = int(r.n_frames)
        fps = float(r.fps) if "fps" in r and pd.notna(r.fps) else 30.0
        radar_fps = float(r.radar_fps) if "radar_fps" in r and pd.notna(r.radar_fps) else 120.0
        train = sp.split == "train"
        windows = session_windows(n, frames, stride, schedule if train else None, sp.session)
        starts = [s for s, _ in windows]
        shifts = [d for _, d in windows]
        if train:
            drawn = schedule.drawn(sp.session, n)
            fits = np.array([s + shift_frames + frames <= n for s in starts], dtype=bool)
            hit = drawn[np.asarray(starts, dtype=int)]
            stats["train_clips"] += len(starts)
            stats["shiftable"] += int(fits.sum())
            stats["shifted"] += sum(d > 0 for d in shifts)
            stats["drawn_but_no_room"] += int((hit & ~fits).sum())
        radar_starts = [int(round((s + d) * radar_fps / fps)) for s, d in zip(starts, shifts, strict=True)]
        oks = _radar_ok_fracs(
            (stores or {}).get(sp.dataset), sp.session, [s + d for s, d in zip(starts, shifts, strict=True)],
            frames, radar_fps, fps,
        )  # fmt: skip
        for k, (s, d, rs) in enumerate(zip(starts, shifts, radar_starts, strict=True)):
            rows.append(
                {
                    "session": sp.session,
                    "dataset": sp.dataset,
                    "subject": str(sp.subject),
                    "split": sp.split,
                    "start": s,
                    "frames": frames,
                    "labeled": sp.split != "train" or labeled_set is None or str(sp.subject) in labeled_set,
                    "shift_frames": d,
                    "radar_start": rs,
                    "radar_frames": int(round(frames * radar_fps / fps)),
                    "radar_ok_frac": round(oks[k], 4) if oks is not None else float("nan"),
                }
            )
    clips = pd.DataFrame(rows, columns=[c for c in CLIP_COLUMNS if c != "clip"])
    clips.insert(0, "clip", np.arange(len(clips)))
    return clips, stats


def check_every_split_has_clips(
    clips: pd.DataFrame, splits: pd.DataFrame, sessions: pd.DataFrame, frames: int
) -> None:
    """Refuse (SplitError naming ``--frames``) a clip length that leaves a split without any clip."""
    n_frames = sessions.set_index(["dataset", "session"]).n_frames
    for name in SPLITS:
        rows = splits[splits.split == name]
        if rows.empty or (clips.split == name).any():
            continue
        longest = int(max(n_frames.loc[(d, s)] for d, s in zip(rows.dataset, rows.session, strict=True)))
        raise SplitError(
            f"--frames {frames}: no {name} session is that long (the longest has {longest} frames), so "
            f"the {name} split would have no clips; use --frames {longest} or less"
        )


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_splits(
    manifest_path: Path,
    splits_path: Path,
    meta_path: Path,
    seed: int,
    protocol: str = "auto",
    test_frac: float = 0.2,
    *,
    val_frac: float = 0.2,
    fold: str | int | None = None,
    target_manifest: Path | None = None,
    clips_path: Path | None = None,
    frames: int = 256,
    stride: int = 30,
    labeled_frac: float = 1.0,
    shift_prob: float = 0.0,
    shift_frames: int = 30,
    stores: dict[str, str] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Split, record the sync-shift schedule and list the clips; write splits.csv, splits.json, clips.csv.

    ``splits.json`` keeps the seed, protocol, subject lists, ``shift`` (the :class:`SyncShifts` settings,
    plus the counts of ``clips.csv``'s training clips when it is written) and the manifests' hashes.
    ``labeled_frac`` (deprecated) only fills ``clips.csv``'s ``labeled`` column and ``labeled_subjects``
    in ``splits.json``, drawn by :func:`labeled_subjects` with ``seed``: what ``rpm train --labeled-frac
    F --seed S`` uses when F and S are the same. Training never reads them.
    """
    schedule = SyncShifts(seed, shift_prob, shift_frames)  # checks the settings before anything is read
    manifest_path = Path(manifest_path)
    if not manifest_path.is_file():
        raise SplitError(f"{manifest_path}: no sessions manifest; run `rpm preprocess` first")
    sessions = load_sessions_manifest(manifest_path)
    target = None
    manifests = {"source": {"path": str(manifest_path), "sha256": file_sha256(manifest_path)}}
    if protocol == "cross":
        if target_manifest is None or not Path(target_manifest).is_file():
            raise SplitError(
                f"{target_manifest}: no target sessions manifest; run `rpm preprocess` on it first"
            )
        target = load_sessions_manifest(target_manifest)
        manifests["target"] = {"path": str(target_manifest), "sha256": file_sha256(target_manifest)}
    splits, meta = make_splits(sessions, seed, protocol, test_frac, val_frac, fold, target)
    labeled = labeled_subjects(meta["subjects"]["train"], labeled_frac, seed)
    meta["sessions_manifest"] = str(manifest_path)
    meta["sessions_sha256"] = manifests["source"]["sha256"]
    meta["manifests"] = manifests
    meta["labeled_frac"] = labeled_frac
    meta["labeled_subjects"] = labeled
    meta["shift"] = schedule.to_meta()
    all_sessions = pd.concat([sessions, target]) if target is not None else sessions
    if clips_path is not None:
        clips, stats = make_clips(
            splits, all_sessions, seed, frames, stride, labeled, shift_prob, shift_frames, stores
        )
        check_every_split_has_clips(clips, splits, all_sessions, frames)
        meta["clips"] = {"path": str(clips_path), "frames": frames, "stride": stride, "n": len(clips)}
        meta["shift"].update(stats)
        clips_path.parent.mkdir(parents=True, exist_ok=True)
        clips.to_csv(clips_path, index=False)
    splits_path.parent.mkdir(parents=True, exist_ok=True)
    splits.to_csv(splits_path, index=False)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return splits, meta
