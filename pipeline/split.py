"""Subject-level splits, the clips table, labelled subjects and sync-shift injection.

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

Clips (:func:`make_clips`): windows of ``frames`` video frames (default 256) at ``stride`` (30)
over every split session. Labelled subjects: a seeded ceil(F * n) of the training subjects (the
same rule and draw as ``train.trainer.labeled_subjects``), column ``labeled``; val and test clips
are always labelled (their labels select and evaluate models). Sync-shift injection: each training
clip draws u ~ U[0, 1) from a generator seeded by the seed (in clip order); if u < P and the
shifted radar window still fits in the session, its radar window starts ``shift_frames`` video
frames later (``shift_frames`` column, ``radar_start``); the stored data are never shifted.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from manifests import CLIP_COLUMNS, SPLIT_COLUMNS, SPLITS, read_sessions
from pipeline.errors import RpmError


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
    """A seeded ceil(frac * n) subset of the (sorted) training subjects (as the trainer draws it)."""
    subjects = sorted_subjects(train_subjects)
    n = math.ceil(frac * len(subjects) - 1e-9) if 0.0 < frac <= 1.0 else 0  # (NaN included)
    if n == 0:
        raise SplitError(f"labelled fraction {frac} selects zero of {len(subjects)} training subjects")
    order = np.random.default_rng(seed).permutation(len(subjects))
    return sorted_subjects(subjects[i] for i in order[:n])


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
    """The clips table (see the module docstring and ``manifests``). Returns (clips, shift stats)."""
    if frames < 1 or stride < 1:
        raise SplitError(f"clip frames and stride must be >= 1, got {frames}, {stride}")
    if not 0.0 <= shift_prob <= 1.0:
        raise SplitError(f"shift probability must be in [0, 1], got {shift_prob}")
    if shift_frames < 0:
        raise SplitError(f"shift frames must be >= 0, got {shift_frames}")
    info = sessions.set_index(["dataset", "session"])
    labeled_set = None if labeled is None else set(labeled)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5F1F7]))
    rows, stats = [], {"train_clips": 0, "shiftable": 0, "shifted": 0, "drawn_but_no_room": 0}
    for sp in splits.sort_values(["dataset", "session"]).itertuples():
        r = info.loc[(sp.dataset, sp.session)]
        n = int(r.n_frames)
        fps = float(r.fps) if "fps" in r and pd.notna(r.fps) else 30.0
        radar_fps = float(r.radar_fps) if "radar_fps" in r and pd.notna(r.radar_fps) else 120.0
        starts = list(range(0, n - frames + 1, stride)) if n >= frames else []
        shifts = []
        for s in starts:
            shift = 0
            if sp.split == "train":
                stats["train_clips"] += 1
                drawn = rng.random() < shift_prob
                fits = s + shift_frames + frames <= n
                stats["shiftable"] += int(fits)
                if drawn and fits:
                    shift = shift_frames
                    stats["shifted"] += 1
                elif drawn:
                    stats["drawn_but_no_room"] += 1
            shifts.append(shift)
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
    """Split, draw labelled subjects and cut clips; write splits.csv, splits.json and clips.csv."""
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
    all_sessions = pd.concat([sessions, target]) if target is not None else sessions
    if clips_path is not None:
        clips, stats = make_clips(
            splits, all_sessions, seed, frames, stride, labeled, shift_prob, shift_frames, stores
        )
        check_every_split_has_clips(clips, splits, all_sessions, frames)
        meta["clips"] = {"path": str(clips_path), "frames": frames, "stride": stride, "n": len(clips)}
        meta["shift"] = {"prob": shift_prob, "frames": shift_frames, **stats}
        clips_path.parent.mkdir(parents=True, exist_ok=True)
        clips.to_csv(clips_path, index=False)
    splits_path.parent.mkdir(parents=True, exist_ok=True)
    splits.to_csv(splits_path, index=False)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return splits, meta
