"""train/trainer.py on a tiny generated dataset (CPU): config, ablations, KD baselines, resume, NaN stop,
teacher cache (and, slow, two runs at once sharing one teacher), DDP on gloo, and (slow) a short training
that beats the untrained student."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_data import tiny_train_toml, write_tiny_dataset, write_tiny_sessions_manifest
from typer.testing import CliRunner

from cli import app
from pipeline.lock import hold_lock
from train import checkpoint, distributed, method, plan, trainer
from train.build import build_student
from train.checkpoint import load_model, save_checkpoint, teacher_cache_key
from train.config import TrainConfig, TrainError, resolve_config
from train.models import SpectralPolicy
from train.trainer import seed_everything

REPO = Path(__file__).resolve().parents[1]
TINY = tiny_train_toml()


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def wd(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    workdir = write_tiny_dataset(root)
    (root / "tiny.toml").write_text(TINY)
    return workdir


def run_train(wd, *args) -> str:
    result = CliRunner().invoke(
        app,
        ["train", "--config", str(wd.root / "tiny.toml"), "--workdir", str(wd.root), *args],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return result.output


def records(wd, name, kind="step", stage="student") -> list[dict]:
    lines = (wd.runs / name / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind and r["stage"] == stage]


# --- config ------------------------------------------------------------------------------------------------


def test_config_file_overrides_and_errors(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('preset = "cpu"\nlr = 2e-4\nteacher_widths = [4, 8]\nepochs = 7\npeak = false\n')
    cfg = resolve_config({"epochs": 2, "seed": None}, config_file=path)
    assert (cfg.lr, cfg.teacher_widths, cfg.epochs, cfg.peak) == (2e-4, (4, 8), 2, False)
    assert cfg.frames == 128 and cfg.seed == 3  # preset and default fill the rest
    path.write_text("learning_rate = 1e-3\n")
    with pytest.raises(TrainError, match="unknown config keys"):
        resolve_config({}, config_file=path)
    path.write_text('epochs = "five"\n')
    with pytest.raises(TrainError, match="epochs"):
        resolve_config({}, config_file=path)
    with pytest.raises(TrainError, match="leave no distillation"):
        resolve_config({"peak": False, "background": False, "morphology": False})
    with pytest.raises(TrainError, match="unknown method"):
        resolve_config({"method": "c2kd"})


def test_device_and_autocast_defaults():
    assert distributed.pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert distributed.pick_device("cuda", 1) == torch.device("cuda", 1)
    else:
        with pytest.raises(TrainError, match="--device cuda: no CUDA GPU"):
            distributed.pick_device("cuda", 1)
    with pytest.raises(TrainError, match="unknown device"):
        distributed.pick_device("tpu")
    cpu = torch.device("cpu")
    with distributed.autocast(cpu, True):
        out = torch.nn.Linear(3, 2)(torch.randn(4, 3))
    assert out.dtype == torch.float32  # CPU stays fp32
    assert (
        resolve_config({"preset": "cpu"}).batch_size == 4
        and resolve_config({"preset": "paper"}).batch_size == 8
    )


# --- ablations and methods ---------------------------------------------------------------------------------


def _check_equal_alpha(r, used):
    for name in ("peak", "background", "morphology"):
        want = 1 / len(used) if name in used else 0.0
        assert r[f"alpha_{name}"] == pytest.approx(want, abs=1e-6)


ABLATIONS = {
    "full": (
        [],
        lambda r: ("meta_loss" in r) == ("meta_grad_norm" in r) == (r["step"] % 2 == 0) and 0 < r["gate"] < 1,
    ),
    "no-peak": (["--no-peak"], lambda r: r["alpha_peak"] == 0 and r["alpha_background"] > 0),
    "no-background": (["--no-background"], lambda r: r["alpha_background"] == 0 and r["alpha_peak"] > 0),
    "no-morphology": (["--no-morphology"], lambda r: r["alpha_morphology"] == 0 and r["alpha_peak"] > 0),
    "no-gate": (["--no-gate"], lambda r: r["gate"] == 1 and ("meta_loss" in r) == (r["step"] == 0)),
    "no-weights": (
        ["--no-weights"],
        lambda r: _check_equal_alpha(r, ("peak", "background", "morphology")) or r["gate"] < 1,
    ),
    "no-policy": (
        ["--no-policy"],
        lambda r: "meta_loss" not in r and r["gate"] == 1 and _check_equal_alpha(r, COMPS) is None,
    ),
    "no-bilevel": (["--no-bilevel"], lambda r: "meta_loss" not in r and 0 < r["gate"] < 1),
}
COMPS = ("peak", "background", "morphology")


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_ablation_flags_train(wd, name):
    args, check = ABLATIONS[name]
    run_train(wd, "--name", f"abl-{name}", *args)
    steps = records(wd, f"abl-{name}")
    assert len(steps) == 2
    for r in steps:
        assert math.isfinite(r["loss"]) and math.isfinite(r["distill"])
        assert check(r), r
    ckpt = torch.load(wd.runs / f"abl-{name}" / "student_last.pt", weights_only=True)
    assert ckpt["config"]["run_name"] == f"abl-{name}"
    if name == "no-bilevel":  # the policy learnt from L_tr without any meta step
        seed_everything(3)
        build_student(TrainConfig(**{**ckpt["config"], "teacher_widths": (8, 16)}))
        init = SpectralPolicy().state_dict()
        assert any(not torch.equal(init[k], v) for k, v in ckpt["policy"].items() if v.is_floating_point())


@pytest.mark.parametrize("method", ["supervised", "output-kd", "fitnets", "dml"])
def test_methods_train(wd, method):
    run_train(wd, "--name", f"m-{method}", "--method", method)
    steps = records(wd, f"m-{method}")
    assert len(steps) == 2 and all(math.isfinite(r["loss"]) for r in steps)
    run = wd.runs / f"m-{method}"
    last = torch.load(run / "student_last.pt", weights_only=True)
    if method == "supervised":
        assert not (run / "teacher.pt").exists() and all("distill" not in r for r in steps)
        assert all(r["sup"] == r["loss"] for r in steps)  # trained on labelled clips only
        return
    assert all(r["distill"] > 0 for r in steps) and "policy" not in last
    teacher = torch.load(run / "teacher.pt", weights_only=True)["model"]
    if method == "fitnets":
        assert last["aux"]["conv.weight"].shape == (teacher["decoder.0.weight"].shape[1], 16, 3)
    if method == "dml":
        assert all(math.isfinite(r["peer_loss"]) for r in steps)
        assert any(not torch.equal(teacher[k], v) for k, v in last["aux"].items() if v.is_floating_point())


@pytest.mark.parametrize(
    ("student", "size", "out_len"), [("factorizephys-big", 128, 23), ("physnet", 72, 24)]
)
def test_other_students_train(wd, student, size, out_len):
    # rpm-distill with a meta step at step 0: student, teacher and label are cropped to T - 1 = 23 in the
    # distillation, meta and validation paths although PhysNet outputs T = 24 samples.
    run_train(wd, "--name", f"s-{student}", "--student", student)
    steps = records(wd, f"s-{student}")
    assert len(steps) == 2 and all(math.isfinite(r["loss"]) and r["distill"] > 0 for r in steps)
    assert "meta_loss" in steps[0]
    model, cfg, _ = load_model(wd.runs / f"s-{student}" / "student.pt")
    assert (cfg.student, cfg.student_size) == (student, size)
    assert type(model).__name__ == {"factorizephys-big": "FactorizePhysBig", "physnet": "PhysNet"}[student]
    with torch.no_grad():
        assert model(torch.rand(1, 3, cfg.frames, size, size)).shape == (1, out_len)


def test_student_config_and_old_checkpoints(tmp_path):
    assert resolve_config({}).student == "factorizephys"
    cfg = resolve_config({"student": "factorizephys-big"})
    assert cfg.student_size == 128
    with pytest.raises(TrainError, match="128x128"):
        resolve_config({"student": "factorizephys-big", "student_size": 72})
    with pytest.raises(TrainError, match="divisible by 4"):
        resolve_config({"student": "physnet", "frames": 30})
    with pytest.raises(TrainError, match="unknown student"):
        resolve_config({"student": "beatformer"})
    # A checkpoint saved before the ``student`` field existed loads as the default FactorizePhys.
    old = resolve_config({"preset": "cpu", "frames": 16})
    path = tmp_path / "old.pt"
    save_checkpoint(path, "student", build_student(old), old)
    ckpt = torch.load(path, weights_only=True)
    del ckpt["config"]["student"]
    torch.save(ckpt, path)
    model, cfg, _ = load_model(path)
    assert cfg.student == "factorizephys" and type(model).__name__ == "FactorizePhys"
    plan._check_resume_config(ckpt["config"], cfg, path)  # the missing key resumes as its default


def test_teacher_cache_reused_and_keyed(wd):
    out = run_train(wd, "--name", "cache-a", "--no-policy")
    out = run_train(wd, "--name", "cache-b", "--no-policy")
    assert "teacher: reusing" in out
    teacher_rows = records(wd, "cache-b", "epoch", "teacher")
    assert teacher_rows and all(r.get("cached") for r in teacher_rows)
    a = torch.load(wd.runs / "cache-a" / "teacher.pt", weights_only=True)["model"]
    b = torch.load(wd.runs / "cache-b" / "teacher.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    cfg = resolve_config({"preset": "cpu"})
    key = teacher_cache_key(cfg, "sha", ["1"])[0]
    changes = ({"seed": 4}, {"labeled_frac": 0.5}, {"teacher_epochs": 2}, {"dataset": "physdrive"})
    changes += ({"teacher_input": "iq"},)  # the cpu preset's teacher reads phase
    for change in changes:
        other = TrainConfig(**{**cfg.__dict__, **change})
        assert teacher_cache_key(other, "sha", ["1"])[0] != key, change
    assert teacher_cache_key(cfg, "sha2", ["1"])[0] != key
    assert teacher_cache_key(cfg, "sha", ["1", "2"])[0] != key
    assert teacher_cache_key(TrainConfig(**{**cfg.__dict__, "epochs": 9}), "sha", ["1"])[0] == key


@pytest.mark.slow
def test_two_runs_at_once_train_one_shared_teacher(tmp_path):
    """Two `rpm train` processes that need the same uncached teacher: both plan it as untrained, both
    wait at runs/_teachers/<key>.lock (held here until both wait), then one trains it and the other,
    finding it in the cache under the lock, reuses it."""
    wd = write_tiny_dataset(tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY)
    cfg = resolve_config({"run_name": "one"}, config_file=tmp_path / "tiny.toml")
    key = plan.plan_run(cfg, wd, needs_teacher=True).teacher_key
    cache, lock = wd.runs / "_teachers" / key, wd.runs / "_teachers" / f"{key}.lock"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    procs, outs, errs = {}, {}, {}
    with hold_lock(lock, "test"):
        for name in ("one", "two"):
            outs[name], errs[name] = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
            cmd = [sys.executable, "-m", "cli", "train", "--config", str(tmp_path / "tiny.toml")]
            cmd += ["--workdir", str(tmp_path), "--name", name, "--no-policy"]
            with outs[name].open("w") as out, errs[name].open("w") as err:
                procs[name] = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err)
        deadline = time.monotonic() + 120
        while not all("waiting for another rpm process" in e.read_text() for e in errs.values()):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs.values()), {
                n: e.read_text()[-2000:] for n, e in errs.items()
            }
            time.sleep(0.2)
        assert not cache.exists()  # neither has trained while the lock was held
    for name, proc in procs.items():
        assert proc.wait(timeout=300) == 0, outs[name].read_text()[-2000:] + errs[name].read_text()[-2000:]
        outs[name] = outs[name].read_text()
    for name in procs:
        assert f"teacher cache {cache}: waiting for another rpm process" in errs[name].read_text()
    reused = [n for n in procs if "trained meanwhile by another run" in outs[n]]
    assert len(reused) == 1, outs
    trained = ({"one", "two"} - set(reused)).pop()
    assert not [r for r in records(wd, trained, "epoch", "teacher") if r.get("cached")]
    assert [r["val_loss"] for r in records(wd, reused[0], "epoch", "teacher")] == [
        r["val_loss"] for r in records(wd, trained, "epoch", "teacher")
    ]
    assert all(r.get("cached") for r in records(wd, reused[0], "epoch", "teacher"))
    assert sorted(p.name for p in cache.iterdir()) == ["key.json", "teacher.pt"]  # no .partial left
    assert sorted(p.name for p in (wd.runs / "_teachers").iterdir()) == [key]  # and no lock file
    cached = (cache / "teacher.pt").read_bytes()
    assert all((wd.runs / n / "teacher.pt").read_bytes() == cached for n in procs)


# --- resume, NaN -------------------------------------------------------------------------------------------


def test_resume_gives_the_same_losses(wd):
    run_train(wd, "--name", "full", "--epochs", "2")
    run_train(wd, "--name", "part", "--epochs", "1")
    out = run_train(wd, "--name", "part", "--epochs", "2", "--resume")
    assert "resuming after epoch 1" in out
    full, part = records(wd, "full"), records(wd, "part")
    assert [r["step"] for r in part] == [0, 1, 2, 3]  # no duplicated or lost steps in the log
    assert sum("meta_loss" in r for r in part) == 2  # meta steps on both sides of the resume
    for a, b in zip(full, part, strict=True):
        a.pop("seconds"), b.pop("seconds")
        assert a == b  # every loss component, g and alpha, bit for bit
    fe, pe = records(wd, "full", "epoch"), records(wd, "part", "epoch")
    assert [r["val_loss"] for r in fe] == [r["val_loss"] for r in pe]
    with pytest.raises(AssertionError, match="cannot resume"):
        run_train(wd, "--name", "part", "--epochs", "3", "--resume", "--lr", "0.5")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(wd, monkeypatch):
    saves = []
    real_save, real_components = checkpoint.atomic_save, method.distill_components

    def save(obj, path):
        real_save(obj, path)
        saves.append(path.name)

    def components(s, t):
        out = real_components(s, t)
        return out * math.nan if "student_last.pt" in saves else out

    monkeypatch.setattr(checkpoint, "atomic_save", save)
    monkeypatch.setattr(method, "distill_components", components)
    cfg = resolve_config({"run_name": "nan", "epochs": 2, "policy": False}, config_file=wd.root / "tiny.toml")
    with pytest.raises(TrainError, match=r"non-finite loss .* epoch 1 step 2.*student_last.pt is kept"):
        trainer.train(cfg, wd)
    last = torch.load(wd.runs / "nan" / "student_last.pt", weights_only=True)
    assert last["epoch"] == 0 and last["step"] == 2
    assert all(torch.isfinite(v).all() for v in last["model"].values())


# --- DDP ---------------------------------------------------------------------------------------------------


def test_ddp_two_processes_on_gloo(wd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "cli",
    ]
    cmd += ["train", "--config", str(wd.root / "tiny.toml"), "--workdir", str(wd.root), "--name", "ddp"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    config = json.loads((wd.runs / "ddp" / "config.json").read_text())
    assert config["world_size"] == 2
    steps = records(wd, "ddp")
    assert [r["step"] for r in steps] == [0, 1]  # rank 0 logs once per step
    assert all(math.isfinite(r["loss"]) for r in steps) and "meta_loss" in steps[0]
    assert (wd.runs / "ddp" / "student.pt").is_file()


# --- learning ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_short_training_beats_untrained_student(tmp_path, capsys):
    from torch.utils.data import DataLoader

    from pipeline.spectrum import hr_batch
    from train.data import WindowDataset, video_to_input

    wd = write_tiny_dataset(tmp_path, subjects=6, frames=160, seed=5)
    cfg = resolve_config(
        dict(
            preset="cpu",
            frames=64,
            stride=16,
            batch_size=4,
            teacher_widths=(8, 16),
            teacher_epochs=5,
            epochs=4,
            max_steps_per_epoch=8,
            lr=3e-3,
            baseline=False,
            run_name="learn",
        ),
    )
    trainer.train(cfg, wd)
    val = WindowDataset(wd.store("equipleth"), ["v_5_1"], cfg.frames, 16)
    batch = next(iter(DataLoader(val, batch_size=len(val))))
    x = video_to_input(batch["video"], cfg.student_size, torch.device("cpu"))
    truth = hr_batch(batch["bvp"].numpy())

    def mae(model):
        with torch.no_grad():
            return float(np.mean(np.abs(hr_batch(model.eval()(x).numpy()) - truth)))

    seed_everything(cfg.seed)
    untrained = mae(build_student(cfg))
    trained = mae(load_model(wd.runs / "learn" / "student.pt")[0])
    with capsys.disabled():
        print(f"val HR MAE: untrained {untrained:.1f} bpm, trained {trained:.1f} bpm")
    assert trained < 0.5 * untrained and trained < 10.0, (trained, untrained)


# --- windows, sync shifts and labelled subjects: one owner each -------------------------------------------


def run_split(wd, *args) -> str:
    result = CliRunner().invoke(app, ["split", "--workdir", str(wd.root), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _windows(ds) -> list[tuple[str, int, int]]:
    return [(w.session, w.start, w.shift) for w in ds.windows]


def _rows(clips, split) -> list[tuple[str, int, int]]:
    c = clips[clips.split == split]
    return list(zip(c.session, c.start.astype(int), c.shift_frames.astype(int), strict=True))


def test_train_and_report_windows_are_the_split_windows(tmp_path):
    """Same seed, frames and stride: train's windows (shifts included), its labelled subjects and the
    report's release-protocol test windows are exactly what ``rpm split`` lists in clips.csv."""
    from train.data import WindowDataset

    wd = write_tiny_dataset(tmp_path)
    write_tiny_sessions_manifest(wd)
    run_split(wd, "--frames", "24", "--stride", "16", "--shift-prob", "0.5", "--labeled-frac", "0.5")
    (tmp_path / "tiny.toml").write_text(TINY)  # frames 24, stride 16, labeled_frac 0.5, seed 3
    cfg = resolve_config({}, config_file=tmp_path / "tiny.toml")
    data = plan.plan_run(cfg, wd, needs_teacher=False).data
    clips = pd.read_csv(wd.clips_manifest, dtype={"subject": str, "session": str})
    assert _windows(data.train) == _rows(clips, "train")
    shifts = [d for _, _, d in _windows(data.train)]
    assert 0 < sum(d > 0 for d in shifts) < len(shifts)  # the split's shifts reach the student ...
    assert all(w.shift == 0 for w in data.labeled.dataset.windows)  # ... and not the teacher
    train = clips[clips.split == "train"]
    assert data.labeled_subjects == json.loads(wd.splits_meta.read_text())["labeled_subjects"]
    assert set(data.labeled_subjects) == set(train.loc[train.labeled, "subject"])
    # The report's release protocol: T-frame test windows at stride 30 (here the split's 16).
    test = sorted(set(clips.loc[clips.split == "test", "session"]))
    assert _windows(WindowDataset(wd.store("equipleth"), test, 24, 16)) == _rows(clips, "test")
    # Same seed, same windows and shifts on a second plan.
    assert _windows(plan.plan_run(cfg, wd, needs_teacher=False).data.train) == _windows(data.train)


def test_cpu_preset_trains_after_a_default_split_with_shifts(tmp_path):
    """A default split (clips.csv at T 256) and a cpu-preset run (T 128, stride 32) with sync shifts: no
    second split; the run's windows carry the split's shifts at the starts both cut."""
    wd = write_tiny_dataset(tmp_path, frames=300)
    write_tiny_sessions_manifest(wd)
    run_split(wd, "--shift-prob", "0.5")
    meta = json.loads(wd.splits_meta.read_text())
    assert (meta["clips"]["frames"], meta["clips"]["stride"]) == (256, 30)
    toml = "\n".join(line for line in TINY.splitlines() if not line.startswith(("frames", "stride")))
    (tmp_path / "cpu.toml").write_text(toml.replace("max_steps_per_epoch = 2", "max_steps_per_epoch = 1"))
    cfg = resolve_config({}, config_file=tmp_path / "cpu.toml")
    assert (cfg.preset, cfg.frames, cfg.stride) == ("cpu", 128, 32)
    windows = _windows(plan.plan_run(cfg, wd, needs_teacher=False).data.train)
    clips = pd.read_csv(wd.clips_manifest, dtype={"subject": str, "session": str})
    listed = {(s, t): d for s, t, d in _rows(clips, "train")}
    common = [(s, t, d) for s, t, d in windows if (s, t) in listed]
    assert common and all(listed[(s, t)] == d for s, t, d in common)  # start 0: room for 30 at both T
    assert any(d > 0 for _, _, d in windows)
    args = ["train", "--config", str(tmp_path / "cpu.toml"), "--workdir", str(wd.root), "--name", "cpu"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    saved = json.loads((wd.runs / "cpu" / "config.json").read_text())
    assert (saved["frames"], saved["sync_shift_prob"]) == (128, 0.5)


def test_sync_shift_reaches_the_student_but_not_the_teacher(tmp_path):
    wd = write_tiny_dataset(tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY + "teacher_cache = false\n")  # train each teacher afresh
    run_train(wd, "--name", "aligned")
    meta = json.loads(wd.splits_meta.read_text())
    meta["shift"] = {"prob": 1.0, "frames": 30, "seed": 0}  # every training window with room is shifted
    wd.splits_meta.write_text(json.dumps(meta))
    run_train(wd, "--name", "shifted")
    # The teacher learns from aligned radar/label pairs either way ...
    assert records(wd, "aligned", "epoch", "teacher") == records(wd, "shifted", "epoch", "teacher")
    # ... while the student's distillation targets come from the shifted radar windows.
    a, s = records(wd, "aligned"), records(wd, "shifted")
    assert [r["distill"] for r in a] != [r["distill"] for r in s]


def test_teacher_width_follows_the_radar_and_survives_reload(tmp_path):
    """PhysDrive radar has 8 bins (16 I/Q channels), EquiPleth 5 (10): the teacher input follows the data."""
    from train.build import build_teacher

    cfg = TrainConfig(teacher_widths=(8, 16))
    teacher = build_teacher(cfg, rf_channels=16)
    save_checkpoint(tmp_path / "teacher.pt", "teacher", teacher, cfg)
    loaded, _, _ = load_model(tmp_path / "teacher.pt")
    assert loaded.in_channels == 16
    assert loaded(torch.zeros(2, 16, 32)).shape == (2, 32)


def test_missing_store_is_a_clean_cli_error(tmp_path):
    wd = write_tiny_dataset(tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY)
    shutil.rmtree(wd.store("equipleth"))
    args = ["train", "--config", str(tmp_path / "tiny.toml"), "--workdir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "error:" in result.output and "equipleth.zarr" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
