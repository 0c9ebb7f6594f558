"""Subject-level splits: held-out test subjects, then a seeded 4:1 train/val split of the rest.

Every subject's sessions land in exactly one split. Subject lists are sorted before any seeded
shuffle, so the same seed gives the same split on every machine.

Protocols for choosing test subjects:
  * ``fold``: the subjects of ``demo_fold.pkl``'s test list (column ``fold_split``);
  * ``holdout``: a seeded ``test_frac`` of subjects;
  * ``auto``: ``fold`` when the manifest names test sessions, else ``holdout``.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from manifests import SPLIT_COLUMNS


class SplitError(ValueError):
    pass


def _subject_key(s: str):
    return (0, int(s), s) if str(s).isdigit() else (1, 0, str(s))


def sorted_subjects(subjects) -> list[str]:
    return sorted({str(s) for s in subjects}, key=_subject_key)


def train_val_subjects(subjects: list[str], seed: int, val_ratio: float = 0.2) -> tuple[list[str], list[str]]:
    """Seeded subject-level 4:1 split (at least one val subject when there are two or more)."""
    subjects = sorted_subjects(subjects)
    if len(subjects) < 2:
        raise SplitError(f"need at least 2 non-test subjects for a train/val split, have {len(subjects)}")
    order = np.random.default_rng(seed).permutation(len(subjects))
    n_val = max(1, int(round(len(subjects) * val_ratio)))
    val = sorted_subjects(subjects[i] for i in order[:n_val])
    train = sorted_subjects(subjects[i] for i in order[n_val:])
    return train, val


def make_splits(
    sessions: pd.DataFrame, seed: int, protocol: str = "auto", test_frac: float = 0.2
) -> tuple[pd.DataFrame, dict]:
    """Assign each ok session to train / val / test by subject. Returns (splits, meta)."""
    ok = sessions[sessions.status == "ok"].copy()
    ok["subject"] = ok["subject"].astype(str)
    if ok.empty:
        raise SplitError("the sessions manifest has no ok sessions to split")
    subjects = sorted_subjects(ok.subject)
    fold_test = sorted_subjects(ok.loc[ok.fold_split.fillna("") == "test", "subject"])
    if protocol == "auto":
        protocol = "fold" if fold_test else "holdout"
    if protocol == "fold":
        if not fold_test:
            raise SplitError("protocol 'fold' needs test sessions named by demo_fold.pkl; none were found")
        test = fold_test
    elif protocol == "holdout":
        order = np.random.default_rng(seed + 1_000_003).permutation(len(subjects))
        n_test = max(1, int(math.floor(len(subjects) * test_frac)))
        test = sorted_subjects(subjects[i] for i in order[:n_test])
    else:
        raise SplitError(f"unknown protocol {protocol!r}; choose auto, fold or holdout")
    train, val = train_val_subjects([s for s in subjects if s not in set(test)], seed)
    split_of = {**{s: "train" for s in train}, **{s: "val" for s in val}, **{s: "test" for s in test}}
    ok["split"] = ok.subject.map(split_of)
    splits = ok[SPLIT_COLUMNS].sort_values(["split", "session"]).reset_index(drop=True)
    meta = {
        "seed": seed,
        "protocol": protocol,
        "test_frac": test_frac,
        "subjects": {"train": train, "val": val, "test": test},
    }
    return splits, meta


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_splits(
    manifest_path: Path,
    splits_path: Path,
    meta_path: Path,
    seed: int,
    protocol: str = "auto",
    test_frac: float = 0.2,
) -> tuple[pd.DataFrame, dict]:
    if not manifest_path.is_file():
        raise SplitError(f"{manifest_path}: no sessions manifest; run `rpm preprocess` first")
    sessions = pd.read_csv(manifest_path, dtype={"subject": str, "trial": str}, keep_default_na=False)
    splits, meta = make_splits(sessions, seed, protocol, test_frac)
    meta["sessions_manifest"] = str(manifest_path)
    meta["sessions_sha256"] = file_sha256(manifest_path)
    splits_path.parent.mkdir(parents=True, exist_ok=True)
    splits.to_csv(splits_path, index=False)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return splits, meta
