"""rf.pkl packet decoding: hand-built DCA1000 streams with known content."""

import pickle

import numpy as np
import pytest

from pipeline import dca1000, radar
from pipeline.dca1000 import (
    RfFormatError,
    decode_by_byte_count,
    decode_organizer,
    drop_and_shuffle,
    encode_capture,
    read_rf_pkl,
    write_rf_pkl,
)


def tone_frames(n_frames: int, bin_index: int, amplitude: float = 1000.0) -> np.ndarray:
    """(n, 256) complex ADC frames holding one beat tone at ``bin_index`` with a per-frame phase."""
    k = np.arange(256)
    phase = np.linspace(0, 3, n_frames)[:, None]
    return amplitude * np.exp(1j * (2 * np.pi * bin_index * k / 256 + phase))


def framed(n_frames: int) -> np.ndarray:
    """Frames whose every sample encodes (frame, sample) so misplaced bytes are detectable."""
    f = np.arange(n_frames)[:, None]
    k = np.arange(256)[None, :]
    return (f * 7 + 1) + 1j * (k - 128)


def test_padding_layout_and_signed_values():
    adc = np.array([[-5 + 3j] + [0] * 255])
    stream = dca1000.frames_to_stream(adc).view(np.int16)
    assert stream.size == 1024
    assert (stream[0], stream[1], stream[2], stream[3]) == (-5, 0, 3, 0)
    assert dca1000.frames_to_stream(adc)[0] == np.uint16(65531)  # signed samples stored as uint16


def test_packet_sizes_and_byte_counts():
    cap = encode_capture(tone_frames(10, 12), "2021-12-04T00:58:02.318791Z", "2021-12-04T00:58:32.323084Z")
    assert all(p.size == 728 for p in cap.payloads[:-1])
    assert cap.packet_nums[0] == 1 and np.all(np.diff(cap.packet_nums) == 1)
    assert np.array_equal(cap.byte_counts, np.arange(len(cap.payloads)) * 1456)


@pytest.mark.parametrize("bin_index", [6, 11, 19])
def test_known_tone_decodes_to_its_range_bin(tmp_path, bin_index):
    adc = tone_frames(40, bin_index)
    path = tmp_path / "rf.pkl"
    write_rf_pkl(path, encode_capture(adc, "a", "b"))
    decoded = decode_by_byte_count(read_rf_pkl(path))
    assert decoded.adc.shape == (40, 256) and decoded.valid.all()
    np.testing.assert_allclose(decoded.adc, np.rint(adc.real) + 1j * np.rint(adc.imag), atol=0)
    profiles = radar.range_fft(decoded.adc)
    assert radar.find_chest_bin(profiles) == bin_index
    iq = radar.iq_window(profiles, bin_index)
    assert iq.shape == (40, 2, 5)
    # the centre bin carries the tone: |FFT| = 256 * amplitude, scaled by 1/1.255e5
    np.testing.assert_allclose(np.hypot(iq[:, 0, 2], iq[:, 1, 2]), 256 * 1000 / radar.RF_SCALE, rtol=1e-3)


def test_organizer_matches_reference_example():
    """Organizer: 20 frames in 28 packets decode to 19; losing packets 5 and 20 keeps 5-12, 15-18."""
    cap = encode_capture(framed(20), "a", "b")
    cap = drop_and_shuffle(cap, np.arange(28))  # the 28 full packets (drop the short 29th)
    assert decode_organizer(cap).adc.shape[0] == 19
    lossy = drop_and_shuffle(cap, np.array([i for i in range(28) if i not in (5, 20)]))
    out = decode_organizer(lossy).adc
    frame_ids = ((out[:, 0].real - 1) / 7).astype(int).tolist()
    assert frame_ids == list(range(5, 13)) + list(range(15, 19))


def test_bytecount_keeps_alignment_through_loss_and_reordering():
    adc = framed(30)
    cap = encode_capture(adc, "a", "b")
    rng = np.random.default_rng(0)
    keep = np.array([i for i in range(len(cap.payloads)) if i not in (4, 17)])
    decoded = decode_by_byte_count(drop_and_shuffle(cap, rng.permutation(keep)))
    assert decoded.adc.shape[0] == 30
    assert decoded.lost_packets == 2
    lost = np.flatnonzero(~decoded.valid).tolist()
    # packet 4 spans bytes 5824..7280 -> frames 2, 3; packet 17 spans 24752..26208 -> frame 12
    assert lost == [2, 3, 12]
    good = decoded.valid
    np.testing.assert_array_equal(decoded.adc[good], adc[good].astype(np.complex64))


def test_fill_lost_frames_interpolates():
    iq = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((1, 2, 5), np.float32)
    valid = np.ones(10, bool)
    valid[3:5] = False
    broken = iq.copy()
    broken[3:5] = 0
    np.testing.assert_allclose(radar.fill_lost_frames(broken, valid), iq)


def test_not_a_pickle_names_file(tmp_path):
    path = tmp_path / "rf.pkl"
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(RfFormatError, match=r"rf\.pkl: not a readable pickle"):
        read_rf_pkl(path)


def test_wrong_tuple_names_problem(tmp_path):
    path = tmp_path / "rf.pkl"
    path.write_bytes(pickle.dumps(([], [])))
    with pytest.raises(RfFormatError, match="expected a 5-tuple"):
        read_rf_pkl(path)


def test_conflicting_byte_counts_are_refused():
    cap = encode_capture(framed(6), "a", "b")
    cap.byte_counts = cap.byte_counts.copy()
    cap.byte_counts[3] = cap.byte_counts[2]  # packet 3 claims packet 2's bytes
    with pytest.raises(RfFormatError, match="byte counts inconsistent"):
        decode_by_byte_count(cap)


def test_chest_iq_equals_full_profiles_then_window():
    rng = np.random.default_rng(5)
    adc = (rng.normal(size=(700, 256)) + 1j * rng.normal(size=(700, 256))).astype(np.complex64) * 300
    t = np.arange(256)
    adc += (2500 * np.exp(2j * np.pi * 9 * t / 256)).astype(np.complex64)  # energy in range bin 9
    valid = rng.random(700) > 0.2
    profiles = radar.range_fft(adc)
    chest = radar.find_chest_bin(profiles, valid)
    iq, got = radar.chest_iq(adc, valid, block=128)
    assert got == chest == 9
    np.testing.assert_array_equal(iq, radar.iq_window(profiles, chest))


def test_consuming_decode_releases_payloads_and_decodes_the_same():
    rng = np.random.default_rng(6)
    adc = (rng.integers(-2000, 2000, (40, 256)) + 1j * rng.integers(-2000, 2000, (40, 256))).astype(
        np.complex64
    )
    cap = encode_capture(adc, "s", "e")
    keep = np.sort(rng.choice(len(cap.payloads), len(cap.payloads) - 5, replace=False))
    lossy = drop_and_shuffle(cap, rng.permutation(keep))
    kept = drop_and_shuffle(cap, rng.permutation(keep))
    ref = decode_by_byte_count(kept)
    out = decode_by_byte_count(lossy, consume=True)
    assert all(p is None for p in lossy.payloads) and not out.valid.all()
    np.testing.assert_array_equal(out.valid, ref.valid)
    np.testing.assert_array_equal(out.adc, ref.adc)
