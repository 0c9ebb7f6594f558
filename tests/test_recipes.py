"""Recipes end to end on generated data: EquiPleth (synthetic, real layout) and the folder layout.

Store shapes, dtypes and attributes; the decoded radar bin against the truth; failed sessions with
their reason; reruns as no-ops; a run SIGKILLed part-way and restarted ending identical to an
uninterrupted one; fsspec URL stores.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from manifests import SESSION_COLUMNS, read_sessions
from pipeline.recipes.equipleth import prepare_equipleth
from pipeline.recipes.folder import prepare_folder
from pipeline.split import make_clips
from pipeline.synth.equipleth import synth_equipleth

REPO = Path(__file__).resolve().parents[1]
SUBJECTS, SECONDS = 4, 8.0
N_FRAMES = int(SECONDS * 30) - 25


def store_digest(store) -> dict:
    """sha256 of every array's bytes and of the attributes, per group."""
    root = zarr.open_group(str(store), mode="r")
    out = {}
    for name in sorted(root.group_keys()):
        g = root[name]
        for arr in ("video", "bvp", "radar", "radar_ok"):
            a = g[arr][...]
            out[f"{name}/{arr}"] = (a.shape, str(a.dtype), hashlib.sha256(a.tobytes()).hexdigest())
        out[f"{name}/attrs"] = json.dumps(dict(g.attrs), sort_keys=True)
    return out


def file_state(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("eq") / "raw"
    # The clean world: this checks the recipe's store against the truth (the chest bin included); the
    # realistic world's multipath and 1/R^2 chest amplitude can move the recipe's bin choice.
    synth_equipleth(
        out,
        subjects=SUBJECTS,
        trials=1,
        seconds=SECONDS,
        seed=5,
        crop_size=64,
        progress=False,
        difficulty="easy",
    )
    return out


@pytest.fixture(scope="module")
def done(raw, tmp_path_factory):
    wd = tmp_path_factory.mktemp("eqrun")
    manifest = prepare_equipleth(raw, wd / "eq.zarr", wd / "manifests", scheduler="sync")
    return wd, manifest


def test_equipleth_store_shapes_dtypes_attrs(raw, done):
    wd, manifest = done
    truth = json.loads((raw / "synth_truth.json").read_text())["trials"]
    assert list(manifest.columns) == SESSION_COLUMNS
    assert (manifest.status == "ok").all() and len(manifest) == SUBJECTS
    root = zarr.open_group(str(wd / "eq.zarr"), mode="r")
    for row in manifest.itertuples():
        g = root[row.session]
        assert g["video"].shape == (N_FRAMES, 128, 128, 3) and g["video"].dtype == np.uint8
        assert g["video"].chunks == (32, 128, 128, 3) and g["video"].shards[0] >= N_FRAMES
        assert g["bvp"].shape == (N_FRAMES,) and g["bvp"].dtype == np.float32
        assert g["radar"].shape == (4 * N_FRAMES, 2, 5) and g["radar"].dtype == np.float32
        assert g["radar_ok"].shape == (4 * N_FRAMES,) and g["radar_ok"][...].all()
        a = g.attrs
        assert a["complete"] is True and a["fps"] == 30.0 and a["radar_fps"] == 120.0
        assert a["radar_bin"] == truth[row.session]["chest_bin"] == row.radar_bin
        assert a["radar_channel"] == 2 and a["rf_decoder"] == "bytecount"
        assert a["skin_type"] == truth[row.session]["skin_type"] == row.skin_type
        assert set(a["conditions"]) == {"car", "sex", "illumination", "road", "motion"}
        assert a["params"]["recipe"] == "equipleth"
        assert row.fold_split in ("train", "val", "test") and json.loads(row.folds) == {"0": row.fold_split}
        assert row.radar_coverage == 1.0 and np.isfinite(row.radar_snr_db) and abs(row.radar_lag_s) <= 2.0
    on_disk = read_sessions(wd / "manifests" / "equipleth_sessions.csv")
    assert on_disk.subject.tolist() == manifest.subject.tolist()


def test_failed_session_is_recorded_with_reason(raw, tmp_path):
    bad = tmp_path / "raw"
    shutil.copytree(raw, bad)
    (bad / "rf_files" / "2_1" / "rf.pkl").write_bytes(b"not a pickle")
    (bad / "rgb_files" / "v_3_1" / "rgbd_rgb_7.png").unlink()
    manifest = prepare_equipleth(bad, tmp_path / "s.zarr", tmp_path / "m", scheduler="sync")
    by = manifest.set_index("session")
    assert (
        by.loc["v_2_1", "status"] == "failed" and "rf.pkl: not a readable pickle" in by.loc["v_2_1", "reason"]
    )
    assert by.loc["v_3_1", "status"] == "failed" and "rgbd_rgb_7.png" in by.loc["v_3_1", "reason"]
    assert (by.drop(["v_2_1", "v_3_1"]).status == "ok").all()
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert "v_2_1" not in root and "v_3_1" not in root and "v_1_1" in root


def test_rerun_is_a_noop_and_overwrite_redoes(raw, done, tmp_path):
    wd, first = done
    store = tmp_path / "eq.zarr"
    shutil.copytree(wd / "eq.zarr", store)
    shutil.copytree(wd / "manifests", tmp_path / "m")
    before = file_state(store)
    manifest_bytes = (tmp_path / "m" / "equipleth_sessions.csv").read_bytes()
    again = prepare_equipleth(raw, store, tmp_path / "m", scheduler="threads")
    assert file_state(store) == before  # nothing rewritten
    assert (tmp_path / "m" / "equipleth_sessions.csv").read_bytes() == manifest_bytes
    pd.testing.assert_frame_equal(again, first)
    prepare_equipleth(raw, store, tmp_path / "m", scheduler="threads", overwrite=True)
    after = file_state(store)
    assert any(after[k][0] != before[k][0] for k in before)  # rewritten ...
    assert store_digest(store) == store_digest(wd / "eq.zarr")  # ... to the same content


def test_changing_the_rf_decoder_redoes_sessions(raw, done, tmp_path):
    wd, _ = done
    store = tmp_path / "eq.zarr"
    shutil.copytree(wd / "eq.zarr", store)
    manifest = prepare_equipleth(raw, store, tmp_path / "m", scheduler="sync", decoder="organizer")
    root = zarr.open_group(str(store), mode="r")
    assert all(root[s].attrs["rf_decoder"] == "organizer" for s in manifest.session)
    with pytest.raises(ValueError, match="unknown rf decoder"):
        prepare_equipleth(raw, store, tmp_path / "m", decoder="nope")


def test_killed_run_restarted_equals_uninterrupted(raw, done, tmp_path):
    wd, _ = done
    store = tmp_path / "eq.zarr"
    code = (
        "import sys; from pipeline.recipes.equipleth import prepare_equipleth; "
        "prepare_equipleth(sys.argv[1], sys.argv[2], sys.argv[3], scheduler='sync')"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(raw), str(store), str(tmp_path / "m")], env=env)
    deadline = time.monotonic() + 60
    complete = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if store.exists():
            complete = sum(
                '"complete": true' in (p.read_text() if p.exists() else "")
                for p in store.glob("v_*/zarr.json")
            )
            if complete >= 1:
                break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 1 <= complete < SUBJECTS  # killed part-way
    assert not (tmp_path / "m" / "equipleth_sessions.csv").exists()
    manifest = prepare_equipleth(raw, store, tmp_path / "m", scheduler="threads")
    assert (manifest.status == "ok").all()
    assert store_digest(store) == store_digest(wd / "eq.zarr")
    assert not list(store.rglob("*.partial"))


def test_fsspec_url_store_matches_local(raw, done):
    wd, _ = done
    url = f"memory://rpm-test-{os.getpid()}/eq.zarr"
    manifest = prepare_equipleth(raw, url, wd / "m_url", scheduler="threads")
    assert (manifest.status == "ok").all()
    assert store_digest(url) == store_digest(wd / "eq.zarr")


# --------------------------------------------------------------------------- folder recipe


def write_folder_session(root: Path, name: str, radar_start_s: float, strongest: int, seed: int) -> dict:
    from pipeline.video import write_video

    rng = np.random.default_rng(seed)
    sdir = root / name
    sdir.mkdir(parents=True)
    fps, n = 30.0, 150
    frames = np.clip(rng.normal(120, 20, (n, 64, 64, 3)), 0, 255).astype(np.uint8)
    write_video(sdir / "video.mp4", frames, fps)
    radar_fps, n_rf = 50.0, 260
    radar = (rng.normal(size=(n_rf, 8)) + 1j * rng.normal(size=(n_rf, 8))).astype(np.complex64)
    radar[:, strongest] *= 10
    np.save(sdir / "radar.npy", radar)
    t = -0.2 + np.arange(301) / 64  # -0.2 .. 4.4875 s: the PPG ends before the video does (5 s)
    pd.DataFrame({"time_s": t, "ppg": np.sin(2 * np.pi * 1.2 * t)}).to_csv(sdir / "ppg.csv", index=False)
    meta = {
        "radar_fps": radar_fps,
        "radar_start_s": radar_start_s,
        "subject": name.split("_")[0],
        "skin_type": 4,
    }
    meta["face_crops"] = True
    (sdir / "meta.json").write_text(json.dumps(meta))
    return {"radar": radar, "t": t}


def test_folder_recipe(tmp_path):
    root = tmp_path / "rec"
    truth = write_folder_session(root, "alice_1", radar_start_s=0.5, strongest=5, seed=1)
    write_folder_session(root, "bob_1", radar_start_s=0.0, strongest=2, seed=2)
    (root / "bob_1" / "ppg.csv").unlink()
    manifest = prepare_folder(root, tmp_path / "f.zarr", tmp_path / "m", scheduler="sync")
    by = manifest.set_index("session")
    assert by.loc["bob_1", "status"] == "failed" and "ppg.csv: missing" in by.loc["bob_1", "reason"]
    row = by.loc["alice_1"]
    assert row.status == "ok" and row.subject == "alice" and row.skin_type == 4
    n = int(np.floor(truth["t"][-1] * 30)) + 1  # frames 0..134 lie inside the PPG span
    assert row.n_frames == n and "trailing frames without PPG dropped" in row.repairs
    g = zarr.open_group(str(tmp_path / "f.zarr"), mode="r")["alice_1"]
    assert g["video"].shape == (n, 128, 128, 3) and g["video"].dtype == np.uint8
    assert g.attrs["radar_fps"] == 50.0 and g.attrs["radar_bin"] == 5 == g.attrs["radar_channel"]
    n_rf = round(n * 50 / 30)
    assert g["radar"].shape == (n_rf, 2, 8) and g["radar"].dtype == np.float32
    ok = g["radar_ok"][...]
    assert not ok[:25].any() and ok[25:].all()  # the radar starts 0.5 s = 25 frames after the video
    np.testing.assert_allclose(g["radar"][25:, 0, :], truth["radar"][: n_rf - 25].real, rtol=1e-6)
    np.testing.assert_allclose(g["radar"][25:, 1, :], truth["radar"][: n_rf - 25].imag, rtol=1e-6)
    expect = np.sin(2 * np.pi * 1.2 * np.arange(n) / 30)
    np.testing.assert_allclose(g["bvp"][...], expect, atol=2e-3)


def test_folder_recipe_with_mtcnn_keeps_the_frames_the_ppg_covers(tmp_path):
    from test_physdrive import face_video

    from pipeline.video import write_video

    sdir = tmp_path / "rec" / "carol_1"
    sdir.mkdir(parents=True)
    n = 120  # 4 s of full 640x480 frames with a face: MTCNN crops them
    write_video(sdir / "video.mp4", face_video(n, n, 3), 30.0)
    np.save(sdir / "radar.npy", np.ones((200, 3), np.complex64))
    t = 1.0 + np.arange(200) / 100  # PPG from 1.0 s to 2.99 s: frames 30..89
    pd.DataFrame({"time_s": t, "ppg": np.sin(2 * np.pi * 1.1 * t)}).to_csv(sdir / "ppg.csv", index=False)
    (sdir / "meta.json").write_text(json.dumps({"radar_fps": 50.0}))
    row = prepare_folder(tmp_path / "rec", tmp_path / "f.zarr", tmp_path / "m", scheduler="sync").iloc[0]
    assert row.status == "ok", row.reason
    assert row.n_frames == 60 and row.face_detection_rate == 1.0
    assert "video: 30 leading and 30 trailing frames without PPG dropped" in row.repairs
    g = zarr.open_group(str(tmp_path / "f.zarr"), mode="r")["carol_1"]
    assert g["video"].shape == (60, 128, 128, 3)
    np.testing.assert_allclose(g["bvp"][...], np.sin(2 * np.pi * 1.1 * (30 + np.arange(60)) / 30), atol=2e-3)


def test_window_dataset_reads_shift_from_clips(raw, done):
    from pipeline.split import make_splits
    from train.data import WindowDataset

    wd, manifest = done
    splits, _ = make_splits(manifest, 0, "holdout", test_frac=0.25)
    clips, stats = make_clips(splits, manifest, seed=0, frames=64, stride=60, shift_prob=1.0, shift_frames=30)
    assert stats["shifted"] > 0
    ds = WindowDataset.from_clips(wd / "eq.zarr", clips, "train")
    train = clips[clips.split == "train"].reset_index(drop=True)
    assert len(ds) == len(train)
    root = zarr.open_group(str(wd / "eq.zarr"), mode="r")
    for i in (0, len(ds) - 1):
        c, item = train.iloc[i], ds[i]
        radar = root[c.session]["radar"][...]
        expect = radar[4 * (c.start + c.shift_frames) :][: 4 * 64 : 4].transpose(1, 2, 0).reshape(10, 64)
        np.testing.assert_array_equal(item["rf"].numpy(), expect)
        np.testing.assert_array_equal(item["video"].numpy(), root[c.session]["video"][c.start : c.start + 64])
    plain = WindowDataset(wd / "eq.zarr", sorted(set(train.session)), 64, 60)  # old constructor still works
    assert len(plain) == len(ds) and plain.windows[0].shift == 0
