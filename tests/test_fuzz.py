"""Property tests (hypothesis): the rf.pkl decoders under packet loss and reordering, rf.pkl parsing of
arbitrary content, radar I/Q extraction, and the subject split.

Every radar frame built here encodes its own index (real part 3 f + 1, imaginary part k - 128 for
sample k), so a frame assembled from the wrong bytes cannot pass for a real one.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import dca1000, radar
from pipeline.dca1000 import (
    BYTES_PER_FRAME,
    BYTES_PER_PACKET,
    RfFormatError,
    decode_by_byte_count,
    decode_organizer,
    drop_and_shuffle,
    encode_capture,
)
from pipeline.split import make_splits, train_val_subjects

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def indexed_frames(n: int) -> np.ndarray:
    f = np.arange(n)[:, None]
    k = np.arange(256)[None, :]
    return (3 * f + 1) + 1j * (k - 128)


def frame_index(adc_row: np.ndarray) -> int | None:
    """The original index a decoded frame encodes, or None if its bytes are not one whole frame."""
    re = adc_row.real
    if not (re == re[0]).all() or not np.array_equal(adc_row.imag, np.arange(256) - 128.0):
        return None
    f, rem = divmod(int(re[0]) - 1, 3)
    return f if rem == 0 and f >= 0 else None


@st.composite
def lossy_captures(draw):
    """(original frame count, capture with packets lost and reordered, kept packet indices)."""
    n_frames = draw(st.integers(1, 24))
    cap = encode_capture(indexed_frames(n_frames), "a", "b", first_packet_num=draw(st.integers(0, 5)))
    n = len(cap.payloads)
    keep = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    kept = [i for i in range(n) if keep[i]] or [draw(st.integers(0, n - 1))]
    order = draw(st.permutations(kept)) if draw(st.booleans()) else kept
    return n_frames, drop_and_shuffle(cap, np.array(order, dtype=np.int64)), np.array(sorted(kept))


def covered_frames(cap: dca1000.RfCapture, kept: np.ndarray, n_out: int) -> np.ndarray:
    """Frames whose every byte is in a kept packet (computed from the original packetisation)."""
    covered = np.zeros(n_out * BYTES_PER_FRAME, dtype=bool)
    for i in kept:
        lo = int(i) * BYTES_PER_PACKET
        covered[lo : lo + BYTES_PER_PACKET] = True
    return covered.reshape(n_out, BYTES_PER_FRAME).all(axis=1)


@FUZZ
@given(lossy_captures())
def test_bytecount_decoder_under_loss_and_reordering(case):
    n_frames, cap, kept = case
    sizes = np.array([p.size for p in cap.payloads])
    end_values = int((cap.byte_counts // 2 + sizes).max())
    try:
        out = decode_by_byte_count(cap)
    except RfFormatError as exc:
        if "less than one" in str(exc):
            assert end_values < 1024
        else:  # most of the stream lost: refused rather than a huge, mostly empty stream
            assert "bytes arrived" in str(exc) and end_values > 8 * sizes.sum()
        return
    # the frame count follows from the byte counts: every whole frame up to the last byte received
    assert out.adc.shape == (end_values // 1024, 256) and out.adc.shape[0] <= n_frames
    np.testing.assert_array_equal(out.valid, covered_frames(cap, kept, out.adc.shape[0]))
    for j in range(out.adc.shape[0]):
        if out.valid[j]:
            assert frame_index(out.adc[j]) == j  # frame j is radar frame j, from its own bytes
        else:
            assert not out.adc[j].any()  # a frame with a lost byte is marked and zeroed
    pn = np.sort(cap.packet_nums)
    assert out.lost_packets == int(pn[-1] - pn[0] + 1 - pn.size)


@FUZZ
@given(lossy_captures())
def test_organizer_decoder_never_returns_a_frame_from_the_wrong_bytes(case):
    n_frames, cap, kept = case
    try:
        out = decode_organizer(cap)
    except RfFormatError as exc:
        assert "no radar frames" in str(exc)
        return
    assert out.valid.all() and 1 <= out.adc.shape[0] <= n_frames
    got = [frame_index(row) for row in out.adc]
    assert None not in got, "a frame spliced from the wrong bytes"
    assert got == sorted(set(got))  # increasing, no duplicates
    received = covered_frames(cap, kept, n_frames)
    assert all(received[f] for f in got)  # only frames whose bytes all arrived


@FUZZ
@given(st.integers(2, 24), st.integers(0, 4))
def test_decoders_agree_without_loss(n_frames, first):
    cap = encode_capture(indexed_frames(n_frames), "a", "b", first_packet_num=first)
    full = decode_by_byte_count(cap)
    assert full.valid.all() and full.adc.shape[0] == n_frames
    assert [frame_index(r) for r in full.adc] == list(range(n_frames))
    org = decode_organizer(cap)  # the reference counts the bytes before the last packet only
    assert org.adc.shape[0] == int(cap.byte_counts[-1] - cap.byte_counts[0]) // BYTES_PER_FRAME
    assert [frame_index(r) for r in org.adc] == list(range(org.adc.shape[0]))


_leaf = st.one_of(
    st.none(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.binary(max_size=8),
    st.builds(lambda n: np.arange(n, dtype=np.uint16), st.integers(0, 2000)),
)
_value = st.recursive(
    _leaf, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner), max_leaves=12
)


@FUZZ
@given(st.one_of(st.tuples(*[_value] * 5), _value, st.binary(max_size=64)))
def test_read_rf_pkl_of_anything_raises_only_rf_format_error(tmp_path_factory, obj):
    path = tmp_path_factory.mktemp("rf") / "rf.pkl"
    path.write_bytes(obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=4))
    try:
        cap = dca1000.read_rf_pkl(path)
    except RfFormatError as exc:
        assert str(path) in str(exc)
        return
    for method in dca1000.DECODERS:
        try:
            out = dca1000.decode_capture(cap, method)
        except RfFormatError:
            continue
        assert out.adc.shape[0] == out.valid.shape[0] >= 1


@FUZZ
@given(
    st.integers(1, 40),
    st.integers(0, 2**32 - 1),
    st.floats(0.0, 1.0),
)
def test_radar_iq_extraction_never_crashes(n, seed, lost_frac):
    rng = np.random.default_rng(seed)
    adc = (rng.normal(size=(n, 256)) + 1j * rng.normal(size=(n, 256))) * rng.choice([0.0, 1.0, 3e4])
    valid = rng.random(n) >= lost_frac
    adc[~valid] = 0
    profiles = radar.range_fft(adc)
    chest = radar.find_chest_bin(profiles, valid)
    assert radar.CHEST_BIN_LO <= chest < radar.CHEST_BIN_HI
    iq = radar.fill_lost_frames(radar.iq_window(profiles, chest), valid)
    assert iq.shape == (n, 2, 5) and iq.dtype == np.float32 and np.isfinite(iq).all()
    if valid.any():  # real frames are kept as they are
        np.testing.assert_array_equal(iq[valid], radar.iq_window(profiles, chest)[valid])


@st.composite
def session_tables(draw):
    n_subjects = draw(st.integers(3, 40))
    names = draw(
        st.lists(
            st.one_of(st.integers(0, 500).map(str), st.text("ABCXYZ", min_size=1, max_size=4)),
            min_size=n_subjects,
            max_size=n_subjects,
            unique=True,
        )
    )
    rows = []
    for s in names:
        for t in range(draw(st.integers(1, 3))):
            status = "ok" if t == 0 or draw(st.booleans()) else "failed"
            rows.append({"session": f"{s}_{t}", "dataset": "equipleth", "subject": s, "status": status})
    return pd.DataFrame(rows)


@FUZZ
@given(session_tables(), st.integers(0, 2**31 - 1))
def test_split_subjects_disjoint_and_four_to_one(sessions, seed):
    splits, meta = make_splits(sessions, seed, protocol="holdout")
    by = splits.groupby("subject").split.nunique()
    assert (by == 1).all()  # every subject in exactly one split
    subj = meta["subjects"]
    assert not (set(subj["train"]) & set(subj["val"]) or set(subj["train"]) & set(subj["test"]))
    assert not set(subj["val"]) & set(subj["test"])
    ok_subjects = set(sessions.loc[sessions.status == "ok", "subject"])
    assert set(subj["train"]) | set(subj["val"]) | set(subj["test"]) == ok_subjects
    assert set(splits.session) == set(sessions.loc[sessions.status == "ok", "session"])
    n_train, n_val = len(subj["train"]), len(subj["val"])
    assert abs(n_val - (n_train + n_val) / 5) <= 1  # 4:1 within one subject
    assert n_train >= 1 and n_val >= 1


@FUZZ
@given(st.lists(st.integers(0, 10_000).map(str), min_size=2, max_size=60, unique=True), st.integers(0, 99))
def test_train_val_is_a_seeded_partition(subjects, seed):
    train, val = train_val_subjects(subjects, seed)
    assert sorted(train + val, key=str) == sorted(subjects, key=str) and not set(train) & set(val)
    assert abs(len(val) - len(subjects) / 5) <= 1
    assert (train, val) == train_val_subjects(list(reversed(subjects)), seed)


def test_organizer_with_the_short_last_packet_arriving_early():
    """A case of the property above: the reference's ``start * 728`` offsets shift every later frame
    when the short final packet arrives before others; offsets from the payload sizes do not."""
    cap = encode_capture(indexed_frames(20), "a", "b")
    n = len(cap.payloads)
    assert cap.payloads[-1].size < dca1000.VALUES_PER_PACKET
    out = decode_organizer(drop_and_shuffle(cap, np.array([0, 1, 2, 3, n - 1, *range(4, n - 1)])))
    assert [frame_index(r) for r in out.adc] == list(range(3, 19))
