"""What the report knows about each test session: subject, skin type, recording conditions and the radar
corruption intervals of the synthetic truth sidecar (``data/raw/<dataset>/synth_truth.json``).

Key names come from :mod:`train.report.schema`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.paths import Workdir
from pipeline.store import open_store, session_group
from train.evaluate import skin_group
from train.report.schema import (
    CORRUPTION_END,
    CORRUPTION_KIND,
    CORRUPTION_MODALITY,
    CORRUPTION_START,
    MANIFEST_CONDITIONS,
    MANIFEST_SESSION,
    RADAR,
    STORE_CONDITION_KEYS,
    STORE_CONDITIONS,
    STORE_SKIN_TYPE,
    STORE_SUBJECT,
    TRUTH_CONDITION_KEYS,
    TRUTH_CONDITIONS,
    TRUTH_CORRUPTIONS,
    TRUTH_ENTRIES,
    TRUTH_FILE,
    TRUTH_NAMES,
)

Interval = tuple[float, float, str]  # (start_s, end_s, kind) on the video clock


def truth_path(workdir: Workdir, dataset: str) -> Path:
    return workdir.raw(dataset) / TRUTH_FILE


def load_truth(workdir: Workdir, dataset: str) -> tuple[dict | None, Path]:
    """(the truth sidecar, its path); None when there is none or it is not readable JSON."""
    path = truth_path(workdir, dataset)
    if not path.is_file():
        return None, path
    try:
        return json.loads(path.read_text()), path
    except (OSError, json.JSONDecodeError):
        return None, path


def truth_entries(truth: dict | None, dataset: str) -> dict:
    """The sidecar's per-session entries (EquiPleth ``trials``, PhysDrive ``sessions``); {} without."""
    return (truth or {}).get(TRUTH_ENTRIES.get(dataset, ""), {})


def truth_entry(truth: dict | None, dataset: str, session: str) -> dict:
    """The sidecar entry of store session ``session``; {} when there is none."""
    name = TRUTH_NAMES.get(dataset)
    return truth_entries(truth, dataset).get(name(session), {}) if name else {}


def radar_corruptions(entry: dict) -> list[Interval] | None:
    """Radar corruption intervals of one truth entry; None when the entry lists no corruptions at all."""
    if TRUTH_CORRUPTIONS not in entry:
        return None
    out = []
    entries = entry[TRUTH_CORRUPTIONS]
    for e in entries if isinstance(entries, list) else []:
        try:
            if e[CORRUPTION_MODALITY] == RADAR:
                out.append((float(e[CORRUPTION_START]), float(e[CORRUPTION_END]), str(e[CORRUPTION_KIND])))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def corrupted(corr: list[Interval] | None, start: int, length: int, fs: float) -> bool | None:
    """Whether frames [start, start + length) at ``fs`` overlap a corruption; None without intervals."""
    if corr is None:
        return None
    a, b = start / fs, (start + length) / fs
    return any(s < b and e > a for s, e, _ in corr)


def _categorical(values: dict, keys: tuple[str, ...]) -> dict[str, str]:
    """Condition ``keys`` of ``values``: strings as they are, booleans as "<key>" / "no <key>"."""
    out = {}
    for k in keys:
        v = values.get(k)
        if isinstance(v, bool):
            out[k] = k if v else f"no {k}"
        elif isinstance(v, str) and v:
            out[k] = v
    return out


def _read_manifest(workdir: Workdir, dataset: str) -> pd.DataFrame | None:
    path = workdir.sessions_manifest(dataset)
    if not path.is_file():
        return None
    return pd.read_csv(path, dtype=str, keep_default_na=False).set_index(MANIFEST_SESSION)


def session_conditions(manifest_row, attrs: dict, entry: dict) -> dict[str, str]:
    """Conditions of one session from its manifest row, store attributes and truth entry (later win)."""
    cond = {}
    if manifest_row is not None:
        cond.update(
            _categorical({k: manifest_row.get(k, "") for k in MANIFEST_CONDITIONS}, MANIFEST_CONDITIONS)
        )
    stored = attrs.get(STORE_CONDITIONS)
    cond.update(_categorical(stored if isinstance(stored, dict) else {}, STORE_CONDITION_KEYS))
    given = entry.get(TRUTH_CONDITIONS)
    cond.update(_categorical(given if isinstance(given, dict) else {}, TRUTH_CONDITION_KEYS))
    return cond


def session_table(workdir: Workdir, dataset: str, sessions: list[str], truth: dict | None) -> pd.DataFrame:
    """Per test session (sorted): subject, skin type and group, conditions, radar corruption intervals."""
    root = open_store(workdir.store(dataset), "r")
    manifest = _read_manifest(workdir, dataset)
    rows = []
    for s in sorted(sessions):
        attrs = dict(session_group(root, workdir.store(dataset), s).attrs)
        entry = truth_entry(truth, dataset, s)
        row = manifest.loc[s] if manifest is not None and s in manifest.index else None
        skin = int(attrs.get(STORE_SKIN_TYPE, -1))
        rows.append(
            {
                "session": s,
                "subject": str(attrs.get(STORE_SUBJECT, "")),
                "skin_type": skin,
                "skin_group": skin_group(skin),
                "conditions": session_conditions(row, attrs, entry),
                "corruptions": radar_corruptions(entry) if entry else None,
            }
        )
    return pd.DataFrame(rows)


def corruption_source(workdir: Workdir, datasets: list[str], truths: dict) -> dict:
    """Whether the truth sidecars say where the radar was corrupted: {has_corruption, path, reason}.

    ``truths``: dataset -> (truth, path) as :func:`load_truth` returns. ``has_corruption`` when any
    dataset's sidecar lists corruptions (``path``: the last such); ``reason``: why the last dataset
    without them has none.
    """
    info = {"has_corruption": False, "path": "", "reason": ""}
    for d in datasets:
        truth, path = truths.get(d, (None, truth_path(workdir, d)))
        if truth is None:
            info["reason"] = f"No truth sidecar `{path}` (real data carry none)."
        elif not any(radar_corruptions(e) is not None for e in truth_entries(truth, d).values()):
            info["reason"] = f"The sidecar `{path}` lists no radar corruption intervals."
        else:
            info.update(has_corruption=True, path=str(path))
    return info
