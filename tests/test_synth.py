"""Synthetic EquiPleth generator: layout, radar decoding, physiological content, determinism, reruns,
and the calibration of the physics (video estimator vs conditions, radar phase vs corruption)."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.dca1000 import decode_capture, read_rf_pkl, write_rf_pkl
from pipeline.equipleth import read_radar
from pipeline.physio import simulate_physiology
from pipeline.radar import RF_SCALE, find_chest_bin, range_fft
from pipeline.spectrum import bandpass, hr_from_psd, snr_db
from pipeline.synth_equipleth import (
    corruption_intervals,
    lost_frame_mask,
    make_capture,
    plan_trial,
    synth_equipleth,
)
from pipeline.synth_scene import Conditions, render_face_clip
from train.classical import centre_ellipse, pos, rgb_trace

SECONDS = 10.0
SUBJECTS = 3
CROP = 64
N_FRAMES = 300
N_RADAR = 1232  # round(120 * 10) + 33 acquired; whole 728-value packets hold 1232 whole frames
ARGS = dict(
    subjects=SUBJECTS, trials=1, seconds=SECONDS, seed=7, crop_size=CROP, progress=False, difficulty="easy"
)  # the clean world: these tests check the signal model itself
NAMES = [f"{s}_1" for s in range(1, SUBJECTS + 1)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "equipleth"
    df = synth_equipleth(out, **ARGS)
    truth = json.loads((out / "synth_truth.json").read_text())
    return out, df, truth


def _frames(rgb_dir: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(rgb_dir / f"rgbd_rgb_{i}.png")) for i in range(N_FRAMES)])


def _skin_green(frames: np.ndarray) -> np.ndarray:
    """Mean green over the skin region: pixels whose colour matches the cheek/nose patch."""
    mean = frames.astype(np.float64).mean(0)
    h, w, _ = mean.shape
    ref = np.median(mean[int(0.45 * h) : int(0.7 * h), int(0.3 * w) : int(0.7 * w)].reshape(-1, 3), axis=0)
    chroma = mean / mean.sum(-1, keepdims=True)
    lum = mean.sum(-1) / ref.sum()
    mask = (np.abs(chroma - ref / ref.sum()).max(-1) < 0.03) & (lum > 0.6) & (lum < 1.4)
    assert 0.1 < mask.mean() < 0.8, f"implausible skin fraction {mask.mean():.2f}"
    return frames[:, mask, 1].astype(np.float64).mean(1)


# --------------------------------------------------------------------------- layout


def test_layout(dataset):
    out, df, truth = dataset
    assert sorted(p.name for p in (out / "rgb_files").iterdir()) == [f"v_{n}" for n in NAMES]
    assert sorted(p.name for p in (out / "rf_files").iterdir()) == NAMES
    assert not (out / ".synth_tmp").exists()
    for name in NAMES:
        rgb = out / "rgb_files" / f"v_{name}"
        expected = {f"rgbd_rgb_{i}.png" for i in range(N_FRAMES)} | {"rgbd_ppg.npy"}
        assert {p.name for p in rgb.iterdir()} == expected  # exact set: no zero padding, nothing extra
        assert not (rgb / "rgbd_rgb_007.png").exists() and (rgb / "rgbd_rgb_7.png").exists()
        with Image.open(rgb / f"rgbd_rgb_{N_FRAMES - 1}.png") as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (CROP, CROP)
        ppg = np.load(rgb / "rgbd_ppg.npy")
        assert ppg.dtype == np.float64 and ppg.shape == (N_FRAMES,)
        rf = out / "rf_files" / name
        assert {p.name for p in rf.iterdir()} == {"rf.pkl", "vital_dict.npy"}
        vital = np.load(rf / "vital_dict.npy", allow_pickle=True)
        assert vital.shape == ()
        np.testing.assert_array_equal(vital.item()["rgbd"]["NOM_PLETHWaveExport"], ppg)

    with open(out / "fitzpatrick_labels.pkl", "rb") as f:
        fitz = pickle.load(f)
    assert sorted(fitz) == [f"v_{s}" for s in range(1, SUBJECTS + 1)]
    assert all(isinstance(v, int) and 1 <= v <= 6 for v in fitz.values())
    assert len(set(fitz.values())) == SUBJECTS  # skin types cycle through subjects

    with open(out / "demo_fold.pkl", "rb") as f:
        folds = pickle.load(f)
    assert list(folds) == [0] and set(folds[0]) == {"train", "val", "test"}
    parts = {k: {n.split("_")[1] for n in v} for k, v in folds[0].items()}
    assert all(parts[k] for k in ("train", "val", "test"))
    tr, va, te = parts["train"], parts["val"], parts["test"]
    assert not (tr & va or tr & te or va & te)
    assert sorted(sum(folds[0].values(), [])) == [f"v_{n}" for n in NAMES]

    assert "NOT part of the real EquiPleth layout" in truth["_note"]
    assert sorted(truth["trials"]) == [f"v_{n}" for n in NAMES]
    assert list(df.columns) == [
        "subject",
        "trial",
        "rgb_dir",
        "rf_dir",
        "skin_type",
        "mean_hr_bpm",
        "chest_bin",
        "n_frames",
        "n_radar_frames",
    ]
    assert len(df) == SUBJECTS and (df.n_frames == N_FRAMES).all() and (df.n_radar_frames == N_RADAR).all()
    for row in df.itertuples():
        t = truth["trials"][f"v_{row.subject}_{row.trial}"]
        assert row.skin_type == fitz[f"v_{row.subject}"] == t["skin_type"]
        assert row.chest_bin == t["chest_bin"] and 7 <= row.chest_bin <= 16
        assert 40 <= row.mean_hr_bpm <= 155 and row.mean_hr_bpm == pytest.approx(t["mean_hr_bpm"])
        assert 0.35 <= t["chest_range_m"] <= 0.8 and 0.08 <= t["ptt_s"] <= 0.25
        assert len(t["hr_trajectory_bpm"]) == len(t["hr_times_s"]) == int(SECONDS) + 1


# --------------------------------------------------------------------------- radar


def t_lost(truth: dict, name: str) -> int:
    return truth["trials"][f"v_{name}"]["lost_packets"]


@pytest.mark.parametrize("name", NAMES)
def test_radar_decodes_and_chest_bin(dataset, name):
    out, _, truth = dataset
    capture = read_rf_pkl(out / "rf_files" / name / "rf.pkl")
    for stamp in (capture.start_time, capture.end_time):
        assert stamp.endswith("Z")
        datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    # Stopped on a time limit like the real captures: whole 728-value packets only, none shorter.
    assert all(p.size == 728 for p in capture.payloads)
    assert len(capture.payloads) == (N_RADAR + 1) * 1024 // 728 - t_lost(truth, name)
    flat = np.concatenate(capture.payloads)  # the reference organizer's flattening assumption holds
    assert flat.size == 728 * len(capture.payloads)
    dec = decode_capture(capture)
    t = truth["trials"][f"v_{name}"]
    assert dec.adc.shape == (N_RADAR, 256) and dec.lost_packets == t["lost_packets"]
    assert int((~dec.valid).sum()) == t["lost_radar_frames"]
    profiles = range_fft(dec.adc)
    chest = find_chest_bin(profiles, dec.valid)
    assert chest == t["chest_bin"]
    peak = np.abs(profiles[dec.valid, chest]).mean() / RF_SCALE
    assert 0.2 < peak < 1.05
    # The enclosure reflection sits below the chest search window, near bin 2.
    assert 1 <= int(np.argmax(np.abs(profiles[:, :5]).sum(0))) <= 3


def _radar_clean(t: dict) -> bool:
    return not [c for c in t["corruptions"] if c["modality"] == "radar" and c["kind"] != "packet_reorder"]


def _video_clean(t: dict) -> bool:
    return (
        t["conditions"]["motion"] == "stationary"
        and not t["conditions"]["talking"]
        and not [c for c in t["corruptions"] if c["kind"] == "body_motion"]
    )


def test_dataset_has_clean_trials(dataset):
    trials = dataset[2]["trials"].values()
    assert sum(_radar_clean(t) for t in trials) >= 1 and sum(_video_clean(t) for t in trials) >= 1
    assert all(t["conditions"]["illumination"] == "indoor" and t["radar_video_offset_s"] == 0 for t in trials)


@pytest.mark.parametrize("name", NAMES)
def test_radar_phase_carries_heart_rate(dataset, name):
    out, _, truth = dataset
    if not _radar_clean(truth["trials"][f"v_{name}"]):
        pytest.skip("radar corrupted in this trial (covered by test_radar_phase_windows)")
    dec = decode_capture(read_rf_pkl(out / "rf_files" / name / "rf.pkl"))
    profiles = range_fft(dec.adc)
    phase = np.unwrap(np.angle(profiles[:, find_chest_bin(profiles)]))
    hr = truth["trials"][f"v_{name}"]["mean_hr_bpm"]
    assert abs(hr_from_psd(phase, 120.0) - hr) <= 4.0
    # Respiration dominates the raw phase: its peak is below the cardiac band.
    assert hr_from_psd(phase, 120.0, lo_bpm=5.0, hi_bpm=180.0) < 30.0


# --------------------------------------------------------------------------- PPG and video


@pytest.mark.parametrize("name", NAMES)
def test_ppg_rate(dataset, name):
    out, _, truth = dataset
    ppg = np.load(out / "rgb_files" / f"v_{name}" / "rgbd_ppg.npy")
    assert abs(hr_from_psd(ppg, 30.0) - truth["trials"][f"v_{name}"]["mean_hr_bpm"]) <= 3.0


@pytest.mark.parametrize("name", NAMES)
def test_video_pulses_at_heart_rate_and_matches_label_offset(dataset, name):
    out, _, truth = dataset
    if not _video_clean(truth["trials"][f"v_{name}"]):
        pytest.skip("moving or talking trial (covered by the calibration tests)")
    rgb = out / "rgb_files" / f"v_{name}"
    green = _skin_green(_frames(rgb))
    hr = truth["trials"][f"v_{name}"]["mean_hr_bpm"]
    assert abs(hr_from_psd(green, 30.0) - hr) <= 4.0
    # Label convention: video frame t shows the pulse stored at PPG index t + 25 (more blood, darker skin).
    label = bandpass(np.load(rgb / "rgbd_ppg.npy"), 30.0)
    video = -bandpass(green, 30.0)
    n = N_FRAMES - 25 - 10
    corr = {
        lag: np.corrcoef(video[10 : 10 + n - 10], label[25 + 10 + lag : 25 + n + lag])[0, 1]
        for lag in range(-5, 6)
    }
    best = max(corr, key=corr.get)
    assert abs(best) <= 1 and corr[best] > 0.5, corr


# --------------------------------------------------------------------------- determinism and reruns


def _all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_bytes(dataset, tmp_path):
    out, _, _ = dataset
    other = tmp_path / "again"
    synth_equipleth(other, **ARGS)
    a, b = _all_bytes(out), _all_bytes(other)
    assert sorted(a) == sorted(b)
    for key in ("rgb_files/v_2_1/rgbd_rgb_123.png", "rgb_files/v_2_1/rgbd_ppg.npy", "rf_files/2_1/rf.pkl"):
        assert a[key] == b[key], key
    differing = [k for k in a if a[k] != b[k]]
    assert differing == []
    # A different seed really changes the data.
    third = tmp_path / "seed8"
    synth_equipleth(third, **{**ARGS, "subjects": 1, "seed": 8})
    assert (third / "rf_files/1_1/rf.pkl").read_bytes() != a["rf_files/1_1/rf.pkl"]
    assert (third / "rgb_files/v_1_1/rgbd_ppg.npy").read_bytes() != a["rgb_files/v_1_1/rgbd_ppg.npy"]


def test_rerun_skips_complete_and_repairs_half_written(tmp_path):
    out = tmp_path / "ds"
    args = {**ARGS, "subjects": 2, "seconds": 2.0}
    df1 = synth_equipleth(out, **args)
    before = _all_bytes(out)
    png = out / "rgb_files/v_1_1/rgbd_rgb_0.png"
    mtime = png.stat().st_mtime_ns
    df2 = synth_equipleth(out, **args)
    assert png.stat().st_mtime_ns == mtime  # complete trial skipped, not rewritten
    assert df1.equals(df2) and _all_bytes(out) == before
    # Interrupted between the two renames: the rgb half exists alone -> regenerated identically.
    shutil.rmtree(out / "rf_files/2_1")
    synth_equipleth(out, **args)
    assert _all_bytes(out) == before
    # Different arguments never mix with an existing dataset.
    with pytest.raises(FileExistsError, match=re.escape("v_1_1")):
        synth_equipleth(out, **{**args, "seconds": 3.0})


# --------------------------------------------------------------------------- physiology


def test_physiology_ranges_and_timing():
    for seed in range(5):
        ph = simulate_physiology(30.0, np.random.default_rng(seed), t0=-1.0)
        again = simulate_physiology(30.0, np.random.default_rng(seed), t0=-1.0)
        t = np.arange(-1.0, 29.0, 1 / 120)
        np.testing.assert_array_equal(ph.ppg(t), again.ppg(t))
        truth = ph.truth()
        assert 40 <= truth["mean_hr_bpm"] <= 155 and 7 <= truth["resp_rate_bpm"] <= 27
        assert 0.08 <= ph.ptt_s <= 0.25
        resp = ph.respiration_displacement(t)
        assert 1.7e-3 <= resp.max() - resp.min() <= 7e-3
        card = ph.cardiac_displacement(t)
        assert 0.09e-3 <= card.max() - card.min() <= 0.51e-3
        # The pulse reaches the PPG site one PTT after the chest moves: same rate, delayed.
        np.testing.assert_allclose(ph.pulse_rate(t[200:]), ph.heart_rate(t[200:] - ph.ptt_s))
        with pytest.raises(ValueError):
            ph.ppg(np.array([40.0]))


# --------------------------------------------------------------------------- calibration: video


def _roi_trace(frames: np.ndarray) -> np.ndarray:
    """(T, 3) mean RGB over a fixed central ellipse (cheeks, nose, forehead of a face crop)."""
    return rgb_trace(frames, centre_ellipse(*frames.shape[1:3], ry=0.30, rx=0.25))


CAL_SEEDS = range(5)
CAL_CONDITIONS = {
    "clean": Conditions(1, "noon", "stationary", False),
    "skin_medium": Conditions(4, "noon", "stationary", False),
    "skin_dark": Conditions(6, "noon", "stationary", False),
    "dusk": Conditions(1, "dusk", "stationary", False),
    "night": Conditions(1, "night", "stationary", False),
    "motion_moderate": Conditions(1, "noon", "moderate", False),
    "motion_large": Conditions(1, "noon", "large", False),
    "night_talking": Conditions(1, "night", "stationary", True),
}


@pytest.fixture(scope="module")
def calibration():
    """Per condition: (abs errors, SNRs) of POS over the same 5 people and hearts, 10 s, 64 px crops.

    SNR (de Haan): the power within 6 bpm of the true HR and its harmonic vs the rest of 45-180 bpm."""
    out = {}
    for name, cond in CAL_CONDITIONS.items():
        errs, snrs = [], []
        for seed in CAL_SEEDS:
            frames, truth = render_face_clip(cond, 10.0, seed, size=64)
            wave, hr = pos(_roi_trace(frames)), truth["mean_hr_bpm"]
            errs.append(abs(hr_from_psd(wave, 30.0) - hr))
            snrs.append(snr_db(wave, 30.0, hr_bpm=hr))
        out[name] = (np.array(errs), float(np.mean(snrs)))
    return out


def test_clean_noon_light_stationary_recovers_hr(calibration):
    errs, _ = calibration["clean"]
    assert errs.mean() < 3.0, errs


def test_estimator_degrades_monotonically(calibration):
    snr = {k: v[1] for k, v in calibration.items()}
    for chain in (
        ("clean", "skin_medium", "skin_dark"),
        ("clean", "dusk", "night"),
        ("clean", "motion_moderate", "motion_large"),
    ):
        values = [snr[c] for c in chain]
        assert all(a > b + 0.5 for a, b in zip(values, values[1:], strict=False)), dict(
            zip(chain, values, strict=True)
        )
    # Night + talking is clearly worse than noon + stationary. (Resting heart rates, 50-110 bpm, bound
    # how far a wrong peak can land from the truth, so the error margin is 5 bpm; the SNR margin 10 dB.)
    bad, good = calibration["night_talking"][0].mean(), calibration["clean"][0].mean()
    assert bad > good + 5.0 and snr["night_talking"] < snr["clean"] - 10.0, (bad, good)


def test_same_seed_same_clip_other_conditions_same_heart():
    a, ta = render_face_clip(CAL_CONDITIONS["clean"], 2.0, 3, size=32)
    b, tb = render_face_clip(CAL_CONDITIONS["clean"], 2.0, 3, size=32)
    c, tc = render_face_clip(CAL_CONDITIONS["night"], 2.0, 3, size=32)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert ta["mean_hr_bpm"] == tc["mean_hr_bpm"] and tc["conditions"]["illumination"] == "night"
    assert c.mean() < a.mean()  # low light, even after the gain


# --------------------------------------------------------------------------- calibration: radar

RADAR_EVENTS = [
    {"kind": "body_motion", "start_s": 12.0, "end_s": 22.0},
    {"kind": "interference", "start_s": 24.0, "end_s": 34.0},
    {"kind": "occlusion", "start_s": 36.0, "end_s": 46.0},
]
LOST = [(5064, 10), (6752, 4)]  # at ~30 s and ~40 s, inside corrupted windows


@pytest.fixture(scope="module")
def corrupted_trial(tmp_path_factory):
    over = {"radar_events": RADAR_EVENTS, "lost_packets": LOST, "reorder_at": 3000}
    plan = plan_trial(1, 1, 60.0, 11, 32, overrides=over, difficulty="easy")
    path = tmp_path_factory.mktemp("rf") / "rf.pkl"
    write_rf_pkl(path, make_capture(plan))
    return plan, path


def test_radar_phase_windows_clean_vs_corrupted(corrupted_trial):
    plan, path = corrupted_trial
    dec = decode_capture(read_rf_pkl(path))
    profiles = range_fft(dec.adc)
    assert find_chest_bin(profiles, dec.valid) == plan.chest_bin
    phase = np.unwrap(np.angle(profiles[:, plan.chest_bin]))

    def err(a: float, b: float) -> float:
        i, j = int(a * 120), int(b * 120)
        est = hr_from_psd(phase[i:j], 120.0)
        return abs(est - plan.phys.mean_pulse_rate(a, b))

    assert dec.valid[60:1260].all() and dec.valid[5820:7020].all()  # no packet lost in the clean windows
    clean = [err(0.5, 10.5), err(48.5, 58.5)]
    corrupted = {e["kind"]: err(e["start_s"] + 0.5, e["end_s"] - 0.5) for e in RADAR_EVENTS}
    assert max(clean) <= 3.0, clean
    assert min(corrupted.values()) > 3.0, corrupted


def test_packet_loss_real_reader_keeps_chest_bin(corrupted_trial):
    plan, path = corrupted_trial
    iq, ok, chest = read_radar(path, "bytecount")[:3]  # the recipe's reader: byte-count decoding
    assert chest == plan.chest_bin
    assert decode_capture(read_rf_pkl(path)).lost_packets == sum(c for _, c in LOST)
    np.testing.assert_array_equal(~ok, lost_frame_mask(plan))
    assert iq.shape == (plan.n_radar, 2, 5) and np.isfinite(iq).all()
    # The reference (organizer) decoder loses alignment but still finds the same chest bin.
    chest_org = read_radar(path, "organizer")[2]
    assert chest_org == plan.chest_bin
    truth = corruption_intervals(plan)
    kinds = {c["kind"] for c in truth if c["modality"] == "radar"}
    assert kinds == {"body_motion", "interference", "occlusion", "packet_loss", "packet_reorder"}
