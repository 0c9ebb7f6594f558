"""EquiPleth recipe pieces: frame reading, resize, PPG sources."""

import numpy as np
import pytest
from PIL import Image

from pipeline.recipes.equipleth import SessionError, read_frames, read_ppg


def write_frames(folder, n, size, value_of=lambda i: i * 20):
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((size, size, 3), value_of(i), np.uint8)).save(folder / f"rgbd_rgb_{i}.png")


def test_frames_are_ordered_numerically_not_lexicographically(tmp_path):
    write_frames(tmp_path / "v_1_1", 12, 32)
    frames = read_frames(tmp_path / "v_1_1", size=16)
    # rgbd_rgb_10.png sorts before rgbd_rgb_2.png as text; the value encodes the true index
    assert frames[:, 0, 0, 0].tolist() == [i * 20 for i in range(12)]


def test_resize_to_128_uses_area_averaging(tmp_path):
    folder = tmp_path / "v_1_1"
    folder.mkdir()
    checker = (np.indices((256, 256)).sum(axis=0) % 2 * 255).astype(np.uint8)  # 1-px checkerboard
    Image.fromarray(np.stack([checker] * 3, axis=-1)).save(folder / "rgbd_rgb_0.png")
    frames = read_frames(folder)
    assert frames.shape == (1, 128, 128, 3) and frames.dtype == np.uint8
    # a 2x2 area average of a 1-px checkerboard is uniform mid-grey; nearest/bilinear keep the pattern
    assert abs(int(frames.min()) - 128) <= 1 and abs(int(frames.max()) - 128) <= 1


def test_missing_frame_names_the_file(tmp_path):
    write_frames(tmp_path / "v_1_1", 5, 16)
    (tmp_path / "v_1_1" / "rgbd_rgb_2.png").unlink()
    with pytest.raises(SessionError, match="rgbd_rgb_2.png"):
        read_frames(tmp_path / "v_1_1")


def test_corrupt_png_names_the_file(tmp_path):
    write_frames(tmp_path / "v_1_1", 3, 16)
    (tmp_path / "v_1_1" / "rgbd_rgb_1.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(SessionError, match=r"rgbd_rgb_1\.png: unreadable PNG"):
        read_frames(tmp_path / "v_1_1")


def test_ppg_falls_back_to_vital_dict(tmp_path):
    (tmp_path / "rgb_files" / "v_2_3").mkdir(parents=True)
    (tmp_path / "rf_files" / "2_3").mkdir(parents=True)
    ppg = np.sin(np.arange(100) / 5)
    np.save(
        tmp_path / "rf_files" / "2_3" / "vital_dict.npy",
        {"rgbd": {"NOM_PLETHWaveExport": ppg}},
        allow_pickle=True,
    )
    np.testing.assert_allclose(read_ppg(tmp_path, "v_2_3"), ppg)


def test_ppg_nan_short_gap_repaired_long_gap_refused(tmp_path):
    (tmp_path / "rgb_files" / "v_1_1").mkdir(parents=True)
    ppg = np.sin(np.arange(100) / 3.0)
    ppg[50] = np.nan
    np.save(tmp_path / "rgb_files" / "v_1_1" / "rgbd_ppg.npy", ppg)
    notes = []
    out = read_ppg(tmp_path, "v_1_1", notes)
    assert np.isfinite(out).all() and notes == ["ppg: 1 non-finite samples interpolated (longest gap 1)"]
    ppg[20:60] = np.nan
    np.save(tmp_path / "rgb_files" / "v_1_1" / "rgbd_ppg.npy", ppg)
    with pytest.raises(SessionError, match="non-finite"):
        read_ppg(tmp_path, "v_1_1")
