"""Peak memory of preprocessing one session against its length -> bench/results/memory_bench.json.

    .venv/bin/python bench/memory_bench.py [--minutes 1 10] [--kinds equipleth physdrive]

For each kind and length, one session is generated in a temporary folder, then its recipe runs on
it in a fresh Python process (scheduler ``sync``, one session) that reports its peak resident set
size (``VmHWM``) after the imports and at the end:

* ``equipleth``: a synthetic EquiPleth session (128x128 PNG crops at 30 fps, rf.pkl, PPG);
* ``physdrive``: a PhysDrive-layout session: a 640x480 H.264 ``RGB.mp4`` at 30 fps (a real face
  photo drifting over a plain background, encoded frame by frame), ``BVP.mat`` and one 60 s
  ``mmwave.mat`` radar clip per minute, through MTCNN face cropping.

The growth from the shorter to the longer run shows whether memory grows with the video: a
streaming recipe holds a bounded number of frames; one that holds the session grows by at least
one stored frame (49,152 bytes at 128x128x3) per frame, or one full frame (921,600 bytes at
640x480) when it holds the decoded video. Radar and labels do grow with the length, by design,
but by about 1 kB per video frame.
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
from pipeline.recipes.equipleth import prepare_equipleth
from pipeline.recipes.physdrive import prepare_physdrive
from pipeline.face import get_mtcnn
import numpy, zarr, PIL.Image, av, torch  # everything the run imports, before the baseline
if sys.argv[4] == "physdrive":
    get_mtcnn("cpu", 32)  # the model is part of the baseline, not of the growth
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
base = hwm()
t0 = time.perf_counter()
prepare = prepare_equipleth if sys.argv[4] == "equipleth" else prepare_physdrive
m = prepare(sys.argv[1], sys.argv[2], sys.argv[3], workers=1, scheduler="sync")
wall = time.perf_counter() - t0
peak = hwm()
print(json.dumps({"base_kib": base, "peak_kib": peak, "wall_s": wall, "status": m.status.tolist(),
                  "n_frames": int(m.n_frames.sum())}))
"""


def make_physdrive(root: Path, minutes: float) -> None:
    """A PhysDrive-layout session of ``minutes`` (see the module docstring), written streaming."""
    import numpy as np
    import pandas as pd
    import scipy.io
    from skimage import data

    from pipeline.video import write_video

    sdir = root / "RGB and IR" / "AFH1" / "AS"
    (sdir / "Label").mkdir(parents=True)
    n = int(round(minutes * 60 * 30))
    face = data.astronaut()[20:240, 130:330]
    rng = np.random.default_rng(0)

    def frames():
        frame = np.empty((480, 640, 3), np.uint8)
        for i in range(n):
            frame[:] = (70, 90, 110)
            y = 120 + int(round(20 * np.sin(2 * np.pi * i / 600))) + int(rng.integers(-2, 3))
            x = 220 + int(round(40 * np.sin(2 * np.pi * i / 900))) + int(rng.integers(-2, 3))
            frame[y : y + face.shape[0], x : x + face.shape[1]] = face
            yield frame

    write_video(sdir / "RGB.mp4", frames(), 30.0, crf=28)
    scipy.io.savemat(sdir / "Label" / "BVP.mat", {"BVP": np.sin(np.arange(n * 2) / 10.0)[None]})
    rows = []
    for clip in range(int(np.ceil(minutes))):
        d = root / "mmWave" / "AFH1" / f"AFH1_{clip:02d}"
        d.mkdir(parents=True)
        cube = rng.normal(size=(1200, 2, 8, 16, 8)).astype("f4")
        scipy.io.savemat(d / "mmwave.mat", {"mmwave": cube})
        start = f"2024-05-01T10:{clip:02d}:00"
        rows.append(["AFH1", "AS", f"{clip:02d}", start + ".000", start, 20])
    pd.DataFrame(
        rows, columns=["subject", "session", "clip", "video_start", "radar_start", "radar_fps"]
    ).to_csv(root / "pairing.csv", index=False)


def measure(tmp: Path, kind: str, minutes: float) -> dict:
    from pipeline.synth.equipleth import synth_equipleth

    raw = tmp / f"{kind}_{minutes:g}min"
    t0 = time.perf_counter()
    if kind == "equipleth":
        synth_equipleth(
            raw, subjects=1, trials=1, seconds=60.0 * minutes, seed=0, crop_size=128, progress=False
        )
    else:
        make_physdrive(raw, minutes)
    synth_s = time.perf_counter() - t0
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(raw),
            str(tmp / f"s_{kind}_{minutes:g}.zarr"),
            str(tmp / "m"),
            kind,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    child = json.loads(out.stdout.strip().splitlines()[-1])
    shutil.rmtree(raw)
    grown = (child["peak_kib"] - child["base_kib"]) * 1024
    return {
        "kind": kind,
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
    ap.add_argument(
        "--kinds", nargs="+", default=["equipleth", "physdrive"], choices=["equipleth", "physdrive"]
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "memory_bench.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rpm-membench-") as d:
        runs = [measure(Path(d), kind, m) for kind in args.kinds for m in args.minutes]
    result = {
        "what": "peak RSS of preprocessing one session against its length (see bench/memory_bench.py)",
        "command": "python bench/memory_bench.py " + " ".join(sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "frame_bytes": FRAME_BYTES,
        "runs": runs,
    }
    result["growth_per_extra_frame_bytes"] = {}
    for kind in args.kinds:
        mine = [r for r in runs if r["kind"] == kind]
        if len(mine) >= 2:
            a, b = mine[0], mine[-1]
            result["growth_per_extra_frame_bytes"][kind] = round(
                (b["growth_mib"] - a["growth_mib"]) * 2**20 / max(b["frames_stored"] - a["frames_stored"], 1),
                1,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
