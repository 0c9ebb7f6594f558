"""Checkpoints that cannot run code: what is saved, how it is loaded, and the teacher cache key.

Every ``.pt`` file rpm writes holds only tensors and plain data (dicts, lists, tuples, str, int, float,
bool, None), and every load goes through ``torch.load(..., weights_only=True)``, whose unpickler refuses
any other global. A checkpoint from someone else (``rpm predict --checkpoint``) is therefore safe to
load: one whose pickle names a callable (``os.system`` through ``__reduce__``) is refused before anything
runs, with :class:`CheckpointError`. rpm never falls back to unsafe loading; a checkpoint from an earlier
rpm version that held numpy objects (the ``*_last.pt`` resume state) is refused with a request to retrain.

Files (all written whole to ``<name>.partial`` and renamed, so a kill never leaves half a file):

* model checkpoints (``teacher.pt``, ``student.pt``, ``baseline.pt``): ``kind``, ``model`` (state dict),
  ``config`` (the stage's resolved :class:`~train.config.TrainConfig` as a dict) and extra plain values
  (``val_loss``, ``epoch``, ``policy`` state dict, the teacher's ``history`` and cache payload);
* training state (``student_last.pt``, ``baseline_last.pt``): ``kind``, ``config``, ``epoch``, ``step``,
  ``best_val``, ``rng`` (see :func:`rng_state`), and the state dicts of the stage's modules and optimisers.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import shutil
import warnings
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from train.build import build_stage_model, build_teacher
from train.config import TrainConfig, TrainError, coerce_config_dict, first_line

MODEL_KEYS = ("kind", "model", "config")
STATE_KEYS = ("kind", "config", "epoch", "step", "best_val", "rng")


class CheckpointError(TrainError):
    """A checkpoint that cannot be used: unreadable, unsafe, incomplete, or not matching its config."""


# ----------------------------------------------------------------------------------------------- files


def atomic_save(obj: dict, path: Path) -> None:
    """``torch.save`` to ``<path>.partial``, then rename over ``path``."""
    tmp = path.with_name(path.name + ".partial")
    torch.save(obj, tmp)
    tmp.replace(path)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (a copy where links fail), replacing ``dst`` in one rename."""
    tmp = dst.with_name(dst.name + ".partial")
    tmp.unlink(missing_ok=True)
    if dst.exists() and os.path.samefile(src, dst):
        return  # already linked (a resumed run); rename() onto the same file would leave tmp behind
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    tmp.replace(dst)


def _refusal_detail(exc: pickle.UnpicklingError) -> str:
    """What the weights-only unpickler refused, from its (long, multi-line) message."""
    text = str(exc)
    if found := re.search(r"GLOBAL (\S+)", text):
        return f"global {found.group(1)}"
    if found := re.search(r"Unsupported operand \d+", text):
        return found.group(0).lower()
    return first_line(exc, 160)


def load_checkpoint(path: Path, required=MODEL_KEYS, map_location="cpu") -> dict:
    """The dict saved in ``path``, loaded with ``weights_only=True``; it must hold the ``required`` keys.

    Raises :class:`CheckpointError` (one line naming the file) when the file is missing, junk, truncated,
    holds anything beyond tensors and plain data, or lacks a required key.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # a pickle of another protocol is refused or loaded: no warning
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: no such checkpoint") from exc
    except IsADirectoryError as exc:
        raise CheckpointError(f"{path}: a folder, not a checkpoint file") from exc
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: it holds more than tensors and plain data ({_refusal_detail(exc)}), "
            "so loading it could run code; rpm loads checkpoints safely only. A checkpoint written by an "
            "earlier rpm version cannot be loaded: train it again"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError, KeyError... on junk
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(exc).__name__}: {first_line(exc, 160)}); the file may "
            "be truncated "
            "or not a .pt file"
        ) from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not an rpm checkpoint (holds a {type(ckpt).__name__}, not a dict)")
    missing = [k for k in required if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not an rpm checkpoint of this kind: missing {missing}")
    return ckpt


def config_of(ckpt: dict, path: Path) -> TrainConfig:
    """The TrainConfig a checkpoint was saved under (keys it lacks take their defaults)."""
    if not isinstance(ckpt["config"], dict):
        raise CheckpointError(f"{path}: its config is not a dict")
    known = {f.name for f in fields(TrainConfig)}
    saved = {k: v for k, v in ckpt["config"].items() if k in known}
    try:
        return TrainConfig(**coerce_config_dict(saved, f"{path}: config"))
    except TrainError as exc:
        raise CheckpointError(str(exc)) from exc


# ----------------------------------------------------------------------------------------------- models


def save_checkpoint(path: Path, kind: str, model: nn.Module, cfg: TrainConfig, **extra) -> None:
    """``kind`` (teacher | student | baseline), the model's weights, ``cfg`` and plain ``extra`` values."""
    atomic_save({"kind": kind, "model": model.state_dict(), "config": asdict(cfg), **extra}, path)


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, TrainConfig, dict]:
    """Rebuild a saved teacher / student / baseline from its checkpoint and config, in eval mode.

    Returns (model on ``device``, its config, the checkpoint dict). Raises :class:`CheckpointError`.
    """
    ckpt = load_checkpoint(path, MODEL_KEYS, map_location=device)
    cfg = config_of(ckpt, path)
    weights = ckpt["model"]
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: its model entry is not a state dict")
    try:
        if ckpt["kind"] == "teacher":  # the input width follows the radar it was trained on
            model = build_teacher(cfg, rf_channels=int(weights["encoder.0.weight"].shape[1]))
        elif cfg.method == "fusion" and ckpt["kind"] == "student":  # video net + teacher + fusion net
            model = build_stage_model(cfg, rf_channels=int(weights["radar_net.encoder.0.weight"].shape[1]))
        else:
            model = build_stage_model(cfg)
        model.load_state_dict(weights)
    except (KeyError, ValueError, RuntimeError, AttributeError) as exc:
        raise CheckpointError(
            f"{path}: its weights do not fit the {ckpt['kind']} its config describes ({first_line(exc)})"
        ) from exc
    return model.to(device).eval(), cfg, ckpt


# ----------------------------------------------------------------------------------------------- state


def rng_state() -> dict:
    """The python, numpy and torch RNG states as tensors and plain values (loadable with weights_only)."""
    version, mt, gauss = random.getstate()
    kind, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": {"version": version, "state": list(mt), "gauss_next": gauss},
        "numpy": {
            "bit_generator": str(kind),
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    n = state["numpy"]
    key = n["key"].cpu().numpy().astype(np.uint32)
    np.random.set_state((n["bit_generator"], key, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_training_state(path: Path, kind: str, cfg: TrainConfig, progress: dict, state_dicts: dict) -> None:
    """A stage's state after an epoch: ``progress`` (epoch, step, best_val), RNGs, modules, optimisers."""
    atomic_save(
        {"kind": kind, "config": asdict(cfg), **progress, "rng": rng_state(), **state_dicts},
        path,
    )


def load_training_state(path: Path, names: list[str]) -> dict:
    """A ``*_last.pt`` checked to hold the progress keys, the RNG state and the state dicts ``names``."""
    state = load_checkpoint(path, (*STATE_KEYS, *names))
    for key in ("python", "numpy", "torch"):
        if not isinstance(state["rng"], dict) or key not in state["rng"]:
            raise CheckpointError(f"{path}: its RNG state lacks {key!r}; train the run again")
    return state


# ----------------------------------------------------------------------------------------------- cache


def teacher_cache_key(cfg: TrainConfig, splits_sha256: str, labeled: list[str]) -> tuple[str, dict]:
    """(key, what it hashes): everything that determines the trained teacher."""
    payload = {
        "dataset": cfg.dataset,
        "splits_sha256": splits_sha256,
        "labeled_frac": cfg.labeled_frac,
        "labeled_subjects": list(labeled),
        "seed": cfg.seed,
        "frames": cfg.frames,
        "stride": cfg.stride,
        "fs": cfg.fs,
        "batch_size": cfg.batch_size,
        "teacher_widths": list(cfg.teacher_widths),
        "teacher_epochs": cfg.teacher_epochs,
        "teacher_lr": cfg.teacher_lr,
        "teacher_weight_decay": cfg.teacher_weight_decay,
        "teacher_input": cfg.teacher_input,
        "select": cfg.select,
    }
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]
    return key, payload
