"""End to end through the real CLI: synth -> preprocess -> split -> train -> report.

Nothing is mocked: real PNG encode/decode, real rf.pkl packets, real Zarr v3, real dask, real
gradient steps. The data are tiny so the whole path runs in about a minute on 2 CPU cores.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest
import zarr
from typer.testing import CliRunner

from cli import app

pytestmark = pytest.mark.slow


def run(args, workdir):
    result = CliRunner().invoke(app, [*args, "--workdir", str(workdir)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("e2e")
    run(
        ["synth", "equipleth", "--subjects", "4", "--trials", "1", "--seconds", "12", "--crop-size", "64"], wd
    )
    run(["preprocess", "equipleth"], wd)
    run(["split", "--seed", "3"], wd)
    run(
        [
            "train",
            "--labeled-frac",
            "0.4",
            "--epochs",
            "1",
            "--teacher-epochs",
            "3",
            "--max-steps-per-epoch",
            "2",
        ],
        wd,
    )
    out = run(["report"], wd)
    return wd, out


def test_store_shapes_and_manifest(pipeline_dir):
    wd, _ = pipeline_dir
    manifest = pd.read_csv(wd / "manifests" / "equipleth_sessions.csv", dtype={"subject": str})
    assert len(manifest) == 4 and (manifest.status == "ok").all()
    truth = json.loads((wd / "data" / "raw" / "equipleth" / "synth_truth.json").read_text())
    root = zarr.open_group(str(wd / "data" / "equipleth.zarr"), mode="r")
    for row in manifest.itertuples():
        g = root[row.session]
        assert g.attrs["complete"] is True
        assert row.n_frames == 12 * 30 - 25  # PPG offset of 25 samples bounds the aligned length
        assert g["video"].shape == (row.n_frames, 128, 128, 3) and g["video"].dtype == np.uint8
        assert g["bvp"].shape == (row.n_frames,) and g["bvp"].dtype == np.float32
        assert g["radar"].shape == (4 * row.n_frames, 2, 5) and g["radar"].dtype == np.float32
        assert 5 <= row.radar_bin <= 19
    assert truth  # the sidecar exists and is not empty


def test_split_is_subject_disjoint(pipeline_dir):
    wd, _ = pipeline_dir
    splits = pd.read_csv(wd / "manifests" / "splits.csv", dtype={"subject": str})
    assert splits.groupby("subject").split.nunique().max() == 1
    assert set(splits.split) == {"train", "val", "test"}


def test_run_checkpoints_carry_config(pipeline_dir):
    import torch

    wd, _ = pipeline_dir
    for kind in ("teacher", "student", "baseline"):
        ckpt = torch.load(wd / "runs" / "default" / f"{kind}.pt", weights_only=True)
        assert ckpt["kind"] == kind and ckpt["config"]["labeled_frac"] == 0.4
    log = pd.read_csv(wd / "runs" / "default" / "log.csv")
    assert np.isfinite(log.train_loss).all() and set(log.stage) == {"teacher", "student", "baseline"}


def test_report_has_finite_metrics(pipeline_dir):
    wd, out = pipeline_dir
    results = json.loads((wd / "reports" / "metrics.json").read_text())["runs"]["default"]["results"]
    for protocol in ("release", "equipleth"):
        metrics = results["equipleth"][protocol]
        assert set(metrics) == {"student", "baseline", "teacher", "radar_fft", "POS", "CHROM", "GREEN"}
        for m in metrics.values():
            assert m["n"] > 0
            for key in ("MAE", "RMSE", "STD"):
                assert math.isfinite(m[key]) and m[key] >= 0
            assert m["r"] is None or -1 <= m["r"] <= 1  # null in JSON where Pearson is undefined
    md = (wd / "reports" / "report.md").read_text()
    assert "RF teacher" in md and "Radar FFT" in md and "POS" in md and "CHROM" in md
    assert (wd / "reports" / "figures" / "agreement_student.png").is_file()
    assert "MAE" in out
