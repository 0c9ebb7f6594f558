"""CPU speed of ``rpm predict`` on a 12 s, 30 fps, 640x480 H.264 video.

The video is generated (:func:`pipeline.video.synthetic_face_frames`: a face with a pulse, drifting on a
plain background) and encoded with PyAV; the students are untrained (speed does not depend on the
weights) at the ``cpu`` preset (T = 128) and the ``paper`` preset (T = 256). Each configuration runs
``repeats`` times after one warm-up (imports, MTCNN weights); the best and the median wall times are
kept, per stage. ``realtime_factor`` = video duration / wall time (above 1 is faster than real time).

Writes bench/results/predict_bench.json. With ``--example-checkpoint runs/<run>/student.pt`` (a trained
student, e.g. the demo's) it also predicts on the 75 bpm bench video with it and keeps the plot
``rpm predict`` writes as bench/results/predict_example.png (the figure in docs/predict.md) plus its hr.csv.
Run: .venv/bin/python bench/predict_bench.py [--repeats N] [--example-checkpoint PATH]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.paths import Workdir  # noqa: E402
from pipeline.video import synthetic_face_frames, write_video  # noqa: E402
from train.build import build_student  # noqa: E402
from train.checkpoint import save_checkpoint  # noqa: E402
from train.config import PRESETS, TrainConfig  # noqa: E402
from train.predict import predict_video  # noqa: E402

SECONDS, FPS, SIZE = 12.0, 30.0, (480, 640)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--example-checkpoint", type=Path, default=None, help="trained student.pt for the example"
    )
    args = ap.parse_args()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="predict_bench_"))
    try:
        frames = synthetic_face_frames(SECONDS, FPS, bpm=75.0, size=SIZE)
        video = tmp / "face_640x480.mp4"
        write_video(video, frames, FPS)
        del frames
        results = {}
        for preset in ("cpu", "paper"):
            cfg = TrainConfig(run_name=preset, frames=PRESETS[preset]["frames"], teacher_widths=(8, 16))
            run = tmp / "runs" / preset
            run.mkdir(parents=True)
            torch.manual_seed(0)
            save_checkpoint(run / "student.pt", "student", build_student(cfg), cfg, policy=None)
            wd = Workdir(tmp)
            predict_video(video, preset, tmp / "warmup", wd, "cpu", log=lambda *_: None)  # warm-up
            walls, stages = [], []
            for r in range(args.repeats):
                t = time.perf_counter()
                pred = predict_video(video, preset, tmp / f"o{r}", wd, "cpu", log=lambda *_: None)
                walls.append(time.perf_counter() - t)
                stages.append(pred.timings_s)
            best = int(np.argmin(walls))
            results[preset] = {
                "window_frames": cfg.frames,
                "windows": int(pred.summary["n_windows"]),
                "wall_s_best": round(walls[best], 2),
                "wall_s_median": round(float(np.median(walls)), 2),
                "realtime_factor_best": round(SECONDS / walls[best], 2),
                "realtime_factor_median": round(SECONDS / float(np.median(walls)), 2),
                "stages_s_best": {k: round(v, 3) for k, v in stages[best].items()},
                "detection_rate": pred.detection_rate,
            }
            print(preset, json.dumps(results[preset]))
        if args.example_checkpoint:
            ex = predict_video(video, args.example_checkpoint, tmp / "example", Workdir(tmp), "cpu")
            shutil.copy(ex.files["plot"], out / "predict_example.png")
            shutil.copy(ex.files["hr"], out / "predict_example_hr.csv")
        doc = {
            "video": {"seconds": SECONDS, "fps": FPS, "width": SIZE[1], "height": SIZE[0], "codec": "h264"},
            "device": "cpu",
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_1m_at_end": os.getloadavg()[0],
            "machine": platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "repeats": args.repeats,
            "results": results,
        }
        (out / "predict_bench.json").write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {out / 'predict_bench.json'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
