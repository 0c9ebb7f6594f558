"""End to end across datasets through the real CLI: train on synthetic EquiPleth, test on synthetic
PhysDrive (the paper's cross-dataset protocol). Nothing is mocked; the data are tiny (about 90 s on
2 CPU cores). The radar teacher cannot read PhysDrive's radar layout, so the report must say it was
not evaluated rather than fail or invent a number."""

import json
import math

import pandas as pd
import pytest
from test_e2e import run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cross_dir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("cross")
    run(["synth", "physdrive", "--subjects", "2", "--seconds", "12"], wd)
    run(
        ["synth", "equipleth", "--subjects", "4", "--trials", "1", "--seconds", "12", "--crop-size", "64"], wd
    )
    run(["preprocess", "physdrive"], wd)
    run(["preprocess", "equipleth"], wd)
    run(
        ["split", "--seed", "3", "--protocol", "cross", "--dataset", "equipleth", "--target", "physdrive"], wd
    )
    train = [
        "train",
        "--labeled-frac",
        "0.4",
        "--epochs",
        "1",
        "--teacher-epochs",
        "2",
        "--max-steps-per-epoch",
        "2",
    ]
    run(train, wd)
    out = run(["report"], wd)
    return wd, out


def test_cross_split_trains_on_the_source_and_tests_on_all_of_the_target(cross_dir):
    wd, _ = cross_dir
    splits = pd.read_csv(wd / "manifests" / "splits.csv", dtype={"subject": str})
    target = pd.read_csv(wd / "manifests" / "physdrive_sessions.csv", dtype={"subject": str})
    assert set(splits[splits.split.isin(["train", "val"])].dataset) == {"equipleth"}
    test = splits[splits.split == "test"]
    assert set(test.dataset) == {"physdrive"}
    assert sorted(test.session) == sorted(target[target.status == "ok"].session) and len(test) == 4


def test_report_evaluates_the_video_models_on_the_target_and_says_why_not_the_teacher(cross_dir):
    wd, out = cross_dir
    run = json.loads((wd / "reports" / "metrics.json").read_text())["runs"]["default"]
    assert run["config"]["dataset"] == "equipleth" and set(run["results"]) == {"physdrive"}
    for protocol in ("release", "equipleth"):
        metrics = run["results"]["physdrive"][protocol]
        # no teacher row; the training-free radar FFT reads the target's own radar
        assert set(metrics) == {"student", "baseline", "radar_fft", "POS", "CHROM", "GREEN"}
        for m in metrics.values():
            assert m["n"] > 0 and all(math.isfinite(m[k]) and m[k] >= 0 for k in ("MAE", "RMSE", "STD"))
    md = (wd / "reports" / "report.md").read_text()
    assert "| full | default | 3 | equipleth | physdrive | 0.4 | 128 |" in md
    assert (
        "RF teacher (radar) not evaluated on physdrive: it takes 10 radar channels and physdrive has 16 "
        "(trained on equipleth)." in md
    )
    assert "physdrive MAE" in md and "MAE" in out
