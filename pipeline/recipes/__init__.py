"""Dataset recipes: each turns one raw layout into sessions in a Zarr store and a sessions manifest.

:mod:`~pipeline.recipes.base` holds what every recipe shares (:func:`~pipeline.recipes.base.run_recipe`:
one dask task per session, resume, manifest, validation); :mod:`~pipeline.recipes.equipleth`,
:mod:`~pipeline.recipes.physdrive` and :mod:`~pipeline.recipes.folder` each list their sessions and
build one. :data:`RECIPES` is the registry ``rpm preprocess <dataset>`` reads: dataset -> :class:`Recipe`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.recipes.equipleth import prepare_equipleth
from pipeline.recipes.folder import prepare_folder
from pipeline.recipes.physdrive import prepare_physdrive


@dataclass(frozen=True)
class Recipe:
    """One dataset ``rpm preprocess`` can prepare.

    ``prepare(root, store, manifests_dir, *, workers, scheduler, overwrite, **own)`` stores every
    session of ``root`` and returns the sessions manifest (failed sessions included). ``options``
    maps the recipe's own CLI options (by their Python names, e.g. ``rf_decoder``) to the keyword of
    ``prepare`` each one fills (``decoder``).
    """

    prepare: Callable[..., pd.DataFrame]
    options: dict[str, str]

    def run(self, root: Path, store: str | Path, manifests: Path, options: dict, **common) -> pd.DataFrame:
        """``prepare(root, store, manifests, **common)`` plus this recipe's own entries of ``options``
        under their keywords (another recipe's options are not passed)."""
        own = {keyword: options[option] for option, keyword in self.options.items()}
        return self.prepare(root, store, manifests, **common, **own)


FACE_OPTIONS = {"min_face_rate": "min_face_rate", "min_face_frac": "min_face_frac"}
RECIPES: dict[str, Recipe] = {
    "equipleth": Recipe(prepare_equipleth, {"rf_decoder": "decoder"}),
    "physdrive": Recipe(prepare_physdrive, FACE_OPTIONS),
    "folder": Recipe(prepare_folder, FACE_OPTIONS),
}
