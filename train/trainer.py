"""RPM-Distill training: RF teacher, then the video student with spectral distillation.

Reads in execution order, from the innermost piece out:

1. method (:mod:`train.method`): the label-optional objective (Eq. 1)
       L = 1[labelled] * L_sup + lambda * g * sum_k alpha_k L_k
   where (g, alpha) come from the spectral policy network, meta-learned every ``meta_interval`` steps
   with a one-step virtual update evaluated on the labelled validation split (bilevel, :func:`meta_step`).
   ``method`` swaps the spectral term for a KD baseline (``train/kd.py``); the ablation switches
   (``peak``, ``background``, ``morphology``, ``gate``, ``weights``, ``policy``, ``bilevel``) turn parts
   of the method off;
2. step: one optimisation step of a student stage (:func:`train_step`), the meta step when due;
3. loops: the RF teacher (:func:`train_teacher`), trained on the labelled training subjects only (random
   I/Q rotation as augmentation), then each student stage (:func:`train_student`; ``student``:
   FactorizePhys by default, FactorizePhysBig at 128x128 or PhysNet; every output is cropped to T - 1
   samples, the FactorizePhys length), and optionally the supervised-only ``baseline`` (the
   no-distillation student, on the labelled subjects, with its own config: method ``supervised``);
4. :func:`train`: everything is read and checked first (:func:`train.plan.plan_run`: split, windows,
   labelled subjects drawn with the seed, teacher cache, resume state), then the run is written.

Config: :mod:`train.config`; a stage's modules and optimisers: :mod:`train.state`; devices and DDP:
:mod:`train.distributed` (``torchrun --nproc-per-node N -m cli train ...``: one process per device,
gradients averaged, rank 0 writes); loaders: :mod:`train.data`; files: :mod:`train.checkpoint` and
:mod:`train.runlog`. The teacher is cached under ``runs/_teachers/<key>/`` and reused when dataset,
split, labelled subjects, seed and teacher settings match.

Files in ``runs/<name>/``: ``teacher.pt``, ``student.pt``, ``baseline.pt`` (the selected model: best by
validation L_sup, or the last epoch with ``select="last"``), ``student_last.pt`` / ``baseline_last.pt``
(full training state after every epoch, for ``--resume``), ``config.json``, ``log.jsonl`` (one record per
step and per epoch) and ``log.csv`` (per epoch). Every checkpoint carries its stage's resolved config (the
baseline's with method ``supervised`` and mode ``sup_only``).

Resume is exact at epoch boundaries: the batch order is a function of (seed, epoch), and the model,
optimiser, policy, auxiliary modules, their optimisers and the python / numpy / torch RNG states are
restored, so on CPU the losses after a resume equal those of an uninterrupted run. A refused resume
(another config, an unreadable checkpoint) writes nothing.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from pipeline.lock import hold_lock
from pipeline.paths import Workdir
from train.build import build_teacher, stage_forward, student_length
from train.checkpoint import (
    link_or_copy,
    load_model,
    save_checkpoint,
    save_training_state,
    set_rng_state,
)
from train.config import TrainConfig
from train.data import eval_loader, forever, shuffled_loader, video_to_input
from train.distributed import (
    DistInfo,
    all_sum,
    autocast,
    barrier,
    check_in_sync,
    init_distributed,
    pick_device,
    sync_buffers,
    sync_grads,
    to_fp32,
)
from train.losses import supervised_loss
from train.method import METHOD_IMPLS, Clips, Targets, meta_objective, method_of, objective
from train.models import rotate_iq
from train.plan import RunPlan, Stage, _cached_history, plan_run
from train.runlog import RunLog, stop_if_not_finite
from train.state import (
    StepContext,
    StudentState,
    build_student_state,
    keep_freed_memory,
    seed_everything,
    use_channels_last,
)

# ----------------------------------------------------------------------------------------------- step


def meta_step(st: StudentState, train: Clips, val: Clips, ctx: StepContext) -> dict[str, float]:
    """One bilevel policy update: the meta-gradient by ``cfg.meta_grad`` (:func:`meta_objective`) into the
    policy only, averaged over processes, then the policy optimiser's step.

    Returns ``meta_loss`` (L_sup of the virtual student on ``val``) and ``meta_grad_norm`` (the global L2
    norm of the policy's averaged meta-gradient, before the optimiser step).
    """
    loss, surrogate = meta_objective(st.student, st.policy, train, val, ctx.cfg, ctx.amp)
    st.policy_opt.zero_grad(set_to_none=True)
    surrogate.backward(inputs=list(st.policy.parameters()))
    sync_grads(st.policy.parameters(), ctx.dist)
    # None: a head the ablation leaves unused (--no-gate)
    grads = [p.grad.reshape(-1) for p in st.policy.parameters() if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.cat(grads)) if grads else torch.zeros(())
    st.policy_opt.step()
    meta_loss, meta_grad_norm = torch.stack([loss.detach().float(), norm.detach().float()]).tolist()
    return {"meta_loss": meta_loss, "meta_grad_norm": meta_grad_norm}


def _student_input(video: torch.Tensor, ctx: StepContext) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 frames -> the student's (B, 3, T, S, S) input, in the stage's memory format."""
    return video_to_input(video, ctx.cfg.student_size, ctx.device, channels_last=ctx.channels_last)


def _val_clips(val: dict, ctx: StepContext) -> Clips:
    y = val["bvp"].to(ctx.device, non_blocking=True)
    labeled = torch.ones(y.shape[0], dtype=torch.bool, device=ctx.device)
    return Clips(_student_input(val["video"], ctx), Targets(y, labeled))


def teacher_wave(st: StudentState, batch: dict, ctx: StepContext, length: int) -> torch.Tensor:
    """The frozen teacher's waveform (B, length) fp32 for ``batch["rf"]``.

    With ``st.teacher_waves`` (a dict) each clip's waveform is computed once, on that clip alone (so the
    value does not depend on which clips share its batch, and a resumed run recomputes the same values),
    and reused at every later epoch: the teacher is frozen and in eval mode while the student trains, and a
    clip's radar input never changes (augmentation only touches the teacher's own training). The batch
    path (``teacher_waves`` None) is used for FitNets, whose hint tap needs the teacher's forward on the
    batch, for a teacher in training mode and for batches without ``index``.
    """
    device = ctx.device
    cache = st.teacher_waves
    if cache is None or st.teacher_tap is not None or st.teacher.training or "index" not in batch:
        rf = batch["rf"].to(device, non_blocking=True)
        with torch.no_grad(), autocast(device, ctx.amp):
            return to_fp32(st.teacher(rf)[:, :length])
    keys = [int(i) for i in batch["index"]]
    for key, clip in zip(keys, batch["rf"], strict=True):
        if key not in cache:
            with torch.no_grad(), autocast(device, ctx.amp):
                cache[key] = to_fp32(st.teacher(clip[None].to(device))[0, :length])
    return torch.stack([cache[k] for k in keys])


def train_step(
    st: StudentState,
    batch: dict,
    step: int,
    ctx: StepContext,
    next_val: Callable | None = None,
    epoch: int = 0,
) -> dict[str, float]:
    """One optimisation step (and the meta step when due, on ``next_val()``); returns the losses as floats.

    ``epoch`` (from 0) reaches the method's loss (PhysFormer's curriculum weight).
    """
    cfg, device = ctx.cfg, ctx.device
    method = method_of(cfg)
    x = _student_input(batch["video"], ctx)
    y = batch["bvp"].to(device, non_blocking=True)
    targets = Targets(y, batch["labeled"].to(device, non_blocking=True), epoch=epoch)
    length = student_length(cfg)
    out: dict[str, float] = {}
    if method.teacher_wave:
        targets.wave = teacher_wave(st, batch, ctx, length)
    if st.meta and step % cfg.meta_interval == 0:
        out.update(meta_step(st, Clips(x, targets), _val_clips(next_val(), ctx), ctx))
    with autocast(device, ctx.amp):
        pred = method.predict(st, batch, x, targets, ctx)[:, :length]
    pred = to_fp32(pred)
    aux_losses = method.guide(st, batch, pred, targets, ctx)
    joint_policy = st.policy is not None and not cfg.bilevel
    loss, stats = objective(pred, targets, cfg, st.policy, joint_policy)
    total = loss
    for name, aux_loss in aux_losses.items():
        total = total + aux_loss
        stats[name] = aux_loss.detach()
    values = torch.stack([loss.detach(), *stats.values()]).tolist()  # one device sync per step
    out.update(dict(zip(["loss", *stats], values, strict=True)))
    for o in st.optimisers().values():
        o.zero_grad(set_to_none=True)
    if not all(math.isfinite(out[k]) for k in ("loss", *aux_losses)):
        return out  # the caller stops the run before any parameter changes
    total.backward()
    sync_grads(st.student.parameters(), ctx.dist)
    st.opt.step()
    if st.aux_opt is not None:
        sync_grads(st.aux.parameters(), ctx.dist)
        st.aux_opt.step()
    if joint_policy:
        sync_grads(st.policy.parameters(), ctx.dist)
        st.policy_opt.step()
    return out


# ----------------------------------------------------------------------------------------------- loops


@torch.no_grad()
def _validate(model, loader, ctx: StepContext, radar: bool = False) -> float:
    """Mean L_sup per window over the validation split (all ranks together)."""
    cfg, device = ctx.cfg, ctx.device
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    for b in loader:
        with autocast(device, ctx.amp):
            pred = stage_forward(model, b, cfg, device, radar, ctx.channels_last)[:, : student_length(cfg)]
        y = b["bvp"].to(device, non_blocking=True)
        total[0] += supervised_loss(to_fp32(pred), y, fs=cfg.fs).double() * y.shape[0]
        total[1] += y.shape[0]
    all_sum(total, ctx.dist)
    model.train(was_training)
    return float(total[0] / total[1])


def train_teacher(train_ds, val_ds, ctx: StepContext) -> tuple[nn.Module, list]:
    """Train the RF teacher on the labelled subjects; returns (best or last teacher, epoch records)."""
    cfg, device, d = ctx.cfg, ctx.device, ctx.dist
    seed_everything(cfg.seed)
    teacher = build_teacher(cfg, rf_channels=int(train_ds[0]["rf"].shape[0])).to(device)
    opt = torch.optim.Adam(teacher.parameters(), lr=cfg.teacher_lr, weight_decay=cfg.teacher_weight_decay)
    loader, sampler = shuffled_loader(train_ds, cfg, ctx.dist, ctx.device, cfg.seed)
    val_loader = eval_loader(val_ds, cfg, ctx.dist, ctx.device)
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
            with autocast(device, ctx.amp):
                out = teacher(rotate_iq(rf, theta.to(device)))
            loss = supervised_loss(to_fp32(out), y, fs=cfg.fs)
            stop_if_not_finite({"teacher": loss.item()}, f"teacher epoch {epoch}", None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            sync_grads(teacher.parameters(), d)
            opt.step()
            losses.append(loss.item())
        sync_buffers(teacher, d)
        val_loss = _validate(teacher, val_loader, ctx, radar=True)
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
    check_in_sync(teacher, d, "teacher")
    return teacher.eval(), history


class StudentTraining:
    """One student stage (``student`` or ``baseline``), resumable at epoch boundaries; see :meth:`run`."""

    def __init__(
        self,
        stage: Stage,
        teacher,
        val_ds,
        ctx: StepContext,
        out: Path,
        log: RunLog,
        trained: dict[str, nn.Module] | None = None,
    ):
        self.stage, self.log = stage, log
        self.ctx = dataclasses.replace(ctx, cfg=stage.cfg)
        self.st = build_student_state(stage.cfg, teacher, ctx.device, trained, self.ctx.channels_last)
        seed = stage.cfg.seed
        self.loader, self.sampler = shuffled_loader(stage.train, stage.cfg, ctx.dist, ctx.device, seed + 1)
        self.val_loader = eval_loader(val_ds, stage.cfg, ctx.dist, ctx.device)
        self.meta_loader, self.meta_sampler = shuffled_loader(
            val_ds, stage.cfg, ctx.dist, ctx.device, seed + 2
        )
        self.last_path, self.best_path = out / f"{stage.kind}_last.pt", out / f"{stage.kind}.pt"
        self.epoch, self.step, self.best = 0, 0, math.inf

    def run(self) -> nn.Module:
        """Train the remaining epochs; returns the selected model, reloaded from its checkpoint."""
        cfg, d, kind = self.ctx.cfg, self.ctx.dist, self.stage.kind
        if self.stage.resume_from is not None:
            self._restore(self.stage.resume_from)
            if d.main:
                print(f"{kind}: resuming after epoch {self.epoch} of {cfg.epochs} from {self.last_path}")
        self.log.truncate(kind, self.epoch)
        for epoch in range(self.epoch, cfg.epochs):
            rows = self._train_epoch(epoch)
            self._end_epoch(epoch, rows)
        check_in_sync(self.st.student, d, kind)
        for tap in (self.st.student_tap, self.st.teacher_tap):
            if tap is not None:
                tap.remove()
        barrier(d)
        model, _, _ = load_model(self.best_path, self.ctx.device)
        return model

    def _restore(self, state: dict) -> None:
        self.st.load_state_dicts(state, self.last_path)
        self.epoch, self.step, self.best = state["epoch"] + 1, state["step"], state["best_val"]
        set_rng_state(state["rng"])

    def _train_epoch(self, epoch: int) -> list[dict]:
        cfg, d, st, kind = self.ctx.cfg, self.ctx.dist, self.st, self.stage.kind
        steps_per_epoch = min(len(self.loader), cfg.max_steps_per_epoch or len(self.loader))
        self.sampler.set_epoch(epoch)
        for m in st.modules().values():
            m.train()
        val_iter = forever(self.meta_loader, self.meta_sampler, 10_000 * epoch) if st.meta else None
        rows = []
        bar = tqdm(
            itertools.islice(self.loader, steps_per_epoch),
            total=steps_per_epoch,
            disable=not d.main,
            desc=f"{kind} epoch {epoch + 1}/{cfg.epochs}",
        )
        for batch in bar:
            t0 = time.perf_counter()
            values = train_step(
                st, batch, self.step, self.ctx, next_val=(lambda it=val_iter: next(it)), epoch=epoch
            )
            last_good = self.last_path if self.last_path.is_file() else None
            stop_if_not_finite(values, f"{kind} epoch {epoch} step {self.step}", last_good)
            record = {"type": "step", "stage": kind, "epoch": epoch, "step": self.step, **values}
            self.log.write({**record, "seconds": time.perf_counter() - t0})
            rows.append(values)
            bar.set_postfix(loss=f"{values['loss']:.3f}")
            self.step += 1
        return rows

    def _end_epoch(self, epoch: int, rows: list[dict]) -> None:
        """Validate, save the selected model and the training state, log the epoch."""
        cfg, d, st, kind = self.ctx.cfg, self.ctx.dist, self.st, self.stage.kind
        sync_buffers(st.student, d)  # PhysNet's BatchNorm statistics (FactorizePhys has none)
        sync_buffers(st.aux, d)  # the dml peer's BatchNorm statistics
        val_loss = _validate(st.student, self.val_loader, self.ctx)
        means = pd.DataFrame(rows).mean(numeric_only=True).to_dict()
        improved = val_loss < self.best or cfg.select == "last"
        if improved:
            self.best = val_loss
        if d.main:
            if improved:
                policy = st.policy.state_dict() if st.policy is not None else None
                save_checkpoint(
                    self.best_path, kind, st.student, cfg, val_loss=val_loss, epoch=epoch, policy=policy
                )
            progress = {"epoch": epoch, "step": self.step, "best_val": self.best}
            save_training_state(self.last_path, kind, cfg, progress, st.state_dicts())
        train_loss = means.pop("loss")
        self.log.write(
            {
                "type": "epoch",
                "stage": kind,
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "selected": improved,
                **means,
            }
        )
        if d.main:
            tqdm.write(f"{kind} epoch {epoch + 1}: train loss {train_loss:.4f}  val L_sup {val_loss:.4f}")
        barrier(d)


def train_student(
    stage: Stage,
    teacher,
    val_ds,
    ctx: StepContext,
    out: Path,
    log: RunLog,
    trained: dict[str, nn.Module] | None = None,
) -> nn.Module:
    """Train one student stage into ``out``; returns its selected model (see :class:`StudentTraining`).

    ``trained``: the models of the run's earlier stages by kind (method fusion builds on the baseline).
    """
    return StudentTraining(stage, teacher, val_ds, ctx, out, log, trained).run()


# ----------------------------------------------------------------------------------------------- train


def train(cfg: TrainConfig, workdir: Workdir) -> Path:
    """Train teacher, student and (optionally) the supervised-only baseline into ``runs/<run_name>``.

    Everything is read and checked (:func:`train.plan.plan_run`) before the first write, so a refused
    run, a refused ``--resume`` included, changes no file.
    """
    d, created_group = init_distributed(cfg.device)
    try:
        return _train(cfg, workdir, d)
    finally:
        if created_group:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, workdir: Workdir, d: DistInfo) -> Path:
    device = pick_device(cfg.device, d.local_rank)
    keep_freed_memory(device)
    ctx = StepContext(cfg, device, d, cfg.amp and device.type == "cuda", use_channels_last(device))
    seed_everything(cfg.seed)
    plan = plan_run(cfg, workdir, needs_teacher=METHOD_IMPLS[cfg.method].needs_teacher)
    if d.main:
        _write_run_config(plan, ctx)
    barrier(d)
    log = RunLog(plan.out, enabled=d.main, records=plan.log_records)
    t0 = time.time()
    teacher = _teacher(plan, ctx, log) if plan.teacher is not None else None
    trained: dict[str, nn.Module] = {}
    for stage in plan.stages:
        trained[stage.kind] = train_student(stage, teacher, plan.data.val, ctx, plan.out, log, trained)
    if d.main:
        print(f"trained in {time.time() - t0:.0f} s -> {plan.out}")
    return plan.out


def _write_run_config(plan: RunPlan, ctx: StepContext) -> None:
    """``config.json`` (written whole, then renamed: a kill never truncates it) and the run's summary line."""
    cfg, data, out = plan.cfg, plan.data, plan.out
    out.mkdir(parents=True, exist_ok=True)
    saved = {
        **asdict(cfg),
        "labeled_subjects": data.labeled_subjects,
        "device_resolved": str(ctx.device),
        "world_size": ctx.dist.world,
        "teacher_key": plan.teacher_key,
        "sync_shift_prob": data.shift_prob,
    }
    (out / "config.json.partial").write_text(json.dumps(saved, indent=2) + "\n")
    (out / "config.json.partial").replace(out / "config.json")
    print(
        f"run {out}: device {ctx.device}{' (bf16 autocast)' if ctx.amp else ''}, "
        f"world size {ctx.dist.world}, "
        f"method {cfg.method}, preset {cfg.preset}, {len(data.train)} train windows "
        f"({len(data.labeled)} labelled, subjects {data.labeled_subjects}), {len(data.val)} val windows"
    )


def _save_teacher(plan: RunPlan, teacher: nn.Module, history: list[dict]) -> None:
    """The trained teacher to ``plan.teacher.path`` (written whole, then renamed: nobody reads half of it);
    in the cache, ``key.json`` goes beside it first, so a cached teacher.pt always has its key."""
    tp = plan.teacher
    tp.path.parent.mkdir(parents=True, exist_ok=True)
    if plan.cfg.teacher_cache:
        key_file, tmp = tp.path.parent / "key.json", tp.path.parent / "key.json.partial"
        tmp.write_text(json.dumps(tp.payload, indent=2) + "\n")
        tmp.replace(key_file)
    best = min(r["val_loss"] for r in history)
    extra = dict(val_loss=best, history=history, cache_key=plan.teacher_key, cache_payload=tp.payload)
    save_checkpoint(tp.path, "teacher", teacher, plan.cfg, **extra)


def _teacher(plan: RunPlan, ctx: StepContext, log: RunLog) -> nn.Module:
    """The frozen RF teacher: reused from the cache (or a resumed run), else trained and saved there.

    A teacher the plan found uncached is trained under ``runs/_teachers/<key>.lock`` (rank 0 holds it,
    waiting for another process that holds it): the cache is looked at again under the lock, so of two
    runs that need the same uncached teacher at once, one trains it and the other waits and reuses it."""
    cfg, d, tp = plan.cfg, ctx.dist, plan.teacher
    locked = cfg.teacher_cache and not tp.reuse and d.main
    lock_path = tp.path.parent.with_name(tp.path.parent.name + ".lock")
    with hold_lock(lock_path, f"teacher cache {tp.path.parent}", wait=True) if locked else nullcontext():
        reuse, history = tp.reuse, tp.history
        if locked and tp.path.is_file():  # written (whole, by rename) by another run while this one planned
            reuse, history = True, _cached_history(tp.path, tp.payload)
        if not tp.reuse:  # every rank learns rank 0's finding
            reuse = bool(all_sum(torch.tensor([int(reuse)], device=ctx.device), d).item())
        if reuse:
            if d.main:
                meanwhile = "" if tp.reuse else " (trained meanwhile by another run)"
                print(f"teacher: reusing {tp.path}{meanwhile}")
                if not log.has_stage("teacher"):
                    for record in history:
                        log.write({**record, "cached": True})
        else:
            teacher, history = train_teacher(plan.data.labeled, plan.data.val, ctx)
            if d.main:
                for record in history:
                    log.write(record)
                _save_teacher(plan, teacher, history)
    if d.main and cfg.teacher_cache:
        link_or_copy(tp.path, plan.out / "teacher.pt")
    barrier(d)
    teacher, _, _ = load_model(plan.out / "teacher.pt", ctx.device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
