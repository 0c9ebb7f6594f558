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

    .venv/bin/python bench/train_bench.py --old-tree ../speed_base            # CPU: T 128, B 4, 72 px
    .venv/bin/python bench/train_bench.py --profile
    .venv/bin/python bench/train_bench.py --contention
    .venv/bin/python bench/train_bench.py --meta-grad --reps 5
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
        """FLOP of one step (FlopCounterMode: convolutions, matmuls and their backward; elementwise: 0)."""
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            self.run(name)
        return float(counter.get_total_flops())


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


SPIN_POLICIES = {
    "passive": (
        "no_spin (OMP_WAIT_POLICY=PASSIVE, KMP_BLOCKTIME=0)",
        {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"},
    ),
    "default": (
        "OpenMP default (no OMP_WAIT_POLICY: spins briefly)",
        {"OMP_WAIT_POLICY": None, "KMP_BLOCKTIME": None},
    ),
    "active": ("spin (OMP_WAIT_POLICY=ACTIVE)", {"OMP_WAIT_POLICY": "ACTIVE", "KMP_BLOCKTIME": None}),
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
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:  # the parent passes --threads; nothing of this tree may be imported before the worker's
        worker_main(args)
        return
    sys.path.insert(0, str(REPO))
    from pipeline.threads import NO_SPIN_ENV, available_cpus

    if not args.threads:
        args.threads = available_cpus()
    for k, v in NO_SPIN_ENV.items():
        os.environ.setdefault(k, v)
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
    trees = {"new": REPO} if args.old_tree is None else {"old": args.old_tree.resolve(), "new": REPO}
    load_before = load()
    steps = bench_trees(args, trees, dict(NO_SPIN_ENV))
    load_after = load()
    loader = {"workers_0": bench_loader(args, 0), f"workers_{args.workers}": bench_loader(args, args.workers)}
    train_rate = steps["new"]["train_clips_per_s_rpm_distill"]
    result = {
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
