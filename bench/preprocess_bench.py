"""Preprocessing benchmark, one run on this machine -> bench/results/preprocess_bench.json.

    .venv/bin/python bench/preprocess_bench.py [--out bench/results/preprocess_bench.json]

Measures, on generated data in a temporary folder:

1. EquiPleth-format PNG crops: ``rpm preprocess equipleth`` frames/s (1 worker: PNG decode +
   resize, rf.pkl decode, range FFT, quality figures, Zarr write) against decoding the same PNGs
   only (PIL, 1 thread). Target: overhead below 25 %.
2. Full-frame H.264 (640x480) with MTCNN: ``rpm preprocess physdrive`` frames/s (1 worker, model
   already loaded) against PyAV decoding of the same file only. Target: at least half the
   decode-only rate on the CPU.
3. Bytes per stored video frame (compressed shards on disk) against uint8 raw and a float64 cache.
4. Wall time of the EquiPleth recipe with 1 and 2 dask workers (threads) and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.equipleth import prepare_equipleth  # noqa: E402
from pipeline.physdrive import iter_video_blocks, prepare_physdrive  # noqa: E402
from pipeline.synth_equipleth import synth_equipleth  # noqa: E402


def _video_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in store.rglob("*") if p.is_file() and "/video/c/" in p.as_posix())


def bench_equipleth(tmp: Path, subjects: int, seconds: float) -> dict:
    raw = tmp / "eq"
    synth_equipleth(raw, subjects=subjects, trials=1, seconds=seconds, seed=0, crop_size=128, progress=False)
    pngs = sorted((raw / "rgb_files").rglob("rgbd_rgb_*.png"))
    t0 = time.perf_counter()
    for p in pngs:
        with Image.open(p) as im:
            np.asarray(im.convert("RGB"))
    decode_s = time.perf_counter() - t0

    walls = {}
    for workers in (1, 2):
        store = tmp / f"eq_{workers}.zarr"
        t0 = time.perf_counter()
        manifest = prepare_equipleth(raw, store, tmp / "m", workers=workers, scheduler="threads")
        walls[workers] = time.perf_counter() - t0
        assert (manifest.status == "ok").all()
    frames = int(manifest.n_frames.sum())
    video_bytes = _video_bytes(tmp / "eq_1.zarr")
    return {
        "sessions": subjects,
        "png_files": len(pngs),
        "stored_frames": frames,
        "decode_only_fps": len(pngs) / decode_s,
        "preprocess_fps_1_worker": frames / walls[1],
        "overhead_vs_decode": (walls[1] / frames) / (decode_s / len(pngs)) - 1.0,
        "target_overhead": 0.25,
        "wall_s": {"1_worker": walls[1], "2_workers": walls[2]},
        "speedup_2_vs_1_workers": walls[1] / walls[2],
        "bytes_per_stored_frame": video_bytes / frames,
        "bytes_per_frame_uint8_raw": 128 * 128 * 3,
        "bytes_per_frame_float64_cache": 128 * 128 * 3 * 8,
    }


def bench_h264(tmp: Path, seconds: float) -> dict:
    from skimage import data

    from pipeline.face import get_mtcnn
    from pipeline.video import write_video

    root = tmp / "pd"
    sdir = root / "RGB and IR" / "AFH1" / "AS"
    (sdir / "Label").mkdir(parents=True)
    n = int(seconds * 30)
    rng = np.random.default_rng(0)
    face = data.astronaut()[20:240, 130:330]
    frames = np.empty((n, 480, 640, 3), np.uint8)
    frames[:] = np.array([70, 90, 110], np.uint8)
    for i in range(n):
        y, x = 120 + int(rng.integers(-3, 4)), 220 + int(rng.integers(-3, 4))
        frames[i, y : y + face.shape[0], x : x + face.shape[1]] = face
    write_video(sdir / "RGB.mp4", frames, 30.0)
    del frames
    scipy.io.savemat(sdir / "Label" / "BVP.mat", {"BVP": np.sin(np.arange(n * 2) / 10.0)})
    d = root / "mmWave" / "AFH1" / "AFH1_00"
    d.mkdir(parents=True)
    scipy.io.savemat(
        d / "mmwave.mat", {"mmwave": rng.normal(size=(int(seconds * 20), 2, 8, 16, 8)).astype("f4")}
    )
    pd.DataFrame(
        [["AFH1", "AS", "00", "2024-05-01T10:00:00.000", "2024-05-01T10:00:00", 20]],
        columns=["subject", "session", "clip", "video_start", "radar_start", "radar_fps"],
    ).to_csv(root / "pairing.csv", index=False)

    t0 = time.perf_counter()
    decoded = sum(b.shape[0] for b, _ in iter_video_blocks(sdir / "RGB.mp4", 300))
    decode_s = time.perf_counter() - t0
    get_mtcnn()  # model load is a one-off per worker; not part of the per-frame rate
    t0 = time.perf_counter()
    manifest = prepare_physdrive(root, tmp / "pd.zarr", tmp / "m", workers=1, scheduler="threads")
    prep_s = time.perf_counter() - t0
    assert (manifest.status == "ok").all(), manifest.reason.tolist()
    return {
        "frames": decoded,
        "resolution": "640x480",
        "decode_only_fps": decoded / decode_s,
        "preprocess_fps_1_worker": decoded / prep_s,
        "ratio_to_decode": (decoded / prep_s) / (decoded / decode_s),
        "target_ratio": 0.5,
        "face_detection_rate": float(manifest.face_detection_rate.iloc[0]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "preprocess_bench.json")
    ap.add_argument("--subjects", type=int, default=4, help="EquiPleth sessions")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each generated recording")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rpm_bench_"))
    try:
        eq = bench_equipleth(tmp, args.subjects, args.seconds)
        h264 = bench_h264(tmp, args.seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "command": "python bench/preprocess_bench.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_end": os.getloadavg(),
        },
        "equipleth_png": eq,
        "h264_mtcnn": h264,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
