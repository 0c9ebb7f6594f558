"""The calibration bench's judgement (``bench/realism.py``): the target bands of issue 16 and the
session-level bootstrap that decides whether an ordering of difficulty holds beyond sampling noise.

The bench itself runs the real pipeline for tens of minutes; these tests check its arithmetic on rows
made here, so that a wrong band or an interval that ignores the session structure would fail."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "realism_bench", Path(__file__).resolve().parents[1] / "bench" / "realism.py"
)
realism = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(realism)


def test_bands_are_the_issues_factors_and_distances():
    pub = realism.PUBLISHED["equipleth"]["POS"]  # 4.64 / 15.07 / 0.68
    inside = {"MAE": 4.64 * 1.39, "RMSE": 15.07 / 1.39, "r": 0.68 - 0.14}
    assert realism.in_band("POS", inside, pub) == {"MAE": True, "RMSE": True, "r": True}
    outside = {"MAE": 4.64 * 1.41, "RMSE": 15.07 / 1.41, "r": 0.68 + 0.16}
    assert realism.in_band("POS", outside, pub) == {"MAE": False, "RMSE": False, "r": False}
    fft = realism.PUBLISHED["physdrive"]["FFT radar"]  # MAE 20.60, band 1.5x
    assert realism.in_band("FFT radar", {"MAE": 30.8}, fft) == {"MAE": True}
    assert realism.in_band("FFT radar", {"MAE": 31.0}, fft) == {"MAE": False}
    assert realism.in_band("CHROM", {"MAE": math.nan, "RMSE": 17.0, "r": 0.5}, pub)["MAE"] is False


def _rows(errors_by_condition: dict[str, list[list[float]]], seed: int = 1) -> list[dict]:
    """Rows as the bench makes them: one per window, sessions numbered per condition."""
    rows = []
    for cond, sessions in errors_by_condition.items():
        for k, errs in enumerate(sessions):
            for j, e in enumerate(errs):
                rows.append(
                    {
                        "seed": seed,
                        "session": f"{cond}_{k}",
                        "start": 30 * j,
                        "hr_true": 70.0,
                        "POS": 70.0 + e,
                        "illumination": cond,
                        "skin_type": 1,
                    }
                )
    return rows


def test_ordering_holds_only_beyond_session_noise():
    rng = np.random.default_rng(0)
    # Many sessions, clearly separated: the order holds and the interval excludes 0.
    clear = _rows(
        {
            "night": [list(20 + rng.normal(0, 2, 7)) for _ in range(20)],
            "noon": [list(5 + rng.normal(0, 2, 7)) for _ in range(20)],
        }
    )
    res = realism.ordering(clear, "POS", "illumination", "night", "noon")
    assert res["holds"] and res["ci95"][0] > 0 and res["sessions"] == [20, 20]
    assert res["difference"] == pytest.approx(15, abs=1.5)
    # The same mean gap carried by one failed session among many good ones: windows agree within a
    # session, so a window-level interval would call it significant; the session bootstrap does not.
    one_bad = _rows(
        {
            "night": [[60.0] * 7] + [[1.0] * 7 for _ in range(3)],
            "noon": [[1.0] * 7 for _ in range(4)],
        }
    )
    res = realism.ordering(one_bad, "POS", "illumination", "night", "noon")
    assert res["difference"] > 10 and not res["holds"], res
    # Reversed: does not hold.
    res = realism.ordering(clear, "POS", "illumination", "noon", "night")
    assert not res["holds"] and res["difference"] < 0
    # A missing condition gives NaN, not a verdict.
    res = realism.ordering(clear, "POS", "illumination", "dusk", "noon")
    assert math.isnan(res["difference"]) and not res["holds"]


def test_skin_orderings_group_fitzpatrick_types():
    rows = _rows({"a": [[10.0] * 3 for _ in range(12)], "b": [[1.0] * 3 for _ in range(12)]})
    for r in rows:
        r["skin_type"] = 6 if r["session"].startswith("a") else 2
    res = realism.ordering(rows, "POS", "skin", "dark", "light")
    assert res["holds"] and res["difference"] == pytest.approx(9.0)


def test_pooled_intervals_resample_sessions_and_mark_misses_within_noise():
    """The pooled r of a few sessions is noisy: the interval must be a session bootstrap (wide when a
    handful of sessions carry the signal) and a miss whose interval reaches the band is marked so."""
    rng = np.random.default_rng(1)

    def session_rows(k: int, hr: float, ok: bool) -> list[dict]:
        est = hr if ok else rng.uniform(50, 150)  # a failed session misses in all its windows
        return [
            {"seed": 1, "session": f"s{k}", "start": 30 * j, "hr_true": hr + j * 0.1, "POS": est + j * 0.1}
            for j in range(7)
        ]

    few = [r for k in range(12) for r in session_rows(k, rng.uniform(55, 95), k % 3 == 0)]
    many = [r for k in range(400) for r in session_rows(k, rng.uniform(55, 95), k % 3 == 0)]
    iv_few = realism.pooled_intervals(few, "POS")
    iv_many = realism.pooled_intervals(many, "POS")
    for iv in (iv_few, iv_many):
        assert set(iv) == {"MAE", "RMSE", "r"} and all(lo <= hi for lo, hi in iv.values())
    point = realism._metrics(many, "POS")
    assert iv_many["MAE"][0] <= point["MAE"] <= iv_many["MAE"][1]
    assert iv_many["r"][0] <= point["r"] <= iv_many["r"][1]
    # Windows of one session are not independent: 12 sessions give a far wider r interval than 400.
    assert np.diff(iv_few["r"])[0] > 2.5 * np.diff(iv_many["r"])[0]
    pub = {"MAE": 4.64, "RMSE": 15.07, "r": 0.68}
    near = {"MAE": [6.0, 7.0], "RMSE": [1.0, 2.0], "r": [0.30, 0.55]}  # MAE reaches 6.50, r 0.53
    assert realism.within_noise("POS", near, pub) == {"MAE": True, "RMSE": False, "r": True}
    assert realism._band({"MAE": False, "RMSE": False, "r": True}, {"MAE": True}) == "no (MAE~, RMSE)"


def test_sensitivity_row_is_judged_against_its_base_methods_published_figures():
    """The toolbox-band CHROM row is scored like CHROM (same published figures, same band) and is marked
    as not the project's method in the table."""
    assert realism.base_method("CHROM 0.7-2.5 Hz") == "CHROM" and realism.base_method("POS") == "POS"
    rng = np.random.default_rng(1)
    rows = []
    for k in range(12):
        for j in range(5):
            hr = float(rng.uniform(60, 100))
            rows.append(
                {
                    "seed": 1,
                    "session": f"s{k}",
                    "start": 30 * j,
                    "hr_true": hr,
                    "POS": hr + 1.0,
                    "CHROM": hr + 7.0,
                    "CHROM 0.7-2.5 Hz": hr + 30.0,  # far outside CHROM's MAE band on EquiPleth
                    "FFT radar": hr,
                    "skin_type": 1,
                    "illumination": "indoor",
                    "motion": "stationary",
                }
            )
    res = realism.summarise("equipleth", {1: rows})
    assert res["methods"]["CHROM"]["in_band"]["MAE"] is True  # 7 against 7.31
    assert res["methods"]["CHROM 0.7-2.5 Hz"]["in_band"]["MAE"] is False
    table = realism.markdown({"size": {}, "seeds": [1], "layouts": {"equipleth": res}, "orderings": []})
    assert "| equipleth | CHROM 0.7-2.5 Hz * |" in table and "Sensitivity row" in table


def test_rows_csv_keeps_every_layouts_fields(tmp_path):
    """``--rows``: one CSV line per window; EquiPleth and PhysDrive rows carry different condition fields,
    and both layouts' fields are columns (empty where a row lacks one)."""
    import csv

    rows = [
        {"layout": "equipleth", "seed": 1, "session": "v_1_1", "hr_true": 70.0, "POS": 71.0, "skin_type": 2},
        {
            "layout": "physdrive",
            "seed": 1,
            "session": "AFW1_AS",
            "hr_true": 80.0,
            "POS": 95.0,
            "illumination": "night",
        },
    ]
    realism.write_rows(tmp_path / "rows.csv", rows)
    with open(tmp_path / "rows.csv", newline="") as f:
        back = list(csv.DictReader(f))
    assert [r["session"] for r in back] == ["v_1_1", "AFW1_AS"]
    assert back[0]["illumination"] == "" and back[1]["skin_type"] == "" and back[1]["POS"] == "95.0"
