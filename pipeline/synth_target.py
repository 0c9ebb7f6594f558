"""Which folders ``rpm synth`` may write into: its own, new or empty ones, or any with ``--force``.

The default target, ``data/raw/<dataset>/``, is also where the real dataset lives, so a synth run
must never overwrite a folder it did not write. Before writing any data, :func:`claim_synth_target`
writes (atomically) the marker ``<out>/.rpm_synth.json`` = ``{"rpm_synth": {"layout": ..., "version": 1}}``.
A later run accepts a folder that is absent or empty, or holds the marker of the same layout (a rerun
resumes or rewrites it). A synth output written before the marker existed is recognised by its
``synth_truth.json`` (whose ``_note`` names rpm's generator) and marked. Anything else, a folder of
the other layout included, is refused with :class:`SynthTargetError` unless ``force``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.errors import RpmError
from pipeline.paths import check_output_dir

SYNTH_MARKER = ".rpm_synth.json"
SYNTH_VERSION = 1
LAYOUTS = {"equipleth": "EquiPleth", "physdrive": "PhysDrive"}
# How synth_truth.json begins (indent=1), before the marker existed; the generator's name follows.
_TRUTH_START = '{\n "_note": "Ground truth of the rpm synthetic '


class SynthTargetError(RpmError, RuntimeError):
    """``rpm synth`` was pointed at a folder it did not write (and not given ``--force``)."""


def synth_owner(out: Path) -> str | None:
    """The layout rpm synth wrote into ``out`` (``equipleth``/``physdrive``), or None if it did not."""
    try:
        marker = json.loads((out / SYNTH_MARKER).read_text())
        layout = marker["rpm_synth"]["layout"]
        return layout if layout in LAYOUTS else None
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        with open(out / "synth_truth.json", encoding="utf-8") as f:
            head = f.read(len(_TRUTH_START) + 20)
    except (OSError, UnicodeDecodeError):
        return None
    for layout, generator in LAYOUTS.items():
        if head.startswith(f"{_TRUTH_START}{generator} generator"):
            return layout
    return None


def claim_synth_target(out: str | Path, layout: str, force: bool = False) -> Path:
    """Make ``out`` a folder ``rpm synth <layout>`` may write into (see the module docstring); returns it.

    Raises :class:`SynthTargetError` (nothing written) for a non-empty folder synth did not write for
    this layout unless ``force``, and :class:`pipeline.paths.OutputPathError` if ``out`` is a file."""
    out = check_output_dir(out, "--out")
    owner = synth_owner(out) if out.is_dir() else None
    if owner != layout and not force and out.is_dir() and any(out.iterdir()):
        what = (
            f"holds rpm's synthetic {LAYOUTS[owner]} data"
            if owner
            else "is not empty and was not written by rpm synth"
        )
        raise SynthTargetError(
            f"{out}: {what}; refusing to write synthetic {LAYOUTS[layout]} data into it "
            "(choose another --out, or pass --force to write into it anyway)"
        )
    out.mkdir(parents=True, exist_ok=True)
    marker = json.dumps({"rpm_synth": {"layout": layout, "version": SYNTH_VERSION}}, indent=1) + "\n"
    path = out / SYNTH_MARKER
    if not path.is_file() or path.read_text() != marker:
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(marker)
        os.replace(tmp, path)
    return out
