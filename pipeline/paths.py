"""The working-directory layout every stage agrees on.

All defaults live under one working directory: ``--workdir``, else ``$RPM_WORKDIR``, else the
current directory::

    data/raw/<dataset>/     raw dataset in its real on-disk layout (``rpm synth`` writes here)
    data/<dataset>.zarr     preprocessed Zarr v3 store (``rpm preprocess``)
    manifests/              session, split and clip manifests (CSV + JSON)
    runs/<name>/            checkpoints and training logs (``rpm train``)
    reports/                evaluation reports (``rpm report``)

Lock files (``pipeline.lock``; each exists only while its stage runs): ``data/<dataset>.zarr.lock``
(preprocess), ``runs/<name>.lock`` (train), ``manifests/split.lock`` (split), ``data/raw/<dataset>.lock``
(synth). A run name is one plain folder name: no ``/``, ``..``, or leading ``.`` or ``_`` (``runs/_teachers``
is the teacher cache).
"""

from __future__ import annotations

import os
import re
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

    def run(self, name: str) -> Path:
        """``runs/<name>``; raises :class:`PathEscapeError` unless ``name`` is a valid run name."""
        return self.runs / check_run_name(name)

    def run_lock(self, name: str) -> Path:
        """The lock file ``rpm train`` holds while it writes ``runs/<name>``."""
        return self.runs / f"{check_run_name(name)}.lock"

    @property
    def split_lock(self) -> Path:
        """The lock file ``rpm split`` holds while it writes the split and clip manifests."""
        return self.manifests / "split.lock"

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
    """A name taken from a manifest, a dataset file or an option that would lead outside its folder."""


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


# One plain folder name: letters, digits and . _ + = -, starting with a letter or digit (so never "..", a
# path, a hidden name or "_teachers", the teacher cache), and not ending in ".lock" (the runs' lock files).
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,127}")


def check_run_name(name: str, where: str = "--name") -> str:
    """``name`` if it is a run name (one plain folder under ``runs/``); else :class:`PathEscapeError`
    naming ``where`` (the option or config key it came from)."""
    text = str(name)
    if not isinstance(name, str) or not RUN_NAME.fullmatch(text) or text.endswith(".lock"):
        raise PathEscapeError(
            f"{where}: run name {text!r} is not one plain folder name under runs/: use up to 128 letters, "
            "digits and . _ + = -, starting with a letter or digit, not ending in '.lock'"
        )
    return text


class OutputPathError(RpmError, ValueError):
    """An output folder that cannot be created: the path or one of its parents is a file."""


def lock_beside(path: str | Path) -> Path:
    """The lock file ``<path>.lock`` beside a folder (symlinks resolved, so two spellings of one folder
    share a lock)."""
    full = Path(path).expanduser().resolve()
    if not full.name:
        raise OutputPathError(f"{path}: the file system root cannot be written to")
    return full.with_name(full.name + ".lock")


def check_output_dir(path: str | Path, option: str) -> Path:
    """``path`` if it is a folder or can be made one; else :class:`OutputPathError` naming ``option``."""
    path = Path(path)
    for p in (path, *path.absolute().parents):
        if p.exists():
            if not p.is_dir():
                where = "" if p == path else f" ({p} is a file)"
                raise OutputPathError(f"{option} {path}: not a folder{where}; give a folder path")
            break
    return path
