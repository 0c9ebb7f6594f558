"""`rpm report` on tiny runs: every table and figure, no NaN cells; fairness and seed aggregation by hand.

The data come from the real CLI (synth -> preprocess -> split). The runs are untrained checkpoints
written with the trainer's own builders (training adds nothing the report can check and would cost
minutes); their config.json files carry the flags the tables read (seeds, labelled fraction, the gate
ablation, a sync-shift probability), and one carries a per-step log.jsonl. The truth sidecar is edited
so one test session has a radar corruption interval and another is labelled "night".
"""

import json
import math
import re
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from typer.testing import CliRunner

from cli import app
from train.evaluate import aggregate_seeds, fairness, overlap_average, whole_video_hr

FRAMES = 64


def run(args, workdir):
    result = CliRunner().invoke(app, [*args, "--workdir", str(workdir)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def fake_run(wd, name, seed, labeled_frac=0.4, baseline=True, gate=True, sync_shift_prob=0.0):
    """An untrained run laid out as ``rpm train`` writes it: checkpoints and the same config.json keys."""
    from train.build import build_student, build_teacher
    from train.checkpoint import save_checkpoint
    from train.config import TrainConfig
    from train.models import SpectralPolicy

    cfg = TrainConfig(
        run_name=name,
        seed=seed,
        labeled_frac=labeled_frac,
        frames=FRAMES,
        teacher_widths=(8, 16),
        batch_size=8,
        gate=gate,
        baseline=baseline,
    )
    out = wd / "runs" / name
    out.mkdir(parents=True)
    torch.manual_seed(seed)
    save_checkpoint(out / "teacher.pt", "teacher", build_teacher(cfg), cfg)
    policy = SpectralPolicy().state_dict() if gate else None
    save_checkpoint(out / "student.pt", "student", build_student(cfg), cfg, policy=policy)
    if baseline:
        save_checkpoint(out / "baseline.pt", "baseline", build_student(cfg), cfg, policy=None)
    saved = {  # the keys train.trainer._write_run_config adds to the TrainConfig fields
        **asdict(cfg),
        "labeled_subjects": ["1"],
        "device_resolved": "cpu",
        "world_size": 1,
        "teacher_key": "fake",
        "sync_shift_prob": sync_shift_prob,
    }
    (out / "config.json").write_text(json.dumps(saved, default=list))
    return out


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("report")
    run(
        ["synth", "equipleth", "--subjects", "6", "--trials", "1", "--seconds", "11", "--crop-size", "64"], wd
    )
    run(["preprocess", "equipleth"], wd)
    run(["split", "--seed", "3"], wd)
    # Test sessions: the lightest and the darkest subject, so both ends of the fairness gap exist.
    root = zarr.open_group(str(wd / "data" / "equipleth.zarr"), mode="r")
    skin = {s: int(root[s].attrs["skin_type"]) for s in root.group_keys()}
    light, dark = min(skin, key=skin.get), max(skin, key=skin.get)
    splits = pd.read_csv(wd / "manifests" / "splits.csv", dtype=str)
    splits["split"] = np.where(splits.session.isin([light, dark]), "test", "train")
    splits.to_csv(wd / "manifests" / "splits.csv", index=False)
    truth_path = wd / "data" / "raw" / "equipleth" / "synth_truth.json"
    truth = json.loads(truth_path.read_text())
    for s, tr in truth["trials"].items():
        tr["corruptions"] = (
            [{"kind": "occlusion", "start_s": 0.0, "end_s": 4.0, "modality": "radar"}] if s == light else []
        )
        tr.setdefault("conditions", {})["illumination"] = "night" if s == dark else "noon"
    truth_path.write_text(json.dumps(truth))

    fake_run(wd, "a1", 1)
    fake_run(wd, "a2", 2)
    fake_run(wd, "nogate", 1, baseline=False, gate=False, sync_shift_prob=0.5)
    steps = [
        {"type": "step", "stage": "student", "epoch": 0, "step": i, "gate": 0.4 + 0.01 * i, "alpha_peak": 0.3,
         "alpha_background": 0.3, "alpha_morphology": 0.4}
        for i in range(10)
    ]  # fmt: skip
    (wd / "runs" / "a1" / "log.jsonl").write_text("\n".join(json.dumps(s) for s in steps) + "\nnot json\n")
    out = run(["report", "--eval-stride", "90", "--quiet"], wd)
    return wd, out, light, dark


def test_report_writes_every_table_and_figure(report_dir):
    wd, out, _, _ = report_dir
    md_path = wd / "reports" / "report.md"
    assert f"report written to {md_path}" in out
    md = md_path.read_text()
    for heading in (
        "## 1. Methods x datasets",
        "### Protocol `release`",
        "### Protocol `equipleth`",
        "## 2. Labelled fraction x condition",
        "## 3. Ablations",
        "## 4. Sync-shift robustness",
        "## 5. Policy gate and weights",
        "## 6. Figures",
    ):
        assert heading in md
    rows = ("RPM-Distill student", "supervised only", "RF teacher", "Radar FFT", "POS", "CHROM", "GREEN")
    for method in rows:
        assert method in md
    # The training-free rows are shown once in each protocol's Table 1 however many groups there are (3).
    for protocol in ("release", "equipleth"):
        after = md.split(f"### Protocol `{protocol}`")[1].split("\n| method |", 1)[1]
        table = after.split("\n\n")[0]
        assert table.count("| Radar FFT") == 1 and table.count("| POS") == 1
    # Two seeds of the same config are one group with mean ± std; the ablation and shift rows exist.
    assert re.search(r"\| a1, a2 \| 1, 2 \|", md)
    assert "±" in md
    assert "| no gate" in md or "no gate," in md
    assert re.search(r"\| 0\.5 \| n/a\[\^\d+\] \| \d+\.\d+ \|", md)  # shift 0.5: no full run, a no-gate run
    assert "| night |" in md.replace("| noon |", "| night |") and "night" in md and "light skin" in md
    # Every figure the markdown references exists and is a PNG.
    figs = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", md)
    names = {f.split("/")[-1] for f in figs}
    for must in ("agreement_student.png", "agreement_POS.png", "agreement_CHROM.png", "agreement_teacher.png",
                 "gate_by_condition.png", "gate_by_corruption.png", "gate_training.png",
                 "waveforms_by_skin.png", "spectrum.png"):  # fmt: skip
        assert must in names
    for f in figs:
        assert (wd / "reports" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_nan_cells_and_every_na_has_a_footnote(report_dir):
    wd, _, _, _ = report_dir
    md = (wd / "reports" / "report.md").read_text()
    table_rows = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table_rows) > 30
    for line in table_rows:
        assert not re.search(r"\bnan\b|\binf\b|None", line, re.IGNORECASE), line
    refs = set(re.findall(r"n/a\[\^(\d+)\]", md))
    defs = set(re.findall(r"^\[\^(\d+)\]: \S", md, re.MULTILINE))
    assert refs and refs <= defs
    assert "n/a" not in md.replace("n/a[^", "")  # never a bare n/a


def test_gate_is_broken_down_by_radar_corruption(report_dir):
    wd, _, light, _ = report_dir
    md = (wd / "reports" / "report.md").read_text()
    assert re.search(
        r"The gate was \*\*(lower|higher|no different beyond noise)\*\* where the radar was corrupted", md
    )
    gate = json.loads((wd / "reports" / "metrics.json").read_text())["gate"]["corruption"]
    assert gate["n_corrupted"] > 0 and gate["n_clean"] > 0
    diff, se = gate["gate_corrupted"] - gate["gate_clean"], gate["standard_error"]
    assert gate["difference"] == pytest.approx(diff) and se > 0
    expected = "lower" if diff < -2 * se else ("higher" if diff > 2 * se else "no different beyond noise")
    assert gate["verdict"] == expected
    windows = pd.read_csv(wd / "reports" / "windows.csv")
    rel = windows[windows.protocol == "release"]
    # Exactly the windows overlapping [0, 4) s of the light session are flagged.
    hit = rel[rel.radar_corrupted.astype(str) == "True"]
    flagged = set(zip(hit.session, hit.start, strict=True))
    expected = {(light, s) for s in rel.start[rel.session == light] if s / 30.0 < 4.0}
    assert flagged == expected and len(expected) == 2  # starts 0 and 90 (3 s) at stride 90


def test_metrics_json_and_csv(report_dir):
    wd, _, light, dark = report_dir
    doc = json.loads((wd / "reports" / "metrics.json").read_text())
    assert set(doc["protocols"]) == {"release", "equipleth"}
    res = doc["runs"]["a1"]["results"]["equipleth"]
    assert set(res["release"]) == {"student", "baseline", "teacher", "radar_fft", "POS", "CHROM", "GREEN"}
    assert set(doc["runs"]["nogate"]["results"]["equipleth"]["release"]) == {
        "student",
        "teacher",
        "radar_fft",
        "POS",
        "CHROM",
        "GREEN",
    }
    for proto in ("release", "equipleth"):
        for m in res[proto].values():
            assert m["n"] > 0 and math.isfinite(m["MAE"]) and m["n_light"] > 0 and m["n_dark"] > 0
            assert m["fairness_gap"] == pytest.approx(abs(m["MAE_light"] - m["MAE_dark"]))
    group = next(g for g in doc["groups"].values() if g["runs"] == ["a1", "a2"])
    mae = [doc["runs"][r]["results"]["equipleth"]["release"]["student"]["MAE"] for r in ("a1", "a2")]
    agg = group["results"]["equipleth"]["release"]["student"]["MAE"]
    assert agg["mean"] == pytest.approx(np.mean(mae)) and agg["std"] == pytest.approx(np.std(mae, ddof=1))
    assert agg["n"] == 2
    csv = pd.read_csv(wd / "reports" / "metrics.csv", keep_default_na=False)
    assert {"level", "group", "run", "protocol", "method", "metric", "mean", "std", "n_seeds"} <= set(
        csv.columns
    )
    assert not csv["mean"].astype(str).str.lower().isin(["nan", ""]).any()
    row = csv[(csv.level == "run") & (csv.run == "a1") & (csv.protocol == "release") & (csv.method == "POS")
              & (csv.metric == "MAE")]  # fmt: skip
    assert float(row["mean"].iloc[0]) == pytest.approx(res["release"]["POS"]["MAE"])
    # The classical baselines are computed on the same windows as the student.
    windows = pd.read_csv(wd / "reports" / "windows.csv")
    a1 = windows[(windows.run == "a1") & (windows.protocol == "release")]
    assert a1.hr_POS.notna().all() and a1.hr_student.notna().all()
    assert set(a1.session) == {light, dark}
    # The FFT radar row: the same windows, computed once per test set (equal across runs), and equal to
    # train.radar_fft on the stored radar of each window.
    from train.report.methods import radar_fft_hr_session

    a2 = windows[(windows.run == "a2") & (windows.protocol == "release")]
    assert np.allclose(a1.hr_radar_fft.to_numpy(), a2.hr_radar_fft.to_numpy(), equal_nan=True)
    root = zarr.open_group(str(wd / "data" / "equipleth.zarr"), mode="r")
    for s, g in a1.groupby("session"):
        expected = radar_fft_hr_session(root[s], g.start.tolist(), FRAMES)
        assert np.allclose(g.hr_radar_fft.to_numpy(), expected, equal_nan=True)
    assert res["release"]["radar_fft"]["n"] == int(np.isfinite(a1.hr_radar_fft).sum()) > 0
    assert (
        len(windows[(windows.run == "a1") & (windows.protocol == "equipleth")]) == 2
    )  # 1 per 305-frame video


def test_fairness_by_hand():
    est = np.array([70.0, 80.0, 90.0, 100.0, 60.0])
    gt = np.array([72.0, 80.0, 85.0, 90.0, 61.0])
    skin = np.array([1, 2, 3, 5, 6])
    f = fairness(est, gt, skin)
    assert f["MAE_light"] == pytest.approx(1.0)  # |-2|, 0
    assert f["MAE_medium"] == pytest.approx(5.0)
    assert f["MAE_dark"] == pytest.approx(5.5)  # 10, |-1|
    assert f["fairness_gap"] == pytest.approx(4.5)
    assert math.isnan(fairness(est[:2], gt[:2], skin[:2])["fairness_gap"])  # no dark window


def test_seed_aggregation_by_hand():
    agg = aggregate_seeds([{"MAE": 2.0, "r": math.nan}, {"MAE": 4.0, "r": 0.5}, {"MAE": 9.0, "r": 0.7}])
    assert agg["MAE"]["mean"] == pytest.approx(5.0)
    assert agg["MAE"]["std"] == pytest.approx(math.sqrt(((2 - 5) ** 2 + (4 - 5) ** 2 + (9 - 5) ** 2) / 2))
    assert agg["r"]["n"] == 2 and agg["r"]["mean"] == pytest.approx(0.6)
    assert math.isnan(aggregate_seeds([{"MAE": 3.0}])["MAE"]["std"])


def test_equipleth_protocol_windows_and_overlap_average():
    fs, n = 30.0, 900
    t = np.arange(n) / fs
    gt = np.sin(2 * np.pi * 1.2 * t)
    pred = np.sin(2 * np.pi * 1.5 * t + 0.4)
    hp, hg, starts = whole_video_hr(pred, gt, fs)
    assert starts == [0, 128, 256, 384, 512]  # EquiPleth: 5 windows per 30 s video
    assert np.allclose(hg, 72.0, atol=0.5) and np.allclose(hp, 90.0, atol=0.5)
    waves = np.stack([gt[s : s + 63] * 5 for s in (0, 60, 120)])
    trace = overlap_average(waves, [0, 60, 120], 183)
    assert trace.shape == (183,) and np.isfinite(trace).all()
    assert np.corrcoef(trace, gt[:183])[0, 1] > 0.99


def test_gate_difference_needs_more_than_noise():
    from train.report import gate_difference

    rng = np.random.default_rng(0)
    clean = 0.5 + 0.05 * rng.standard_normal(40)
    assert gate_difference(clean - 0.1, clean)[0] == "lower"
    assert gate_difference(clean + 0.1, clean)[0] == "higher"
    verdict, diff, se = gate_difference(clean[:20] - 0.001, clean[20:])
    assert verdict == "no different beyond noise" and abs(diff) < 2 * se


def test_student_rows_are_named_for_their_method():
    from train.config import METHODS as TRAIN_METHODS
    from train.report.methods import METHODS, method_title

    assert method_title("student", {"method": "rpm-distill"}) == METHODS["student"]
    titles = {m: method_title("student", {"method": m}) for m in TRAIN_METHODS}
    assert len(set(titles.values())) == len(TRAIN_METHODS)  # no two methods share a row label
    assert titles["fitnets"].startswith("FitNets") and titles["dml"].startswith("DML")
    assert method_title("baseline", {"method": "fitnets"}) == METHODS["baseline"]


def test_train_subject_quality_scores_teacher_fft_and_pos_on_training_windows(report_dir):
    from pipeline.paths import Workdir
    from pipeline.spectrum import hr_batch
    from train.classical import pos, rgb_trace
    from train.evaluate import hr_metrics
    from train.report.diagnostics import train_subject_quality, train_window_hrs
    from train.report.methods import radar_fft_hr_session

    wd, _, light, dark = report_dir
    table = train_subject_quality(Workdir(wd), wd / "runs" / "a1")
    assert list(table.columns) == ["source", "subjects", "n_windows", "mae", "rmse", "r"]
    assert list(zip(table.source, table.subjects, strict=True)) == [
        (s, g) for s in ("teacher", "radar_fft", "pos") for g in ("labelled", "unlabelled", "all")
    ]
    rows = train_window_hrs(Workdir(wd), wd / "runs" / "a1")
    # Training sessions only, at the run's frames and stride; subject "1" is the run's labelled subject.
    splits = pd.read_csv(wd / "manifests" / "splits.csv", dtype=str)
    assert set(rows.session) == set(splits.session[splits.split == "train"])
    assert not {light, dark} & set(rows.session)
    assert (rows.groupby("session").start.diff().dropna() == 30).all()
    assert (rows.labelled == (rows.subject == "1")).all()
    n = table.set_index(["source", "subjects"]).n_windows
    assert n["pos", "labelled"] + n["pos", "unlabelled"] == n["pos", "all"] == len(rows)
    # Each source is what its own function gives on those windows, scored by the report's metrics.
    root = zarr.open_group(str(wd / "data" / "equipleth.zarr"), mode="r")
    s = rows.session.iloc[0]
    one = rows[rows.session == s]
    fft = radar_fft_hr_session(root[s], one.start.tolist(), FRAMES)
    assert np.allclose(one.hr_radar_fft, fft, equal_nan=True)
    trace = rgb_trace(root[s]["video"][...])
    waves = np.stack([pos(trace[a : a + FRAMES], 30.0)[: FRAMES - 1] for a in one.start])
    assert np.allclose(one.hr_pos, hr_batch(waves, fs=30.0))
    for source in ("teacher", "pos"):
        got = table[(table.source == source) & (table.subjects == "all")].iloc[0]
        ref = hr_metrics(rows[f"hr_{source}"].to_numpy(), rows.hr_true.to_numpy())
        assert got.mae == pytest.approx(ref["MAE"]) and got.rmse == pytest.approx(ref["RMSE"])
