"""The bad-input matrix (issue 7): one test per fault, each asserting its documented outcome.

Outcomes are one of: a clear error naming the file and the problem; a documented repair counted in
the manifest (``repairs``, ``rf_lost_*``, ``radar_coverage``); or the session marked ``failed`` with
its reason while the run goes on. docs/failure-modes.md lists them in a table.

EquiPleth: one synthetic dataset, one fault per session, preprocessed once. PhysDrive: the tiny
public-layout fixture of ``test_physdrive`` (astronaut face video, cubes), one fault per session.
Train and report: the tiny store of ``tiny_data``. Also: malicious pickles that would run code,
names that try to leave the dataset root, and a disk that fills up during a write.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import zarr
from PIL import Image
from test_physdrive import cube, face_video
from tiny_data import tiny_train_toml, write_tiny_dataset
from typer.testing import CliRunner

from cli import app
from pipeline import dca1000
from pipeline.recipes.base import SessionError
from pipeline.recipes.equipleth import prepare_equipleth, read_ppg
from pipeline.recipes.physdrive import _clip_dir, prepare_physdrive
from pipeline.safe_pickle import UnsafePickleError, load_npy_object, load_pickle
from pipeline.store import SessionWriter, StoreError, remove_group
from pipeline.synth.equipleth import synth_equipleth
from pipeline.video import write_video

MARKER = "rpm-pwned"  # a malicious pickle would create this file


class Evil:
    """Unpickling this runs a shell command (``os.system``): it must be refused before it runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_bytes(marker: Path, protocol: int = 4) -> bytes:
    return pickle.dumps(Evil(marker), protocol=protocol)


# ------------------------------------------------------------------------------------ EquiPleth

# session (subject) -> fault injected into it
FAULTS = {
    1: "clean",
    2: "rf truncated mid-packet",
    3: "rf not a pickle",
    4: "packet loss 1%",
    5: "packet loss 5%",
    6: "packet loss 30%",
    7: "packets out of order",
    8: "byte counts inconsistent",
    9: "png missing",
    10: "png corrupt",
    11: "frames of mixed sizes",
    12: "ppg shorter than video",
    13: "ppg with short NaN gaps",
    14: "ppg with a long NaN gap",
    15: "ppg flat",
    16: "subject missing from fitzpatrick_labels",
    17: "rf.pkl runs code",
    18: "vital_dict.npy runs code",
}
SECONDS = 4.0
N_FRAMES = int(SECONDS * 30)  # video frames and PPG samples the generator writes
LOSS = {4: 0.01, 5: 0.05, 6: 0.30}


def _clean_capture(rf: Path) -> dca1000.RfCapture:
    """The generator may lose packets itself: re-packetise its decoded frames without loss."""
    cap = dca1000.read_rf_pkl(rf)
    return dca1000.encode_capture(dca1000.decode_by_byte_count(cap).adc, cap.start_time, cap.end_time)


def _inject(root: Path, marker: Path) -> dict:
    rng = np.random.default_rng(7)
    rf = {s: root / "rf_files" / f"{s}_1" / "rf.pkl" for s in FAULTS}
    rgb = {s: root / "rgb_files" / f"v_{s}_1" for s in FAULTS}
    info = {}
    data = rf[2].read_bytes()
    rf[2].write_bytes(data[: len(data) // 2 + 1001])  # cut inside a packet's payload
    rf[3].write_bytes(b"PK\x03\x04 this is a zip file, not a pickle")
    for s, frac in LOSS.items():
        cap = _clean_capture(rf[s])
        n = len(cap.payloads)
        inner = np.arange(1, n - 1)  # keep the first and the last packet: the length stays known
        lost = rng.choice(inner, size=max(1, round(frac * n)), replace=False)
        dca1000.write_rf_pkl(rf[s], dca1000.drop_and_shuffle(cap, np.setdiff1d(np.arange(n), lost)))
        info[s] = len(lost)
    cap = _clean_capture(rf[7])
    order = np.arange(len(cap.payloads))
    for i in range(5, len(order) - 5, 9):  # swap neighbours all along the capture
        order[i], order[i + 1] = order[i + 1], order[i]
    dca1000.write_rf_pkl(rf[7], dca1000.drop_and_shuffle(cap, order))
    cap = _clean_capture(rf[8])
    cap.byte_counts = cap.byte_counts.copy()
    cap.byte_counts[40] = cap.byte_counts[39]  # packet 40 claims packet 39's bytes
    dca1000.write_rf_pkl(rf[8], cap)
    (rgb[9] / "rgbd_rgb_7.png").unlink()
    (rgb[10] / "rgbd_rgb_3.png").write_bytes((rgb[10] / "rgbd_rgb_3.png").read_bytes()[:60])
    Image.new("RGB", (80, 64), (100, 90, 80)).save(rgb[11] / "rgbd_rgb_5.png")
    ppg = np.load(rgb[12] / "rgbd_ppg.npy")
    np.save(rgb[12] / "rgbd_ppg.npy", ppg[:100])
    ppg = np.load(rgb[13] / "rgbd_ppg.npy")
    ppg[[40, 41, 42, 90]] = np.nan
    np.save(rgb[13] / "rgbd_ppg.npy", ppg)
    ppg = np.load(rgb[14] / "rgbd_ppg.npy")
    ppg[40:80] = np.nan  # 40 samples in a row: more than 1 s
    np.save(rgb[14] / "rgbd_ppg.npy", ppg)
    np.save(rgb[15] / "rgbd_ppg.npy", np.full(N_FRAMES, 0.5))
    labels = load_pickle(root / "fitzpatrick_labels.pkl")
    del labels["v_16"]
    (root / "fitzpatrick_labels.pkl").write_bytes(pickle.dumps(labels))
    rf[17].write_bytes(evil_bytes(marker))
    (rgb[18] / "rgbd_ppg.npy").unlink()  # read the vital_dict.npy fallback instead
    vital = np.empty((), dtype=object)
    vital[()] = Evil(marker)
    with open(root / "rf_files" / "18_1" / "vital_dict.npy", "wb") as f:
        np.lib.format.write_array(f, vital, allow_pickle=True)  # pickles Evil after the header
    folds = load_pickle(root / "demo_fold.pkl")
    folds[0]["test"] = [*folds[0]["test"], "v_99_1", "../../../etc/passwd"]
    (root / "demo_fold.pkl").write_bytes(pickle.dumps(folds))
    return info


@pytest.fixture(scope="module")
def equipleth(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults_eq")
    root = base / "raw"
    synth_equipleth(
        root, subjects=len(FAULTS), trials=1, seconds=SECONDS, seed=5, crop_size=48, progress=False
    )
    marker = base / MARKER
    lost = _inject(root, marker)
    with pytest.warns(UserWarning, match="demo_fold.pkl names 2 session"):
        manifest = prepare_equipleth(root, base / "eq.zarr", base / "m", scheduler="sync")
    return base, manifest.set_index("session"), lost, marker


def row_of(equipleth, subject: int):
    return equipleth[1].loc[f"v_{subject}_1"]


def test_clean_session_is_ok_and_the_run_went_on(equipleth):
    base, by, _, _ = equipleth
    assert len(by) == len(FAULTS)  # every input session has a row, failed ones included
    row = row_of(equipleth, 1)
    assert row.status == "ok" and row.reason == "" and row.n_frames == N_FRAMES - 25
    stored = zarr.open_group(str(base / "eq.zarr"), mode="r")
    assert set(stored.group_keys()) == set(by.index[by.status == "ok"])
    assert all(stored[g].attrs["complete"] for g in stored.group_keys())


FAILED = {
    2: r"rf_files/2_1/rf\.pkl: not a readable pickle",
    3: r"rf_files/3_1/rf\.pkl: not a readable pickle",
    8: r"rf_files/8_1/rf\.pkl: byte counts inconsistent",
    9: r"v_9_1: 1 frame\(s\) missing, first rgbd_rgb_7\.png",
    10: r"v_10_1/rgbd_rgb_3\.png: unreadable PNG",
    11: r"v_11_1/rgbd_rgb_5\.png: frame size \(80, 64\) differs",
    14: r"v_14_1/rgbd_ppg\.npy: PPG contains 40 non-finite samples \(longest gap 40",
    15: r"v_15_1/rgbd_ppg\.npy: PPG is flat",
    17: r"rf_files/17_1/rf\.pkl: refused to load: the pickle references posix\.system",
    18: r"rf_files/18_1/vital_dict\.npy: refused to load: the pickle references posix\.system",
}


@pytest.mark.parametrize("subject", list(FAILED), ids=[FAULTS[s] for s in FAILED])
def test_session_failed_with_reason(equipleth, subject):
    base, _, _, marker = equipleth
    row = row_of(equipleth, subject)
    assert row.status == "failed"
    assert row.n_frames == 0
    assert re.search(FAILED[subject], row.reason), row.reason
    assert f"v_{subject}_1" not in zarr.open_group(str(base / "eq.zarr"), mode="r")
    assert not marker.exists()  # nothing from a malicious pickle ran


@pytest.mark.parametrize("subject", list(LOSS), ids=[FAULTS[s] for s in LOSS])
def test_packet_loss_is_interpolated_and_counted(equipleth, subject):
    base, _, lost, _ = equipleth
    row = row_of(equipleth, subject)
    assert row.status == "ok", row.reason
    assert row.rf_lost_packets == lost[subject] and row.rf_lost_frames > 0
    assert f"radar: {row.rf_lost_frames} lost frames interpolated" in row.repairs
    ok = zarr.open_group(str(base / "eq.zarr"), mode="r")[f"v_{subject}_1"]["radar_ok"][...]
    assert int((~ok).sum()) == row.rf_lost_frames
    assert row.radar_coverage == pytest.approx(ok.mean(), abs=1e-4) and row.radar_coverage < 1


def test_loss_grows_with_the_loss_rate(equipleth):
    frames = [row_of(equipleth, s).rf_lost_frames for s in LOSS]
    assert frames == sorted(frames) and frames[0] < frames[-1]


def test_packets_out_of_order_decode_losslessly(equipleth):
    row = row_of(equipleth, 7)
    assert row.status == "ok" and row.rf_discontinuities > 0
    assert row.rf_lost_packets == 0 and row.rf_lost_frames == 0 and row.radar_coverage == 1.0


def test_ppg_shorter_than_video_trims_the_video(equipleth):
    row = row_of(equipleth, 12)
    assert row.status == "ok" and row.n_frames == 100 - 25
    assert f"video: {N_FRAMES - 75} trailing frames dropped" in row.repairs


def test_ppg_short_nan_gaps_are_interpolated_and_counted(equipleth):
    base, _, _, _ = equipleth
    row = row_of(equipleth, 13)
    assert row.status == "ok", row.reason
    assert "ppg: 4 non-finite samples interpolated (longest gap 3)" in row.repairs
    bvp = zarr.open_group(str(base / "eq.zarr"), mode="r")["v_13_1"]["bvp"][...]
    assert np.isfinite(bvp).all()


def test_subject_missing_from_fitzpatrick_labels(equipleth):
    base, _, _, _ = equipleth
    row = row_of(equipleth, 16)
    assert row.status == "ok" and row.skin_type == -1
    assert "skin_type: v_16 not in fitzpatrick_labels.pkl" in row.repairs
    assert zarr.open_group(str(base / "eq.zarr"), mode="r")["v_16_1"].attrs["skin_type"] == -1


def test_fold_file_naming_missing_sessions_is_a_recorded_warning(equipleth):
    base, by, _, _ = equipleth
    text = (base / "m" / "equipleth_warnings.txt").read_text()
    assert "demo_fold.pkl names 2 session(s) not under rgb_files/" in text
    assert "'v_99_1'" in text and "'../../../etc/passwd'" in text
    assert not any(n.startswith(("..", "/")) for n in by.index)  # such a name is never used as a path


# ----------------------------------------------------------------------- malicious pickles, paths


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, protocol):
    marker = tmp_path / MARKER
    path = tmp_path / "fitzpatrick_labels.pkl"
    path.write_bytes(evil_bytes(marker, protocol))
    with pytest.raises(UnsafePickleError, match=r"fitzpatrick_labels\.pkl: refused to load.*posix\.system"):
        load_pickle(path)
    pickle.loads(evil_bytes(tmp_path / "control", protocol))  # the plain unpickler does run it
    assert (tmp_path / "control").exists() and not marker.exists()


@pytest.mark.parametrize("name", ["fitzpatrick_labels.pkl", "demo_fold.pkl"])
def test_malicious_label_pickle_stops_preprocessing_naming_the_file(tmp_path, name):
    root = tmp_path / "raw"
    (root / "rgb_files" / "v_1_1").mkdir(parents=True)
    (root / name).write_bytes(evil_bytes(tmp_path / MARKER))
    result = CliRunner().invoke(
        app, ["preprocess", "equipleth", "--root", str(root), "--workdir", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert f"{name}: refused to load" in result.output and "posix.system" in result.output
    assert not (tmp_path / MARKER).exists()


def test_restricted_unpickler_keeps_what_the_formats_need(tmp_path):
    obj = (
        [np.arange(728, dtype=np.uint16)],
        [1, 2],
        [0, 1456],
        "2021-12-04T00:58:02Z",
        {"v_1": np.int64(3), 0: {"test": ["v_1_1"], "val": np.array(["v_2_1"])}, "s": {1.5, 2j}},
    )
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        (tmp_path / "x.pkl").write_bytes(pickle.dumps(obj, protocol=protocol))
        back = load_pickle(tmp_path / "x.pkl")
        assert back[1:4] == obj[1:4] and np.array_equal(back[0][0], obj[0][0])
        assert back[4]["v_1"] == 3 and back[4]["s"] == {1.5, 2j}
    np.save(tmp_path / "vital_dict.npy", {"rgbd": {"NOM_PLETHWaveExport": np.arange(5.0)}}, allow_pickle=True)
    vital = load_npy_object(tmp_path / "vital_dict.npy").item()
    np.testing.assert_array_equal(vital["rgbd"]["NOM_PLETHWaveExport"], np.arange(5.0))


def test_vital_dict_with_code_is_refused(tmp_path):
    (tmp_path / "rgb_files" / "v_2_3").mkdir(parents=True)
    (tmp_path / "rf_files" / "2_3").mkdir(parents=True)
    vital = np.empty((), dtype=object)
    vital[()] = {"rgbd": {"NOM_PLETHWaveExport": Evil(tmp_path / MARKER)}}
    with open(tmp_path / "rf_files" / "2_3" / "vital_dict.npy", "wb") as f:
        np.lib.format.write_array(f, vital, allow_pickle=True)
    with pytest.raises(SessionError, match=r"vital_dict\.npy: refused to load"):
        read_ppg(tmp_path, "v_2_3")
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize("clip", ["../../../etc", "../AFH2_00", "/etc", "x/../../.."])
def test_pairing_names_cannot_leave_the_dataset_root(tmp_path, clip):
    (tmp_path / "mmWave" / "AFH1").mkdir(parents=True)
    with pytest.raises(SessionError, match="outside the dataset root"):
        _clip_dir(tmp_path, "AFH1", clip)
    assert _clip_dir(tmp_path, "AFH1", "00") == tmp_path / "mmWave" / "AFH1" / "AFH1_00"


@pytest.mark.parametrize("group", ["..", "../victim", "/tmp", "a/../..", ""])
def test_store_never_removes_outside_itself(tmp_path, group):
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "s.zarr").mkdir()
    with pytest.raises(StoreError, match="not a valid session group name"):
        remove_group(tmp_path / "s.zarr", group)
    assert victim.is_dir()


def test_a_split_naming_a_path_outside_the_store_is_never_read(tiny):
    from train.data import WindowDataset

    victim = tiny.root / "data" / "victim"
    zarr.open_group(str(victim), mode="w", zarr_format=3).attrs["complete"] = True
    with pytest.raises(ValueError, match=r"'\.\./victim' is invalid"):
        WindowDataset(tiny.store("equipleth"), ["../victim"], 24, 16)


# ------------------------------------------------------------------------------------- PhysDrive

PD_FAULTS = {
    "AFH1": "mp4 that is not a video",
    "AFH2": "video with zero frames",
    "AFH3": "face absent for more than 2 s",
    "AFH4": "BVP.mat with the wrong key",
    "AFH5": "radar cube of the wrong shape, pairing pointing at a missing file",
    "AFH6": "pairing naming a clip outside the dataset root",
}


@pytest.fixture(scope="module")
def physdrive(tmp_path_factory):
    import av

    root = tmp_path_factory.mktemp("faults_pd") / "PhysDrive"
    n = 75  # 2.5 s at 30 fps
    for k, subj in enumerate(PD_FAULTS):
        sdir = root / "RGB and IR" / subj / "AS"
        (sdir / "Label").mkdir(parents=True)
        scipy.io.savemat(sdir / "Label" / "BVP.mat", {"BVP": np.sin(np.arange(150) / 4.0)[None, :]})
        if subj == "AFH1":
            (sdir / "RGB.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated nonsense" * 10)
        elif subj == "AFH2":
            c = av.open(str(sdir / "RGB.mp4"), "w")  # a container with no frames in it
            s = c.add_stream("libx264", rate=30)
            s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
            c.start_encoding()
            c.close()
        elif subj == "AFH3":
            write_video(sdir / "RGB.mp4", np.ascontiguousarray(face_video(4 * 30, 15, k)[:, ::2, ::2]), 30.0)
        else:
            write_video(sdir / "RGB.mp4", np.ascontiguousarray(face_video(n, n, k)[:, ::2, ::2]), 30.0)
    scipy.io.savemat(root / "RGB and IR" / "AFH4" / "AS" / "Label" / "BVP.mat", {"PPG": np.zeros(150)})
    bad = root / "mmWave" / "AFH5" / "AFH5_00"
    bad.mkdir(parents=True)
    scipy.io.savemat(bad / "mmwave.mat", {"mmwave": cube(40, 0)[:, :, :, :12]})  # 12 angle bins, not 16
    good = root / "mmWave" / "AFH5" / "AFH5_02"
    good.mkdir(parents=True)
    scipy.io.savemat(good / "mmwave.mat", {"mmwave": cube(40, 1)})
    t0 = "2024-05-01T10:00:00.000"
    pd.DataFrame(
        [
            ["AFH5", "AS", "00", t0, "2024-05-01T10:00:00", 20],
            ["AFH5", "AS", "01", t0, "2024-05-01T10:00:00", 20],  # no mmWave/AFH5/AFH5_01/
            ["AFH5", "AS", "02", t0, "2024-05-01T10:00:00", 20],
            ["AFH6", "AS", "../../../../etc", t0, "2024-05-01T10:00:00", 20],
        ],
        columns=["subject", "session", "clip", "video_start", "radar_start", "radar_fps"],
    ).to_csv(root / "pairing.csv", index=False)
    out = tmp_path_factory.mktemp("faults_pdrun")
    manifest = prepare_physdrive(root, out / "pd.zarr", out / "m", scheduler="sync")
    return root, out, manifest.set_index("session")


PD_FAILED = {
    "AFH1": r"AFH1/AS/RGB\.mp4: not a readable video",
    "AFH2": r"AFH2/AS/RGB\.mp4: (no video stream|the video stream has no decodable frames)",
    "AFH3": r"AFH3/AS/RGB\.mp4: face found in \d+\.\d% of detection frames \(< 50%\); not stored",
    "AFH4": r"AFH4/AS/Label/BVP\.mat: no 'BVP' key",
    "AFH6": r"pairing\.csv: '.*etc' points outside the dataset root",
}


@pytest.mark.parametrize("subject", list(PD_FAILED), ids=[PD_FAULTS[s] for s in PD_FAILED])
def test_physdrive_session_failed_with_reason(physdrive, subject):
    _, out, by = physdrive
    row = by.loc[f"{subject}_AS"]
    assert row.status == "failed" and re.search(PD_FAILED[subject], row.reason), row.reason
    assert f"{subject}_AS" not in zarr.open_group(str(out / "pd.zarr"), mode="r")


def test_physdrive_bad_clips_are_skipped_and_noted(physdrive):
    _, out, by = physdrive
    row = by.loc["AFH5_AS"]
    assert row.status == "ok", row.reason
    assert "radar clip 00 skipped" in row.repairs and "expected (n_frames, 2, 8, 16, 8)" in row.repairs
    assert "radar clip 01 skipped" in row.repairs and "AFH5_01/mmwave.mat: missing" in row.repairs
    assert 0 < row.radar_coverage < 1  # clip 02 covers 2 of the 2.5 s
    ok = zarr.open_group(str(out / "pd.zarr"), mode="r")["AFH5_AS"]["radar_ok"][...]
    assert ok[:40].all() and not ok[40:].any()


# ------------------------------------------------------------------------------------ train, report

TINY = tiny_train_toml()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("faults_tiny")
    wd = write_tiny_dataset(root)
    (root / "tiny.toml").write_text(TINY)
    yield wd
    torch.set_num_threads(n)


def invoke(wd, *args):
    return CliRunner().invoke(app, [*args, "--workdir", str(wd.root)])


def train(wd, *args):
    return invoke(wd, "train", "--config", str(wd.root / "tiny.toml"), *args)


def copy_workdir(wd, tmp_path):
    from pipeline.paths import Workdir

    shutil.copytree(wd.root, tmp_path / "wd", symlinks=True)
    return Workdir(tmp_path / "wd")


def test_train_empty_training_split(tiny, tmp_path):
    wd = copy_workdir(tiny, tmp_path)
    splits = pd.read_csv(wd.splits_manifest, dtype=str)
    splits[splits.split != "train"].to_csv(wd.splits_manifest, index=False)
    result = train(wd)
    assert result.exit_code == 1 and "splits.csv: the training split is empty" in result.output


def test_train_labelled_fraction_selecting_zero_subjects(tiny):
    from pipeline.split import SplitError, labeled_subjects

    result = train(tiny, "--labeled-frac", "0")
    assert result.exit_code == 1 and "--labeled-frac must be in (0, 1], got 0.0" in result.output
    with pytest.raises(SplitError, match="selects zero of 0 training subjects"):
        labeled_subjects([], 0.5, seed=0)


def test_train_store_changed_after_the_split(tiny, tmp_path):
    from pipeline.split import file_sha256

    wd = copy_workdir(tiny, tmp_path)
    sessions = wd.manifests / "equipleth_sessions.csv"
    sessions.write_text("session,status\nv_1_1,ok\n")
    meta = json.loads(wd.splits_meta.read_text())
    meta.update(sessions_manifest=str(sessions), sessions_sha256=file_sha256(sessions))
    wd.splits_meta.write_text(json.dumps(meta))
    sessions.write_text("session,status\nv_1_1,ok\nv_9_1,ok\n")  # a rerun of preprocess changed the store
    result = train(wd)
    assert result.exit_code == 1
    assert "equipleth_sessions.csv changed after the split was made; rerun `rpm split`" in result.output


def test_checkpoint_from_another_config_is_refused_unless_forced(tiny):
    assert train(tiny, "--name", "cfg").exit_code == 0
    result = train(tiny, "--name", "cfg", "--epochs", "2", "--resume", "--lr", "0.5")
    assert result.exit_code == 1
    assert "student_last.pt: cannot resume with a different config (lr: 0.001 -> 0.5)" in result.output
    assert "--force" in result.output
    result = train(tiny, "--name", "cfg", "--epochs", "2", "--resume", "--lr", "0.5", "--force")
    assert result.exit_code == 0, result.output
    assert "resuming with a different config because of --force" in result.output
    assert "resuming after epoch 1" in result.output


def test_report_run_without_checkpoint(tiny):
    (tiny.runs / "empty").mkdir(parents=True, exist_ok=True)
    result = invoke(tiny, "report", "empty")
    assert (
        result.exit_code == 1
        and "empty: no checkpoint (student.pt / baseline.pt / teacher.pt)" in result.output
    )


def test_report_test_set_without_windows(tiny, tmp_path):
    from train.build import build_student
    from train.checkpoint import save_checkpoint
    from train.config import TrainConfig

    wd = copy_workdir(tiny, tmp_path)
    cfg = TrainConfig(run_name="long", frames=128, teacher_widths=(8, 16))  # the sessions have 96 frames
    (wd.runs / "long").mkdir(parents=True)
    save_checkpoint(wd.runs / "long" / "student.pt", "student", build_student(cfg), cfg, policy=None)
    result = invoke(wd, "report", "long")
    assert result.exit_code == 1 and "the test split has no 128-frame windows" in result.output


# ----------------------------------------------------------------------------------- full disk


def test_full_disk_stops_with_a_clear_error_and_keeps_completed_sessions(equipleth, tmp_path, monkeypatch):

    src = equipleth[0] / "raw"
    root = tmp_path / "raw"
    for sub in (
        "rgb_files/v_1_1",
        "rgb_files/v_4_1",
        "rgb_files/v_7_1",
        "rf_files/1_1",
        "rf_files/4_1",
        "rf_files/7_1",
    ):
        shutil.copytree(src / sub, root / sub)
    store, mdir = tmp_path / "eq.zarr", tmp_path / "m"
    real, calls = SessionWriter._append, []

    def append_until_full(self, frames, n):
        if self.group_name not in calls:
            calls.append(self.group_name)
        if len(calls) == 3:
            real(self, frames, n // 2)  # half the video is on disk, then ...
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, frames, n)

    monkeypatch.setattr(SessionWriter, "_append", append_until_full)
    with pytest.raises(StoreError, match=r"no space left on the device .*completed before it") as err:
        prepare_equipleth(root, store, mdir, scheduler="sync")
    full = calls[2]
    assert f"eq.zarr/{full}: no space left" in str(err.value)
    assert not (mdir / "equipleth_sessions.csv").exists()
    g = zarr.open_group(str(store), mode="r")
    assert sorted(g.group_keys()) == sorted(calls[:2])  # the half-written group is gone
    assert all(g[k].attrs["complete"] for k in g.group_keys())
    before = {k: g[k]["video"][...].tobytes() for k in g.group_keys()}
    monkeypatch.setattr(SessionWriter, "_append", real)
    manifest = prepare_equipleth(root, store, mdir, scheduler="sync")  # space freed: resumes
    assert (manifest.status == "ok").all() and len(manifest) == 3
    g = zarr.open_group(str(store), mode="r")
    assert all(g[k]["video"][...].tobytes() == v for k, v in before.items())


def test_full_disk_while_writing_the_manifest_keeps_the_old_one(equipleth, tmp_path, monkeypatch):
    src = equipleth[0] / "raw"
    root = tmp_path / "raw"
    for sub in ("rgb_files/v_1_1", "rf_files/1_1"):
        shutil.copytree(src / sub, root / sub)
    mdir = tmp_path / "m"
    prepare_equipleth(root, tmp_path / "eq.zarr", mdir, scheduler="sync")
    old = (mdir / "equipleth_sessions.csv").read_bytes()

    def full(self, path, *a, **k):
        Path(path).write_text("sess")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    with pytest.raises(StoreError, match="equipleth_sessions.csv: no space left on the device"):
        prepare_equipleth(root, tmp_path / "eq.zarr", mdir, scheduler="sync")
    assert (mdir / "equipleth_sessions.csv").read_bytes() == old
    assert not list(mdir.glob("*.partial"))
