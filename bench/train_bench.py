"""Training throughput, measured side by side in one run, written to bench/results/train_bench.json.

* student steps/s for ``supervised``, a plain spectral-distillation step (fixed weights, no policy),
  the rpm-distill real step (policy forward, no meta step) and rpm-distill with the meta step on every step;
* the amortised cost of the bilevel update at ``meta_interval`` 10, as a multiple of a plain distillation
  step (target <= 1.5x);
* DataLoader clips/s (zarr store -> uint8 batches, 0 and ``--workers`` workers) against the clips/s that
  training consumes (target: the loader is never the bottleneck).

Every variant runs the trainer's own ``train_step``; variants are interleaved rep by rep so load changes on
a shared machine hit them alike, and the median is reported.

    .venv/bin/python bench/train_bench.py                      # CPU preset shapes: T 128, B 4, 72 px
    .venv/bin/python bench/train_bench.py --frames 256 --batch 8 --size 72 --device cuda   # release settings
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.store import write_session  # noqa: E402
from train.build import build_teacher  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.data import WindowDataset  # noqa: E402
from train.distributed import DistInfo, pick_device  # noqa: E402
from train.trainer import StepContext, build_student_state, train_step  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_store(path: Path, sessions: int, frames: int, seed: int = 0) -> list[str]:
    """Sessions of smooth, noisy 128x128 video (compresses about like real face crops) and radar."""
    rng = np.random.default_rng(seed)
    names = []
    for s in range(sessions):
        base = rng.integers(60, 200, size=(1, 128, 128, 3)).astype(np.int16)
        video = np.clip(base + rng.integers(-6, 7, size=(frames, 128, 128, 3)), 0, 255).astype(np.uint8)
        bvp = np.sin(np.arange(frames) / 30.0 * 2 * np.pi * 1.2).astype(np.float32)
        radar = rng.normal(size=(4 * frames, 2, 5)).astype(np.float32)
        name = f"v_{s}_1"
        write_session(
            path, name, video, bvp, radar, np.ones(4 * frames, bool), {"subject": str(s), "fps": 30}
        )
        names.append(name)
    return names


def bench_steps(cfg: TrainConfig, device, reps: int, amp: bool) -> dict:
    teacher = build_teacher(cfg).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    b, t = cfg.batch_size, cfg.frames
    batch = {
        "video": torch.randint(0, 256, (b, t, 128, 128, 3), dtype=torch.uint8, generator=g),
        "bvp": torch.sin(torch.arange(t) / 30.0 * 2 * torch.pi * 1.2).repeat(b, 1)
        + 0.1 * torch.randn(b, t, generator=g),
        "rf": torch.randn(b, 10, t, generator=g),
        "labeled": torch.tensor([i % 2 == 0 for i in range(b)]),
    }
    variants = {
        # name: (mode, method, config changes)
        "supervised": ("sup_only", "supervised", {}),
        "distill_fixed_weights": ("distill", "rpm-distill", {"policy": False}),
        "rpm_distill_real_step": ("distill", "rpm-distill", {}),
        "rpm_distill_meta_plus_real_step": ("distill", "rpm-distill", {"meta_interval": 1}),
    }
    states = {}
    for name, (mode, method, change) in variants.items():
        vcfg = TrainConfig(**{**cfg.__dict__, "mode": mode, "method": method, **change})
        st = build_student_state(vcfg, teacher, device)
        if name == "rpm_distill_real_step":
            st.meta = False  # the policy forward of the real step, without the meta step
        states[name] = (st, StepContext(vcfg, device, DistInfo(), amp))
    times = {name: [] for name in variants}
    for rep in range(reps + 1):  # rep 0 warms up
        for name, (st, ctx) in states.items():
            _sync(device)
            t0 = time.perf_counter()
            train_step(st, batch, 0, ctx, next_val=lambda: batch)
            _sync(device)
            if rep > 0:
                times[name].append(time.perf_counter() - t0)
    sec = {name: statistics.median(v) for name, v in times.items()}
    meta_only = sec["rpm_distill_meta_plus_real_step"] - sec["rpm_distill_real_step"]
    amortised = sec["rpm_distill_real_step"] + meta_only / 10
    return {
        "seconds_per_step": sec,
        "steps_per_s": {name: 1.0 / s for name, s in sec.items()},
        "meta_step_alone_s": meta_only,
        "meta_step_vs_plain_distill_step": meta_only / sec["distill_fixed_weights"],
        "amortised_step_at_interval_10_s": amortised,
        "amortised_overhead_vs_plain_distill_step": amortised / sec["distill_fixed_weights"],
        "amortised_overhead_vs_supervised_step": amortised / sec["supervised"],
        "target_overhead_max": 1.5,
        "train_clips_per_s_rpm_distill": cfg.batch_size / amortised,
    }


def bench_loader(store: Path, sessions: list[str], cfg: TrainConfig, workers: int, batches: int) -> float:
    ds = WindowDataset(store, sessions, cfg.frames, cfg.stride)
    loader = DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
        persistent_workers=False,
    )
    n, t0 = 0, None
    for i, batch in enumerate(loader):
        if i == 1:  # skip the first batch (worker start-up)
            t0, n = time.perf_counter(), 0
        if i > batches:
            break
        n += batch["video"].shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument(
        "--size", type=int, default=72, help="student input size (72; 128 uses the spatial-mean head)"
    )
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for the second loader figure")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train_bench.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    amp = device.type == "cuda"
    cfg = TrainConfig(
        frames=args.frames,
        stride=30,
        batch_size=args.batch,
        student_size=args.size,
        lr=1e-3,
        teacher_widths=(16, 32, 64, 128) if device.type == "cpu" else (32, 64, 128, 256, 512, 1024),
    )
    steps = bench_steps(cfg, device, args.reps, amp)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench.zarr"
        sessions = write_store(store, 4, max(300, 2 * args.frames))
        n_batches = 8
        loader = {
            "workers_0": bench_loader(store, sessions, cfg, 0, n_batches),
            f"workers_{args.workers}": bench_loader(store, sessions, cfg, args.workers, n_batches),
        }
    train_rate = steps["train_clips_per_s_rpm_distill"]
    result = {
        "command": "python bench/train_bench.py " + " ".join(sys.argv[1:]),
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "bf16_autocast": amp,
        "shape": {"frames": args.frames, "batch": args.batch, "size": args.size},
        "reps": args.reps,
        **steps,
        "loader_clips_per_s": loader,
        "loader_vs_training_clips_per_s": {k: v / train_rate for k, v in loader.items()},
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
