"""The split stage: protocols, subject-disjointness (property test), clips, labelled subjects and
sync-shift injection at the requested rate, reproducible per seed and the same for every window length."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.spectrum import window_starts
from pipeline.split import (
    SplitError,
    SyncShifts,
    labeled_subjects,
    make_clips,
    make_splits,
    session_windows,
    write_splits,
)


def manifest(dataset="equipleth", n_subjects=10, trials=2, n_frames=900, folds=None, radar_fps=120.0):
    rows = []
    for s in range(1, n_subjects + 1):
        for t in range(1, trials + 1):
            f = (folds or {}).get(s, {})
            rows.append(
                {
                    "session": f"{dataset}_{s}_{t}",
                    "dataset": dataset,
                    "subject": str(s),
                    "trial": str(t),
                    "status": "ok",
                    "fold_split": f.get("0", ""),
                    "folds": json.dumps(f) if f else "",
                    "n_frames": n_frames,
                    "fps": 30.0,
                    "radar_fps": radar_fps,
                }
            )
    return pd.DataFrame(rows)


@settings(max_examples=40, deadline=None)
@given(
    subjects=st.sets(st.integers(1, 500), min_size=4, max_size=40),
    seed=st.integers(0, 2**31 - 1),
    protocol=st.sampled_from(["holdout", "auto"]),
)
def test_splits_deterministic_and_subject_disjoint(subjects, seed, protocol):
    df = manifest(n_subjects=0)
    rows = [
        {**manifest(n_subjects=1).iloc[0].to_dict(), "subject": str(s), "session": f"v_{s}_1"}
        for s in subjects
    ]
    df = pd.DataFrame(rows)
    a, meta = make_splits(df, seed, protocol)
    b, _ = make_splits(df.sample(frac=1, random_state=seed % 1000), seed, protocol)
    pd.testing.assert_frame_equal(a, b)
    assert a.groupby("subject").split.nunique().max() == 1
    parts = [set(meta["subjects"][k]) for k in ("train", "val", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert set().union(*parts) == {str(s) for s in subjects}
    assert all(parts)


def test_cross_protocol_source_train_val_target_test():
    src, tgt = manifest("equipleth", 10), manifest("physdrive", 4, radar_fps=20.0)
    splits, meta = make_splits(src, 1, "cross", target=tgt)
    assert set(splits.loc[splits.dataset == "physdrive", "split"]) == {"test"}
    assert set(splits.loc[splits.dataset == "equipleth", "split"]) == {"train", "val"}
    assert len(meta["subjects"]["val"]) == 2 and len(meta["subjects"]["train"]) == 8  # 4:1
    with pytest.raises(SplitError, match="target"):
        make_splits(src, 1, "cross")


def test_fold_protocol_picks_the_requested_fold():
    folds = {
        s: {"0": "test" if s in (1, 2) else "train", "1": "test" if s in (7,) else "train"}
        for s in range(1, 11)
    }
    df = manifest(folds=folds)
    _, m0 = make_splits(df, 0, "fold")
    _, m1 = make_splits(df, 0, "fold", fold=1)
    assert m0["subjects"]["test"] == ["1", "2"] and m1["subjects"]["test"] == ["7"]
    with pytest.raises(SplitError, match="fold 5"):
        make_splits(df, 0, "fold", fold=5)


def test_labeled_subjects_reproducible_and_sized():
    train = [str(s) for s in range(1, 11)]
    a = labeled_subjects(train, 0.4, seed=3)
    assert a == labeled_subjects(list(reversed(train)), 0.4, seed=3) and len(a) == 4
    assert labeled_subjects(train, 0.4, seed=4) != a or labeled_subjects(train, 0.4, seed=5) != a


def test_clips_windows_and_radar_index():
    df = manifest(n_subjects=5, n_frames=900)
    splits, meta = make_splits(df, 0, "holdout")
    clips, _ = make_clips(splits, df, seed=0, frames=256, stride=30)
    per = clips.groupby("session").size()
    assert (per == len(range(0, 900 - 256 + 1, 30))).all()  # 22 windows per 900-frame session
    assert (clips.radar_start == 4 * clips.start).all() and (clips.radar_frames == 1024).all()
    assert (clips.shift_frames == 0).all() and clips["clip"].tolist() == list(range(len(clips)))
    df20 = manifest("physdrive", 5, radar_fps=20.0)
    c20, _ = make_clips(make_splits(df20, 0)[0], df20, seed=0, frames=90, stride=45)
    assert (c20.radar_start == (c20.start * 2 / 3).round().astype(int)).all() and (
        c20.radar_frames == 60
    ).all()


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_shift_injection_rate(p):
    df = manifest(n_subjects=30, trials=2, n_frames=900)
    splits, meta = make_splits(df, 2, "holdout")
    clips, stats = make_clips(splits, df, seed=2, frames=256, stride=30, shift_prob=p, shift_frames=30)
    train = clips[clips.split == "train"]
    fits = train.start + 30 + 256 <= 900
    shifted = train.shift_frames > 0
    assert not (clips[clips.split != "train"].shift_frames > 0).any()  # only training clips
    assert not (shifted & ~fits).any() and set(train.shift_frames) <= {0, 30}
    assert (clips.radar_start == 4 * (clips.start + clips.shift_frames)).all()
    n = int(fits.sum())
    rate = shifted[fits].mean()
    assert abs(rate - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-12, (rate, p, n)
    assert stats["shifted"] == int(shifted.sum()) and stats["train_clips"] == len(train)
    again, _ = make_clips(splits, df, seed=2, frames=256, stride=30, shift_prob=p, shift_frames=30)
    pd.testing.assert_frame_equal(clips, again)


def test_write_splits_files_and_labeled_column(tmp_path):
    df = manifest(n_subjects=10)
    path = tmp_path / "equipleth_sessions.csv"
    df.to_csv(path, index=False)
    splits, meta = write_splits(
        path,
        tmp_path / "splits.csv",
        tmp_path / "splits.json",
        3,
        "holdout",
        clips_path=tmp_path / "clips.csv",
        labeled_frac=0.5,
        shift_prob=0.5,
    )
    clips = pd.read_csv(tmp_path / "clips.csv", dtype={"subject": str})
    on_disk = json.loads((tmp_path / "splits.json").read_text())
    assert on_disk["labeled_subjects"] == meta["labeled_subjects"] and len(meta["labeled_subjects"]) == 3
    train = clips[clips.split == "train"]
    assert set(train.loc[train.labeled, "subject"]) == set(meta["labeled_subjects"])
    assert clips[clips.split != "train"].labeled.all()
    assert on_disk["shift"]["shifted"] == int((clips.shift_frames > 0).sum()) > 0
    assert on_disk["sessions_sha256"] == on_disk["manifests"]["source"]["sha256"]
    assert on_disk["shift"]["seed"] == 3 and SyncShifts.from_meta(on_disk) == SyncShifts(3, 0.5, 30)


def _train_shifts(clips) -> dict[tuple[str, int], int]:
    train = clips[clips.split == "train"]
    return dict(zip(zip(train.session, train.start, strict=True), train.shift_frames, strict=True))


def test_shifts_reproducible_per_seed_and_the_same_for_every_window_length():
    df = manifest(n_subjects=10, trials=2, n_frames=600)
    splits, _ = make_splits(df, 2, "holdout")
    kw = dict(shift_prob=0.5, shift_frames=30)
    long = _train_shifts(make_clips(splits, df, seed=2, frames=256, stride=30, **kw)[0])
    assert long == _train_shifts(make_clips(splits, df, seed=2, frames=256, stride=30, **kw)[0])
    assert long != _train_shifts(make_clips(splits, df, seed=7, frames=256, stride=30, **kw)[0])
    assert 0 < sum(d > 0 for d in long.values()) < len(long)
    # A cpu-preset length (128 at stride 32) sees the same draw at every (session, start): windows that
    # start at the same frame and have room for the shift at both lengths are shifted alike.
    short = _train_shifts(make_clips(splits, df, seed=2, frames=128, stride=32, **kw)[0])
    both = [k for k in long if k in short and k[1] + 30 + 256 <= 600]
    assert len(both) >= 10 and all(long[k] == short[k] for k in both)
    # ... and each is the schedule's draw where the shift fits, 0 where it does not.
    schedule = SyncShifts(2, 0.5, 30)
    for (session, start), d in short.items():
        fits = start + 30 + 128 <= 600
        assert d == (30 if schedule.drawn(session, 600)[start] and fits else 0)


def test_session_windows_is_window_starts_plus_the_schedule():
    assert [s for s, _ in session_windows(900, 256, 30)] == window_starts(900, 256, 30)
    assert session_windows(300, 128, 100, flush=True) == [(0, 0), (100, 0), (172, 0)]
    everything = SyncShifts(seed=1, prob=1.0, frames=30)
    assert session_windows(300, 128, 100, everything, "s") == [(0, 30), (100, 30)]  # 100 + 30 + 128 <= 300
    assert session_windows(300, 128, 100, everything, "s", flush=True)[-1] == (172, 0)  # no room
    assert session_windows(300, 128, 100, SyncShifts(seed=1), "s") == session_windows(300, 128, 100)
    with pytest.raises(SplitError, match="shift probability"):
        SyncShifts(seed=1, prob=1.5)


def test_shift_schedule_from_split_metadata():
    assert SyncShifts.from_meta({"seed": 3}) == SyncShifts(0, 0.0, 30)  # no shift entry: no shifts
    assert SyncShifts.from_meta({"shift": {"prob": 0.2, "frames": 15, "seed": 4}}) == SyncShifts(4, 0.2, 15)
    with pytest.raises(SplitError, match="older `rpm split`.*--shift-prob 0.5"):
        SyncShifts.from_meta({"seed": 3, "shift": {"prob": 0.5, "frames": 30}}, "m/splits.json")
    with pytest.raises(SplitError, match="m/splits.json: .*shift probability"):
        SyncShifts.from_meta({"shift": {"prob": 2, "frames": 30, "seed": 1}}, "m/splits.json")
    with pytest.raises(SplitError, match="malformed"):
        SyncShifts.from_meta({"shift": {"prob": "often", "seed": 1}})
