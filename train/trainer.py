"""RPM-Distill training: RF teacher, then the video student with spectral distillation.

Reads top to bottom:

1. config (a flat dataclass, defaults visible below; ``preset`` picks CPU- or paper-sized values);
2. data: the subject split from ``manifests/splits.csv``, labelled subjects drawn with the seed;
3. the RF teacher, trained on the labelled training subjects (random I/Q rotation as augmentation);
4. the student (FactorizePhys) with the label-optional objective (Eq. 1)
       L = 1[labelled] * L_sup + lambda * g * sum_k alpha_k L_k
   where (g, alpha) come from the spectral policy network, meta-learned every ``meta_interval``
   steps with a one-step virtual update evaluated on the labelled validation split (bilevel);
5. optionally a supervised-only student on the labelled subjects (the no-distillation baseline).

Every checkpoint (``teacher.pt``, ``student.pt``, ``baseline.pt`` in ``runs/<name>/``) carries the
resolved config. Model selection is by mean validation L_sup (``select="best"``) or the last epoch.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.func import functional_call
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from pipeline.paths import Workdir
from pipeline.split import file_sha256, sorted_subjects
from train.data import WindowDataset, video_to_input
from train.losses import (
    distill_components,
    relation_map,
    spectral_features,
    supervised_loss,
)
from train.models import FactorizePhys, RFTeacher, SpectralPolicy, rotate_iq


class TrainError(RuntimeError):
    pass


@dataclass
class TrainConfig:
    run_name: str = "default"
    dataset: str = "equipleth"
    seed: int = 3
    labeled_frac: float = 1.0  # fraction of training subjects whose labels are used
    preset: str = "auto"  # auto (cpu without CUDA, else paper) | cpu | paper
    device: str = "auto"
    # windows
    frames: int = 256  # clip length T in video frames at 30 Hz; the student outputs T - 1
    stride: int = 30  # training window stride
    fs: float = 30.0
    # teacher (RF_conv_decoder on (B, 10, T))
    teacher_widths: tuple[int, ...] = (32, 64, 128, 256, 512, 1024)
    teacher_epochs: int = 30
    teacher_lr: float = 1e-4
    teacher_weight_decay: float = 1e-2
    # student (FactorizePhys, release variant: FSAM on at inference, spatial-mean head)
    student_size: int = 72
    fsam: bool = True
    epochs: int = 5
    batch_size: int = 4
    lr: float = 5e-5
    weight_decay: float = 1e-2
    lambda_distill: float = 1.0
    mode: str = "distill"  # distill (Eq. 1) | sup_only | distill_only
    # spectral policy + bilevel meta update
    policy: bool = True  # False: fixed g = 1, alpha = 1/3 (no policy, no bilevel)
    meta_interval: int = 10
    policy_lr: float = 1e-4
    virtual_lr: float | None = None  # None: same as lr
    select: str = "best"  # best (lowest mean val L_sup) | last
    baseline: bool = True  # also train the supervised-only student
    max_steps_per_epoch: int | None = None
    num_workers: int = 0
    extra: dict = field(default_factory=dict)


PRESETS = {
    # Sized for a 2-core CPU (one FactorizePhys step at B 4, T 128, 72 px takes about 2.5 s there):
    # the demo trains teacher, student and baseline in about 7 minutes.
    "cpu": dict(
        frames=128,
        stride=32,
        teacher_widths=(16, 32, 64, 128),
        teacher_epochs=40,
        teacher_lr=2e-3,
        epochs=3,
        batch_size=4,
        lr=1e-3,
        policy_lr=1e-3,
        max_steps_per_epoch=25,
    ),
    # The paper's protocol (reference a.9): T 256, stride 30, Adam 5e-5 / 1e-4, 5 epochs.
    "paper": dict(
        frames=256,
        stride=30,
        teacher_widths=(32, 64, 128, 256, 512, 1024),
        teacher_epochs=50,
        teacher_lr=1e-4,
        epochs=5,
        batch_size=4,
        lr=5e-5,
        policy_lr=1e-4,
        max_steps_per_epoch=None,
    ),
}


def resolve_config(overrides: dict) -> TrainConfig:
    """Defaults <- preset <- explicit overrides (None values in ``overrides`` are ignored)."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    preset = overrides.get("preset", "auto")
    if preset == "auto":
        preset = "paper" if torch.cuda.is_available() else "cpu"
    if preset not in PRESETS:
        raise TrainError(f"unknown preset {preset!r}; choose auto, cpu or paper")
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise TrainError(f"unknown config keys: {sorted(unknown)}")
    cfg = TrainConfig(**{**PRESETS[preset], **overrides, "preset": preset})
    if not 0.0 < cfg.labeled_frac <= 1.0:
        raise TrainError(f"--labeled-frac must be in (0, 1], got {cfg.labeled_frac}")
    if cfg.mode not in ("distill", "sup_only", "distill_only"):
        raise TrainError(f"unknown mode {cfg.mode!r}")
    return cfg


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def labeled_subjects(train_subjects: list[str], frac: float, seed: int) -> list[str]:
    """A seeded ceil(frac * n) subset of the (sorted) training subjects."""
    subjects = sorted_subjects(train_subjects)
    n = math.ceil(frac * len(subjects) - 1e-9)
    if n == 0:
        raise TrainError(f"labelled fraction {frac} selects zero of {len(subjects)} training subjects")
    order = np.random.default_rng(seed).permutation(len(subjects))
    return sorted_subjects(subjects[i] for i in order[:n])


def build_student(cfg: TrainConfig) -> FactorizePhys:
    return FactorizePhys(
        frames=cfg.frames, in_channels=3, input_size=cfg.student_size, fsam=cfg.fsam, fsam_at_inference=True
    )


def build_teacher(cfg: TrainConfig) -> RFTeacher:
    return RFTeacher(in_channels=10, widths=tuple(cfg.teacher_widths))


def save_checkpoint(path: Path, kind: str, model: torch.nn.Module, cfg: TrainConfig, **extra) -> None:
    tmp = path.with_suffix(".pt.partial")
    torch.save({"kind": kind, "model": model.state_dict(), "config": asdict(cfg), **extra}, tmp)
    tmp.replace(path)


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, TrainConfig, dict]:
    """Rebuild a saved teacher / student / baseline from its checkpoint and config."""
    ckpt = torch.load(path, map_location=device, weights_only=False)
    cfg = TrainConfig(**{**ckpt["config"], "teacher_widths": tuple(ckpt["config"]["teacher_widths"])})
    model = build_teacher(cfg) if ckpt["kind"] == "teacher" else build_student(cfg)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), cfg, ckpt


def _loader(ds, cfg: TrainConfig, shuffle: bool, seed: int, device: torch.device) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        generator=gen,
        drop_last=False,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
    )


def _limited(loader, cfg: TrainConfig):
    return itertools.islice(loader, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else loader


@torch.no_grad()
def _teacher_wave(teacher: torch.nn.Module, rf: torch.Tensor, length: int) -> torch.Tensor:
    return teacher(rf)[:, :length]


# ----------------------------------------------------------------------------------------------- teacher


def train_teacher(cfg: TrainConfig, train_ds, val_ds, device: torch.device, log: list[dict], out: Path):
    torch.manual_seed(cfg.seed)
    teacher = build_teacher(cfg).to(device)
    opt = torch.optim.Adam(teacher.parameters(), lr=cfg.teacher_lr, weight_decay=cfg.teacher_weight_decay)
    rot_gen = torch.Generator().manual_seed(cfg.seed + 17)
    loader = _loader(train_ds, cfg, True, cfg.seed, device)
    val_loader = _loader(val_ds, cfg, False, cfg.seed, device)
    best, best_state = math.inf, None
    for epoch in tqdm(range(cfg.teacher_epochs), desc="teacher", unit="epoch"):
        teacher.train()
        losses = []
        for batch in loader:
            rf, y = batch["rf"].to(device), batch["bvp"].to(device)
            theta = torch.rand(rf.shape[0], generator=rot_gen) * (2 * math.pi)
            loss = supervised_loss(teacher(rotate_iq(rf, theta.to(device))), y, fs=cfg.fs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        teacher.eval()
        with torch.no_grad():
            val = [
                supervised_loss(teacher(b["rf"].to(device)), b["bvp"].to(device), fs=cfg.fs).item()
                for b in val_loader
            ]
        val_loss = float(np.mean(val))
        log.append(
            {"stage": "teacher", "epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss}
        )
        if val_loss < best or cfg.select == "last":
            best, best_state = val_loss, {k: v.detach().clone() for k, v in teacher.state_dict().items()}
    teacher.load_state_dict(best_state)
    save_checkpoint(out / "teacher.pt", "teacher", teacher, cfg, val_loss=best)
    return teacher.eval()


# ----------------------------------------------------------------------------------------------- student


def _distill_terms(student_wave, teacher_wave, cfg: TrainConfig, policy, detach_policy: bool):
    """(per-sample distillation loss (B,), gate (B,), alpha (B, 3))."""
    fs_s = spectral_features(student_wave, fs=cfg.fs)
    fs_t = spectral_features(teacher_wave, fs=cfg.fs)
    comps = distill_components(fs_s, fs_t)  # (B, 3): peak, background, morphology
    if policy is None:
        gate = torch.ones(comps.shape[0], device=comps.device)
        alpha = torch.full_like(comps, 1.0 / comps.shape[1])
    elif detach_policy:
        with torch.no_grad():
            gate, alpha = policy(relation_map(fs_s, fs_t))
    else:
        gate, alpha = policy(relation_map(fs_s, fs_t))
    return gate * (alpha * comps).sum(dim=1), gate, alpha


def _objective(pred, y, labeled, teacher_wave, cfg: TrainConfig, mode: str, policy, detach_policy: bool):
    """Eq. 1 averaged over the batch: labelled clips get L_sup + lambda L_distill, others lambda L_distill."""
    length = pred.shape[1]
    n = pred.shape[0]
    total = pred.new_zeros(())
    stats = {}
    if mode in ("distill", "sup_only") and labeled.any():
        sup = supervised_loss(pred[labeled], y[labeled, :length], fs=cfg.fs)
        total = total + sup * (labeled.sum() / n)
        stats["sup"] = sup.item()
    if mode in ("distill", "distill_only"):
        per_sample, gate, alpha = _distill_terms(pred, teacher_wave, cfg, policy, detach_policy)
        total = total + cfg.lambda_distill * per_sample.mean()
        stats.update(
            distill=per_sample.mean().item(),
            gate=gate.mean().item(),
            **{f"alpha_{k}": alpha[:, i].mean().item() for i, k in enumerate(("peak", "bg", "morph"))},
        )
    return total, stats


def _meta_step(student, policy, policy_opt, batch_x, y, labeled, teacher_wave, val_iter, cfg, device):
    """Bilevel policy update: virtual SGD step on L_tr, then L_sup of the virtual student on val."""
    params = dict(student.named_parameters())
    buffers = {k: v.detach().clone() for k, v in student.named_buffers()}  # never touch real statistics
    pred = student(batch_x)
    loss_tr, _ = _objective(pred, y, labeled, teacher_wave, cfg, cfg.mode, policy, detach_policy=False)
    grads = torch.autograd.grad(loss_tr, list(params.values()), create_graph=True, allow_unused=True)
    eta = cfg.virtual_lr if cfg.virtual_lr is not None else cfg.lr
    fast = {k: (p - eta * g if g is not None else p) for (k, p), g in zip(params.items(), grads, strict=True)}
    val = next(val_iter)
    student.eval()
    val_pred = functional_call(
        student, (fast, buffers), (video_to_input(val["video"], cfg.student_size, device),)
    )
    student.train()
    meta_loss = supervised_loss(val_pred, val["bvp"].to(device)[:, : val_pred.shape[1]], fs=cfg.fs)
    policy_opt.zero_grad(set_to_none=True)
    meta_loss.backward(inputs=list(policy.parameters()))
    policy_opt.step()
    return meta_loss.item()


def _infinite(loader):
    while True:
        yield from loader


def train_student(
    cfg: TrainConfig, mode: str, teacher, train_ds, val_ds, device, log: list[dict], out: Path, kind: str
):
    torch.manual_seed(cfg.seed)
    student = build_student(cfg).to(device)
    use_policy = cfg.policy and mode in ("distill", "distill_only")
    policy = SpectralPolicy().to(device) if use_policy else None
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    policy_opt = torch.optim.Adam(policy.parameters(), lr=cfg.policy_lr) if policy is not None else None
    loader = _loader(train_ds, cfg, True, cfg.seed + 1, device)
    val_loader = _loader(val_ds, cfg, False, cfg.seed, device)
    val_iter = _infinite(_loader(val_ds, cfg, True, cfg.seed + 2, device)) if policy is not None else None
    best, best_state, step = math.inf, None, 0
    for epoch in range(cfg.epochs):
        student.train()
        if policy is not None:
            policy.train()
        rows = []
        total = min(len(loader), cfg.max_steps_per_epoch or len(loader))
        for batch in tqdm(_limited(loader, cfg), total=total, desc=f"{kind} epoch {epoch + 1}/{cfg.epochs}"):
            x = video_to_input(batch["video"], cfg.student_size, device)
            y, labeled = batch["bvp"].to(device), batch["labeled"].to(device)
            teacher_wave = (
                _teacher_wave(teacher, batch["rf"].to(device), cfg.frames - 1) if mode != "sup_only" else None
            )
            meta_loss = math.nan
            if policy is not None and step % cfg.meta_interval == 0:
                meta_loss = _meta_step(
                    student, policy, policy_opt, x, y, labeled, teacher_wave, val_iter, cfg, device
                )
            pred = student(x)
            loss, stats = _objective(pred, y, labeled, teacher_wave, cfg, mode, policy, detach_policy=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            rows.append({"loss": loss.item(), "meta_loss": meta_loss, **stats})
            step += 1
        student.eval()
        with torch.no_grad():
            val = [
                supervised_loss(
                    student(video_to_input(b["video"], cfg.student_size, device)),
                    b["bvp"].to(device)[:, : cfg.frames - 1],
                    fs=cfg.fs,
                ).item()
                for b in val_loader
            ]
        val_loss = float(np.mean(val))
        means = pd.DataFrame(rows).mean(numeric_only=True).to_dict()
        log.append(
            {"stage": kind, "epoch": epoch, "train_loss": means.pop("loss"), "val_loss": val_loss, **means}
        )
        tqdm.write(f"{kind} epoch {epoch + 1}: train {log[-1]['train_loss']:.4f}  val L_sup {val_loss:.4f}")
        if val_loss < best or cfg.select == "last":
            best, best_state = val_loss, {k: v.detach().clone() for k, v in student.state_dict().items()}
    student.load_state_dict(best_state)
    save_checkpoint(
        out / f"{kind}.pt",
        kind,
        student,
        cfg,
        val_loss=best,
        policy=policy.state_dict() if policy is not None else None,
        mode=mode,
    )
    return student.eval()


# ----------------------------------------------------------------------------------------------- main


def train(cfg: TrainConfig, workdir: Workdir) -> Path:
    """Train teacher, student and (optionally) the supervised-only baseline into ``runs/<run_name>``."""
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if not workdir.splits_manifest.is_file():
        raise TrainError(f"{workdir.splits_manifest}: no split; run `rpm split --seed K` first")
    meta = json.loads(workdir.splits_meta.read_text())
    sessions_csv = Path(meta["sessions_manifest"])
    if sessions_csv.is_file() and file_sha256(sessions_csv) != meta["sessions_sha256"]:
        raise TrainError(f"{sessions_csv} changed after the split was made; rerun `rpm split`")
    splits = pd.read_csv(workdir.splits_manifest, dtype={"subject": str}, keep_default_na=False)
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
    train_ds = WindowDataset(store, train_sessions, cfg.frames, cfg.stride, labeled_subjects=set(labeled))
    # Validation (model selection and the meta step) uses non-overlapping windows.
    val_ds = WindowDataset(store, val_sessions, cfg.frames, cfg.frames)
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise TrainError(
            f"no {cfg.frames}-frame windows in the train ({len(train_ds)}) or val ({len(val_ds)}) "
            "split; sessions are shorter than one window"
        )
    labeled_idx = [i for i, w in enumerate(train_ds.windows) if w.subject in set(labeled)]
    labeled_ds = Subset(train_ds, labeled_idx)
    out = workdir.runs / cfg.run_name
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(
        json.dumps({**asdict(cfg), "labeled_subjects": labeled, "device": str(device)}, indent=2) + "\n"
    )
    print(
        f"run {out}: device {device}, preset {cfg.preset}, {len(train_ds)} train windows "
        f"({len(labeled_idx)} labelled, subjects {labeled}), {len(val_ds)} val windows"
    )
    log: list[dict] = []
    t0 = time.time()
    teacher = train_teacher(cfg, labeled_ds, val_ds, device, log, out)
    for p in teacher.parameters():
        p.requires_grad_(False)
    train_student(cfg, cfg.mode, teacher, train_ds, val_ds, device, log, out, "student")
    if cfg.baseline:
        train_student(cfg, "sup_only", teacher, labeled_ds, val_ds, device, log, out, "baseline")
    keys = sorted({k for row in log for k in row}, key=lambda k: (k not in ("stage", "epoch"), k))
    with open(out / "log.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(log)
    print(f"trained in {time.time() - t0:.0f} s -> {out}")
    return out
