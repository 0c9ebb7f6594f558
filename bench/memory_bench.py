"""Peak memory of preprocessing one session against its length -> bench/results/memory_bench.json.

    .venv/bin/python bench/memory_bench.py [--minutes 1 10] [--out bench/results/memory_bench.json]

For each length, a synthetic EquiPleth session (128x128 PNG crops at 30 fps, rf.pkl, PPG) is
generated in a temporary folder, then ``prepare_equipleth`` runs on it in a fresh Python process
(scheduler ``sync``, one session) that reports its peak resident set size (``VmHWM``) after the
imports and at the end. The difference over the length shows whether memory grows with the video:
a streaming recipe holds a bounded number of frames; one that reads the whole session grows by at
least one decoded frame (49,152 bytes at 128x128x3) per frame.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FRAME_BYTES = 128 * 128 * 3

# VmHWM (this process image's peak RSS, kB), not ru_maxrss: on Linux ru_maxrss survives exec and starts
# at the parent's RSS, which after generating a 10-minute session is itself large.
CHILD = r"""
import json, sys, time
from pipeline.equipleth import prepare_equipleth
import numpy, zarr, PIL.Image  # everything the run imports, before the baseline
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
base = hwm()
t0 = time.perf_counter()
m = prepare_equipleth(sys.argv[1], sys.argv[2], sys.argv[3], workers=1, scheduler="sync")
wall = time.perf_counter() - t0
peak = hwm()
print(json.dumps({"base_kib": base, "peak_kib": peak, "wall_s": wall, "status": m.status.tolist(),
                  "n_frames": int(m.n_frames.sum())}))
"""


def measure(tmp: Path, minutes: float) -> dict:
    from pipeline.synth_equipleth import synth_equipleth

    raw = tmp / f"eq_{minutes:g}min"
    t0 = time.perf_counter()
    synth_equipleth(raw, subjects=1, trials=1, seconds=60.0 * minutes, seed=0, crop_size=128, progress=False)
    synth_s = time.perf_counter() - t0
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(raw), str(tmp / f"s_{minutes:g}.zarr"), str(tmp / "m")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    child = json.loads(out.stdout.strip().splitlines()[-1])
    shutil.rmtree(raw)
    grown = (child["peak_kib"] - child["base_kib"]) * 1024
    return {
        "minutes": minutes,
        "frames_stored": child["n_frames"],
        "status": child["status"],
        "synth_s": round(synth_s, 1),
        "preprocess_wall_s": round(child["wall_s"], 1),
        "rss_after_imports_mib": round(child["base_kib"] / 1024, 1),
        "peak_rss_mib": round(child["peak_kib"] / 1024, 1),
        "growth_mib": round(grown / 2**20, 1),
        "growth_in_frames": round(grown / FRAME_BYTES, 1),
        "growth_bytes_per_stored_frame": round(grown / max(child["n_frames"], 1), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "memory_bench.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rpm-membench-") as d:
        runs = [measure(Path(d), m) for m in args.minutes]
    result = {
        "what": "peak RSS of prepare_equipleth on one synthetic session (128x128 PNG crops, 30 fps)",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "frame_bytes": FRAME_BYTES,
        "runs": runs,
    }
    if len(runs) >= 2:
        a, b = runs[0], runs[-1]
        result["growth_per_extra_frame_bytes"] = round(
            (b["growth_mib"] - a["growth_mib"]) * 2**20 / max(b["frames_stored"] - a["frames_stored"], 1), 1
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
