"""PhysDrive recipe on a tiny fixture in the public layout (H.264 video of a real face, BVP.mat,
mmwave.mat cubes and pairing.csv), plus the synthetic PhysDrive generator's output when present."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import scipy.io
import zarr
from skimage import data

from pipeline.recipes.physdrive import parse_conditions, prepare_physdrive
from pipeline.video import write_video

FPS, N_FRAMES, RADAR_FPS = 30.0, 180, 20.0
ANGLE, RANGE = 11, 3
BVP_HZ = 1.3


def face_video(n: int, face_frames: int, seed: int) -> np.ndarray:
    """640x480 frames: the astronaut's face on a plain background for the first ``face_frames``."""
    rng = np.random.default_rng(seed)
    face = data.astronaut()[20:240, 130:330]  # 220 x 200 head crop
    frames = np.empty((n, 480, 640, 3), np.uint8)
    frames[:] = np.array([70, 90, 110], np.uint8)
    for i in range(face_frames):  # the head sways by a few pixels
        y, x = 120 + int(rng.integers(-2, 3)), 220 + int(rng.integers(-2, 3))
        frames[i, y : y + face.shape[0], x : x + face.shape[1]] = face
    return frames


def cube(n: int, seed: int) -> np.ndarray:
    """(n, 2, 8, 16, 8) float32 cube with the subject at (angle ANGLE, range RANGE)."""
    rng = np.random.default_rng(seed)
    z = 0.1 * (rng.normal(size=(n, 8, 16, 8)) + 1j * rng.normal(size=(n, 8, 16, 8)))
    t = np.arange(n) / RADAR_FPS
    phase = 0.8 * np.sin(2 * np.pi * BVP_HZ * t)
    weights = rng.normal(size=8) + 1j * rng.normal(size=8)
    z[:, :, ANGLE, RANGE] += 3.0 * np.exp(1j * phase)[:, None] * weights[None, :]
    return np.stack([z.real, z.imag], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def physdrive(tmp_path_factory):
    root = tmp_path_factory.mktemp("pd") / "PhysDrive"
    good = root / "RGB and IR" / "AFH1" / "AS"
    (good / "Label").mkdir(parents=True)
    write_video(good / "RGB.mp4", face_video(N_FRAMES, N_FRAMES, 0), FPS)
    t = np.arange(300) * (N_FRAMES / FPS / 300)  # 50 Hz, covering the video's 6 s
    scipy.io.savemat(good / "Label" / "BVP.mat", {"BVP": np.sin(2 * np.pi * BVP_HZ * t)[None, :]})
    cubes = {}
    for k in ("00", "01"):
        cubes[k] = cube(40, seed=int(k))
        d = root / "mmWave" / "AFH1" / f"AFH1_{k}"
        d.mkdir(parents=True)
        scipy.io.savemat(d / "mmwave.mat", {"mmwave": cubes[k]})
    # the face leaves after 1 s: 1 of 4 detection frames has a face
    bad = root / "RGB and IR" / "BMW2" / "CT"
    (bad / "Label").mkdir(parents=True)
    write_video(bad / "RGB.mp4", face_video(90, 30, 1), FPS)
    scipy.io.savemat(bad / "Label" / "BVP.mat", {"BVP": np.zeros(100)})
    pd.DataFrame(
        [
            ["AFH1", "AS", "00", "2024-05-01T10:00:00.400", "2024-05-01T10:00:01", 20],
            ["AFH1", "AS", "01", "2024-05-01T10:00:00.400", "2024-05-01T10:00:03", 20],
        ],
        columns=["subject", "session", "clip", "video_start", "radar_start", "radar_fps"],
    ).to_csv(root / "pairing.csv", index=False)
    out = tmp_path_factory.mktemp("pdrun")
    manifest = prepare_physdrive(root, out / "pd.zarr", out / "m", scheduler="sync")
    return root, out, manifest, cubes


def test_conditions_from_codes():
    assert parse_conditions("AFH1", "AS") == {
        "car": "Segment-A0",
        "sex": "female",
        "illumination": "dusk",
        "road": "flat",
        "motion": "stationary",
    }
    c = parse_conditions("CMY12", "CT")
    assert (c["car"], c["sex"], c["illumination"], c["road"], c["motion"]) == (
        "Segment-C SUV",
        "male",
        "rainy",
        "bumpy",
        "talking",
    )
    assert parse_conditions("weird", "XX")["car"] == ""


def test_store_shapes_dtypes_attrs(physdrive):
    _, out, manifest, _ = physdrive
    row = manifest.set_index("session").loc["AFH1_AS"]
    assert row.status == "ok", row.reason
    assert (row.car, row.sex, row.illumination, row.road, row.motion) == (
        "Segment-A0",
        "female",
        "dusk",
        "flat",
        "stationary",
    )
    assert row.face_detection_rate >= 0.9 and row.fps == FPS and row.radar_fps == RADAR_FPS
    g = zarr.open_group(str(out / "pd.zarr"), mode="r")["AFH1_AS"]
    assert g["video"].shape == (N_FRAMES, 128, 128, 3) and g["video"].dtype == np.uint8
    assert g["bvp"].shape == (N_FRAMES,) and g["bvp"].dtype == np.float32
    assert g["radar"].shape == (120, 2, 8) and g["radar"].dtype == np.float32
    assert g.attrs["conditions"]["illumination"] == "dusk" and g.attrs["skin_type"] == -1
    # a face crop, not the plain background: strong spatial structure
    assert g["video"][100].std() > 30


def test_radar_bins_and_placement_match_the_truth(physdrive):
    _, out, manifest, cubes = physdrive
    g = zarr.open_group(str(out / "pd.zarr"), mode="r")["AFH1_AS"]
    assert g.attrs["radar_angle_bin"] == ANGLE and g.attrs["radar_bin"] == RANGE == g.attrs["radar_channel"]
    ok = g["radar_ok"][...]
    # clip 00 starts 0.6 s after the video (frame 12), clip 01 at 2.6 s (frame 52); 40 frames each
    assert not ok[:12].any() and ok[12:92].all() and not ok[92:].any()
    radar = g["radar"][...]
    for k, k0 in (("00", 12), ("01", 52)):
        c = cubes[k]
        z = (c[:, 0] + 1j * c[:, 1])[:, :, ANGLE, :].sum(axis=1)  # Doppler summed
        np.testing.assert_allclose(radar[k0 : k0 + 40, 0], z.real, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(radar[k0 : k0 + 40, 1], z.imag, rtol=1e-5, atol=1e-5)
    row = manifest.set_index("session").loc["AFH1_AS"]
    assert (
        row.radar_coverage == pytest.approx(80 / 120, abs=1e-4)
        and "40 of 120 frames not covered" in row.repairs
    )


def test_bvp_resampled_to_frame_times(physdrive):
    _, out, _, _ = physdrive
    bvp = zarr.open_group(str(out / "pd.zarr"), mode="r")["AFH1_AS"]["bvp"][...]
    expect = np.sin(2 * np.pi * BVP_HZ * np.arange(N_FRAMES) / FPS)
    np.testing.assert_allclose(bvp[:-2], expect[:-2], atol=5e-3)


def test_low_detection_rate_is_failed_not_stored(physdrive):
    _, out, manifest, _ = physdrive
    row = manifest.set_index("session").loc["BMW2_CT"]
    assert row.status == "failed" and "face found in 25.0% of detection frames" in row.reason
    assert "BMW2_CT" not in zarr.open_group(str(out / "pd.zarr"), mode="r")


def test_rerun_is_a_noop(physdrive):
    root, out, manifest, _ = physdrive
    state = {p: p.stat().st_mtime_ns for p in (out / "pd.zarr").rglob("*") if p.is_file()}
    again = prepare_physdrive(root, out / "pd.zarr", out / "m", scheduler="sync")
    pd.testing.assert_frame_equal(again, manifest)
    assert {p: p.stat().st_mtime_ns for p in (out / "pd.zarr").rglob("*") if p.is_file()} == state


@pytest.mark.skipif(
    importlib.util.find_spec("pipeline.synth.physdrive") is None, reason="synthetic PhysDrive not written yet"
)
def test_synthetic_physdrive_output(tmp_path):
    from pipeline.synth import physdrive as sp
    from pipeline.synth.driver import TRUTH_FILE

    root = tmp_path / "raw"
    sp.synth_physdrive(root, subjects=1, sessions=1, seconds=12, seed=0, progress=False)
    manifest = prepare_physdrive(root, tmp_path / "pd.zarr", tmp_path / "m", scheduler="sync")
    assert len(manifest) == 1
    row = manifest.iloc[0]
    assert row.status == "ok", row.reason
    truth = json.loads((root / TRUTH_FILE).read_text())
    tr = truth.get("sessions", truth)[f"{row.subject}/{row.trial}"]
    origin_angle, origin_range = tr["crop_origin_angle_range"]
    angle = int(round(sp.N_ANGLE_FFT / 2 * np.sin(np.deg2rad(tr["chest_angle_deg"])))) - origin_angle
    rng_bin = int(round(tr["chest_range_m"] / sp.RANGE_BIN_M)) - origin_range
    assert (row.radar_angle_bin, row.radar_bin) == (angle, rng_bin)
    g = zarr.open_group(str(tmp_path / "pd.zarr"), mode="r")[row.session]
    assert g["video"].shape == (row.n_frames, 128, 128, 3) and g["radar"].shape[1:] == (2, 8)
