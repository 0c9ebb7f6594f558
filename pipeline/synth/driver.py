"""What both synthetic generators share: checking a run's arguments, claiming the output folder,
writing each recording atomically, resuming, and writing the root files and the truth sidecar.

A generator (:mod:`pipeline.synth.equipleth`, :mod:`pipeline.synth.physdrive`) runs in three steps:

1. :func:`start` fills the arguments left at None from the ``--size`` preset, checks them and the
   difficulty, and only then claims ``out`` (:func:`pipeline.synth.target.claim_synth_target`), so a
   refused run writes nothing;
2. for each recording (an EquiPleth trial, a PhysDrive session) it hands a :class:`Recording` to
   :func:`write_recording`, which fills ``<out>/.synth_tmp/<name>/`` and renames its parts into place
   in order, so a recording whose final paths all exist is complete. On a rerun a complete recording
   is verified against this run's plan and skipped (resume); one that differs raises
   ``FileExistsError`` instead of mixing datasets; a half-renamed one (interrupted between two
   renames) is removed and written again;
3. :func:`finish` removes the emptied tmp folder and writes the root files, then the truth sidecar
   ``synth_truth.json`` last, each to a ``.partial`` file that is renamed into place.

Every recording is a function of (seed, subject, recording) alone, so a resumed run and a fresh one
write byte-identical files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.synth.confounders import check_difficulty
from pipeline.synth.target import claim_synth_target

TRUTH_FILE = "synth_truth.json"
TMP_DIR = ".synth_tmp"


def resolve_size(sizes: dict[str, dict], size: str, **given) -> dict:
    """``given`` with each None entry taken from the ``size`` preset (``sizes[size]``); an entry the
    preset holds is cast to the preset's type (counts int, seconds float)."""
    if size not in sizes:
        raise ValueError(f"size must be one of {sorted(sizes)}, got {size!r}")
    preset = sizes[size]
    out = {}
    for key, value in given.items():
        if key in preset:
            value = type(preset[key])(preset[key] if value is None else value)
        out[key] = value
    return out


@dataclass(frozen=True)
class RunRules:
    """What a generator's arguments may be: ``layout`` (``equipleth``, ``physdrive``: the folder
    marker's layout), the ``--size`` presets (size -> argument -> value) and the ``limits``
    (argument -> (smallest, largest) allowed value, both inclusive; ``math.inf``: no upper bound)."""

    layout: str
    sizes: dict[str, dict]
    limits: dict[str, tuple[float, float]]


def start(
    rules: RunRules, out: str | Path, force: bool, difficulty: str, size: str, **given
) -> tuple[Path, dict]:
    """Check a generator run's arguments, then claim ``out`` for ``rules.layout``; returns (out, arguments).

    ``given``: the run's arguments, resolved by :func:`resolve_size` from ``rules.sizes[size]``.
    Raises ``ValueError`` naming an argument outside ``rules.limits`` or not finite (nothing is
    written), then what :func:`~pipeline.synth.target.claim_synth_target` raises for a folder synth
    may not write into (``force``: write anyway).
    """
    check_difficulty(difficulty)
    args = resolve_size(rules.sizes, size, **given)
    for key, (lo, hi) in rules.limits.items():
        value = args[key]
        if not (math.isfinite(value) and lo <= value <= hi):
            allowed = f">= {lo:g}" if hi == math.inf else f"in {lo:g}..{hi:g}"
            raise ValueError(f"{key} must be {allowed}, got {value}")
    return claim_synth_target(out, rules.layout, force), args


@dataclass(frozen=True)
class Recording:
    """One recording of a synthetic dataset as :func:`write_recording` writes it.

    ``name``: unique in the dataset; the recording is written in ``<out>/.synth_tmp/<name>/``.
    ``parts``: (path inside that tmp folder, final path) pairs, renamed into place in this order.
    ``write(tmp)``: fills the (empty, existing) tmp folder with every part.
    ``verify()``: for a recording already complete on disk: the ways it differs from this run's
    (empty if it matches), checked cheaply (labels, counts), never by rendering it again.
    """

    name: str
    parts: tuple[tuple[str, Path], ...]
    write: Callable[[Path], None]
    verify: Callable[[], list[str]]


def write_recording(out: Path, rec: Recording) -> bool:
    """Write ``rec`` atomically under ``out``, or skip it if complete; returns whether it was written.

    Complete: every final path exists (the parts are renamed last, one by one). A complete recording
    that ``rec.verify()`` finds different raises ``FileExistsError`` naming it. Parts left by an
    interrupted run (some final paths, the tmp folder) are removed before the recording is rewritten.
    """
    finals = [final for _, final in rec.parts]
    if all(p.exists() for p in finals):
        problems = rec.verify()
        if problems:
            raise FileExistsError(
                f"{' / '.join(map(str, finals))} already exist but do not match this run: "
                + "; ".join(problems)
                + ". Use a fresh output folder."
            )
        return False
    for leftover in finals:
        if leftover.exists():
            shutil.rmtree(leftover)
    tmp = out / TMP_DIR / rec.name
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    rec.write(tmp)
    for inside, final in rec.parts:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / inside, final)
    shutil.rmtree(tmp)
    return True


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through ``<path>.partial`` and a rename: readers see all or nothing."""
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def finish(out: Path, files: dict[str, bytes], truth: dict) -> None:
    """End a run: remove the emptied tmp folder, write the root ``files`` (name under ``out`` -> bytes)
    in order and then the truth sidecar (``truth`` as JSON, indent 1), each with :func:`atomic_write`."""
    tmp_root = out / TMP_DIR
    if tmp_root.is_dir() and not any(tmp_root.iterdir()):
        tmp_root.rmdir()
    for name, data in files.items():
        atomic_write(out / name, data)
    atomic_write(out / TRUTH_FILE, json.dumps(truth, indent=1).encode())
