"""FMCW radar processing shared by the EquiPleth recipe and the synthetic generator.

AWR1443 profile used by EquiPleth: 77 GHz start, 60.012 MHz/us slope, 256 complex samples at
5 Msps, one chirp per frame at 120 Hz. Range bin size = fs * c / (2 * slope * N) = 0.04849 m
(with the reference code's c = 2.98e8).
"""

from __future__ import annotations

import numpy as np

START_FREQ_HZ = 77e9
SLOPE_HZ_PER_S = 60.012e12
ADC_RATE_HZ = 5e6
SPEED_OF_LIGHT = 2.98e8  # value used by the reference code for the bin size
RANGE_BIN_M = ADC_RATE_HZ * SPEED_OF_LIGHT / (SLOPE_HZ_PER_S * 2 * 256)
WAVELENGTH_M = 299_792_458.0 / START_FREQ_HZ
# Chest search window: bins 5..19 (~0.24-0.97 m); bin < 5 is the enclosure reflection.
CHEST_BIN_LO, CHEST_BIN_HI = 5, 20
IQ_HALF_WIDTH = 2  # 5-bin window r-2..r+2
RF_SCALE = 1.255e5  # divide range-FFT values by this to land roughly in [-1, 1]


def range_fft(adc: np.ndarray, block: int = 1024) -> np.ndarray:
    """(N, 256) complex ADC samples -> (N, 256) complex64 range profiles (no window, no DC removal).

    Computed ``block`` frames at a time, so numpy's complex128 result never exists for the whole capture.
    """
    adc = np.asarray(adc, dtype=np.complex64)
    out = np.empty(adc.shape, dtype=np.complex64)
    for i in range(0, adc.shape[0], block):
        out[i : i + block] = np.fft.fft(adc[i : i + block], axis=-1)
    return out


def find_chest_bin(profiles: np.ndarray, valid: np.ndarray | None = None) -> int:
    """Strongest range bin in [5, 20) summed over (valid) frames; one bin per recording."""
    mag = np.abs(profiles[:, CHEST_BIN_LO:CHEST_BIN_HI])
    if valid is not None:
        mag = mag[valid]
    return int(np.argmax(mag.sum(axis=0))) + CHEST_BIN_LO


def chest_iq(
    adc: np.ndarray, valid: np.ndarray | None = None, half_width: int = IQ_HALF_WIDTH, block: int = 4096
) -> tuple[np.ndarray, int]:
    """:func:`find_chest_bin` + :func:`iq_window` on ADC samples without the full range profiles.

    adc (N, 256) complex -> ((N, 2, 2*half_width+1) float32 [I, Q] / RF_SCALE, chest bin). The range
    FFT runs ``block`` frames at a time and keeps only the bins a chest window can use (3..21), so
    the largest array is the ADC input itself, not another (N, 256) complex one beside it.
    """
    lo, hi = CHEST_BIN_LO - half_width, CHEST_BIN_HI + half_width  # bins any window may touch
    n = adc.shape[0]
    near = np.empty((n, hi - lo), dtype=np.complex64)
    mag = np.zeros(CHEST_BIN_HI - CHEST_BIN_LO, dtype=np.float64)
    for i in range(0, n, block):
        prof = np.fft.fft(np.asarray(adc[i : i + block], dtype=np.complex64), axis=-1)[:, lo:hi]
        prof = prof.astype(np.complex64)  # as range_fft stores it
        near[i : i + block] = prof
        keep = slice(None) if valid is None else valid[i : i + block]
        mag += np.abs(prof[keep, half_width : half_width + mag.size]).sum(axis=0, dtype=np.float64)
    chest = int(np.argmax(mag)) + CHEST_BIN_LO
    window = near[:, chest - half_width - lo : chest + half_width + 1 - lo]
    out = np.empty((n, 2, 2 * half_width + 1), dtype=np.float32)
    out[:, 0] = window.real / RF_SCALE
    out[:, 1] = window.imag / RF_SCALE
    return out, chest


def iq_window(profiles: np.ndarray, center_bin: int, half_width: int = IQ_HALF_WIDTH) -> np.ndarray:
    """(N, 256) range profiles -> (N, 2, 2*half_width+1) float32 [I, Q] of bins around ``center_bin``.

    Bins outside the profile are zero-padded. Values are scaled by 1/RF_SCALE.
    """
    n, n_bins = profiles.shape
    width = 2 * half_width + 1
    out = np.zeros((n, 2, width), dtype=np.float32)
    for j, b in enumerate(range(center_bin - half_width, center_bin + half_width + 1)):
        if 0 <= b < n_bins:
            out[:, 0, j] = profiles[:, b].real / RF_SCALE
            out[:, 1, j] = profiles[:, b].imag / RF_SCALE
    return out


def fill_lost_frames(iq: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linearly interpolate I/Q over lost slow-time frames (edges held). iq: (N, ...) float."""
    if valid.all() or not valid.any():
        return iq
    t = np.arange(iq.shape[0])
    flat = iq.reshape(iq.shape[0], -1).copy()
    for c in range(flat.shape[1]):
        flat[~valid, c] = np.interp(t[~valid], t[valid], flat[valid, c])
    return flat.reshape(iq.shape)
