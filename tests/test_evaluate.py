import math

import numpy as np
import pytest

from pipeline.spectrum import hr_from_psd
from train.evaluate import hr_metrics


@pytest.mark.parametrize("bpm", [48.0, 61.3, 75.0, 102.7, 150.0, 175.0])
def test_hr_of_sinusoid_within_half_bpm(bpm):
    t = np.arange(300) / 30.0
    x = np.sin(2 * np.pi * bpm / 60 * t + 0.3) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    assert abs(hr_from_psd(x, fs=30.0) - bpm) < 0.5


def test_hr_of_ppg_shape_with_harmonics():
    t = np.arange(900) / 30.0
    phase = 2 * np.pi * 72 / 60 * t
    ppg = (
        np.sin(phase)
        + 0.5 * np.sin(2 * phase + 1)
        + 0.25 * np.sin(3 * phase + 2)
        + 0.3 * np.sin(2 * np.pi * 0.25 * t)
    )
    assert abs(hr_from_psd(ppg) - 72.0) < 0.5


def test_metrics_against_hand_computed_values():
    est = np.array([70.0, 82.0, 95.0, 56.0])
    gt = np.array([72.0, 80.0, 90.0, 66.0])
    m = hr_metrics(est, gt)
    e = np.array([-2.0, 2.0, 5.0, -10.0])
    assert m["MAE"] == pytest.approx(19 / 4)
    assert m["RMSE"] == pytest.approx(math.sqrt((4 + 4 + 25 + 100) / 4))
    assert m["STD"] == pytest.approx(math.sqrt(((e - e.mean()) ** 2).mean()))
    assert m["r"] == pytest.approx(np.corrcoef(est, gt)[0, 1])
    assert m["within10"] == pytest.approx(75.0)  # 10/66 = 15 % is outside
    assert m["n"] == 4


def test_r_undefined_for_constant_prediction():
    assert math.isnan(hr_metrics(np.full(5, 70.0), np.arange(5) + 60.0)["r"])
