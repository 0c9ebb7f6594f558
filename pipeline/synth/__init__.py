"""The synthetic world: paired face video, radar and PPG written in the real datasets' layouts.

Modules: :mod:`~pipeline.synth.physio` (the simulated physiology), :mod:`~pipeline.synth.scene`
(the reflectance video model, head motion, corruption episodes), :mod:`~pipeline.synth.confounders`
(the realistic world's confounders), the two generators :mod:`~pipeline.synth.equipleth` and
:mod:`~pipeline.synth.physdrive`, :mod:`~pipeline.synth.driver` (what both generators share: argument
checks, atomic recordings, resume, the truth sidecar) and :mod:`~pipeline.synth.target` (which folders
synth may write into).

:data:`GENERATORS` is the registry ``rpm synth <layout>`` reads: layout -> :class:`Generator`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.synth.equipleth import synth_equipleth
from pipeline.synth.physdrive import synth_physdrive

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Generator:
    """One layout ``rpm synth`` writes.

    ``generate(out, *, subjects, seconds, seed, size, force, difficulty, progress, **own)`` writes the
    dataset under ``out`` and returns a DataFrame with one row per recording; ``unit`` names a row in
    the plural ("trials"); ``options`` are the keyword arguments of ``generate`` beyond the shared
    ones (the layout's own CLI options, e.g. ``trials``).
    """

    generate: Callable[..., pd.DataFrame]
    unit: str
    options: tuple[str, ...]

    def run(self, out: Path, options: dict, **shared) -> pd.DataFrame:
        """``generate(out, **shared)`` plus the entries of ``options`` that are this layout's own
        (the others, another layout's options, are not passed)."""
        return self.generate(out, **shared, **{k: options[k] for k in self.options})


GENERATORS: dict[str, Generator] = {
    "equipleth": Generator(synth_equipleth, "trials", ("trials", "crop_size")),
    "physdrive": Generator(synth_physdrive, "sessions", ("sessions",)),
}
