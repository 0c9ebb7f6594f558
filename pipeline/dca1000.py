"""EquiPleth ``rf.pkl``: TI AWR1443 + DCA1000 UDP packet capture, encode and decode.

On-disk contract (``rf_files/<subj>_<trial>/rf.pkl``): a pickled 5-tuple
``(payloads, packet_nums, byte_counts, start_time, end_time)``

* ``payloads``: list of 1-D uint16 arrays in *arrival* order, normally 728 values (1456 B) each;
* ``packet_nums``: DCA1000 sequence numbers (int), consecutive when nothing was lost;
* ``byte_counts``: payload bytes the DCA1000 had sent *before* this packet (int, 48-bit);
* ``start_time`` / ``end_time``: UTC ISO-8601 strings with a trailing ``Z`` (informational only).

The file is untrusted: :func:`read_rf_pkl` unpickles it with :mod:`pipeline.safe_pickle` (builtin
containers, numbers, strings and numpy arrays only) and checks every field's type and range.

The payload is one continuous byte stream of radar frames, 2048 B (1024 values) each: one chirp,
one RX, 256 complex ADC samples. The samples are signed int16 stored as uint16; within a frame,
ADC sample k is ``v[4k] + 1j * v[4k+2]`` and ``v[4k+1]``, ``v[4k+3]`` are padding.

Two decoders are provided:

* :func:`decode_by_byte_count` (the default in ``rpm``): every payload is placed at its absolute
  byte offset, so frame ``f`` is always radar frame ``f`` since capture start, lost packets
  leave *marked* holes (``valid`` mask) instead of silently shortening slow time, and the
  index alignment radar frame ``4t`` <-> video frame ``t`` survives packet loss and reordering.
* :func:`decode_organizer`: the reference EquiPleth/RPM-Distill ``Organizer`` behaviour, kept for
  comparability: packets are never re-sorted, everything before the first sequence gap is
  discarded, segments of <= 2 packets are dropped and no placeholder frames are inserted.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import safe_pickle
from pipeline.errors import RpmError

SAMPLES_PER_CHIRP = 256  # complex ADC samples per chirp (fast time)
VALUES_PER_FRAME = 4 * SAMPLES_PER_CHIRP  # 1024 uint16 values = 2048 B per radar frame
BYTES_PER_FRAME = 2 * VALUES_PER_FRAME
VALUES_PER_PACKET = 728  # 1456 B UDP payload
BYTES_PER_PACKET = 2 * VALUES_PER_PACKET
RADAR_FPS = 120.0  # slow-time frame rate (frame period 8.333 ms)
# decode_by_byte_count refuses a capture whose byte counts span more than this many times the bytes
# that arrived (> 87.5 % lost): such byte counts are corrupt, and the stream would not fit in memory.
MAX_STREAM_TO_RECEIVED = 8


class RfFormatError(RpmError, ValueError):
    """An ``rf.pkl`` that cannot be decoded; the message names the file and the problem."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = str(path) if path is not None else "<rf capture>"
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class RfCapture:
    """A parsed ``rf.pkl`` (fields as on disk, arrival order kept)."""

    payloads: list[np.ndarray]
    packet_nums: np.ndarray  # (P,) int64
    byte_counts: np.ndarray  # (P,) int64
    start_time: str
    end_time: str
    path: str | None = None

    def to_tuple(self) -> tuple:
        return (
            [np.asarray(p, dtype=np.uint16) for p in self.payloads],
            [int(n) for n in self.packet_nums],
            [int(b) for b in self.byte_counts],
            self.start_time,
            self.end_time,
        )


@dataclass
class DecodedRadar:
    """Decoded slow-time radar frames.

    adc: (N, 256) complex64 ADC samples (raw int16 units), zeros where a frame was lost.
    valid: (N,) bool, True where every byte of the frame arrived.
    lost_packets: number of sequence numbers missing between the first and last packet.
    discontinuities: number of arrival-order positions where the sequence number does not step by 1.
    """

    adc: np.ndarray
    valid: np.ndarray
    lost_packets: int
    discontinuities: int


# --------------------------------------------------------------------------- encode


def frames_to_stream(adc: np.ndarray) -> np.ndarray:
    """(N, 256) complex ADC samples in int16 range -> flat uint16 stream of N*1024 values."""
    adc = np.asarray(adc)
    if adc.ndim != 2 or adc.shape[1] != SAMPLES_PER_CHIRP:
        raise ValueError(f"adc must be (N, {SAMPLES_PER_CHIRP}) complex, got {adc.shape}")
    real = np.clip(np.rint(adc.real), -32768, 32767).astype(np.int16).ravel()
    imag = np.clip(np.rint(adc.imag), -32768, 32767).astype(np.int16).ravel()
    stream = np.zeros(adc.shape[0] * VALUES_PER_FRAME, dtype=np.int16)
    stream[0::4] = real
    stream[2::4] = imag
    return stream.view(np.uint16)


def encode_capture(
    adc: np.ndarray, start_time: str, end_time: str, first_packet_num: int = 1, whole_packets: bool = False
) -> RfCapture:
    """Packetise (N, 256) complex ADC frames the way the DCA1000 streams them (no loss).

    Every packet carries 728 values except possibly a shorter last one. ``whole_packets=True``
    models a capture stopped on a time limit, as the real EquiPleth captures are (the released
    example holds 5110 packets of exactly 728 values): the trailing partial packet is not sent, so
    the stream ends inside the last radar frame and every payload holds 728 values.
    """
    stream = frames_to_stream(adc)
    if whole_packets:
        stream = stream[: stream.size // VALUES_PER_PACKET * VALUES_PER_PACKET]
        if stream.size == 0:
            raise ValueError(f"adc holds fewer than {VALUES_PER_PACKET} values: no whole packet")
    payloads = [stream[i : i + VALUES_PER_PACKET].copy() for i in range(0, stream.size, VALUES_PER_PACKET)]
    n = len(payloads)
    return RfCapture(
        payloads=payloads,
        packet_nums=np.arange(first_packet_num, first_packet_num + n, dtype=np.int64),
        byte_counts=np.arange(n, dtype=np.int64) * BYTES_PER_PACKET,
        start_time=start_time,
        end_time=end_time,
    )


def drop_and_shuffle(capture: RfCapture, keep: np.ndarray) -> RfCapture:
    """A capture holding only packets ``keep`` (indices into arrival order), in that order.

    Models UDP loss (indices missing) and reordering (indices permuted).
    """
    keep = np.asarray(keep, dtype=np.int64)
    return RfCapture(
        payloads=[capture.payloads[i] for i in keep],
        packet_nums=capture.packet_nums[keep],
        byte_counts=capture.byte_counts[keep],
        start_time=capture.start_time,
        end_time=capture.end_time,
    )


def write_rf_pkl(path: str | Path, capture: RfCapture) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".partial")
    with open(tmp, "wb") as f:
        pickle.dump(capture.to_tuple(), f, protocol=4)
    tmp.replace(path)


# --------------------------------------------------------------------------- read


def read_rf_pkl(path: str | Path) -> RfCapture:
    """Load and validate an ``rf.pkl``; raises :class:`RfFormatError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise RfFormatError(path, "file not found")
    try:
        obj = safe_pickle.load_pickle(path)  # untrusted input: builtin containers and numpy arrays only
    except safe_pickle.UnsafePickleError as exc:
        raise RfFormatError(path, exc.problem) from None
    except Exception as exc:  # truncated or not a pickle at all
        raise RfFormatError(path, f"not a readable pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, (tuple, list)) or len(obj) != 5:
        kind = type(obj).__name__
        n = len(obj) if hasattr(obj, "__len__") else "?"
        raise RfFormatError(
            path,
            f"expected a 5-tuple (payloads, packet_nums, byte_counts, start, end), got {kind} of length {n}",
        )
    payloads, packet_nums, byte_counts, start_time, end_time = obj
    if not all(isinstance(x, (list, tuple, np.ndarray)) for x in (payloads, packet_nums, byte_counts)):
        kinds = ", ".join(type(x).__name__ for x in (payloads, packet_nums, byte_counts))
        raise RfFormatError(path, f"payloads, packet numbers and byte counts must be sequences, got {kinds}")
    if len(payloads) == 0:
        raise RfFormatError(path, "capture holds no packets")
    if not (len(payloads) == len(packet_nums) == len(byte_counts)):
        raise RfFormatError(
            path,
            f"field lengths differ: {len(payloads)} payloads, {len(packet_nums)} packet "
            f"numbers, {len(byte_counts)} byte counts",
        )
    try:
        pn = _integers(packet_nums, "packet numbers")
        bc = _integers(byte_counts, "byte counts")
        payloads = [_payload(p, i) for i, p in enumerate(payloads)]
    except (TypeError, ValueError, OverflowError) as exc:
        raise RfFormatError(path, f"packet fields malformed: {exc}") from None
    if (bc < 0).any() or (bc % 2).any() or (bc >= 2**48).any():
        raise RfFormatError(path, "byte counts must be even, non-negative 48-bit numbers (16-bit samples)")
    return RfCapture(payloads, pn, bc, str(start_time), str(end_time), path=str(path))


def _integers(values, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ValueError(f"{what} must be a flat list of integers (got dtype {arr.dtype}, shape {arr.shape})")
    return arr.astype(np.int64)


def _payload(p, i: int) -> np.ndarray:
    arr = np.asarray(p)
    if arr.dtype == np.uint16:
        return arr.ravel()
    if arr.size and (arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() > 0xFFFF):
        raise ValueError(f"payload #{i} is not 16-bit unsigned samples ({arr.dtype})")
    return arr.astype(np.uint16).ravel()


# --------------------------------------------------------------------------- decode


def stream_to_frames(stream: np.ndarray) -> np.ndarray:
    """Flat uint16 stream (multiple of 1024 values) -> (N, 256) complex64 ADC samples."""
    signed = np.asarray(stream, dtype=np.uint16).view(np.int16).reshape(-1, SAMPLES_PER_CHIRP, 4)
    # Samples are signed int16 stored as uint16; v[4k+1] and v[4k+3] are padding. Filled in place:
    # no complex128 temporaries (a long capture's ADC samples are the largest array in a session).
    out = np.empty(signed.shape[:2], dtype=np.complex64)
    out.real = signed[:, :, 0]
    out.imag = signed[:, :, 2]
    return out


def _count_lost(pn: np.ndarray) -> tuple[int, int]:
    discontinuities = int(np.count_nonzero(np.diff(pn) != 1))
    unique = np.unique(pn)
    lost = int(unique[-1] - unique[0] + 1 - unique.size)
    return lost, discontinuities


def decode_by_byte_count(capture: RfCapture, consume: bool = False) -> DecodedRadar:
    """Place each payload at ``byte_count / 2`` in the absolute stream and cut 2048-B frames.

    Frame f covers stream bytes [2048 f, 2048 (f + 1)) since capture start; a frame is valid only
    if all of its bytes arrived. The partial frame at the end of the stream is dropped.
    Raises :class:`RfFormatError` if two packets claim overlapping bytes with different content.
    ``consume=True`` releases each payload (sets it to None in ``capture.payloads``) once placed,
    so a long capture is not held twice; the capture cannot be decoded again afterwards.
    """
    pn, bc = capture.packet_nums, capture.byte_counts
    sizes = np.array([p.size for p in capture.payloads], dtype=np.int64)
    offsets = bc // 2
    end_values = int((offsets + sizes).max())
    n_frames = end_values // VALUES_PER_FRAME
    if n_frames == 0:
        raise RfFormatError(
            capture.path,
            f"capture holds {end_values} values, less than one {VALUES_PER_FRAME}-value radar frame",
        )
    received = int(sizes.sum())
    if end_values > MAX_STREAM_TO_RECEIVED * received + 2 * VALUES_PER_PACKET:
        raise RfFormatError(
            capture.path,
            f"byte counts imply a {2 * end_values}-byte stream but only {2 * received} bytes arrived "
            f"(over {1 - 1 / MAX_STREAM_TO_RECEIVED:.0%} lost): byte counts corrupt or capture unusable",
        )
    stream = np.zeros(n_frames * VALUES_PER_FRAME, dtype=np.uint16)
    valid = np.ones(n_frames, dtype=bool)
    order = np.argsort(offsets, kind="stable")
    prev_end, prev_idx = -1, -1
    reach = 0  # the stream is covered up to here by the packets placed so far (in offset order)

    def uncovered(lo_value: int, hi_value: int) -> None:  # values [lo, hi) arrived in no packet
        if hi_value > lo_value:
            valid[lo_value // VALUES_PER_FRAME : (hi_value - 1) // VALUES_PER_FRAME + 1] = False

    for i in order:
        lo = int(offsets[i])
        hi = min(lo + int(sizes[i]), stream.size)
        if lo < prev_end:
            overlap_hi = min(prev_end, hi)
            same = np.array_equal(stream[lo:overlap_hi], capture.payloads[i][: overlap_hi - lo])
            if not same:
                raise RfFormatError(
                    capture.path,
                    f"byte counts inconsistent: packets #{pn[prev_idx]} and #{pn[i]} claim overlapping bytes "
                    f"{2 * lo}..{2 * overlap_hi} with different content",
                )
        if hi > lo:
            stream[lo:hi] = capture.payloads[i][: hi - lo]
            uncovered(reach, min(lo, stream.size))
            reach = max(reach, hi)
        if consume:
            capture.payloads[i] = None
        if lo + sizes[i] > prev_end:
            prev_end, prev_idx = int(lo + sizes[i]), int(i)
    # Packet numbers and byte counts must agree in order: a later packet cannot have sent fewer bytes.
    by_num = np.argsort(pn, kind="stable")
    if (np.diff(bc[by_num]) < 0).any():
        raise RfFormatError(
            capture.path, "byte counts inconsistent: they decrease while packet numbers increase"
        )
    uncovered(reach, stream.size)
    lost, disc = _count_lost(pn)
    adc = stream_to_frames(stream)
    adc[~valid] = 0
    return DecodedRadar(adc=adc, valid=valid, lost_packets=lost, discontinuities=disc)


def no_complete_frame_reason(capture: RfCapture) -> str:
    """Why :func:`decode_by_byte_count` found no complete radar frame in ``capture`` (call it before a
    consuming decode): most often packets of another size than the byte counts step by, so that every
    frame has holes."""
    sizes = np.array([p.size for p in capture.payloads], dtype=np.int64)
    byte_counts = capture.byte_counts
    size = int(np.median(sizes))
    steps = np.diff(np.sort(byte_counts))
    step = int(np.median(steps[steps > 0])) // 2 if (steps > 0).any() else size
    if step != size:
        return (
            f"no complete radar frame: packets carry {size} values but the byte counts advance by {step} "
            f"values per packet (packets of the wrong size; the DCA1000 sends {VALUES_PER_PACKET})"
        )
    return "no complete radar frame: every frame lost bytes"


def _organizer_segment(
    stream: np.ndarray, bc: np.ndarray, cum: np.ndarray, start: int, end: int
) -> np.ndarray:
    """Reference ``Organizer.get_frames``: frames cut from packet ``start`` up to (not incl.) ``end``.

    ``cum[i]``: stream values before arrival position i. The reference assumes 728 values per packet
    (``start * 728``); ``cum`` is the same whenever that holds and stays right when a short packet
    arrives early.
    """
    if bc[start] == 0:
        offset, bytes_left = int(cum[start]), 0
    else:
        # Tail of the frame already in progress; a non-zero multiple of 2048 skips one whole frame.
        bytes_left = int((bc[start] // BYTES_PER_FRAME + 1) * BYTES_PER_FRAME - bc[start])
        offset = bytes_left // 2 + int(cum[start])
    n_frames = int((bc[end] - bc[start] - bytes_left) // BYTES_PER_FRAME)
    if n_frames <= 0:
        return np.zeros((0, VALUES_PER_FRAME), dtype=np.uint16)
    seg = stream[offset : offset + n_frames * VALUES_PER_FRAME]
    if seg.size < n_frames * VALUES_PER_FRAME:  # short last frame is zero-padded
        seg = np.concatenate([seg, np.zeros(n_frames * VALUES_PER_FRAME - seg.size, dtype=np.uint16)])
    return seg.reshape(n_frames, VALUES_PER_FRAME)


def decode_organizer(capture: RfCapture) -> DecodedRadar:
    """Decode exactly as the EquiPleth / RPM-Distill ``Organizer`` does (see module docstring)."""
    pn, bc = capture.packet_nums, capture.byte_counts
    # The reference flattens all payloads assuming 728 values each.
    stream = np.concatenate([p for p in capture.payloads]).astype(np.uint16)
    last = len(capture.payloads) - 1
    disc = np.flatnonzero(np.diff(pn) != 1)
    if disc.size == 0:
        segments = [(0, last)]
    elif disc.size == 1:
        segments = [(int(disc[0]) + 1, last)]
    else:
        positions = [int(p) for p in disc] + [last]
        segments = [(a + 1, b) for a, b in zip(positions[:-1], positions[1:], strict=True) if b - a > 2]
    cum = np.concatenate([[0], np.cumsum([p.size for p in capture.payloads])])
    for s, e in segments:
        # consecutive packet numbers: the byte counts must advance by exactly the payloads between them
        if bc[e] - bc[s] != 2 * (cum[e] - cum[s]):
            raise RfFormatError(
                capture.path,
                f"byte counts inconsistent: packets #{pn[s]}..#{pn[e]} are consecutive but their byte "
                f"counts advance by {bc[e] - bc[s]}, not the {2 * (cum[e] - cum[s])} bytes sent between them",
            )
    parts = [_organizer_segment(stream, bc, cum, s, e) for s, e in segments]
    frames = np.concatenate(parts) if parts else np.zeros((0, VALUES_PER_FRAME), dtype=np.uint16)
    if frames.shape[0] == 0:
        raise RfFormatError(capture.path, "organizer decoding produced no radar frames")
    lost, n_disc = _count_lost(pn)
    adc = stream_to_frames(frames.ravel())
    return DecodedRadar(
        adc=adc, valid=np.ones(adc.shape[0], dtype=bool), lost_packets=lost, discontinuities=n_disc
    )


DECODERS = {"bytecount": decode_by_byte_count, "organizer": decode_organizer}


def decode_capture(capture: RfCapture, method: str = "bytecount", consume: bool = False) -> DecodedRadar:
    """Decode with ``method`` (``bytecount`` or ``organizer``); ``consume`` as in
    :func:`decode_by_byte_count` (the organizer decoder ignores it)."""
    try:
        decoder = DECODERS[method]
    except KeyError:
        raise ValueError(f"unknown rf decoder {method!r}; choose one of {sorted(DECODERS)}") from None
    return decoder(capture, consume=consume) if method == "bytecount" else decoder(capture)
