"""`rpm predict` on generated H.264 videos: outputs' shapes, times and finiteness, and clear errors.

The checkpoint is an untrained student written with the trainer's own builder: an untrained model's HR
is arbitrary, so the test checks the pipeline (decode, face crop, windows, files), not accuracy. Face
cropping and colour-correct decoding are checked on their own.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli import app
from pipeline.face import FaceNotFoundError, crop_box, crop_faces, detect_boxes, get_mtcnn, open_video_crops
from pipeline.video import VideoError, read_video, synthetic_face_frames, write_video

FRAMES = 64


def invoke(args, workdir):
    return CliRunner().invoke(app, [*args, "--workdir", str(workdir)], catch_exceptions=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch

    from train.build import build_student
    from train.checkpoint import save_checkpoint
    from train.config import TrainConfig

    wd = tmp_path_factory.mktemp("predict")
    cfg = TrainConfig(run_name="tiny", frames=FRAMES, teacher_widths=(8, 16))
    (wd / "runs" / "tiny").mkdir(parents=True)
    torch.manual_seed(0)
    save_checkpoint(wd / "runs" / "tiny" / "student.pt", "student", build_student(cfg), cfg, policy=None)
    frames = synthetic_face_frames(seconds=6.0, bpm=80.0)
    write_video(wd / "face.mp4", frames)
    return wd, frames


def test_predict_writes_hr_bvp_and_plot(setup):
    wd, frames = setup
    result = invoke(["predict", str(wd / "face.mp4"), "--checkpoint", "tiny", "--out", str(wd / "out")], wd)
    assert result.exit_code == 0, result.output
    hr = pd.read_csv(wd / "out" / "hr.csv")
    bvp = pd.read_csv(wd / "out" / "bvp.csv")
    n = len(frames)  # 180 frames at 30 fps
    starts = list(range(0, n - FRAMES + 1, 30)) + [n - FRAMES]  # 1 s stride, one window flush with the end
    assert list(hr.columns) == ["time_s", "hr_bpm", "window_start_s", "window_end_s"]
    assert np.allclose(hr.window_start_s, np.array(starts) / 30.0, atol=1e-3)
    assert np.allclose(hr.time_s, (np.array(starts) + FRAMES / 2) / 30.0, atol=1e-3)
    assert np.isfinite(hr.hr_bpm).all() and hr.hr_bpm.between(45, 180).all()
    assert len(bvp) == n and np.allclose(np.diff(bvp.time_s), 1 / 30.0, atol=1e-3)
    assert np.isfinite(bvp.bvp).all() and bvp.bvp.std() > 0
    summary = json.loads((wd / "out" / "prediction.json").read_text())
    assert summary["n_windows"] == len(starts) and summary["detection_rate"] == 1.0
    assert summary["duration_s"] == pytest.approx(6.0, abs=0.05)
    assert summary["realtime_factor"] > 0 and math.isfinite(summary["hr_median_bpm"])
    assert (wd / "out" / "prediction.png").read_bytes()[:4] == b"\x89PNG"


def test_predict_json_format_and_default_checkpoint(setup):
    wd, _ = setup
    result = invoke(["predict", str(wd / "face.mp4"), "--format", "json", "--stride", "2"], wd)
    assert result.exit_code == 0, result.output
    doc = json.loads((wd / "predictions" / "face" / "hr.json").read_text())
    assert len(doc["hr"]["time_s"]) == len(range(0, 180 - FRAMES + 1, 60)) + 1
    assert len(doc["bvp"]["bvp"]) == 180


def test_clear_errors(setup, tmp_path):
    wd, frames = setup
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    short = tmp_path / "short.mp4"
    write_video(short, frames[:40])  # 1.3 s < one 64-frame window
    empty = tmp_path / "empty.mp4"
    write_video(empty, np.full((90, 240, 320, 3), 100, np.uint8))  # 3 s of a grey wall
    cases = [
        (text, "not a readable video"),
        (tmp_path / "missing.mp4", "no such file"),
        (short, "shorter than one window of 64 frames"),
        (empty, "no face found"),
    ]
    for path, message in cases:
        result = invoke(["predict", str(path), "--checkpoint", "tiny", "--out", str(tmp_path / "o")], wd)
        assert result.exit_code == 1
        assert message in result.output and str(path) in result.output
    result = invoke(["predict", str(wd / "face.mp4"), "--checkpoint", "nope"], wd)
    assert result.exit_code == 1 and "checkpoint 'nope'" in result.output


def test_read_video_keeps_colours(tmp_path):
    frames = np.zeros((6, 96, 128, 3), np.uint8)
    frames[:, :, :64] = (180, 120, 90)
    frames[:, :, 64:] = (40, 200, 60)
    write_video(tmp_path / "c.mp4", frames)
    got, fps = read_video(tmp_path / "c.mp4")
    assert got.shape == frames.shape and got.dtype == np.uint8 and fps == pytest.approx(30.0)
    assert np.abs(got[:, 8:88, 8:56].reshape(-1, 3).mean(0) - (180, 120, 90)).max() < 2.5
    assert np.abs(got[:, 8:88, 72:120].reshape(-1, 3).mean(0) - (40, 200, 60)).max() < 2.5
    with pytest.raises(VideoError, match="notes.txt"):
        (tmp_path / "notes.txt").write_text("x")
        read_video(tmp_path / "notes.txt")


def test_crop_faces_tracks_the_face(setup):
    _, frames = setup
    crops, rate, boxes = crop_faces(frames, 30.0)
    assert crops.shape == (len(frames), 128, 128, 3) and crops.dtype == np.uint8
    assert rate == 1.0 and boxes.shape == (len(frames), 4)
    side = boxes[:, 2] - boxes[:, 0]
    assert np.allclose(side, boxes[:, 3] - boxes[:, 1]) and (side < 480).all()  # square, never the frame
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 640).all() and (boxes[:, 3] <= 480).all()
    # The head (220 px, centred, drifting +-15 px) is inside every crop box.
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    assert (np.abs(cx - 320) < 60).all() and (np.abs((boxes[:, 1] + boxes[:, 3]) / 2 - 240) < 80).all()


def test_predict_never_replaces_files_it_did_not_write(setup):
    wd, _ = setup
    user = wd / "my_results"
    user.mkdir()
    (user / "hr.csv").write_text("my own numbers\n")
    result = CliRunner().invoke(
        app,
        ["predict", str(wd / "face.mp4"), "--checkpoint", "tiny", "--out", str(user), "--workdir", str(wd)],
    )
    assert result.exit_code == 1 and "not written by rpm predict" in result.output, result.output
    assert (user / "hr.csv").read_text() == "my own numbers\n" and sorted(p.name for p in user.iterdir()) == [
        "hr.csv"
    ]
    again = invoke(["predict", str(wd / "face.mp4"), "--checkpoint", "tiny", "--out", str(wd / "rerun")], wd)
    assert again.exit_code == 0, again.output
    rerun = invoke(["predict", str(wd / "face.mp4"), "--checkpoint", "tiny", "--out", str(wd / "rerun")], wd)
    assert rerun.exit_code == 0, rerun.output  # its own earlier outputs are replaced


def test_detect_wrapper_shapes_with_and_without_faces(setup):
    _, frames = setup
    small = frames[:3, ::2, ::2].copy()
    small[1] = 100  # no face in the middle frame
    boxes, found = detect_boxes(get_mtcnn("cpu", 20), small)
    assert boxes.shape == (3, 4) and boxes.dtype == np.float32 and found.tolist() == [True, False, True]
    assert np.isnan(boxes[1]).all() and np.isfinite(boxes[[0, 2]]).all()
    boxes, found = detect_boxes(get_mtcnn("cpu", 20), small[[0, 2]])  # same face count: regular array
    assert boxes.shape == (2, 4) and found.all()
    with pytest.raises(FaceNotFoundError):
        crop_faces(np.full((40, 120, 160, 3), 90, np.uint8), 30.0)


def test_cpu_mtcnn_runs_channels_last_and_finds_the_same_boxes(setup):
    import torch
    from facenet_pytorch import MTCNN

    _, frames = setup
    small = frames[:4, ::2, ::2].copy()
    fast = get_mtcnn("cpu", 20)
    assert fast.onet.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    stock = MTCNN(device="cpu", min_face_size=20, select_largest=True, keep_all=False)
    (a, found_a), (b, found_b) = detect_boxes(stock, small), detect_boxes(fast, small)
    assert found_a.all() and found_b.all() and np.abs(a - b).max() < 1e-3


def test_streaming_crop_matches_in_memory_crop(setup):
    wd, _ = setup
    frames, fps = read_video(wd / "face.mp4")
    ref_crops, ref_rate, ref_boxes = crop_faces(frames, fps)
    fps2, cropper, blocks = open_video_crops(wd / "face.mp4")
    crops = np.concatenate(list(blocks))
    assert fps2 == fps and cropper.n_frames == 180 and cropper.frame_shape == (480, 640, 3)
    assert cropper.n_keys == 7  # frames 0, 30, ..., 150 and the last one, 179
    assert cropper.detection_rate == ref_rate and np.array_equal(cropper.box_array(), ref_boxes)
    assert np.array_equal(crops, ref_crops)


def test_crop_of_the_face_region_equals_a_whole_frame_resize(setup):
    from PIL import Image

    _, frames = setup
    for box in [(101.3, 57.8, 333.9, 290.4), (0.0, 0.0, 480.0, 480.0), (159.5, 0.25, 640.0, 480.0)]:
        whole = np.asarray(Image.fromarray(frames[5]).resize((128, 128), Image.BOX, box=box))
        assert np.array_equal(crop_box(frames[5], box), whole)


def test_predict_resamples_other_frame_rates(setup, tmp_path):
    wd, frames = setup
    write_video(tmp_path / "f60.mp4", np.repeat(frames[:90], 2, axis=0), fps=60.0)  # 3 s at 60 fps
    result = invoke(
        ["predict", str(tmp_path / "f60.mp4"), "--checkpoint", "tiny", "--out", str(tmp_path / "o")], wd
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "o" / "prediction.json").read_text())
    assert summary["source_fps"] == pytest.approx(60.0) and summary["n_frames"] == 90
    assert len(pd.read_csv(tmp_path / "o" / "bvp.csv")) == 90
