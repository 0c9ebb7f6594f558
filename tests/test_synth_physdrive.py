"""Synthetic PhysDrive generator: the layout contract, MTCNN on the cabin frames, radar phase vs
truth (clean and corrupted), sync truth, determinism."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from datetime import datetime
from pathlib import Path

import av
import numpy as np
import pytest
import scipy.io

from pipeline.spectrum import hr_from_psd
from pipeline.synth_physdrive import (
    chest_cell,
    normalise_clip,
    plan_session,
    subject_codes,
    synth_physdrive,
    synth_radar,
)

SECONDS = 8.0
N = 240
ARGS = dict(subjects=2, sessions=2, seconds=SECONDS, seed=3, progress=False, difficulty="easy")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("pd") / "physdrive"
    df = synth_physdrive(out, **ARGS)
    truth = json.loads((out / "synth_truth.json").read_text())["sessions"]
    with open(out / "pairing.csv", newline="") as f:
        pairing = list(csv.DictReader(f))
    return out, df, truth, pairing


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _radar_hr(cube: np.ndarray, cell) -> float:
    """HR (bpm) of the unwrapped radar phase of one (doppler, angle, range) cell, at 20 Hz."""
    d, a, r = cell
    x = cube[:, 0, d, a, r] + 1j * cube[:, 1, d, a, r]
    return hr_from_psd(np.unwrap(np.angle(x)), 20.0)


def test_layout_contract(dataset):
    out, df, truth, pairing = dataset
    codes = subject_codes(2)
    assert codes == ["AMZ1", "BFW1"] and len(df) == 4
    assert {p.name for p in out.iterdir()} == {
        "RGB and IR",
        "mmWave",
        "pairing.csv",
        "synth_truth.json",
        ".rpm_synth.json",
    }
    assert list(pairing[0]) == ["subject", "session", "clip", "video_start", "radar_start", "radar_fps"]
    assert [(r["subject"], r["session"], r["clip"]) for r in pairing] == [
        ("AMZ1", "AS", "AMZ1_00"),
        ("AMZ1", "AT", "AMZ1_01"),
        ("BFW1", "BS", "BFW1_00"),
        ("BFW1", "BT", "BFW1_01"),
    ]
    for row in pairing:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", row["video_start"])
        assert (
            re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", row["radar_start"]) and row["radar_fps"] == "20"
        )
        t = truth[f"{row['subject']}/{row['session']}"]
        logged = (
            datetime.fromisoformat(row["radar_start"]) - datetime.fromisoformat(row["video_start"])
        ).total_seconds()
        assert logged == pytest.approx(t["logged_offset_s"], abs=1e-6)
        assert abs(t["true_offset_s"]) <= 1.0 and abs(t["sync_error_s"]) < 1.0
        assert t["sync_error_s"] == pytest.approx(logged - t["true_offset_s"], abs=1e-6)

        vdir = out / "RGB and IR" / row["subject"] / row["session"]
        with av.open(str(vdir / "RGB.mp4")) as c:
            s = c.streams.video[0]
            assert (s.codec_context.name, s.width, s.height) == ("h264", 640, 480)
            assert s.codec_context.pix_fmt == "yuv420p" and s.average_rate == 30
        bvp = scipy.io.loadmat(vdir / "Label" / "BVP.mat")["BVP"].ravel()
        assert bvp.dtype == np.float64 and bvp.shape == (2 * N,)
        assert abs(hr_from_psd(bvp, 60.0) - t["mean_hr_bpm"]) <= 3.0
        mm = scipy.io.loadmat(out / "mmWave" / row["subject"] / row["clip"] / "mmwave.mat")["mmwave"]
        assert mm.dtype == np.float32 and mm.shape == (int(20 * SECONDS), 2, 8, 16, 8)
        amp = np.hypot(mm[:, 0], mm[:, 1])
        d, a, r = t["clips"][0]["chest_cell"]
        assert 0 <= a < 16 and 0 <= r < 8
        if not t["clips"][0]["corruption_kinds"]:  # the chest is the brightest cell of the crop
            assert np.unravel_index(amp.mean(0).argmax(), amp.shape[1:]) == (d, a, r)
    cond = {k: v["conditions"] for k, v in truth.items()}
    assert cond["AMZ1/AS"]["illumination"] == "noon" and cond["BFW1/BT"]["illumination"] == "night"
    assert cond["AMZ1/AT"]["talking"] and not cond["AMZ1/AS"]["talking"]
    assert {"hr_trajectory_bpm", "corruptions", "face_boxes_yxyx", "true_offset_s"} <= set(truth["AMZ1/AS"])
    assert len(_frames(out / "RGB and IR" / "AMZ1" / "AS" / "RGB.mp4")) == N


def test_mtcnn_finds_the_face(dataset):
    from facenet_pytorch import MTCNN

    out, _, truth, _ = dataset
    mtcnn = MTCNN(keep_all=True, device="cpu")
    for key, t in truth.items():
        frames = _frames(out / "RGB and IR" / key / "RGB.mp4")
        for i in (30, 150):
            boxes, probs = mtcnn.detect(frames[i])
            assert boxes is not None and probs[0] > 0.9, (key, i, probs)
            x0, y0, x1, y1 = boxes[0]
            _, ty0, tx0, ty1, tx1 = t["face_boxes_yxyx"][i // 30]
            assert ty0 - 15 < (y0 + y1) / 2 < ty1 + 15 and tx0 - 15 < (x0 + x1) / 2 < tx1 + 15, (key, i)


def test_radar_phase_hr_on_clean_clips(dataset):
    out, _, truth, _ = dataset
    checked = 0
    for key, t in truth.items():
        for clip in t["clips"]:
            if clip["corruption_kinds"]:
                continue
            mm = scipy.io.loadmat(out / "mmWave" / t["subject"] / clip["clip"] / "mmwave.mat")["mmwave"]
            assert abs(_radar_hr(mm, clip["chest_cell"]) - clip["mean_hr_bpm"]) <= 3.0, key
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize("kind", ["body_motion", "interference", "occlusion"])
def test_radar_phase_fails_when_corrupted(kind):
    plan = plan_session(0, "AMZ1", "AS", 0, 20.0, 5, difficulty="easy")
    clean = normalise_clip(synth_radar(plan))
    event = {"kind": kind, "start_s": plan.true_offset_s + 2.0, "end_s": plan.true_offset_s + 19.0}
    bad = normalise_clip(synth_radar(dataclasses.replace(plan, radar_events=[event])))
    a, b = plan.true_offset_s, plan.true_offset_s + 20.0
    hr = float(np.mean(plan.phys.heart_rate(np.linspace(a, b, 200))))
    cell = chest_cell(plan)
    assert abs(_radar_hr(clean, cell) - hr) <= 3.0
    assert abs(_radar_hr(bad, cell) - hr) > 3.0


def test_same_seed_byte_identical(tmp_path):
    args = dict(subjects=1, sessions=1, seconds=3.0, seed=9, progress=False)
    a, b = tmp_path / "a", tmp_path / "b"
    synth_physdrive(a, **args)
    synth_physdrive(b, **args)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and len(files_a) == 6
    for rel in files_a:  # the mp4 too: x264 single-threaded with fixed settings is deterministic
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    c = tmp_path / "c"
    synth_physdrive(c, **{**args, "seed": 10})
    assert (c / "pairing.csv").read_bytes() != (a / "pairing.csv").read_bytes()
