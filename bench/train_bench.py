"""Training throughput against the machine's limit, old and new code side by side, in one run.

Writes bench/results/train_bench.json:

* per code tree (``new``: this checkout; ``old``: ``--old-tree``, a worktree of the commit before the
  change) and per step variant: seconds per step (wall and process CPU time), clips/s, GFLOP per clip
  (``torch.utils.flop_counter.FlopCounterMode``) and the fraction of the fp32 matmul rate (2048^2, same
  threads) measured in the same rounds. Variants: ``supervised``, ``distill_fixed_weights`` (spectral
  term, no policy), ``rpm_distill_real_step`` (policy forward, no meta step),
  ``rpm_distill_meta_plus_real_step`` (meta step every step) and ``teacher_train_step`` (one step of the
  RF teacher's training);
* the amortised cost of the bilevel update at ``meta_interval`` 10;
* DataLoader clips/s (zarr store -> uint8 batches) against the clips/s training consumes.

Each tree runs in its own worker process (same thread settings), and the rounds alternate old, new and
the matmul, so load changes on a shared machine hit them alike; medians are reported, with the load
average before and after. The new tree's batches carry ``index``, so its teacher waveforms come from the
per-clip cache after the first round (every epoch after the first). ``--profile`` writes
bench/results/train_profile.txt (where a step's time goes); ``--contention`` measures a step beside 0, 1
and 3 other CPU-bound training processes, with and without spin-waiting OpenMP threads; ``--meta-grad``
writes bench/results/meta_grad_bench.json: the meta step (``train.trainer.meta_step``) with the exact
second-order meta-gradient and with the finite-difference one, timed alternately in one process beside
the plain steps, and how well the two policy gradients agree on the bench batch (cosine, relative error).
``--floor`` writes bench/results/train_floor.json (``train_floor_cuda.json`` on CUDA): the supervised step
against its floor (:func:`step_floor`): its convolutions replayed alone with the step's shapes and memory
format, memory bandwidth, the bytes the memory-bound ops must move, and the step's own non-convolution ops
replayed alone, interleaved with the matmul reference in one process.

    .venv/bin/python bench/train_bench.py --old-tree ../speed_base            # CPU: T 128, B 4, 72 px
    .venv/bin/python bench/train_bench.py --profile
    .venv/bin/python bench/train_bench.py --contention
    .venv/bin/python bench/train_bench.py --meta-grad --reps 5
    .venv/bin/python bench/train_bench.py --floor --reps 3 --threads 2
    .venv/bin/python bench/train_bench.py --frames 256 --batch 8 --size 72 --device cuda   # paper settings
    .venv/bin/python bench/train_bench.py --frames 256 --batch 8 --size 128 --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

VARIANTS = {
    # name: (mode, method, config changes)
    "supervised": ("sup_only", "supervised", {}),
    "distill_fixed_weights": ("distill", "rpm-distill", {"policy": False}),
    "rpm_distill_real_step": ("distill", "rpm-distill", {}),
    "rpm_distill_meta_plus_real_step": ("distill", "rpm-distill", {"meta_interval": 1}),
}


# --------------------------------------------------------------------------------------------- worker


class Worker:
    """Runs in a child process with one code tree first on ``sys.path``; answers one command per line."""

    def __init__(self, tree: Path, shape: dict, device_name: str, threads: int):
        sys.path.insert(0, str(tree))
        import torch

        torch.set_num_threads(threads)
        from train.build import build_teacher
        from train.config import TrainConfig
        from train.distributed import DistInfo, pick_device
        from train.trainer import StepContext, build_student_state

        self.torch = torch
        self.device = device = pick_device(device_name)
        self.amp = device.type == "cuda"
        cfg = TrainConfig(
            frames=shape["frames"],
            stride=30,
            batch_size=shape["batch"],
            student_size=shape["size"],
            lr=1e-3,
            teacher_widths=(16, 32, 64, 128) if device.type == "cpu" else (32, 64, 128, 256, 512, 1024),
        )
        self.cfg = cfg
        teacher = build_teacher(cfg).to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        g = torch.Generator().manual_seed(0)
        b, t = cfg.batch_size, cfg.frames
        self.batch = {
            "video": torch.randint(0, 256, (b, t, 128, 128, 3), dtype=torch.uint8, generator=g),
            "bvp": torch.sin(torch.arange(t) / 30.0 * 2 * torch.pi * 1.2).repeat(b, 1)
            + 0.1 * torch.randn(b, t, generator=g),
            "rf": torch.randn(b, 10, t, generator=g),
            "labeled": torch.tensor([i % 2 == 0 for i in range(b)]),
            "index": torch.arange(b),
        }
        try:  # the trainer's process setting since the floor measurement (issue 15)
            from train.state import keep_freed_memory

            self.kept_freed_memory = keep_freed_memory(device)
        except ImportError:
            self.kept_freed_memory = False
        try:  # the new trainer: channels-last student on CPU
            from train.trainer import use_channels_last

            cl = use_channels_last(device)
            make_ctx = lambda c: StepContext(c, device, DistInfo(), self.amp, channels_last=cl)  # noqa: E731
            make_state = lambda c: build_student_state(c, teacher, device, channels_last=cl)  # noqa: E731
        except ImportError:  # the old trainer
            make_ctx = lambda c: StepContext(c, device, DistInfo(), self.amp)  # noqa: E731
            make_state = lambda c: build_student_state(c, teacher, device)  # noqa: E731
        self.states = {}
        for name, (mode, method, change) in VARIANTS.items():
            vcfg = TrainConfig(**{**cfg.__dict__, "mode": mode, "method": method, **change})
            st = make_state(vcfg)
            if name == "rpm_distill_real_step":
                st.meta = False  # the policy forward of the real step, without the meta step
            self.states[name] = (st, make_ctx(vcfg))
        self._teacher_setup(build_teacher)

    def _teacher_setup(self, build_teacher):
        torch, cfg = self.torch, self.cfg
        self.student_teacher = build_teacher(cfg).to(self.device).train()
        self.teacher_opt = torch.optim.Adam(self.student_teacher.parameters(), lr=cfg.teacher_lr)
        self.rot = torch.Generator().manual_seed(0)

    def teacher_step(self):
        """The body of ``train.trainer.train_teacher``'s loop (I/Q rotation, forward, L_sup, Adam)."""
        torch = self.torch
        from train.distributed import autocast, to_fp32
        from train.losses import supervised_loss
        from train.models import rotate_iq

        rf = self.batch["rf"].to(self.device)
        y = self.batch["bvp"].to(self.device)
        theta = torch.rand(rf.shape[0], generator=self.rot) * (2 * math.pi)
        with autocast(self.device, self.amp):
            out = self.student_teacher(rotate_iq(rf, theta.to(self.device)))
        loss = supervised_loss(to_fp32(out), y, fs=self.cfg.fs)
        loss.item()
        self.teacher_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.teacher_opt.step()

    def run(self, name: str) -> None:
        from train.trainer import train_step

        if name == "teacher_train_step":
            self.teacher_step()
        else:
            st, ctx = self.states[name]
            train_step(st, self.batch, 0, ctx, next_val=lambda: self.batch)

    def timed(self, name: str) -> dict:
        sync = self.torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        if self.device.type == "cuda":
            self.torch.cuda.reset_peak_memory_stats(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        self.run(name)
        sync()
        out = {"s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
        if self.device.type == "cuda":
            out["peak_mem_gib"] = self.torch.cuda.max_memory_allocated(self.device) / 2**30
        return out

    def flops(self, name: str) -> float:
        """FLOP of one step (FlopCounterMode: convolutions, matmuls and their backward; elementwise: 0),
        the input resize left out: since round 6 it sums pixel windows with 0/1 block matrix products
        (``train.data._exact_area_resize``, ~0.3 GFLOP per clip), data preparation that must not count as
        the model's work. A second counter inside each ``video_to_input`` call measures what to subtract
        (the outer counter sees those products too); in a tree whose resize pools, that is 0."""
        from torch.utils.flop_counter import FlopCounterMode

        import train.trainer as trainer_module

        resize = trainer_module.video_to_input
        resize_flop = []

        def counted_resize(*args, **kwargs):
            inner = FlopCounterMode(display=False)
            with inner:
                out = resize(*args, **kwargs)
            resize_flop.append(inner.get_total_flops())
            return out

        counter = FlopCounterMode(display=False)
        trainer_module.video_to_input = counted_resize
        try:
            with counter:
                self.run(name)
        finally:
            trainer_module.video_to_input = resize
        return float(counter.get_total_flops() - sum(resize_flop))


def matmul_rate(torch, device, reps: int = 3, n: int = 2048) -> dict:
    """Best fp32 (or bf16 on CUDA) n x n matmul rate in GFLOP/s over ``reps`` products, wall and CPU time."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    (a @ b).sum().item()
    best, best_cpu = 0.0, 0.0
    for _ in range(reps):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        a @ b
        sync()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        best = max(best, 2 * n**3 / dt / 1e9)
        best_cpu = max(best_cpu, 2 * n**3 / max(dc, 1e-9) / 1e9)
    return {"gflop_s": best, "gflop_per_cpu_s": best_cpu}


def worker_main(args) -> None:
    shape = {"frames": args.frames, "batch": args.batch, "size": args.size}
    w = Worker(Path(args.worker), shape, args.device, args.threads)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "time":
            out = w.timed(arg)
        elif cmd == "flops":
            out = {"flop": w.flops(arg)}
        elif cmd == "matmul":
            out = matmul_rate(w.torch, w.device)
        elif cmd == "loop":  # contention: run steps until killed
            while True:
                w.run(arg)
        elif cmd == "quit":
            return
        else:
            out = {"error": f"unknown command {cmd!r}"}
        print(json.dumps(out), flush=True)


class WorkerProcess:
    """A :class:`Worker` in a child process, driven one line at a time."""

    def __init__(self, tree: Path, args, env_extra: dict[str, str | None]):
        """``env_extra``: variables to set, or with value None to remove, in the worker's environment."""
        env = {**os.environ, **env_extra, "OMP_NUM_THREADS": str(args.threads)}
        env = {k: v for k, v in env.items() if v is not None}
        env.pop("PYTHONPATH", None)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(tree)]
        cmd += ["--frames", str(args.frames), "--batch", str(args.batch), "--size", str(args.size)]
        cmd += ["--device", args.device, "--threads", str(args.threads)]
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self._read()

    def _read(self) -> dict:
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"bench worker {self.p.args} ended (exit {self.p.wait()})")
        return json.loads(line)

    def ask(self, cmd: str) -> dict:
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self._read()

    def start_loop(self, name: str) -> None:
        self.p.stdin.write(f"loop {name}\n")
        self.p.stdin.flush()

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


# ---------------------------------------------------------------------------------------------- parent


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def bench_trees(args, trees: dict[str, Path], env: dict[str, str]) -> dict:
    names = [*VARIANTS, "teacher_train_step"]
    workers = {k: WorkerProcess(tree, args, env) for k, tree in trees.items()}
    try:
        flops = {k: {n: w.ask(f"flops {n}")["flop"] for n in names} for k, w in workers.items()}
        times = {k: {n: [] for n in names} for k in workers}
        mm = []
        for rep in range(args.reps + 1):  # rep 0 warms up (and fills the new tree's teacher cache)
            for n in names:
                for k, w in workers.items():
                    r = w.ask(f"time {n}")
                    if rep > 0:
                        times[k][n].append(r)
            r = next(iter(workers.values())).ask("matmul")
            if rep > 0:
                mm.append(r)
    finally:
        for w in workers.values():
            w.close()
    rate = statistics.median(r["gflop_s"] for r in mm)
    rate_cpu = statistics.median(r["gflop_per_cpu_s"] for r in mm)
    out: dict = {"matmul_2048_fp32_gflop_s": rate, "matmul_2048_fp32_gflop_per_cpu_s": rate_cpu}
    for k in workers:
        per = {}
        for n in names:
            s = statistics.median(r["s"] for r in times[k][n])
            cpu = statistics.median(r["cpu_s"] for r in times[k][n])
            gflop_clip = flops[k][n] / args.batch / 1e9
            clips = args.batch / s
            per[n] = {
                "s_per_step": s,
                "cpu_s_per_step": cpu,
                "clips_per_s": clips,
                "gflop_per_clip": gflop_clip,
                "gflop_s": clips * gflop_clip,
                "fraction_of_matmul_rate": clips * gflop_clip / rate,
                "fraction_of_matmul_rate_cpu_time": (args.batch / cpu) * gflop_clip / rate_cpu,
                "all_s": [round(r["s"], 3) for r in times[k][n]],
            }
            if "peak_mem_gib" in times[k][n][0]:
                per[n]["peak_mem_gib"] = max(r["peak_mem_gib"] for r in times[k][n])
        sec = {n: per[n]["s_per_step"] for n in names}
        meta_only = sec["rpm_distill_meta_plus_real_step"] - sec["rpm_distill_real_step"]
        amortised = sec["rpm_distill_real_step"] + meta_only / 10
        per["meta_step_alone_s"] = meta_only
        per["meta_step_vs_plain_distill_step"] = meta_only / sec["distill_fixed_weights"]
        per["amortised_step_at_interval_10_s"] = amortised
        per["amortised_overhead_vs_plain_distill_step"] = amortised / sec["distill_fixed_weights"]
        per["train_clips_per_s_rpm_distill"] = args.batch / amortised
        out[k] = per
    if "old" in out and "new" in out:
        out["new_over_old_speed"] = {
            n: out["old"][n]["s_per_step"] / out["new"][n]["s_per_step"] for n in names
        } | {
            f"{n}_cpu_time": out["old"][n]["cpu_s_per_step"] / out["new"][n]["cpu_s_per_step"] for n in names
        }
    return out


def bench_loader(args, workers: int, batches: int = 8) -> float:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    sys.path.insert(0, str(REPO))
    from pipeline.store import write_session
    from train.data import WindowDataset

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench.zarr"
        rng = np.random.default_rng(0)
        frames = max(300, 2 * args.frames)
        sessions = []
        for s in range(4):
            base = rng.integers(60, 200, size=(1, 128, 128, 3)).astype(np.int16)
            video = np.clip(base + rng.integers(-6, 7, size=(frames, 128, 128, 3)), 0, 255).astype(np.uint8)
            bvp = np.sin(np.arange(frames) / 30.0 * 2 * np.pi * 1.2).astype(np.float32)
            radar = rng.normal(size=(4 * frames, 2, 5)).astype(np.float32)
            meta = {"subject": str(s), "fps": 30}
            write_session(store, f"v_{s}_1", video, bvp, radar, np.ones(4 * frames, bool), meta)
            sessions.append(f"v_{s}_1")
        ds = WindowDataset(store, sessions, args.frames, 30)
        loader = DataLoader(
            ds,
            batch_size=args.batch,
            shuffle=True,
            num_workers=workers,
            generator=torch.Generator().manual_seed(0),
        )
        n, t0 = 0, None
        for i, batch in enumerate(loader):
            if i == 1:  # skip the first batch (worker start-up)
                t0, n = time.perf_counter(), 0
            if i > batches:
                break
            n += batch["video"].shape[0]
        return n / (time.perf_counter() - t0)


def profile_step(args) -> str:
    """torch.profiler summary of one rpm-distill real step and one meta step, by part and by op."""
    sys.path.insert(0, str(REPO))
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    import train.losses as losses
    import train.method as method

    torch.set_num_threads(args.threads)
    w = Worker(
        REPO, {"frames": args.frames, "batch": args.batch, "size": args.size}, args.device, args.threads
    )

    def labelled(label, fn):
        def wrapper(*a, **k):
            with record_function(label):
                return fn(*a, **k)

        return wrapper

    # Label the parts (the wrappers add a few microseconds per call).
    method.spectral_features = labelled("part: spectral features", losses.spectral_features)
    method.distill_components = labelled("part: spectral distillation terms", losses.distill_components)
    method.supervised_loss = labelled("part: supervised loss (L_sup)", losses.supervised_loss)
    teacher = next(iter(w.states.values()))[0].teacher
    teacher.forward = labelled("part: frozen teacher forward", teacher.forward)
    for st, _ in w.states.values():
        st.student.forward = labelled("part: student forward (FSAM included)", st.student.forward)
        st.student.fsam.forward = labelled("part: FSAM (NMF factorisation, convs)", st.student.fsam.forward)
        if st.policy is not None:
            st.policy.forward = labelled("part: spectral policy forward", st.policy.forward)
        st.opt.step = labelled("part: optimiser step (student Adam)", st.opt.step)
    backward = torch.Tensor.backward
    torch.Tensor.backward = labelled("part: backward (student and policy)", backward)
    import train.trainer as trainer

    trainer.video_to_input = labelled("part: uint8 video -> input (resize)", trainer.video_to_input)
    lines = [
        f"bench/train_bench.py --profile: T {args.frames}, B {args.batch}, {args.size} px, "
        f"{args.threads} threads, {args.device}; load average {load()} (shared machine)\n"
    ]
    for name, note in (
        ("rpm_distill_real_step", "rpm-distill real step (policy forward, no meta step)"),
        ("rpm_distill_meta_plus_real_step", "meta step + real step"),
    ):
        w.states[name][0].teacher_waves = None  # first: the teacher on the batch, as in epoch 1
        w.run(name)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            w.run(name)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events) / 1e3
        lines.append(f"\n== {note} (teacher run on the batch): {total:.0f} ms CPU in all ops ==\n")
        parts = sorted((e for e in events if e.key.startswith("part: ")), key=lambda e: -e.cpu_time_total)
        for e in parts:
            ms = e.cpu_time_total / 1e3
            lines.append(f"  {e.key[6:]:<50s} {ms:9.1f} ms  {100 * ms / total:5.1f} %  ({e.count} calls)\n")
        lines.append("\n  top ops by self CPU time:\n")
        lines.append(events.table(sort_by="self_cpu_time_total", row_limit=18) + "\n")
    t0 = time.perf_counter()
    rate = bench_loader(args, 0, 4)
    lines.append(
        f"\nloader (zarr -> uint8 batch, 0 workers): {1e3 * args.batch / rate:.0f} ms per batch of "
        f"{args.batch} ({time.perf_counter() - t0:.1f} s incl. writing the store)\n"
    )
    return "".join(lines)


def meta_grad_compare(args) -> dict:
    """Seconds per meta step, exact vs finite-difference (``TrainConfig.meta_grad``), in this process.

    The rounds alternate exact, finite-difference, a plain distillation step (fixed weights) and an
    rpm-distill step without meta step, so load changes on a shared machine hit them alike; medians. The
    agreement of the two policy meta-gradients is measured once on the same batch, policy and RNG state.
    """
    sys.path.insert(0, str(REPO))
    import dataclasses

    import torch

    from train.build import student_length
    from train.method import Clips, Targets, meta_objective
    from train.trainer import _student_input, _val_clips, meta_step, teacher_wave

    torch.set_num_threads(args.threads)
    w = Worker(
        REPO, {"frames": args.frames, "batch": args.batch, "size": args.size}, args.device, args.threads
    )
    st, ctx = w.states["rpm_distill_meta_plus_real_step"]
    contexts = {g: dataclasses.replace(ctx, cfg=dataclasses.replace(ctx.cfg, meta_grad=g)) for g in META}
    batch = w.batch
    x = _student_input(batch["video"], ctx)
    targets = Targets(batch["bvp"].to(w.device), batch["labeled"].to(w.device))
    targets.wave = teacher_wave(st, batch, ctx, student_length(ctx.cfg))
    train, val = Clips(x, targets), _val_clips(batch, ctx)

    grads = {}
    for g, c in contexts.items():
        torch.manual_seed(0)
        _, surrogate = meta_objective(st.student, st.policy, train, val, c.cfg, c.amp)
        parts = torch.autograd.grad(surrogate, list(st.policy.parameters()), allow_unused=True)
        grads[g] = torch.cat([q.reshape(-1) for q in parts if q is not None]).double()
    exact, fd = grads["exact"], grads["finite-difference"]
    agreement = {
        "cosine": float(torch.nn.functional.cosine_similarity(exact, fd, dim=0)),
        "relative_error": float((fd - exact).norm() / exact.norm()),
        "exact_norm": float(exact.norm()),
    }
    sync = torch.cuda.synchronize if w.device.type == "cuda" else (lambda: None)

    def seconds(fn) -> float:
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    jobs = {f"meta_step_{g}": (lambda c=c: meta_step(st, train, val, c)) for g, c in contexts.items()}
    jobs |= {n: (lambda n=n: w.run(n)) for n in ("distill_fixed_weights", "rpm_distill_real_step")}
    times: dict[str, list[float]] = {n: [] for n in jobs}
    for rep in range(args.reps + 1):  # rep 0 warms up
        for n, fn in jobs.items():
            s = seconds(fn)
            if rep > 0:
                times[n].append(s)
    med = {n: statistics.median(t) for n, t in times.items()}
    plain = med["distill_fixed_weights"]
    return {
        "s_per_call": med,
        "all_s": {n: [round(x, 3) for x in t] for n, t in times.items()},
        "exact_over_finite_difference": med["meta_step_exact"] / med["meta_step_finite-difference"],
        "meta_step_in_plain_distill_steps": {g: med[f"meta_step_{g}"] / plain for g in META},
        "amortised_step_at_interval_10_in_plain_steps": {
            g: (med["rpm_distill_real_step"] + med[f"meta_step_{g}"] / 10) / plain for g in META
        },
        "policy_gradient_agreement": agreement,
    }


META = ("exact", "finite-difference")


# ----------------------------------------------------------------------------------------------- floor

# Ops that only re-describe memory (no data moves); schema aliases are found automatically, these are not.
_VIEW_OPS = {"aten::_unsafe_view", "aten::lift_fresh_copy"}
_COPY_OPS = {"aten::clone", "aten::copy_", "aten::_to_copy", "aten::contiguous"}
_CONV_OPS = {"aten::convolution", "aten::convolution_backward"}
_OP_GROUPS = {  # report groups of the memory-bound ops
    "aten::native_batch_norm": "instance norm forward",
    "aten::native_batch_norm_backward": "instance norm backward",
    "aten::tanh": "tanh forward",
    "aten::tanh_backward": "tanh backward",
    "aten::_adaptive_avg_pool2d": "input resize (area pooling)",
}


def _tensor_meta(t) -> dict:
    return {
        "shape": list(t.shape),
        "stride": list(t.stride()),
        "dtype": str(t.dtype).removeprefix("torch."),
        "distinct_bytes": _distinct_bytes(t),
        "key": (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride())),
    }


def _distinct_bytes(t) -> int:
    """Bytes of the distinct elements a tensor addresses (broadcast dimensions, stride 0, count once)."""
    n = 1
    for size, stride in zip(t.shape, t.stride(), strict=True):
        if stride != 0:
            n *= size
    return n * t.element_size()


def record_step_ops(run, torch) -> list[dict]:
    """Every aten call of ``run()`` below autograd (a TorchDispatchMode): op name, tensors read and written.

    Every op that is not a view keeps its arguments (tensors as shape, stride and dtype) so that it can be
    replayed alone (:class:`OpReplay`).
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten, tree_map

    rows: list[dict] = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            name = func._schema.name
            outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            is_view = name in _VIEW_OPS or any(
                r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns
            )
            reads = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            written = []
            for a, value in zip(func._schema.arguments, args, strict=False):  # in-place and out= arguments
                if a.alias_info is not None and a.alias_info.is_write:
                    written += [t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor)]
            row = {
                "op": name,
                "view": is_view,
                "reads": [_tensor_meta(t) for t in reads],
                "writes": [_tensor_meta(t) for t in written + outs],
            }
            if not is_view:
                row["call"] = (
                    func,
                    tree_map(
                        lambda a: ("tensor", _tensor_meta(a)) if isinstance(a, torch.Tensor) else a, args
                    ),
                    tree_map(
                        lambda a: ("tensor", _tensor_meta(a)) if isinstance(a, torch.Tensor) else a, kwargs
                    ),
                )
            rows.append(row)
            return out

    with Recorder():
        run()
    return rows


def op_min_bytes(row: dict) -> int:
    """The fewest bytes an op must move: each distinct input read once, each distinct output written once.

    A two-pass reduction (the norms: statistics, then normalise) is counted as one read, because one
    (sample, channel) slice of the student's largest map (127 x 72 x 72 fp32, 2.6 MB) fits in the last-level
    cache, so its second pass need not reach memory.
    """
    seen, total = set(), 0
    for key, m in [((m["key"], "r"), m) for m in row["reads"]] + [
        ((m["key"], "w"), m) for m in row["writes"]
    ]:
        if key not in seen:
            seen.add(key)
            total += m["distinct_bytes"]
    return total


def op_group(row: dict) -> str:
    """The report group of a non-convolution op (see :data:`_OP_GROUPS`)."""
    name = row["op"]
    if name in _COPY_OPS:
        dtypes = {m["dtype"] for m in row["reads"] + row["writes"]}
        return "dtype conversion" if len(dtypes) > 1 else "same-dtype copies (layout, reshape)"
    return _OP_GROUPS.get(name, "other elementwise and reductions")


def step_memory_bytes(rows: list[dict], cache_bytes: int) -> dict:
    """Bytes moved by the non-convolution ops of a recorded step, as executed and at the floor, by group.

    The floor leaves out same-dtype copies (layout changes and reshapes: a layout-consistent step needs
    none) and keeps every other op at :func:`op_min_bytes`. Ops whose bytes fit in ``cache_bytes`` (the
    last-level cache) are counted apart (``in_cache``): they are timed at the cache's bandwidth.
    """
    groups: dict[str, dict] = {}
    for row in rows:
        if row["view"] or row["op"] in _CONV_OPS:
            continue
        g = groups.setdefault(op_group(row), {"calls": 0, "bytes": 0, "bytes_in_cache": 0})
        b = op_min_bytes(row)
        g["calls"] += 1
        g["bytes" if b > cache_bytes else "bytes_in_cache"] += b
    avoidable = {"same-dtype copies (layout, reshape)"}
    floor = {k: v for k, v in groups.items() if k not in avoidable}
    return {
        "by_group": groups,
        "executed_bytes": sum(g["bytes"] for g in groups.values()),
        "executed_bytes_in_cache": sum(g["bytes_in_cache"] for g in groups.values()),
        "floor_bytes": sum(g["bytes"] for g in floor.values()),
        "floor_bytes_in_cache": sum(g["bytes_in_cache"] for g in floor.values()),
        "left_out_of_floor": sorted(avoidable),
    }


def _make_tensor(torch, meta: dict, device, layout: str):
    """A random tensor with a recorded tensor's shape, dtype and strides (``layout`` "step"), or the same
    shape in ``channels_last_3d`` or contiguous format (5-D tensors only)."""
    dtype = getattr(torch, meta["dtype"])
    shape = meta["shape"]
    if layout == "step" or len(shape) != 5:  # any strides, broadcast (stride 0) ones included
        span = 1 + sum((n - 1) * st for n, st in zip(shape, meta["stride"], strict=True) if n > 0)
        base = torch.empty(span if all(shape) else 0, dtype=dtype, device=device)
        base = base.normal_() if base.is_floating_point() or base.is_complex() else base.zero_()
        return base.as_strided(shape, meta["stride"])
    fmt = torch.channels_last_3d if layout == "channels_last" else torch.contiguous_format
    return torch.randn(shape, dtype=dtype, device=device).contiguous(memory_format=fmt)


def _is_tensor_meta(a) -> bool:
    return isinstance(a, tuple) and len(a) == 2 and a[0] == "tensor"


class OpReplay:
    """Recorded calls of a step, replayed alone: each with fresh random tensors of the recorded shapes,
    dtypes and strides (``layout`` "step"), or its 5-D tensors in ``channels_last_3d`` or contiguous format.

    ``select(row)`` picks the recorded rows (:func:`record_step_ops`). A call that fails on random values
    (none in the student's step so far) is dropped and counted in ``failed``. Convolutions keep the
    step's ``output_mask`` (which gradients it asks for).
    """

    def __init__(self, torch, rows: list[dict], device, layout: str, select):
        from torch.utils._pytree import tree_map

        self.torch, self.device = torch, device
        self.calls, self.failed = [], []
        for row in rows:
            if "call" not in row or not select(row):
                continue
            func, args, kwargs = row["call"]
            args, kwargs = tree_map(
                lambda a: _make_tensor(torch, a[1], device, layout) if _is_tensor_meta(a) else a,
                (args, kwargs),
                is_leaf=_is_tensor_meta,
            )
            try:
                func(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 (reported, not hidden)
                self.failed.append(f"{row['op']}: {type(e).__name__}")
                continue
            self.calls.append((row, func, args, kwargs))

    def flops(self) -> list[float]:
        from torch.utils.flop_counter import FlopCounterMode

        out = []
        for _, func, args, kwargs in self.calls:
            counter = FlopCounterMode(display=False)
            with counter:
                func(*args, **kwargs)
            out.append(float(counter.get_total_flops()))
        return out

    def timed(self) -> list[float]:
        """Seconds of each call, one after the other."""
        sync = self.torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        out = []
        for _, func, args, kwargs in self.calls:
            sync()
            t0 = time.perf_counter()
            func(*args, **kwargs)
            sync()
            out.append(time.perf_counter() - t0)
        return out


def memory_bandwidth(torch, device, nbytes: int, reps: int = 3) -> dict:
    """Best GB/s of ``dst.copy_(src)`` (read + write) and ``torch.add(a, b, out=c)`` (2 reads + 1 write)
    on fp32 tensors of ``nbytes`` each, counting the bytes the op must move; repeated so each timing lasts
    at least about 50 ms."""
    n = nbytes // 4
    a, b, c = (torch.randn(n, device=device) for _ in range(3))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    inner = max(1, int(50e6 / max(nbytes, 1) / 2))  # about 100 MB of traffic per timing
    out = {}
    for name, fn, moved in (
        ("copy", lambda: c.copy_(a), 2 * nbytes),
        ("add", lambda: torch.add(a, b, out=c), 3 * nbytes),
    ):
        fn()
        best = 0.0
        for _ in range(reps):
            sync()
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            sync()
            best = max(best, inner * moved / (time.perf_counter() - t0) / 1e9)
        out[f"{name}_gb_s"] = best
    out["gb_s"] = max(out["copy_gb_s"], out["add_gb_s"])
    return out


def last_level_cache_bytes() -> int:
    """Size of the CPU's last-level cache (Linux sysfs), 0 if unknown."""
    best = 0
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip()
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        best = max(best, int(text.rstrip("KMG")) * scale)
    return best


def step_floor(args) -> dict:
    """The supervised step against its floor, measured in one process (issue 15).

    One supervised step of the student is recorded below autograd (:func:`record_step_ops`). Its
    convolutions (forward, and the input and weight gradients the step asks for) are replayed alone with
    the recorded shapes, dtype and strides (``step``), and in all-``channels_last_3d`` and all-contiguous
    format; every other op (norms, tanh, resize, losses, Adam, copies) is replayed alone as recorded; the
    memory-bound ops' bytes are counted (:func:`step_memory_bytes`). The rounds alternate the real step,
    the replays, memory bandwidth (DRAM-sized and cache-sized tensors) and the 2048^2 matmul, so load
    changes hit them alike; medians.

    * floor = fastest convolution replay + floor bytes / bandwidth (cache-sized ops at the cache's);
    * ideal = the convolution GFLOP at the matmul rate + the same memory time;
    * eager_ops_floor = fastest convolution replay + the non-convolution ops replayed alone, same-dtype
      copies left out (what the step's own kernels cost, each alone, without layout changes).
    """
    sys.path.insert(0, str(REPO))
    import torch

    torch.set_num_threads(args.threads)
    w = Worker(
        REPO, {"frames": args.frames, "batch": args.batch, "size": args.size}, args.device, args.threads
    )
    name = "supervised"
    device = w.device
    w.run(name)  # warm-up
    rows = record_step_ops(lambda: w.run(name), torch)
    step_flop = w.flops(name)
    layouts = ("step", "channels_last", "contiguous")

    def is_conv(row):
        return row["op"] in _CONV_OPS

    replays = {lay: OpReplay(torch, rows, device, lay, is_conv) for lay in layouts}
    others = OpReplay(torch, rows, device, "step", lambda row: not is_conv(row))
    conv_flops = replays["step"].flops()
    cache = last_level_cache_bytes() if device.type == "cpu" else 0
    memory = step_memory_bytes(rows, cache)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step_seconds() -> float:
        sync()
        t0 = time.perf_counter()
        w.run(name)
        sync()
        return time.perf_counter() - t0

    rounds: list[dict] = []
    for rep in range(args.reps + 1):  # rep 0 warms up
        r = {"step_s": step_seconds()}
        r |= {f"conv_{lay}": replays[lay].timed() for lay in layouts}
        r["others"] = others.timed()
        r["dram"] = memory_bandwidth(torch, device, 256 * 2**20)
        if cache:
            r["cache"] = memory_bandwidth(torch, device, cache // 8)
        r["matmul"] = matmul_rate(torch, device)
        if rep > 0:
            rounds.append(r)

    def med(fn):
        return statistics.median(fn(r) for r in rounds)

    rate = med(lambda r: r["matmul"]["gflop_s"])
    step_s = med(lambda r: r["step_s"])
    step_gflop = step_flop / 1e9
    conv_gflop = sum(conv_flops) / 1e9
    conv = {}
    for lay in layouts:
        s = med(lambda r, lay=lay: sum(r[f"conv_{lay}"]))
        conv[lay] = {"s": s, "gflop_s": conv_gflop / s, "fraction_of_matmul_rate": conv_gflop / s / rate}
    per_call = []
    for i, (row, _, a, _kw) in enumerate(replays["step"].calls):
        backward = row["op"] == "aten::convolution_backward"
        inp, weight = (a[1], a[2]) if backward else (a[0], a[1])
        s = {lay: med(lambda r, lay=lay, i=i: r[f"conv_{lay}"][i]) for lay in layouts}
        per_call.append(
            {
                "op": row["op"].removeprefix("aten::"),
                "input": list(inp.shape),
                "weight": list(weight.shape),
                "input_channels_last_in_step": inp.dim() == 5
                and inp.is_contiguous(memory_format=torch.channels_last_3d)
                and not inp.is_contiguous(),
                "output_mask": list(a[-1]) if backward else None,
                "gflop": conv_flops[i] / 1e9,
                "ms": {lay: 1e3 * v for lay, v in s.items()},
                "fraction_of_matmul_rate_step_layout": conv_flops[i] / 1e9 / s["step"] / rate,
            }
        )
    alone: dict[str, float] = {}
    for i, (row, *_) in enumerate(others.calls):
        g = op_group(row)
        alone[g] = alone.get(g, 0.0) + med(lambda r, i=i: r["others"][i])
    avoidable = set(memory["left_out_of_floor"])
    alone_needed = sum(v for g, v in alone.items() if g not in avoidable)
    dram = med(lambda r: r["dram"]["gb_s"])
    cache_bw = med(lambda r: r["cache"]["gb_s"]) if cache else dram
    mem_s = memory["floor_bytes"] / dram / 1e9 + memory["floor_bytes_in_cache"] / cache_bw / 1e9
    executed_mem_s = (
        memory["executed_bytes"] / dram / 1e9 + memory["executed_bytes_in_cache"] / cache_bw / 1e9
    )
    best_conv = min(layouts, key=lambda lay: conv[lay]["s"])
    achieved = step_gflop / (rate * step_s)

    def bound(seconds: float, definition: str) -> dict:
        fraction = step_gflop / (rate * seconds)
        return {
            "s": seconds,
            "fraction_of_matmul_rate": fraction,
            "achieved_fraction": achieved,
            "achieved_over_bound": achieved / fraction,
            "definition": definition,
        }

    return {
        "matmul_2048_gflop_s": rate,
        "step": {
            "variant": name,
            "s": step_s,
            "gflop": step_gflop,
            "conv_gflop": conv_gflop,
            "fraction_of_matmul_rate": achieved,
            "all_s": [round(r["step_s"], 3) for r in rounds],
        },
        "conv_alone": {"by_layout": conv, "fastest_layout": best_conv, "calls": per_call},
        "non_conv_ops_alone_s": {
            "by_group": alone,
            "total": sum(alone.values()),
            "without_same_dtype_copies": alone_needed,
            "calls": len(others.calls),
            "failed_to_replay": others.failed,
        },
        "measured_non_conv_s": step_s - conv["step"]["s"],
        "bandwidth_gb_s": {
            "dram_256MiB": dram,
            "cache_sized": cache_bw if cache else None,
            "cache_test_bytes": cache // 8 if cache else None,
            "last_level_cache_bytes": cache,
            "rounds": [{k: r[k] for k in ("dram", "cache") if k in r} for r in rounds],
        },
        "memory": {
            **memory,
            "floor_s": mem_s,
            "executed_s_at_bandwidth": executed_mem_s,
            "assumptions": (
                "non-convolution ops of the recorded step; each distinct input tensor read once and each "
                "output written once (norm statistics and normalisation share one read: a (sample, "
                "channel) slice fits in the last-level cache); views free; same-dtype copies (layout "
                "changes, reshapes) left out of the floor; an op whose bytes fit in the last-level cache "
                "is timed at the cache-sized bandwidth, the rest at the 256 MiB (DRAM) bandwidth; "
                "arithmetic inside these ops (tanh) is taken as free"
            ),
        },
        "floor": bound(
            conv[best_conv]["s"] + mem_s, "fastest convolution replay + memory floor bytes / bandwidth"
        ),
        "ideal": bound(
            conv_gflop / rate + mem_s, "convolution GFLOP at the matmul rate + memory floor bytes / bandwidth"
        ),
        "eager_ops_floor": bound(
            conv[best_conv]["s"] + alone_needed,
            "fastest convolution replay + the step's non-convolution ops replayed alone, copies left out",
        ),
    }


SPIN_POLICIES = {
    "passive": (
        "no_spin (OMP_WAIT_POLICY=PASSIVE, KMP_BLOCKTIME=0)",
        {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0", "GOMP_SPINCOUNT": None},
    ),
    "default": (
        "OpenMP default (no OMP_WAIT_POLICY: spins briefly)",
        {"OMP_WAIT_POLICY": None, "KMP_BLOCKTIME": None, "GOMP_SPINCOUNT": None},
    ),
    "active": (
        "spin (OMP_WAIT_POLICY=ACTIVE)",
        {"OMP_WAIT_POLICY": "ACTIVE", "KMP_BLOCKTIME": None, "GOMP_SPINCOUNT": None},
    ),
    # GNU OpenMP's bounded spin: a waiting thread spins this many iterations, then sleeps.
    "spin3k": (  # rpm's setting (pipeline/threads.py)
        "bounded spin (GOMP_SPINCOUNT=3000)",
        {"OMP_WAIT_POLICY": None, "KMP_BLOCKTIME": "0", "GOMP_SPINCOUNT": "3000"},
    ),
    "spin30k": (
        "bounded spin (GOMP_SPINCOUNT=30000)",
        {"OMP_WAIT_POLICY": None, "KMP_BLOCKTIME": "0", "GOMP_SPINCOUNT": "30000"},
    ),
}


def contention(args) -> dict:
    """Step time (new tree) beside 0, 1 and 3 CPU-bound training processes, per OpenMP wait policy.

    Every process (measured and others) runs the supervised step with ``--threads`` threads; the others
    loop until killed. CPU time per step stays flat when no thread spins, and grows when waiting threads
    burn their time slices.
    """
    out: dict = {"load_before": load()}
    policies = dict(SPIN_POLICIES[p] for p in args.policies.split(","))
    name = "supervised"
    rows: dict[str, dict] = {label: {} for label in policies}
    for k in (0, 1, 3):  # the policies interleaved at each k, so load changes hit them alike
        for label, env in policies.items():
            measured = WorkerProcess(REPO, args, env)
            others = [WorkerProcess(REPO, args, env) for _ in range(k)]
            try:
                for o in others:
                    o.start_loop(name)
                measured.ask(f"time {name}")  # warm-up
                times = [measured.ask(f"time {name}") for _ in range(args.reps)]
            finally:
                for o in [measured, *others]:
                    o.close()
            rows[label][f"{k}_others"] = {
                "s_per_step": statistics.median(t["s"] for t in times),
                "cpu_s_per_step": statistics.median(t["cpu_s"] for t in times),
                "load": load(),
            }
    for label in policies:
        base = rows[label]["0_others"]["s_per_step"]
        for k in (1, 3):
            r = rows[label][f"{k}_others"]
            r["slowdown"] = r["s_per_step"] / base
            r["fair_share_slowdown"] = 1 + k  # k + 1 equal 2-thread processes on the same cores
            r["slowdown_over_fair_share"] = r["slowdown"] / (1 + k)
        out[label] = rows[label]
    out["load_after"] = load()
    return out


def _run_header(args, torch, device) -> dict:
    """The command line, machine, threads, shape and repetitions every result file starts with."""
    from pipeline.threads import available_cpus

    return {
        "command": "python bench/train_bench.py " + " ".join(sys.argv[1:]),
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "cpus_available": available_cpus(),
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads,
        "torch": torch.__version__,
        "bf16_autocast": device.type == "cuda",
        "shape": {"frames": args.frames, "batch": args.batch, "size": args.size},
        "reps": args.reps,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument(
        "--size", type=int, default=72, help="student input size (72, or 128 for FactorizePhysBig)"
    )
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: the cores available)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for the second loader figure")
    ap.add_argument("--old-tree", type=Path, default=None, help="checkout of the code before the change")
    ap.add_argument("--profile", action="store_true", help="write bench/results/train_profile.txt only")
    ap.add_argument("--contention", action="store_true", help="measure beside other training processes only")
    ap.add_argument(
        "--policies",
        default="passive,active",
        help="--contention: OpenMP wait policies, of passive,default,active",
    )
    ap.add_argument(
        "--meta-grad", action="store_true", help="meta step exact vs finite-difference only (this tree)"
    )
    ap.add_argument(
        "--floor",
        action="store_true",
        help="supervised step against its measured floor (convolutions alone, memory bandwidth) only",
    )
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:  # the parent passes --threads; nothing of this tree may be imported before the worker's
        worker_main(args)
        return
    sys.path.insert(0, str(REPO))
    from pipeline.threads import available_cpus, configure_process_threads

    if not args.threads:
        args.threads = available_cpus()
    configure_process_threads(cpus=args.threads)
    import torch

    torch.set_num_threads(args.threads)
    if args.profile:
        text = profile_step(args)
        path = args.out or RESULTS / "train_profile.txt"
        path.write_text(text)
        print(text)
        return
    if args.contention:
        result = {"command": "python bench/train_bench.py " + " ".join(sys.argv[1:]), **contention(args)}
        path = args.out or RESULTS / "train_contention.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return
    from train.distributed import pick_device

    device = pick_device(args.device)
    if args.meta_grad:
        result = {
            "command": "python bench/train_bench.py " + " ".join(sys.argv[1:]),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch_threads": args.threads,
            "torch": torch.__version__,
            "bf16_autocast": device.type == "cuda",
            "shape": {"frames": args.frames, "batch": args.batch, "size": args.size},
            "reps": args.reps,
            "load_average_before": load(),
            **meta_grad_compare(args),
            "load_average_after": load(),
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
        path = args.out or RESULTS / "meta_grad_bench.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return
    if args.floor:
        load_before = load()
        floor = step_floor(args)
        result = {
            **_run_header(args, torch, device),
            "load_average_before": load_before,
            "load_average_after": load(),
            "shared_machine": (
                "other jobs (e.g. synthetic-data generation) may run beside this one; the figures of one "
                "run are measured side by side, so their ratios carry over, not the absolute times"
            ),
            **floor,
            "gpu": "measured" if device.type == "cuda" else "not measured (no GPU in this run)",
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
        path = args.out or RESULTS / ("train_floor.json" if device.type == "cpu" else "train_floor_cuda.json")
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: result[k] for k in ("step", "floor", "ideal", "eager_ops_floor")}, indent=2))
        return
    trees = {"new": REPO} if args.old_tree is None else {"old": args.old_tree.resolve(), "new": REPO}
    load_before = load()
    steps = bench_trees(args, trees, {})
    load_after = load()
    loader = {"workers_0": bench_loader(args, 0), f"workers_{args.workers}": bench_loader(args, args.workers)}
    train_rate = steps["new"]["train_clips_per_s_rpm_distill"]
    result = {
        **_run_header(args, torch, device),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "trees": {k: str(v) for k, v in trees.items()},
        **steps,
        "loader_clips_per_s": loader,
        "loader_vs_training_clips_per_s": {k: v / train_rate for k, v in loader.items()},
        "gpu": "measured" if device.type == "cuda" else "not measured (no GPU in this run)",
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    path = args.out or RESULTS / "train_bench.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
