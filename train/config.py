"""The training configuration: one flat dataclass, its presets, and how a run's config is resolved.

Precedence: field defaults <- ``preset`` (CPU- or paper-sized values) <- an optional TOML file
(``--config``, flat ``key = value`` with :class:`TrainConfig` field names) <- explicit command-line
values. ``--resume`` starts from the run's saved ``config.json`` instead of defaults and preset.

Every value is checked by :func:`validate` before anything is written: types, choices, ranges, NaN,
the student's minimum clip length and input size, and whether the chosen device exists. A bad value
raises :class:`TrainError`, one line naming where the value came from (``--lr``, ``c.toml: stride``,
``runs/x/config.json: seed``) and the problem.
"""

from __future__ import annotations

import json
import math
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from pipeline import paths
from pipeline.errors import RpmError
from pipeline.paths import DATASETS, Workdir
from train.losses import band_bin_indices
from train.models import FactorizePhysBig
from train.models.rf_teacher import TEACHER_INPUTS


class TrainError(RpmError, RuntimeError):
    """A training run that cannot start or go on; the message is one line naming the cause."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (at most ``limit`` characters), for one-line errors."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


MODES = ("distill", "sup_only", "distill_only")
META_GRADS = ("finite-difference", "exact")  # TrainConfig.meta_grad
METHODS = ("supervised", "rpm-distill", "output-kd", "fitnets", "dml", "physformer", "fusion")
STUDENTS = ("factorizephys", "factorizephys-big", "physnet", "physformer")
# Methods that train on labels alone (no distillation term, so nothing to learn in mode distill_only).
LABEL_ONLY_METHODS = ("supervised", "physformer", "fusion")
# Methods that need no RF teacher (train.method's Method.needs_teacher is False exactly for these).
TEACHERLESS_METHODS = ("supervised", "physformer")
COMPONENTS = ("peak", "background", "morphology")
DEVICES = ("auto", "cpu", "cuda")
SEED_LIMIT = 2**32  # numpy's legacy seed range
FS_RANGE = (6.0, 1000.0)  # Hz: twice the 180 bpm band edge, up to any camera rate


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
    # what the teacher's convolutions read: iq (the release's raw I/Q) | phase (per range bin the phase step
    # and log magnitude of the I/Q; train.models.rf_teacher.iq_phase_features)
    teacher_input: str = "iq"
    # student: factorizephys (release variant: FSAM on at inference, spatial-mean head) | factorizephys-big
    # (128x128 only) | physnet (frames divisible by 4; fsam does not apply) | physformer (Yu et al. 2022;
    # frames divisible by 4, student_size divisible by 32)
    student: str = "factorizephys"
    student_size: int = 72  # 128 when student = factorizephys-big or physformer and no size is given
    fsam: bool = True
    epochs: int = 5
    batch_size: int = 4
    lr: float = 5e-5
    weight_decay: float = 1e-2
    lambda_distill: float = 1.0  # lambda of Eq. 1 (also weights the KD baselines' term)
    mode: str = "distill"  # distill (Eq. 1) | sup_only | distill_only
    # supervised | rpm-distill | output-kd | fitnets | dml | physformer (PhysFormer with its published loss)
    # | fusion (Vilesov et al. 2022 RGB-radar fusion: radar at test time)
    method: str = "rpm-distill"
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
    # How the meta step takes the policy's meta-gradient: finite-difference (default; a central difference
    # of L_tr along the validation gradient, DARTS Sec. 2.3: about 3 plain steps) | exact (second order,
    # backward through the virtual step with create_graph: about 5.7 plain steps). train/method.py.
    meta_grad: str = "finite-difference"
    select: str = "best"  # best (lowest mean val L_sup) | last
    baseline: bool = True  # also train the supervised-only student
    max_steps_per_epoch: int | None = None
    # sync-shift probability of the student's training windows; None: the split's schedule (splits.json).
    # The shifts are drawn with the split's seed and shift frames either way; the teacher never sees them.
    shift_prob: float | None = None
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
        # the small teacher on 2-3 labelled subjects does not learn the I/Q demodulation itself: on a
        # 12-subject synthetic EquiPleth (seed 3) its held-out MAE is 9.7 bpm from I/Q, 4.1 from phase
        teacher_input="phase",
        epochs=3,
        batch_size=4,
        lr=1e-3,
        policy_lr=1e-3,
        max_steps_per_epoch=25,
        num_workers=0,
    ),
    # Paper Sec. 4.2 and its code release: T 256, stride 30, Adam 5e-5 / 1e-4, 5 epochs, the full teacher.
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

# ``rpm train`` options whose name is not the field name with dashes.
_OPTION_NAMES = {"run_name": "--name"}


def option_name(key: str) -> str:
    """The ``rpm train`` option that sets config key ``key`` (``labeled_frac`` -> ``--labeled-frac``)."""
    return _OPTION_NAMES.get(key, "--" + key.replace("_", "-"))


# ----------------------------------------------------------------------------------------------- types


def _field_types() -> dict[str, typing.Any]:
    return typing.get_type_hints(TrainConfig)


def _coerce(name: str, value, where: str):
    """Check one value against the field's type (ints are accepted for floats, lists for tuples).

    ``where`` names the value's origin in the error (``c.toml: key 'epochs'``).
    """
    hint = _field_types()[name]
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise TrainError(f"{where} may not be empty")
    if type(None) in args:  # X | None
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise TrainError(f"{where} must be a list of integers, got {value!r}")
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
        raise TrainError(f"{where} must be of type {hint.__name__}, got {value!r}")
    return value


def _key_where(source: str | Path, key: str) -> str:
    return f"{source}: key {key!r}"


def coerce_config_dict(data: Mapping, source: str | Path) -> dict:
    """Type-check a mapping of TrainConfig keys read from ``source`` (a file); unknown keys are errors."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(data) - known
    if unknown:
        raise TrainError(f"{source}: unknown config keys {sorted(unknown)}; known keys: {sorted(known)}")
    return {k: _coerce(k, v, _key_where(source, k)) for k, v in data.items()}


def load_config_file(path: str | Path) -> dict:
    """Flat ``key = value`` TOML with TrainConfig field names; unknown keys and wrong types are errors."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise TrainError(f"{path}: no such config file") from exc
    except IsADirectoryError as exc:
        raise TrainError(f"{path}: a folder, not a TOML config file") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TrainError(f"{path}: not valid TOML: {exc}") from exc
    return coerce_config_dict(data, path)


def check_run_name(name: str, where: str = "--name") -> None:
    """:func:`pipeline.paths.check_run_name`, raising :class:`TrainError`."""
    try:
        paths.check_run_name(name, where)
    except paths.PathEscapeError as exc:
        raise TrainError(str(exc)) from None


def saved_run_config(workdir: Workdir, run_name: str) -> dict:
    """The resolved config of an existing run (``runs/<name>/config.json``), as TrainConfig fields."""
    check_run_name(run_name)
    path = workdir.runs / run_name / "config.json"
    if not path.is_file():
        raise TrainError(f"{path}: nothing to resume (no such run)")
    try:
        saved = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainError(f"{path}: not valid JSON ({exc}); the run cannot be resumed") from exc
    if not isinstance(saved, dict):
        raise TrainError(f"{path}: not a JSON object; the run cannot be resumed")
    known = {f.name for f in fields(TrainConfig)} - {"force"}  # --force applies to one invocation only
    return {k: _coerce(k, v, _key_where(path, k)) for k, v in saved.items() if k in known}


# ----------------------------------------------------------------------------------------------- resolve


def resolve_config(
    overrides: dict,
    config_file: str | Path | None = None,
    base: dict | None = None,
    base_source: str | Path = "saved run config",
) -> TrainConfig:
    """Defaults <- preset <- ``config_file`` <- explicit ``overrides`` (None values are ignored), validated.

    ``base`` (a run's saved config, for ``--resume``; read from ``base_source``) replaces defaults and
    preset: it is already resolved. Errors name the option, or the file and key, a bad value came from.
    """
    known = {f.name for f in fields(TrainConfig)}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - known
    if unknown:
        raise TrainError(f"unknown config keys: {sorted(unknown)}")
    overrides = {k: _coerce(k, v, option_name(k)) for k, v in overrides.items()}
    from_file = load_config_file(config_file) if config_file else {}
    sources = {k: _key_where(base_source, k) for k in base or {}}
    sources.update({k: _key_where(config_file, k) for k in from_file})
    sources.update({k: option_name(k) for k in overrides})
    given = {**from_file, **overrides}
    if base is not None:
        cfg = TrainConfig(**{**base, **given})
    else:
        preset = given.get("preset", "auto")
        if preset == "auto":
            preset = "paper" if torch.cuda.is_available() else "cpu"
        if preset not in PRESETS:
            raise TrainError(f"{sources['preset']}: unknown preset {preset!r}; choose auto, cpu or paper")
        if given.get("method") == "physformer" and "student" not in given:
            given["student"] = "physformer"  # the method is the network trained with its own loss
        if given.get("student") in ("factorizephys-big", "physformer") and "student_size" not in given:
            given["student_size"] = FactorizePhysBig.INPUT_SIZE  # both published at 128x128
        cfg = TrainConfig(**{**PRESETS[preset], **given, "preset": preset})
    validate(cfg, sources)
    return cfg


# ----------------------------------------------------------------------------------------------- validate


def validate(cfg: TrainConfig, sources: Mapping[str, str] | None = None) -> None:
    """Check every field of ``cfg``; raise :class:`TrainError` naming the first bad one.

    ``sources`` maps a key to where its value came from (``--lr``, ``c.toml: key 'stride'``); keys not
    in it are named by their option. Also checks that ``device`` exists on this machine.
    """
    where = {f.name: option_name(f.name) for f in fields(TrainConfig)}
    where.update(sources or {})
    for f in fields(TrainConfig):  # types first: every later check may then compare numbers
        _coerce(f.name, getattr(cfg, f.name), where[f.name])
    _check_names(cfg, where)
    _check_numbers(cfg, where)
    _check_method(cfg, where)
    _check_student(cfg, where)
    _check_device(cfg.device, where["device"])


def _choice(cfg: TrainConfig, key: str, choices, where: Mapping[str, str]) -> None:
    if getattr(cfg, key) not in choices:
        raise TrainError(f"{where[key]}: unknown {key} {getattr(cfg, key)!r}; choose one of {tuple(choices)}")


def _check_names(cfg: TrainConfig, where: Mapping[str, str]) -> None:
    check_run_name(cfg.run_name, where["run_name"])
    _choice(cfg, "dataset", DATASETS, where)
    _choice(cfg, "preset", ("auto", *PRESETS), where)
    _choice(cfg, "device", DEVICES, where)
    _choice(cfg, "mode", MODES, where)
    _choice(cfg, "method", METHODS, where)
    _choice(cfg, "student", STUDENTS, where)
    _choice(cfg, "select", ("best", "last"), where)
    _choice(cfg, "meta_grad", META_GRADS, where)
    _choice(cfg, "teacher_input", TEACHER_INPUTS, where)
    try:
        json.dumps(cfg.extra, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TrainError(f"{where['extra']} must hold plain JSON values: {exc}") from exc


def _check_numbers(cfg: TrainConfig, where: Mapping[str, str]) -> None:
    def bad(key: str, rule: str) -> TrainError:
        return TrainError(f"{where[key]} must be {rule}, got {getattr(cfg, key)!r}")

    if not 0 <= cfg.seed < SEED_LIMIT:
        raise bad("seed", "in [0, 2**32)")
    if not (math.isfinite(cfg.labeled_frac) and 0.0 < cfg.labeled_frac <= 1.0):
        raise bad("labeled_frac", "in (0, 1]")
    at_least_one = ["frames", "stride", "epochs", "batch_size", "meta_interval", "max_steps_per_epoch"]
    if cfg.method not in TEACHERLESS_METHODS:  # the teacher is trained (or taken from the cache) only then
        at_least_one.append("teacher_epochs")
    for key in at_least_one:
        if getattr(cfg, key) is not None and getattr(cfg, key) < 1:
            raise bad(key, "at least 1")
    if cfg.num_workers < 0:
        raise bad("num_workers", "0 or more")
    if cfg.shift_prob is not None and not (math.isfinite(cfg.shift_prob) and 0.0 <= cfg.shift_prob <= 1.0):
        raise bad("shift_prob", "in [0, 1] (or unset: the split's schedule)")
    if not (math.isfinite(cfg.fs) and FS_RANGE[0] <= cfg.fs <= FS_RANGE[1]):
        raise bad("fs", f"a rate in [{FS_RANGE[0]:g}, {FS_RANGE[1]:g}] Hz (the 45-180 bpm band needs 6 Hz)")
    rates = ["lr", "teacher_lr", "policy_lr"] + (["virtual_lr"] if cfg.virtual_lr is not None else [])
    for key in rates:
        if not (math.isfinite(getattr(cfg, key)) and getattr(cfg, key) > 0):
            raise bad(key, "a finite number above 0")
    for key in ("weight_decay", "teacher_weight_decay", "lambda_distill"):
        if not (math.isfinite(getattr(cfg, key)) and getattr(cfg, key) >= 0):
            raise bad(key, "a finite number, 0 or more")
    if len(cfg.teacher_widths) < 2 or min(cfg.teacher_widths) < 1:
        raise bad("teacher_widths", "a list of at least 2 positive channel widths")


def _check_method(cfg: TrainConfig, where: Mapping[str, str]) -> None:
    if cfg.method in LABEL_ONLY_METHODS and cfg.mode == "distill_only":
        raise TrainError(
            f"{where['method']}: method {cfg.method!r} has nothing to learn in mode 'distill_only'"
        )
    if cfg.method == "physformer" and cfg.frames < 17:  # its HR labels come from hr_from_psd (16 samples)
        raise TrainError(
            f"{where['frames']}: method 'physformer' reads each clip's HR label from its T - 1 = "
            f"{cfg.frames - 1} PPG samples and needs at least 16, got frames={cfg.frames}"
        )
    if cfg.method == "physformer" and cfg.student != "physformer":
        raise TrainError(
            f"{where['student']}: method 'physformer' trains the PhysFormer network, got student "
            f"{cfg.student!r}; use --student physformer (the default with this method)"
        )
    if cfg.method == "rpm-distill" and not (cfg.peak or cfg.background or cfg.morphology):
        raise TrainError("--no-peak, --no-background and --no-morphology together leave no distillation term")


def min_frames(fs: float) -> int:
    """The shortest clip T whose student output (T - 1 samples at ``fs`` Hz) the spectral losses accept:
    at least 8 samples and one rfft bin in the 45-180 bpm band (11 frames at 30 Hz, 335 at 1000 Hz).

    ``fs`` must be in :data:`FS_RANGE` (checked first by :func:`validate`), which bounds the search.
    """
    t = 9
    while not band_bin_indices(t - 1, fs):
        t += 1
    return t


def _check_student(cfg: TrainConfig, where: Mapping[str, str]) -> None:
    shortest = min_frames(cfg.fs)
    if cfg.frames < shortest:
        raise TrainError(
            f"{where['frames']} {cfg.frames} is too short: the student outputs T - 1 samples and the "
            f"spectral losses need at least {shortest} frames at {cfg.fs:g} Hz"
        )
    if cfg.student == "factorizephys-big" and cfg.student_size != FactorizePhysBig.INPUT_SIZE:
        raise TrainError(
            f"{where['student_size']}: student factorizephys-big is built for 128x128 input only, "
            f"got student_size={cfg.student_size}"
        )
    if cfg.student in ("physnet", "physformer") and cfg.frames % 4 != 0:
        raise TrainError(
            f"{where['frames']}: student {cfg.student} needs frames divisible by 4, got frames={cfg.frames}"
        )
    from train.build import build_student

    try:
        with torch.device("meta"):  # the constructors' own checks, without allocating any weights
            build_student(cfg)
    except ValueError as exc:
        raise TrainError(f"{where['student_size']}: {exc}") from exc


def _check_device(device: str, where: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"{where} cuda: no CUDA GPU is available here; use --device cpu or auto")
