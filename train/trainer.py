"""RPM-Distill training: RF teacher, then the video student with spectral distillation.

Reads top to bottom:

1. config: a flat dataclass (defaults visible below) <- ``preset`` (CPU- or paper-sized values) <- an
   optional TOML file (``--config``) <- explicit command-line values; unknown keys are errors;
2. devices: CUDA when present (bf16 autocast), else CPU in fp32; DDP when ``WORLD_SIZE`` is set
   (``torchrun --nproc-per-node N -m cli train ...``): one process per device, a distributed sampler,
   gradients averaged across processes, checkpoints and logs written by rank 0 only;
3. data: the subject split from ``manifests/splits.csv``, labelled subjects drawn with the seed;
4. the RF teacher, trained on the labelled training subjects only (random I/Q rotation as augmentation),
   cached under ``runs/_teachers/<key>/`` and reused when dataset, split, labelled subjects, seed and
   teacher settings match;
5. the student (``student``: FactorizePhys by default, FactorizePhysBig at 128x128 or PhysNet; every
   student output is cropped to T - 1 samples, the FactorizePhys length) with the label-optional
   objective (Eq. 1)
       L = 1[labelled] * L_sup + lambda * g * sum_k alpha_k L_k
   where (g, alpha) come from the spectral policy network, meta-learned every ``meta_interval``
   steps with a one-step virtual update evaluated on the labelled validation split (bilevel, see
   :func:`meta_loss`). ``method`` swaps the spectral term for a KD baseline (``train/kd.py``); the
   ablation switches (``peak``, ``background``, ``morphology``, ``gate``, ``weights``, ``policy``,
   ``bilevel``) turn parts of the method off;
6. optionally a supervised-only student on the labelled subjects (the no-distillation baseline).

Files in ``runs/<name>/``: ``teacher.pt``, ``student.pt``, ``baseline.pt`` (the selected model: best by
validation L_sup, or the last epoch with ``select="last"``), ``student_last.pt`` / ``baseline_last.pt``
(full training state after every epoch, for ``--resume``), ``config.json``, ``log.jsonl`` (one record per
step and per epoch) and ``log.csv`` (per epoch). Every checkpoint carries the resolved config.

Resume is exact at epoch boundaries: the batch order is a function of (seed, epoch), and the model,
optimiser, policy, auxiliary modules, their optimisers and the python / numpy / torch RNG states are
restored, so on CPU the losses after a resume equal those of an uninterrupted run.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
import math
import os
import random
import shutil
import time
import tomllib
import typing
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm.auto import tqdm

from pipeline.errors import RpmError
from pipeline.paths import Workdir
from pipeline.split import file_sha256, read_split_meta, read_split_table, sorted_subjects
from train import kd
from train.data import WindowDataset, video_to_input
from train.losses import distill_components, relation_map, spectral_features, supervised_loss
from train.models import FactorizePhys, FactorizePhysBig, PhysNet, RFTeacher, SpectralPolicy, rotate_iq


class TrainError(RpmError, RuntimeError):
    pass


MODES = ("distill", "sup_only", "distill_only")
METHODS = ("supervised", "rpm-distill", "output-kd", "fitnets", "dml")
STUDENTS = ("factorizephys", "factorizephys-big", "physnet")
COMPONENTS = ("peak", "background", "morphology")


@dataclass
class TrainConfig:
    run_name: str = "default"
    dataset: str = "equipleth"
    seed: int = 3
    labeled_frac: float = 1.0  # fraction of training subjects whose labels are used
    preset: str = "auto"  # auto (cpu without CUDA, else paper) | cpu | paper
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast on CUDA (CPU always runs fp32)
    # windows
    frames: int = 256  # clip length T in video frames at 30 Hz; the student outputs T - 1
    stride: int = 30  # training window stride
    fs: float = 30.0
    # teacher (RF_conv_decoder on (B, 10, T))
    teacher_widths: tuple[int, ...] = (32, 64, 128, 256, 512, 1024)
    teacher_epochs: int = 30
    teacher_lr: float = 1e-4
    teacher_weight_decay: float = 1e-2
    teacher_cache: bool = True  # reuse runs/_teachers/<key>/teacher.pt when the key matches
    # student: factorizephys (release variant: FSAM on at inference, spatial-mean head) | factorizephys-big
    # (128x128 only) | physnet (frames divisible by 4; fsam does not apply)
    student: str = "factorizephys"
    student_size: int = 72  # 128 when student = factorizephys-big and no size is given
    fsam: bool = True
    epochs: int = 5
    batch_size: int = 4
    lr: float = 5e-5
    weight_decay: float = 1e-2
    lambda_distill: float = 1.0  # lambda of Eq. 1 (also weights the KD baselines' term)
    mode: str = "distill"  # distill (Eq. 1) | sup_only | distill_only
    method: str = "rpm-distill"  # supervised | rpm-distill | output-kd | fitnets | dml
    # ablations of rpm-distill
    peak: bool = True  # use the peak component
    background: bool = True  # use the background (off-peak) component
    morphology: bool = True  # use the morphology (centroid + entropy) component
    gate: bool = True  # False: g = 1
    weights: bool = True  # False: alpha fixed to equal weights over the used components
    # spectral policy + bilevel meta update
    policy: bool = True  # False: fixed g = 1, alpha equal (no policy, no meta step)
    bilevel: bool = True  # False: the policy is trained jointly on L_tr (no meta step)
    meta_interval: int = 10
    policy_lr: float = 1e-4
    virtual_lr: float | None = None  # None: same as lr
    select: str = "best"  # best (lowest mean val L_sup) | last
    baseline: bool = True  # also train the supervised-only student
    max_steps_per_epoch: int | None = None
    num_workers: int = 0
    resume: bool = False  # continue runs/<name>/ from its last epoch checkpoints
    force: bool = False  # with resume: accept checkpoints saved under a different config (a warning only)
    extra: dict = field(default_factory=dict)


PRESETS = {
    # Sized for a 2-core CPU (one FactorizePhys step at B 4, T 128, 72 px takes about 2.5 s there):
    # the demo trains teacher, student and baseline in about 8 minutes.
    "cpu": dict(
        frames=128,
        stride=32,
        teacher_widths=(16, 32, 64, 128),
        teacher_epochs=30,
        teacher_lr=2e-3,
        epochs=3,
        batch_size=4,
        lr=1e-3,
        policy_lr=1e-3,
        max_steps_per_epoch=25,
        num_workers=0,
    ),
    # The paper's protocol (reference a.9): T 256, stride 30, Adam 5e-5 / 1e-4, 5 epochs, the full teacher.
    # Batch 8 (the release uses 1; the losses are per sample) fits a current GPU at 72 px with the meta step.
    "paper": dict(
        frames=256,
        stride=30,
        teacher_widths=(32, 64, 128, 256, 512, 1024),
        teacher_epochs=50,
        teacher_lr=1e-4,
        epochs=5,
        batch_size=8,
        lr=5e-5,
        policy_lr=1e-4,
        max_steps_per_epoch=None,
        num_workers=4,
    ),
}

# Fields that may change when a run is resumed (everything else must match the checkpoint).
RESUME_MUTABLE = {"epochs", "resume", "force", "device", "num_workers", "baseline", "teacher_cache"}


def _field_types() -> dict[str, typing.Any]:
    return typing.get_type_hints(TrainConfig)


def _coerce(name: str, value):
    """Check one config value against the field's type (ints are accepted for floats, lists for tuples)."""
    hint = _field_types()[name]
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise TrainError(f"config key {name!r} may not be empty")
    if type(None) in args:  # X | None
        hint = next(a for a in args if a is not type(None))
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise TrainError(f"config key {name!r} must be a list of integers, got {value!r}")
        return tuple(value)
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, dict)
    if not ok:
        raise TrainError(f"config key {name!r} must be of type {hint.__name__}, got {value!r}")
    return value


def load_config_file(path: str | Path) -> dict:
    """Flat ``key = value`` TOML with TrainConfig field names; unknown keys and wrong types are errors."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise TrainError(f"{path}: no such config file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise TrainError(f"{path}: not valid TOML: {exc}") from exc
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(data) - known
    if unknown:
        raise TrainError(f"{path}: unknown config keys {sorted(unknown)}; known keys: {sorted(known)}")
    return {k: _coerce(k, v) for k, v in data.items()}


def saved_run_config(workdir: Workdir, run_name: str) -> dict:
    """The resolved config of an existing run (``runs/<name>/config.json``), as TrainConfig fields."""
    path = workdir.runs / run_name / "config.json"
    if not path.is_file():
        raise TrainError(f"{path}: nothing to resume (no such run)")
    saved = json.loads(path.read_text())
    known = {f.name for f in fields(TrainConfig)} - {"force"}  # --force applies to one invocation only
    return {k: _coerce(k, v) for k, v in saved.items() if k in known}


def resolve_config(
    overrides: dict, config_file: str | Path | None = None, base: dict | None = None
) -> TrainConfig:
    """Defaults <- preset <- ``config_file`` <- explicit ``overrides`` (None values are ignored).

    ``base`` (a run's saved config, for ``--resume``) replaces defaults and preset: it is already resolved.
    """
    known = {f.name for f in fields(TrainConfig)}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - known
    if unknown:
        raise TrainError(f"unknown config keys: {sorted(unknown)}")
    overrides = {k: _coerce(k, v) for k, v in overrides.items()}
    from_file = load_config_file(config_file) if config_file else {}
    if base is not None:
        cfg = TrainConfig(**{**base, **from_file, **overrides})
    else:
        preset = {**from_file, **overrides}.get("preset", "auto")
        if preset == "auto":
            preset = "paper" if torch.cuda.is_available() else "cpu"
        if preset not in PRESETS:
            raise TrainError(f"unknown preset {preset!r}; choose auto, cpu or paper")
        given = {**from_file, **overrides}
        if given.get("student") == "factorizephys-big" and "student_size" not in given:
            given["student_size"] = FactorizePhysBig.INPUT_SIZE
        cfg = TrainConfig(**{**PRESETS[preset], **given, "preset": preset})
    if not 0.0 < cfg.labeled_frac <= 1.0:
        raise TrainError(f"--labeled-frac must be in (0, 1], got {cfg.labeled_frac}")
    if cfg.mode not in MODES:
        raise TrainError(f"unknown mode {cfg.mode!r}; choose one of {MODES}")
    if cfg.method not in METHODS:
        raise TrainError(f"unknown method {cfg.method!r}; choose one of {METHODS}")
    if cfg.method == "supervised" and cfg.mode == "distill_only":
        raise TrainError("method 'supervised' has nothing to learn in mode 'distill_only'")
    if cfg.method == "rpm-distill" and not component_mask(cfg).any():
        raise TrainError("--no-peak, --no-background and --no-morphology together leave no distillation term")
    if cfg.student not in STUDENTS:
        raise TrainError(f"unknown student {cfg.student!r}; choose one of {STUDENTS}")
    if cfg.student == "factorizephys-big" and cfg.student_size != FactorizePhysBig.INPUT_SIZE:
        raise TrainError(
            f"student factorizephys-big is built for 128x128 input only, got student_size={cfg.student_size}"
        )
    if cfg.student == "physnet" and cfg.frames % 4 != 0:
        raise TrainError(f"student physnet needs frames divisible by 4, got frames={cfg.frames}")
    if cfg.select not in ("best", "last"):
        raise TrainError(f"select must be best or last, got {cfg.select!r}")
    for name in ("epochs", "batch_size", "meta_interval", "frames", "max_steps_per_epoch"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise TrainError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    return cfg


def component_mask(cfg: TrainConfig) -> torch.Tensor:
    """(3,) float mask over [peak, background, morphology] from the ablation switches."""
    return torch.tensor([float(cfg.peak), float(cfg.background), float(cfg.morphology)])


# ----------------------------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly single-process) data-parallel job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    active: bool = False  # a process group is initialised

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str = "auto") -> tuple[DistInfo, bool]:
    """Join the process group when ``WORLD_SIZE`` is set (torchrun). Returns (info, created here).

    The backend is NCCL on CUDA and gloo on CPU.
    """
    if "WORLD_SIZE" not in os.environ:
        return DistInfo(), False
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        created = True
    return DistInfo(rank, world, local_rank, True), created


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA; a no-op on CPU (fp32)."""
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda"
    )


def _full(x: torch.Tensor) -> torch.Tensor:
    """Autocast outputs (bf16 / fp16) back to fp32 for the losses; other dtypes (fp32, fp64) unchanged."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def _sync_grads(params, d: DistInfo) -> None:
    """Average gradients over the processes (one flat all-reduce); a no-op without DDP.

    Used instead of the DistributedDataParallel wrapper because the meta step calls the student through
    ``functional_call`` with explicit parameters, which the wrapper's hooks do not see.
    """
    if not d.active or d.world == 1:
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= d.world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p))
        offset += n


def _sync_buffers(module: nn.Module | None, d: DistInfo) -> None:
    """Rank 0's BatchNorm statistics everywhere (they are local to each process while training)."""
    if module is None or not d.active or d.world == 1:
        return
    for b in module.buffers():
        dist.broadcast(b, src=0)


def _check_in_sync(module: nn.Module | None, d: DistInfo, what: str) -> None:
    """Raise if the replicas' parameters differ (they must stay identical under gradient averaging)."""
    if module is None or not d.active or d.world == 1:
        return
    v = torch.cat([p.detach().reshape(-1).double() for p in module.parameters()])
    idx = torch.arange(v.numel(), dtype=v.dtype, device=v.device)
    mine = torch.stack([v.sum(), (v * v).sum(), (v * idx).sum()])
    every = [torch.zeros_like(mine) for _ in range(d.world)]
    dist.all_gather(every, mine)
    for r, other in enumerate(every):
        if not torch.allclose(other, every[0], rtol=1e-9, atol=1e-9):
            raise TrainError(
                f"{what}: replica on rank {r} diverged from rank 0 ({other.tolist()} vs {every[0]})"
            )


def _barrier(d: DistInfo) -> None:
    if d.active and d.world > 1:
        dist.barrier()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# ----------------------------------------------------------------------------------------------- data


def labeled_subjects(train_subjects: list[str], frac: float, seed: int) -> list[str]:
    """A seeded ceil(frac * n) subset of the (sorted) training subjects."""
    subjects = sorted_subjects(train_subjects)
    n = math.ceil(frac * len(subjects) - 1e-9)
    if n == 0:
        raise TrainError(f"labelled fraction {frac} selects zero of {len(subjects)} training subjects")
    order = np.random.default_rng(seed).permutation(len(subjects))
    return sorted_subjects(subjects[i] for i in order[:n])


def _shuffled_loader(
    ds, cfg: TrainConfig, seed: int, d: DistInfo, device
) -> tuple[DataLoader, DistributedSampler]:
    """Shuffled batches; the order is a function of (seed, epoch) via ``sampler.set_epoch``.

    The same DistributedSampler serves one process (num_replicas 1) and DDP (each rank its share, padded
    to equal length so every rank takes the same number of steps).
    """
    sampler = DistributedSampler(
        ds, num_replicas=d.world, rank=d.rank, shuffle=True, seed=seed, drop_last=False
    )
    loader = DataLoader(
        ds,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
    )
    return loader, sampler


def _eval_loader(ds, cfg: TrainConfig, d: DistInfo, device) -> DataLoader:
    """Every window once (rank r takes windows r, r + world, ...); no padding, so means are exact."""
    share = Subset(ds, list(range(d.rank, len(ds), d.world))) if d.world > 1 else ds
    return DataLoader(
        share,
        batch_size=cfg.batch_size,
        shuffle=False,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
    )


def _forever(loader: DataLoader, sampler: DistributedSampler, first_epoch: int) -> Iterator[dict]:
    """Endless batches, reshuffled (deterministically) at every pass."""
    for e in itertools.count(first_epoch):
        sampler.set_epoch(e)
        yield from loader


# ----------------------------------------------------------------------------------------------- models


def build_student(cfg: TrainConfig) -> nn.Module:
    """The ``cfg.student`` network for (B, 3, frames, student_size, student_size) input."""
    if cfg.student == "physnet":
        return PhysNet(frames=cfg.frames, in_channels=3, input_size=cfg.student_size)
    cls = {"factorizephys": FactorizePhys, "factorizephys-big": FactorizePhysBig}.get(cfg.student)
    if cls is None:
        raise TrainError(f"unknown student {cfg.student!r}; choose one of {STUDENTS}")
    return cls(
        frames=cfg.frames, in_channels=3, input_size=cfg.student_size, fsam=cfg.fsam, fsam_at_inference=True
    )


def student_length(cfg: TrainConfig) -> int:
    """Samples kept of every student, teacher and peer waveform: T - 1, what FactorizePhys outputs.

    PhysNet outputs T samples; cropping every student to T - 1 keeps the losses, the spectral features and
    the evaluation identical across students (the label is cropped to the prediction by the losses).
    """
    return cfg.frames - 1


def build_teacher(cfg: TrainConfig, rf_channels: int = 10) -> RFTeacher:
    """The RF teacher for (B, rf_channels, T) radar windows: 2 x range bins (EquiPleth 10, PhysDrive 16)."""
    return RFTeacher(in_channels=rf_channels, widths=tuple(cfg.teacher_widths))


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".partial")
    torch.save(obj, tmp)
    tmp.replace(path)


def save_checkpoint(path: Path, kind: str, model: nn.Module, cfg: TrainConfig, **extra) -> None:
    _atomic_save({"kind": kind, "model": model.state_dict(), "config": asdict(cfg), **extra}, path)


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, TrainConfig, dict]:
    """Rebuild a saved teacher / student / baseline from its checkpoint and config."""
    ckpt = torch.load(path, map_location=device, weights_only=False)
    known = {f.name for f in fields(TrainConfig)}
    saved = {k: v for k, v in ckpt["config"].items() if k in known}
    cfg = TrainConfig(**{**saved, "teacher_widths": tuple(saved["teacher_widths"])})
    if ckpt["kind"] == "teacher":  # the input width follows the radar it was trained on
        model = build_teacher(cfg, rf_channels=int(ckpt["model"]["encoder.0.weight"].shape[1]))
    else:
        model = build_student(cfg)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), cfg, ckpt


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
        "select": cfg.select,
    }
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]
    return key, payload


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".partial")
    tmp.unlink(missing_ok=True)
    if dst.exists() and os.path.samefile(src, dst):
        return  # already linked (a resumed run); rename() onto the same file would leave tmp behind
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    tmp.replace(dst)


# ----------------------------------------------------------------------------------------------- logs


class RunLog:
    """``log.jsonl`` (one record per step and per epoch) and ``log.csv`` (the epoch records), rank 0 only."""

    def __init__(self, out: Path, enabled: bool, fresh: bool):
        self.enabled = enabled
        self.path = out / "log.jsonl"
        self.csv_path = out / "log.csv"
        self.records: list[dict] = []
        if enabled and not fresh and self.path.is_file():
            lines = [line for line in self.path.read_text().splitlines() if line.strip()]
            for i, line in enumerate(lines):
                try:
                    self.records.append(json.loads(line))
                except json.JSONDecodeError:
                    if i < len(lines) - 1:
                        raise TrainError(f"{self.path}: line {i + 1} is not JSON") from None
                    # the last line of a run killed mid-write: dropped (truncate() redoes its epoch anyway)
        self._rewrite()

    def _rewrite(self) -> None:
        if not self.enabled:
            return
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))
        self.write_csv()

    def truncate(self, stage: str, epoch: int) -> None:
        """Forget ``stage``'s records from ``epoch`` on (what a run logged after its last checkpoint)."""
        self.records = [r for r in self.records if not (r["stage"] == stage and r["epoch"] >= epoch)]
        self._rewrite()

    def has_stage(self, stage: str) -> bool:
        return any(r["stage"] == stage for r in self.records)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        record = {k: v for k, v in record.items() if not (isinstance(v, float) and math.isnan(v))}
        self.records.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if record["type"] == "epoch":
            self.write_csv()

    def write_csv(self) -> None:
        rows = [{k: v for k, v in r.items() if k != "type"} for r in self.records if r["type"] == "epoch"]
        keys = sorted({k for row in rows for k in row}, key=lambda k: (k not in ("stage", "epoch"), k))
        with open(self.csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)


def _finite_or_stop(values: dict[str, float], where: str, last_good: Path | None) -> None:
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        kept = (
            f"the last good checkpoint {last_good} is kept" if last_good else "no checkpoint was written yet"
        )
        raise TrainError(f"non-finite loss {bad} at {where}: training stopped; {kept}")


# ----------------------------------------------------------------------------------------------- losses


def distill_term(pred, teacher_wave, cfg: TrainConfig, policy, policy_grad: bool):
    """RPM-Distill's L_distill per sample (B,), plus (g (B,), alpha (B, 3), components (B, 3)).

    ``policy_grad``: (g, alpha) carry gradient to the policy. In the meta step the relation map is not
    detached (reference a.7); when the policy is trained jointly (``bilevel=False``) its input is detached.
    Switched-off components get alpha 0 and the rest are renormalised; ``gate=False`` fixes g = 1 and
    ``weights=False`` fixes alpha to equal weights over the used components.
    """
    fs_s = spectral_features(pred, fs=cfg.fs)
    fs_t = spectral_features(teacher_wave, fs=cfg.fs)
    comps = distill_components(fs_s, fs_t)  # (B, 3): peak, background, morphology
    mask = component_mask(cfg).to(device=comps.device, dtype=comps.dtype)
    equal = (mask / mask.sum()).expand_as(comps)
    gate = torch.ones(comps.shape[0], device=comps.device, dtype=comps.dtype)
    alpha = equal
    if policy is not None:
        rel = relation_map(fs_s, fs_t)
        with torch.set_grad_enabled(policy_grad):
            g, a = policy(rel if cfg.bilevel else rel.detach())
        if cfg.gate:
            gate = g.to(comps.dtype)
        if cfg.weights:
            a = a.to(comps.dtype) * mask
            alpha = a / a.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return gate * (alpha * comps).sum(dim=1), gate, alpha, comps


def objective(
    pred,
    y,
    labeled,
    cfg: TrainConfig,
    mode: str,
    method: str,
    target=None,
    policy=None,
    policy_grad: bool = False,
    hint=None,
):
    """Eq. 1 averaged over the batch -> (scalar loss, stats: name -> 0-d tensor).

    Labelled clips get L_sup + lambda * L_kd, unlabelled ones lambda * L_kd, where L_kd is RPM-Distill's
    spectral term (``target`` = teacher waveform), ``output-kd`` / ``dml`` waveform matching to ``target``,
    or the ``fitnets`` hint loss on ``hint`` = (regressed student feature, teacher feature).
    """
    n = pred.shape[0]
    total = (pred * 0).sum()  # keeps a graph even when a batch has nothing to learn from
    stats: dict[str, torch.Tensor] = {}
    if mode in ("distill", "sup_only") and bool(labeled.any()):
        sup = supervised_loss(pred[labeled], y[labeled], fs=cfg.fs)
        total = total + sup * (labeled.sum() / n)
        stats["sup"] = sup.detach()
    if mode in ("distill", "distill_only") and method != "supervised":
        if method == "rpm-distill":
            per, gate, alpha, comps = distill_term(pred, target, cfg, policy, policy_grad)
            stats.update({name: comps[:, i].detach().mean() for i, name in enumerate(COMPONENTS)})
            stats["gate"] = gate.detach().mean()
            stats.update({f"alpha_{name}": alpha[:, i].detach().mean() for i, name in enumerate(COMPONENTS)})
        elif method in ("output-kd", "dml"):
            per = kd.waveform_kd(pred, target)
        elif method == "fitnets":
            per = kd.hint_loss(*hint)
        else:
            raise TrainError(f"unknown method {method!r}")
        total = total + cfg.lambda_distill * per.mean()
        stats["distill"] = per.detach().mean()
    return total, stats


def meta_loss(
    student: nn.Module,
    policy: nn.Module,
    x,
    y,
    labeled,
    teacher_wave,
    val_x,
    val_y,
    cfg: TrainConfig,
    amp: bool = False,
) -> torch.Tensor:
    """L_sup on a validation batch of the student after one virtual SGD step on L_tr (reference a.7).

    1. L_tr = Eq. 1 on the training batch with (g, alpha) from ``policy`` (gradient kept);
    2. theta' = theta - eta * dL_tr/dtheta with ``create_graph=True`` (eta = virtual_lr or lr);
    3. the student in eval mode at theta' on (val_x), through ``torch.func.functional_call``.
    Every forward gets its own clone of the buffers, so BatchNorm statistics of ``student`` are never
    changed. The result is differentiable with respect to the policy's parameters.
    """
    params = {k: p for k, p in student.named_parameters() if p.requires_grad}
    buffers = {k: b.detach().clone() for k, b in student.named_buffers()}
    length = student_length(cfg)
    with autocast(x.device, amp):
        pred = functional_call(student, (params, buffers), (x,))[:, :length]
    loss_tr, _ = objective(
        _full(pred), y, labeled, cfg, cfg.mode, "rpm-distill", teacher_wave, policy, policy_grad=True
    )
    grads = torch.autograd.grad(loss_tr, list(params.values()), create_graph=True, allow_unused=True)
    eta = cfg.virtual_lr if cfg.virtual_lr is not None else cfg.lr
    fast = {k: (p - eta * g if g is not None else p) for (k, p), g in zip(params.items(), grads, strict=True)}
    was_training = student.training
    student.eval()
    try:
        with autocast(x.device, amp):
            val_pred = functional_call(
                student, (fast, {k: b.detach().clone() for k, b in student.named_buffers()}), (val_x,)
            )[:, :length]
    finally:
        student.train(was_training)
    return supervised_loss(_full(val_pred), val_y, fs=cfg.fs)


def meta_step(
    student,
    policy,
    policy_opt,
    x,
    y,
    labeled,
    teacher_wave,
    val_x,
    val_y,
    cfg: TrainConfig,
    amp: bool = False,
    sync: Callable | None = None,
) -> float:
    """One bilevel policy update: :func:`meta_loss`, backward into the policy only, policy optimiser step."""
    loss = meta_loss(student, policy, x, y, labeled, teacher_wave, val_x, val_y, cfg, amp)
    policy_opt.zero_grad(set_to_none=True)
    loss.backward(inputs=list(policy.parameters()))
    if sync is not None:
        sync(policy.parameters())
    policy_opt.step()
    return loss.item()


# ----------------------------------------------------------------------------------------------- teacher


def train_teacher(
    cfg: TrainConfig, train_ds, val_ds, device, d: DistInfo, amp: bool
) -> tuple[nn.Module, list]:
    """Train the RF teacher on the labelled subjects; returns (best or last teacher, epoch records)."""
    seed_everything(cfg.seed)
    teacher = build_teacher(cfg, rf_channels=int(train_ds[0]["rf"].shape[0])).to(device)
    opt = torch.optim.Adam(teacher.parameters(), lr=cfg.teacher_lr, weight_decay=cfg.teacher_weight_decay)
    loader, sampler = _shuffled_loader(train_ds, cfg, cfg.seed, d, device)
    val_loader = _eval_loader(val_ds, cfg, d, device)
    rot_gen = torch.Generator()
    best, best_state, history = math.inf, None, []
    for epoch in tqdm(range(cfg.teacher_epochs), desc="teacher", unit="epoch", disable=not d.main):
        sampler.set_epoch(epoch)
        rot_gen.manual_seed(cfg.seed + 17 + 7919 * epoch + 104729 * d.rank)
        teacher.train()
        losses = []
        for batch in loader:
            rf, y = batch["rf"].to(device, non_blocking=True), batch["bvp"].to(device, non_blocking=True)
            theta = torch.rand(rf.shape[0], generator=rot_gen) * (2 * math.pi)
            with autocast(device, amp):
                out = teacher(rotate_iq(rf, theta.to(device)))
            loss = supervised_loss(_full(out), y, fs=cfg.fs)
            _finite_or_stop({"teacher": loss.item()}, f"teacher epoch {epoch}", None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            _sync_grads(teacher.parameters(), d)
            opt.step()
            losses.append(loss.item())
        _sync_buffers(teacher, d)
        val_loss = _validate(teacher, val_loader, cfg, device, d, amp, radar=True)
        history.append(
            {
                "type": "epoch",
                "stage": "teacher",
                "epoch": epoch,
                "train_loss": float(np.mean(losses)),
                "val_loss": val_loss,
            }
        )
        if val_loss < best or cfg.select == "last":
            best, best_state = val_loss, {k: v.detach().clone() for k, v in teacher.state_dict().items()}
    teacher.load_state_dict(best_state)
    _check_in_sync(teacher, d, "teacher")
    return teacher.eval(), history


@torch.no_grad()
def _validate(model, loader, cfg: TrainConfig, device, d: DistInfo, amp: bool, radar: bool = False) -> float:
    """Mean L_sup per window over the validation split (all ranks together)."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    for b in loader:
        with autocast(device, amp):
            if radar:
                pred = model(b["rf"].to(device, non_blocking=True))[:, : student_length(cfg)]
            else:
                pred = model(video_to_input(b["video"], cfg.student_size, device))[:, : student_length(cfg)]
        y = b["bvp"].to(device, non_blocking=True)
        total[0] += supervised_loss(_full(pred), y, fs=cfg.fs).double() * y.shape[0]
        total[1] += y.shape[0]
    if d.active and d.world > 1:
        dist.all_reduce(total)
    model.train(was_training)
    return float(total[0] / total[1])


# ----------------------------------------------------------------------------------------------- student


@dataclass
class StudentState:
    """The modules and optimisers of one student stage."""

    student: nn.Module
    opt: torch.optim.Optimizer
    teacher: nn.Module | None = None
    policy: nn.Module | None = None  # spectral policy (rpm-distill)
    policy_opt: torch.optim.Optimizer | None = None
    aux: nn.Module | None = None  # fitnets regressor or the dml peer
    aux_opt: torch.optim.Optimizer | None = None
    student_tap: kd.FeatureTap | None = None  # fitnets guided layer
    teacher_tap: kd.FeatureTap | None = None  # fitnets hint layer
    meta: bool = False  # bilevel meta step every meta_interval steps

    def modules(self) -> dict[str, nn.Module]:
        pairs = (("model", self.student), ("policy", self.policy), ("aux", self.aux))
        return {k: m for k, m in pairs if m is not None}

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        pairs = (
            ("optimizer", self.opt),
            ("policy_optimizer", self.policy_opt),
            ("aux_optimizer", self.aux_opt),
        )
        return {k: o for k, o in pairs if o is not None}


def build_student_state(cfg: TrainConfig, mode: str, method: str, teacher, device) -> StudentState:
    """Student, policy and the method's auxiliary module, seeded, with their optimisers."""
    seed_everything(cfg.seed)
    student = build_student(cfg).to(device)
    st = StudentState(
        student,
        torch.optim.Adam(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay),
        teacher=teacher,
    )
    distilling = mode != "sup_only" and method != "supervised"
    if distilling and method == "rpm-distill" and cfg.policy and (cfg.gate or cfg.weights):
        st.policy = SpectralPolicy().to(device)
        st.policy_opt = torch.optim.Adam(st.policy.parameters(), lr=cfg.policy_lr, weight_decay=0.0)
        st.meta = cfg.bilevel
    if distilling and method == "fitnets":
        hint_layer, hint_channels = kd.teacher_hint_layer(teacher)
        guided_layer, guided_channels = student.guided_layer()
        st.teacher_tap, st.student_tap = kd.FeatureTap(hint_layer), kd.FeatureTap(guided_layer)
        st.aux = kd.HintRegressor(guided_channels, hint_channels).to(device)
        st.aux_opt = torch.optim.Adam(st.aux.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if distilling and method == "dml":
        st.aux = kd.make_peer(teacher).to(device)
        st.aux_opt = torch.optim.Adam(
            st.aux.parameters(), lr=cfg.teacher_lr, weight_decay=cfg.teacher_weight_decay
        )
    return st


def train_step(
    st: StudentState,
    batch: dict,
    cfg: TrainConfig,
    mode: str,
    method: str,
    step: int,
    device,
    d: DistInfo = DistInfo(),
    amp: bool = False,
    next_val: Callable | None = None,
) -> dict[str, float]:
    """One optimisation step (plus the meta step when due). Returns the step's losses as floats."""
    x = video_to_input(batch["video"], cfg.student_size, device)
    y = batch["bvp"].to(device, non_blocking=True)
    labeled = batch["labeled"].to(device, non_blocking=True)
    length = student_length(cfg)
    target = hint = None
    out: dict[str, float] = {}
    if mode != "sup_only" and method not in ("supervised", "dml"):
        rf = batch["rf"].to(device, non_blocking=True)
        with torch.no_grad(), autocast(device, amp):
            target = _full(st.teacher(rf)[:, :length])
    if st.meta and step % cfg.meta_interval == 0:
        val = next_val()
        out["meta_loss"] = meta_step(
            st.student,
            st.policy,
            st.policy_opt,
            x,
            y,
            labeled,
            target,
            video_to_input(val["video"], cfg.student_size, device),
            val["bvp"].to(device, non_blocking=True),
            cfg,
            amp,
            sync=lambda ps: _sync_grads(ps, d),
        )
    with autocast(device, amp):
        pred = st.student(x)[:, :length]
        if method == "dml" and st.aux is not None:
            peer_wave = st.aux(batch["rf"].to(device, non_blocking=True))[:, :length]
    pred = _full(pred)
    if method == "fitnets" and st.aux is not None:
        hint = (st.aux(_full(st.student_tap.output)), _full(st.teacher_tap.output))
    if method == "dml" and st.aux is not None:
        peer_wave = _full(peer_wave)
        target = peer_wave.detach()
    joint_policy = st.policy is not None and not cfg.bilevel
    loss, stats = objective(pred, y, labeled, cfg, mode, method, target, st.policy, joint_policy, hint)
    total = loss
    if method == "dml" and st.aux is not None:  # the peer learns from labels and from the student
        peer_loss, _ = objective(peer_wave, y, labeled, cfg, mode, "output-kd", pred.detach())
        total = loss + peer_loss
        stats["peer_loss"] = peer_loss.detach()
    values = torch.stack([loss.detach(), *stats.values()]).tolist()  # one device sync per step
    out.update(dict(zip(["loss", *stats], values, strict=True)))
    for o in st.optimisers().values():
        o.zero_grad(set_to_none=True)
    if not math.isfinite(out["loss"]) or not math.isfinite(out.get("peer_loss", 0.0)):
        return out  # the caller stops the run before any parameter changes
    total.backward()
    _sync_grads(st.student.parameters(), d)
    st.opt.step()
    if st.aux_opt is not None:
        _sync_grads(st.aux.parameters(), d)
        st.aux_opt.step()
    if joint_policy:
        _sync_grads(st.policy.parameters(), d)
        st.policy_opt.step()
    return out


def train_student(
    cfg: TrainConfig,
    kind: str,
    mode: str,
    method: str,
    teacher,
    train_ds,
    val_ds,
    out: Path,
    device,
    d: DistInfo,
    log: RunLog,
    amp: bool,
) -> nn.Module:
    """Train one student stage (``kind`` = student | baseline); resumable at epoch boundaries."""
    st = build_student_state(cfg, mode, method, teacher, device)
    loader, sampler = _shuffled_loader(train_ds, cfg, cfg.seed + 1, d, device)
    val_loader = _eval_loader(val_ds, cfg, d, device)
    meta_loader, meta_sampler = _shuffled_loader(val_ds, cfg, cfg.seed + 2, d, device)
    last_path, best_path = out / f"{kind}_last.pt", out / f"{kind}.pt"
    start_epoch, step, best = 0, 0, math.inf
    if cfg.resume and last_path.is_file():
        state = torch.load(last_path, map_location=device, weights_only=False)
        _check_resume_config(state["config"], cfg, last_path, force=cfg.force)
        for name, module in st.modules().items():
            module.load_state_dict(state[name])
        for name, o in st.optimisers().items():
            o.load_state_dict(state[name])
        start_epoch, step, best = state["epoch"] + 1, state["step"], state["best_val"]
        _set_rng_state(state["rng"])
        if d.main:
            print(f"{kind}: resuming after epoch {start_epoch} of {cfg.epochs} from {last_path}")
    log.truncate(kind, start_epoch)
    steps_per_epoch = min(len(loader), cfg.max_steps_per_epoch or len(loader))
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        for m in st.modules().values():
            m.train()
        val_iter = _forever(meta_loader, meta_sampler, 10_000 * epoch) if st.meta else None
        rows = []
        bar = tqdm(
            itertools.islice(loader, steps_per_epoch),
            total=steps_per_epoch,
            disable=not d.main,
            desc=f"{kind} epoch {epoch + 1}/{cfg.epochs}",
        )
        for batch in bar:
            t0 = time.perf_counter()
            values = train_step(
                st, batch, cfg, mode, method, step, device, d, amp, next_val=(lambda it=val_iter: next(it))
            )
            _finite_or_stop(
                values, f"{kind} epoch {epoch} step {step}", last_path if last_path.is_file() else None
            )
            log.write(
                {
                    "type": "step",
                    "stage": kind,
                    "epoch": epoch,
                    "step": step,
                    **values,
                    "seconds": time.perf_counter() - t0,
                }
            )
            rows.append(values)
            bar.set_postfix(loss=f"{values['loss']:.3f}")
            step += 1
        _sync_buffers(st.student, d)  # PhysNet's BatchNorm statistics (FactorizePhys has none)
        _sync_buffers(st.aux, d)  # the dml peer's BatchNorm statistics
        val_loss = _validate(st.student, val_loader, cfg, device, d, amp)
        means = pd.DataFrame(rows).mean(numeric_only=True).to_dict()
        improved = val_loss < best or cfg.select == "last"
        if improved:
            best = val_loss
        if d.main:
            if improved:
                save_checkpoint(
                    best_path,
                    kind,
                    st.student,
                    cfg,
                    val_loss=val_loss,
                    epoch=epoch,
                    mode=mode,
                    method=method,
                    policy=st.policy.state_dict() if st.policy is not None else None,
                )
            _atomic_save(
                {
                    "kind": kind,
                    "config": asdict(cfg),
                    "epoch": epoch,
                    "step": step,
                    "best_val": best,
                    "mode": mode,
                    "method": method,
                    "rng": _rng_state(),
                    **{k: m.state_dict() for k, m in st.modules().items()},
                    **{k: o.state_dict() for k, o in st.optimisers().items()},
                },
                last_path,
            )
        log_train = means.pop("loss")
        log.write(
            {
                "type": "epoch",
                "stage": kind,
                "epoch": epoch,
                "train_loss": log_train,
                "val_loss": val_loss,
                "selected": improved,
                **means,
            }
        )
        if d.main:
            tqdm.write(f"{kind} epoch {epoch + 1}: train loss {log_train:.4f}  val L_sup {val_loss:.4f}")
        _barrier(d)
    _check_in_sync(st.student, d, kind)
    for tap in (st.student_tap, st.teacher_tap):
        if tap is not None:
            tap.remove()
    _barrier(d)
    model, _, _ = load_model(best_path, device)
    return model


def _check_resume_config(saved: dict, cfg: TrainConfig, path: Path, force: bool = False) -> None:
    """Refuse a checkpoint saved under another config (``force``: warn and go on)."""
    now = json.loads(json.dumps(asdict(cfg)))
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not dataclasses.MISSING}
    # A key missing from an older checkpoint had its default value (e.g. ``student``).
    then = {**json.loads(json.dumps(defaults)), **json.loads(json.dumps(saved))}
    diff = sorted(k for k in now if k not in RESUME_MUTABLE and now.get(k) != then.get(k))
    if diff:
        detail = ", ".join(f"{k}: {then.get(k)!r} -> {now.get(k)!r}" for k in diff)
        if force:
            print(f"warning: {path}: resuming with a different config because of --force ({detail})")
            return
        raise TrainError(
            f"{path}: cannot resume with a different config ({detail}); "
            "pass --force to resume anyway, or train a new run (--name)"
        )


# ----------------------------------------------------------------------------------------------- main


def train(cfg: TrainConfig, workdir: Workdir) -> Path:
    """Train teacher, student and (optionally) the supervised-only baseline into ``runs/<run_name>``."""
    d, created_group = init_distributed(cfg.device)
    try:
        return _train(cfg, workdir, d)
    finally:
        if created_group:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, workdir: Workdir, d: DistInfo) -> Path:
    device = pick_device(cfg.device, d.local_rank)
    amp = cfg.amp and device.type == "cuda"
    seed_everything(cfg.seed)
    if not workdir.splits_manifest.is_file():
        raise TrainError(f"{workdir.splits_manifest}: no split; run `rpm split --seed K` first")
    meta = read_split_meta(workdir.splits_meta)
    sessions_csv = Path(meta["sessions_manifest"])
    if sessions_csv.is_file() and file_sha256(sessions_csv) != meta["sessions_sha256"]:
        raise TrainError(f"{sessions_csv} changed after the split was made; rerun `rpm split`")
    splits = read_split_table(workdir.splits_manifest)
    splits = splits[splits.dataset == cfg.dataset]
    train_sessions = splits.loc[splits.split == "train", "session"].tolist()
    val_sessions = splits.loc[splits.split == "val", "session"].tolist()
    if not train_sessions:
        raise TrainError(f"{workdir.splits_manifest}: the training split is empty")
    if not val_sessions:
        raise TrainError(f"{workdir.splits_manifest}: the validation split is empty")
    labeled = labeled_subjects(
        splits.loc[splits.split == "train", "subject"].tolist(), cfg.labeled_frac, cfg.seed
    )
    store = workdir.store(cfg.dataset)
    # Aligned training windows: the teacher and the supervised baseline always learn from these.
    aligned_ds = WindowDataset(store, train_sessions, cfg.frames, cfg.stride, labeled_subjects=set(labeled))
    train_ds = aligned_ds
    shift = meta.get("shift", {})
    if shift.get("prob", 0.0) > 0:
        # Sync-shift injection (robustness study): the student's video-radar pairs come from clips.csv,
        # where a share of training clips has its radar window shifted; the stored data are unshifted.
        clips = meta.get("clips", {})
        if (clips.get("frames"), clips.get("stride")) != (cfg.frames, cfg.stride):
            raise TrainError(
                f"{workdir.clips_manifest} was cut with T={clips.get('frames')}, "
                f"stride {clips.get('stride')} "
                f"but training uses T={cfg.frames}, stride {cfg.stride}; rerun `rpm split --frames "
                f"{cfg.frames} --stride {cfg.stride} --shift-prob {shift['prob']}`"
            )
        train_ds = WindowDataset.from_clips(store, workdir.clips_manifest, "train", dataset=cfg.dataset)
        train_ds.labeled_subjects = set(labeled)
        for i, w in enumerate(train_ds.windows):  # labels follow this run's --labeled-frac
            train_ds.windows[i] = dataclasses.replace(w, labeled=None)
    # Validation (model selection and the meta step) uses non-overlapping windows.
    val_ds = WindowDataset(store, val_sessions, cfg.frames, cfg.frames)
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise TrainError(
            f"no {cfg.frames}-frame windows in the train ({len(train_ds)}) or val ({len(val_ds)}) "
            "split; sessions are shorter than one window"
        )
    labeled_idx = [i for i, w in enumerate(aligned_ds.windows) if w.subject in set(labeled)]
    labeled_ds = Subset(aligned_ds, labeled_idx)
    out = workdir.runs / cfg.run_name
    if cfg.resume and not (out / "config.json").is_file():
        raise TrainError(f"{out}: nothing to resume (no config.json)")
    key, key_payload = teacher_cache_key(cfg, file_sha256(workdir.splits_manifest), labeled)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json.partial").write_text(  # written whole, then renamed: a kill never truncates it
            json.dumps(
                {
                    **asdict(cfg),
                    "labeled_subjects": labeled,
                    "device_resolved": str(device),
                    "world_size": d.world,
                    "teacher_key": key,
                    "sync_shift_prob": float(shift.get("prob", 0.0)),
                },
                indent=2,
            )
            + "\n"
        )
        (out / "config.json.partial").replace(out / "config.json")
        print(
            f"run {out}: device {device}{' (bf16 autocast)' if amp else ''}, world size {d.world}, "
            f"method {cfg.method}, preset {cfg.preset}, {len(train_ds)} train windows "
            f"({len(labeled_idx)} labelled, subjects {labeled}), {len(val_ds)} val windows"
        )
    _barrier(d)
    log = RunLog(out, enabled=d.main, fresh=not cfg.resume)
    t0 = time.time()

    teacher = None
    if cfg.method != "supervised":
        # The cached teacher, or with --no-teacher-cache the run's own (reused only by --resume).
        cached = workdir.runs / "_teachers" / key / "teacher.pt" if cfg.teacher_cache else out / "teacher.pt"
        if cached.is_file() and (cfg.teacher_cache or cfg.resume):
            ckpt = torch.load(cached, map_location="cpu", weights_only=False)
            if ckpt.get("cache_payload") != key_payload:
                raise TrainError(
                    f"{cached}: trained with other teacher settings; delete it or change the run"
                )
            if d.main:
                print(f"teacher: reusing {cached}")
                if not log.has_stage("teacher"):
                    for record in ckpt.get("history", []):
                        log.write({**record, "cached": True})
        else:
            teacher, history = train_teacher(cfg, labeled_ds, val_ds, device, d, amp)
            if d.main:
                for record in history:
                    log.write(record)
                cached.parent.mkdir(parents=True, exist_ok=True)
                save_checkpoint(
                    cached,
                    "teacher",
                    teacher,
                    cfg,
                    val_loss=min(r["val_loss"] for r in history),
                    history=history,
                    cache_key=key,
                    cache_payload=key_payload,
                )
                if cfg.teacher_cache:
                    (cached.parent / "key.json").write_text(json.dumps(key_payload, indent=2) + "\n")
        if d.main and cfg.teacher_cache:
            _link_or_copy(cached, out / "teacher.pt")
        _barrier(d)
        teacher, _, _ = load_model(out / "teacher.pt", device)
        for p in teacher.parameters():
            p.requires_grad_(False)

    if cfg.method == "supervised":
        train_student(
            cfg, "student", "sup_only", "supervised", None, labeled_ds, val_ds, out, device, d, log, amp
        )
    else:
        train_student(
            cfg, "student", cfg.mode, cfg.method, teacher, train_ds, val_ds, out, device, d, log, amp
        )
        if cfg.baseline:
            train_student(
                cfg,
                "baseline",
                "sup_only",
                "supervised",
                teacher,
                labeled_ds,
                val_ds,
                out,
                device,
                d,
                log,
                amp,
            )
    if d.main:
        print(f"trained in {time.time() - t0:.0f} s -> {out}")
    return out
