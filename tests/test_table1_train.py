"""`rpm train --method physformer | fusion` end to end on the tiny dataset, and their config rules."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from tiny_data import tiny_train_toml, write_tiny_dataset
from typer.testing import CliRunner

from cli import app
from train.checkpoint import load_checkpoint, load_model
from train.config import TrainError, resolve_config
from train.fusion import RGBRadarFusion
from train.method import METHOD_IMPLS, method_of
from train.physformer import PhysFormer
from train.plan import student_stages
from train.predict import PredictError, predict_video


def test_physformer_method_picks_its_network_and_size():
    cfg = resolve_config({"method": "physformer", "preset": "cpu"})
    assert (cfg.student, cfg.student_size) == ("physformer", 128)
    with pytest.raises(TrainError, match="--student: method 'physformer' trains the PhysFormer"):
        resolve_config({"method": "physformer", "student": "physnet", "preset": "cpu"})
    with pytest.raises(TrainError, match="divisible by 4"):
        resolve_config({"student": "physformer", "frames": 30, "preset": "cpu"})
    with pytest.raises(TrainError, match="--student-size: PhysFormer input_size=72"):
        resolve_config({"student": "physformer", "student_size": 72, "preset": "cpu"})
    with pytest.raises(TrainError, match="--frames: method 'physformer' reads each clip's HR"):
        resolve_config({"method": "physformer", "frames": 16, "preset": "cpu"})
    for method in ("physformer", "fusion"):
        with pytest.raises(TrainError, match="nothing to learn in mode 'distill_only'"):
            resolve_config({"method": method, "mode": "distill_only", "preset": "cpu"})
    # sup_only keeps a label-only method's own loss
    cfg = resolve_config({"method": "physformer", "mode": "sup_only", "preset": "cpu"})
    assert method_of(cfg) is METHOD_IMPLS["physformer"]


def test_stages_and_metadata():
    data = type("D", (), {"train": "all", "labeled": "labelled"})()
    fusion = student_stages(resolve_config({"method": "fusion", "baseline": False, "preset": "cpu"}), data)
    assert [(s.kind, s.cfg.method, s.train) for s in fusion] == [
        ("baseline", "supervised", "labelled"),  # always, and first: the fusion builds on it
        ("student", "fusion", "labelled"),
    ]
    physformer = student_stages(resolve_config({"method": "physformer", "preset": "cpu"}), data)
    assert [(s.kind, s.train) for s in physformer] == [("student", "labelled")]
    assert METHOD_IMPLS["fusion"].uses_radar_at_test and METHOD_IMPLS["fusion"].needs_teacher
    assert not METHOD_IMPLS["physformer"].uses_radar_at_test and not METHOD_IMPLS["physformer"].needs_teacher


def _rpm(args: list[str]) -> str:
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_train_and_report_physformer_and_fusion(tmp_path: Path):
    wd = write_tiny_dataset(tmp_path / "wd")
    toml = tiny_train_toml(epochs=1, max_steps_per_epoch=1).replace("frames = 24", "frames = 48")
    (tmp_path / "pf.toml").write_text(toml + "student_size = 32\n")
    (tmp_path / "fu.toml").write_text(toml)
    w = ["--workdir", str(wd.root)]
    _rpm(["train", *w, "--config", str(tmp_path / "pf.toml"), "--method", "physformer", "--name", "pf"])
    _rpm(["train", *w, "--config", str(tmp_path / "fu.toml"), "--method", "fusion", "--name", "fu"])

    pf, pf_cfg, _ = load_model(wd.runs / "pf" / "student.pt")
    assert isinstance(pf, PhysFormer) and pf_cfg.method == "physformer"
    assert not (wd.runs / "pf" / "teacher.pt").exists()  # no radar anywhere in a physformer run

    fu, fu_cfg, _ = load_model(wd.runs / "fu" / "student.pt")
    assert isinstance(fu, RGBRadarFusion) and fu.uses_radar_at_test and fu_cfg.method == "fusion"
    base = load_checkpoint(wd.runs / "fu" / "baseline.pt")["model"]
    teacher = load_checkpoint(wd.runs / "fu" / "teacher.pt")["model"]
    assert all(torch.equal(v, base[k]) for k, v in fu.video_net.state_dict().items())  # frozen copies
    assert all(torch.equal(v, teacher[k]) for k, v in fu.radar_net.state_dict().items())
    log = pd.read_csv(wd.runs / "fu" / "log.csv")
    assert list(log.stage) == ["teacher", "baseline", "student"]

    with pytest.raises(PredictError, match="needs the radar window at test time"):
        predict_video(tmp_path / "no_video.mp4", checkpoint=str(wd.runs / "fu" / "student.pt"), workdir=wd)

    out = _rpm(["report", *w])
    report = (wd.root / "reports" / "report.md").read_text()
    assert "| PhysFormer (Yu et al. 2022; video only)" in report
    assert "| Fusion: Vilesov et al. 2022 (video + radar at test time)" in report
    metrics = pd.read_csv(wd.root / "reports" / "metrics.csv")
    rows = metrics[(metrics.level == "run") & (metrics.method == "student") & (metrics.metric == "MAE")]
    assert set(rows.run) == {"pf", "fu"} and rows["mean"].astype(float).notna().all(), out
