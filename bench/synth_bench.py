"""Generation speed of ``rpm synth``: video frames per second (wall and CPU) per dataset.

Writes bench/results/synth_bench.json. Run: .venv/bin/python bench/synth_bench.py
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.synth.equipleth import synth_equipleth  # noqa: E402
from pipeline.synth.physdrive import synth_physdrive  # noqa: E402


def _run(fn, frames: int, **kw) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="synth_bench_"))
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        fn(tmp / "out", progress=False, **kw)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "args": kw,
        "video_frames": frames,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "frames_per_s_wall": round(frames / wall, 1),
        "frames_per_s_cpu": round(frames / cpu, 1),
    }


def main() -> None:
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m": os.getloadavg()[0],
        },
        "equipleth_128px_png": _run(
            synth_equipleth, 2 * 300, subjects=1, trials=2, seconds=10.0, seed=0, crop_size=128
        ),
        "physdrive_640x480_h264": _run(
            synth_physdrive, 2 * 300, subjects=1, sessions=2, seconds=10.0, seed=0
        ),
    }
    results["machine"]["load_avg_1m_end"] = os.getloadavg()[0]
    out = ROOT / "bench" / "results" / "synth_bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
