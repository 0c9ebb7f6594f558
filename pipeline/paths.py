"""The working-directory layout every stage agrees on.

All defaults live under one working directory: ``--workdir``, else ``$RPM_WORKDIR``, else the
current directory::

    data/raw/<dataset>/     raw dataset in its real on-disk layout (``rpm synth`` writes here)
    data/<dataset>.zarr     preprocessed Zarr v3 store (``rpm preprocess``)
    manifests/              session, split and clip manifests (CSV + JSON)
    runs/<name>/            checkpoints and training logs (``rpm train``)
    reports/                evaluation reports (``rpm report``)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import RpmError

DATASETS = ("equipleth", "physdrive", "folder")


@dataclass(frozen=True)
class Workdir:
    root: Path

    @classmethod
    def resolve(cls, workdir: str | Path | None = None) -> Workdir:
        chosen = workdir or os.environ.get("RPM_WORKDIR") or os.getcwd()
        return cls(Path(chosen).expanduser().resolve())

    def raw(self, dataset: str) -> Path:
        return self.root / "data" / "raw" / dataset

    def store(self, dataset: str) -> Path:
        return self.root / "data" / f"{dataset}.zarr"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def sessions_manifest(self, dataset: str) -> Path:
        return self.manifests / f"{dataset}_sessions.csv"

    @property
    def splits_manifest(self) -> Path:
        return self.manifests / "splits.csv"

    @property
    def splits_meta(self) -> Path:
        return self.manifests / "splits.json"

    @property
    def clips_manifest(self) -> Path:
        return self.manifests / "clips.csv"


class PathEscapeError(RpmError, ValueError):
    """A name taken from a manifest or dataset file that would lead outside the dataset root."""


def safe_join(root: str | Path, *names: str, source: str | Path = "") -> Path:
    """``root / names...``, refusing absolute names and ``..`` that leave ``root`` (checked lexically,
    so a dataset may still live behind a symlink). ``source`` names the file the names came from."""
    root = Path(root)
    target = root.joinpath(*[str(n) for n in names])
    base = os.path.normpath(os.path.abspath(root))
    full = os.path.normpath(os.path.abspath(target))
    bad = any(Path(str(n)).is_absolute() or "\x00" in str(n) for n in names)
    if bad or os.path.commonpath([base, full]) != base:
        where = f"{source}: " if source else ""
        raise PathEscapeError(f"{where}{'/'.join(map(str, names))!r} points outside the dataset root {root}")
    return target
