"""Bad `rpm train` input and unsafe checkpoints (issue 14): one line, nothing written, no code run.

* a fault matrix of bad options, TOML configs and workdirs: each ends with a non-zero exit, one
  ``error:`` line naming the option or file, no traceback, and every file of the working directory
  (bytes and modification time, folders included) exactly as before;
* a refused ``--resume`` changes nothing, and the correct ``--resume`` afterwards still works;
* a malicious checkpoint (a pickle whose ``__reduce__`` calls ``os.system``) at every load site, predict,
  report, resume and the teacher cache, never runs: the marker file it would create never appears. Junk,
  truncated and incomplete ``.pt`` files are refused the same way.

Everything runs on the tiny store of ``tiny_data`` (CPU, seconds).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_data import tiny_train_toml, write_tiny_dataset
from typer.testing import CliRunner

from cli import app
from train.checkpoint import CheckpointError, load_checkpoint, load_model

MARKER = "rpm-pwned"  # a malicious checkpoint would create this file
TINY = tiny_train_toml()

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


class Evil:
    """Unpickling this runs a shell command (``os.system``): it must be refused before it runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def snapshot(root: Path) -> dict[str, tuple[bytes | None, int | None]]:
    """Every path under ``root``, with every file's bytes and modification time (ns). Folders count by
    presence only: ``rpm train`` holds ``runs/<name>.lock`` while it plans, and creating and removing
    that file touches the folder's mtime, never a file."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else (None, None)
        for p in sorted(root.rglob("*"))
    }


def invoke(wd: Path, *args: str):
    return CliRunner().invoke(app, [*args, "--workdir", str(wd)])


def assert_refused(result, *names: str, progress: bool = False) -> str:
    """Exit 1, one ``error:`` line naming every one of ``names``, no traceback. Returns the line.

    The error is the only output, or with ``progress`` (rpm report's "evaluating run" lines) the last line.
    """
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output, result.output
    assert lines and lines[-1].startswith("error: "), result.output
    assert len(lines) == 1 or progress and not any(line.startswith("error") for line in lines[:-1])
    for name in names:
        assert str(name) in lines[-1], (name, lines[-1])
    return lines[-1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults_train")
    wd = write_tiny_dataset(root / "wd")
    (root / "tiny.toml").write_text(TINY)  # outside the workdir: the snapshots cover the whole workdir
    return wd


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workdir with one finished run ``base`` (teacher cached, student and its resume state)."""
    root = tmp_path_factory.mktemp("faults_trained")
    wd = write_tiny_dataset(root / "wd")
    (root / "tiny.toml").write_text(TINY)
    result = invoke(wd.root, "train", "--config", str(root / "tiny.toml"), "--name", "base")
    assert result.exit_code == 0, result.output
    return wd


def toml_with(lines: str) -> str:
    """The tiny config with ``lines`` replacing (or adding) their keys."""
    keys = {line.split("=")[0].strip() for line in lines.splitlines() if "=" in line}
    kept = [line for line in TINY.splitlines() if line.split("=")[0].strip() not in keys]
    return "\n".join(kept) + "\n" + lines


def copy_workdir(wd, dst: Path):
    from pipeline.paths import Workdir

    shutil.copytree(wd.root, dst, symlinks=True)
    return Workdir(dst)


# ----------------------------------------------------------------------------------------- fault matrix

# id -> (extra CLI args, extra TOML lines, what the error line must name)
OPTION_FAULTS = {
    "seed -1": (["--seed", "-1"], "", ["--seed", "-1"]),
    "seed 2**32": (["--seed", str(2**32)], "", ["--seed"]),
    "device tpu": (["--device", "tpu"], "", ["--device", "tpu"]),
    "num-workers -1": (["--num-workers", "-1"], "", ["--num-workers", "-1"]),
    "teacher-epochs 0": (["--teacher-epochs", "0"], "", ["--teacher-epochs", "0"]),
    "epochs 0": (["--epochs", "0"], "", ["--epochs"]),
    "batch-size 0": (["--batch-size", "0"], "", ["--batch-size"]),
    "frames 2": (["--frames", "2"], "", ["--frames", "2", "at least 11"]),
    "lr nan": (["--lr", "nan"], "", ["--lr", "nan"]),
    "lr inf": (["--lr", "inf"], "", ["--lr", "inf"]),
    "lr negative": (["--lr", "-0.1"], "", ["--lr"]),
    "labeled-frac 1.5": (["--labeled-frac", "1.5"], "", ["--labeled-frac", "(0, 1]"]),
    "labeled-frac nan": (["--labeled-frac", "nan"], "", ["--labeled-frac"]),
    "max-steps-per-epoch 0": (["--max-steps-per-epoch", "0"], "", ["--max-steps-per-epoch"]),
    "meta-interval 0": (["--meta-interval", "0"], "", ["--meta-interval"]),
    "unknown method": (["--method", "c2kd"], "", ["--method", "c2kd"]),
    "unknown student": (["--student", "beatformer"], "", ["--student", "beatformer"]),
    "unknown mode": (["--mode", "both"], "", ["--mode", "both"]),
    "unknown preset": (["--preset", "gpu"], "", ["gpu", "preset"]),
    "physnet frames 30": (["--student", "physnet", "--frames", "30"], "", ["--frames", "divisible by 4"]),
    "supervised distill_only": (["--method", "supervised", "--mode", "distill_only"], "", ["--method"]),
    "no component left": (["--no-peak", "--no-background", "--no-morphology"], "", ["--no-peak"]),
    "name ../x": (["--name", "../x"], "", ["--name", "../x"]),
    "name /tmp/x": (["--name", "/tmp/x"], "", ["--name"]),
    "name _teachers": (["--name", "_teachers"], "", ["--name", "_teachers"]),
    "name empty": (["--name", ""], "", ["--name"]),
    "resume of no run": (["--name", "never", "--resume"], "", ["never", "nothing to resume"]),
    "resume ../x": (["--name", "../x", "--resume"], "", ["--name", "../x"]),
    "dataset without split rows": (["--dataset", "physdrive"], "", ["splits.csv", "training split is empty"]),
    "toml stride 0": ([], "stride = 0\n", ["bad.toml", "stride", "at least 1"]),
    "toml teacher_widths []": ([], "teacher_widths = []\n", ["bad.toml", "teacher_widths"]),
    "toml teacher_widths negative": ([], "teacher_widths = [8, -1]\n", ["bad.toml", "teacher_widths"]),
    "toml teacher_widths strings": ([], 'teacher_widths = ["a"]\n', ["bad.toml", "teacher_widths"]),
    "toml unknown key": ([], "learning_rate = 1e-3\n", ["bad.toml", "learning_rate"]),
    "toml wrong type": ([], 'epochs = "five"\n', ["bad.toml", "epochs", "five"]),
    "toml bool for int": ([], "epochs = true\n", ["bad.toml", "epochs"]),
    "toml lr nan": ([], "lr = nan\n", ["bad.toml", "lr", "nan"]),
    "toml fs 0": ([], "fs = 0\n", ["bad.toml", "fs"]),
    "toml fs 1": ([], "fs = 1\n", ["bad.toml", "fs", "6 Hz"]),
    "toml fs 1e9": ([], "fs = 1e9\n", ["bad.toml", "fs"]),
    "toml weight_decay negative": ([], "weight_decay = -1.0\n", ["bad.toml", "weight_decay"]),
    "toml virtual_lr 0": ([], "virtual_lr = 0.0\n", ["bad.toml", "virtual_lr"]),
    "toml lambda inf": ([], "lambda_distill = inf\n", ["bad.toml", "lambda_distill"]),
    "toml dataset": ([], 'dataset = "ubfc"\n', ["bad.toml", "dataset", "ubfc"]),
    "toml select": ([], 'select = "worst"\n', ["bad.toml", "select", "worst"]),
    "toml device": ([], 'device = "tpu"\n', ["bad.toml", "device", "tpu"]),
    "toml student_size small": ([], "student_size = 32\n", ["bad.toml", "student_size", "too small"]),
    "toml big at 72": (
        ["--student", "factorizephys-big"],
        "student_size = 72\n",
        ["bad.toml", "student_size", "128x128"],
    ),
    "toml extra datetime": ([], "[extra]\nwhen = 1979-05-27T07:32:00Z\n", ["bad.toml", "extra"]),
    "toml not toml": ([], "epochs = = 3\n", ["bad.toml", "not valid TOML"]),
    "config missing": (["--config", "/nonexistent/c.toml"], None, ["/nonexistent/c.toml", "no such config"]),
}
if torch.cuda.is_available():
    del OPTION_FAULTS["unknown preset"]  # unchanged; the cuda case below needs a machine without a GPU
else:
    OPTION_FAULTS["device cuda without a GPU"] = (["--device", "cuda"], "", ["--device cuda", "no CUDA GPU"])


@pytest.mark.parametrize("case", list(OPTION_FAULTS))
def test_bad_option_or_config_is_one_line_and_writes_nothing(tiny, tmp_path, case):
    args, toml, names = OPTION_FAULTS[case]
    config = tmp_path / "bad.toml"
    config.write_text(toml_with(toml or ""))
    before = snapshot(tiny.root)
    result = invoke(tiny.root, "train", *(["--config", str(config)] if toml is not None else []), *args)
    assert_refused(result, *names)
    assert snapshot(tiny.root) == before  # nothing written, not even runs/ or ../x


def _splits_json_missing(wd):
    wd.splits_meta.unlink()


def _splits_json_corrupt(wd):
    wd.splits_meta.write_text('{"seed": 3, "shift": ')


def _splits_json_a_list(wd):
    wd.splits_meta.write_text("[1, 2]")


def _splits_csv_missing(wd):
    wd.splits_manifest.unlink()


def _splits_csv_without_columns(wd):
    wd.splits_manifest.write_text("a,b\n1,2\n")


def _splits_csv_binary(wd):
    wd.splits_manifest.write_bytes(bytes(range(256)) * 4)


def _runs_a_file(wd):
    wd.runs.write_text("not a folder")


def _run_folder_a_file(wd):
    wd.runs.mkdir()
    (wd.runs / "default").write_text("not a folder")


def _teacher_cache_a_file(wd):
    wd.runs.mkdir()
    (wd.runs / "_teachers").write_text("not a folder")


def _store_group_deleted(wd):
    shutil.rmtree(wd.store("equipleth") / "v_2_1")


def _store_missing(wd):
    shutil.rmtree(wd.store("equipleth"))


def _store_group_incomplete(wd):
    path = wd.store("equipleth") / "v_1_1" / "zarr.json"
    meta = json.loads(path.read_text())
    meta["attributes"]["complete"] = False
    path.write_text(json.dumps(meta))


def _shifts_from_an_older_split(wd):
    """Shifts drawn in clip order by an older ``rpm split`` (no shift seed): not reproducible per window."""
    meta = json.loads(wd.splits_meta.read_text())
    meta.update(shift={"prob": 0.5, "frames": 30}, clips={"frames": 256, "stride": 30})
    wd.splits_meta.write_text(json.dumps(meta))


def _shift_probability_out_of_range(wd):
    meta = json.loads(wd.splits_meta.read_text())
    meta.update(shift={"prob": 1.5, "frames": 30, "seed": 3})
    wd.splits_meta.write_text(json.dumps(meta))


def _sessions_changed_after_split(wd):
    sessions = wd.manifests / "equipleth_sessions.csv"
    sessions.write_text("session,status\nv_1_1,ok\n")
    meta = json.loads(wd.splits_meta.read_text())
    meta.update(sessions_manifest=str(sessions), sessions_sha256="0" * 64)
    wd.splits_meta.write_text(json.dumps(meta))


# id -> (how the workdir is broken, what the error line must name)
WORKDIR_FAULTS = {
    "splits.json missing": (_splits_json_missing, ["splits.json", "rpm split"]),
    "splits.json corrupt": (_splits_json_corrupt, ["splits.json", "not valid JSON"]),
    "splits.json not an object": (_splits_json_a_list, ["splits.json", "expected a JSON object"]),
    "splits.csv missing": (_splits_csv_missing, ["splits.csv", "missing; run `rpm split`"]),
    "splits.csv without columns": (_splits_csv_without_columns, ["splits.csv", "missing column(s)"]),
    "splits.csv binary": (_splits_csv_binary, ["splits.csv"]),
    "runs is a file": (_runs_a_file, ["runs", "not a folder"]),
    "runs/default is a file": (_run_folder_a_file, ["default", "not a folder"]),
    "runs/_teachers is a file": (_teacher_cache_a_file, ["_teachers", "not a folder"]),
    "store group deleted": (_store_group_deleted, ["v_2_1", "no such session in the store"]),
    "store group incomplete": (_store_group_incomplete, ["v_1_1", "not complete"]),
    "store missing": (_store_missing, ["equipleth.zarr", "no such store"]),
    "shifts from an older split": (_shifts_from_an_older_split, ["splits.json", "rerun `rpm split"]),
    "shift probability out of range": (_shift_probability_out_of_range, ["splits.json", "in [0, 1]"]),
    "sessions changed after the split": (
        _sessions_changed_after_split,
        ["equipleth_sessions.csv", "changed"],
    ),
}


@pytest.mark.parametrize("case", list(WORKDIR_FAULTS))
def test_bad_workdir_is_one_line_and_writes_nothing(tiny, tmp_path, case):
    breaks, names = WORKDIR_FAULTS[case]
    wd = copy_workdir(tiny, tmp_path / "wd")
    breaks(wd)
    before = snapshot(wd.root)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    assert_refused(invoke(wd.root, "train", "--config", str(config)), *names)
    assert snapshot(wd.root) == before


def test_the_matrix_is_large_enough():
    assert len(OPTION_FAULTS) + len(WORKDIR_FAULTS) >= 60


# ----------------------------------------------------------------------------------------- resume


@pytest.mark.parametrize(
    "change",
    [["--lr", "0.5"], ["--teacher-epochs", "2"], ["--seed", "4"], ["--frames", "32"], ["--method", "dml"]],
    ids=lambda c: " ".join(c),
)
def test_refused_resume_changes_nothing_and_a_correct_resume_still_works(trained, tmp_path, change):
    wd = copy_workdir(trained, tmp_path / "wd")
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    before = snapshot(wd.root)
    result = invoke(
        wd.root, "train", "--config", str(config), "--name", "base", "--resume", "--epochs", "2", *change
    )
    line = assert_refused(result, "cannot resume with a different config", "--force")
    assert change[0].strip("-").replace("-", "_") in line
    assert snapshot(wd.root) == before  # config.json, teacher.pt, the teacher cache and the logs untouched
    result = invoke(wd.root, "train", "--config", str(config), "--name", "base", "--resume", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "resuming after epoch 1" in result.output


def test_resume_with_a_corrupt_log_changes_nothing(trained, tmp_path):
    wd = copy_workdir(trained, tmp_path / "wd")
    log = wd.runs / "base" / "log.jsonl"
    log.write_text("{not json\n" + log.read_text())
    before = snapshot(wd.root)
    assert_refused(
        invoke(wd.root, "train", "--name", "base", "--resume", "--epochs", "2"), "log.jsonl", "line 1"
    )
    assert snapshot(wd.root) == before


# ----------------------------------------------------------------------------------------- checkpoints


def evil_checkpoint(path: Path, marker: Path, how: str = "torch") -> None:
    """A .pt whose unpickling would run ``touch marker``: a torch zip file or a bare pickle."""
    payload = {"kind": "student", "model": Evil(marker), "config": {"frames": 24}}
    if how == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(how[-1])))


def bad_checkpoint(path: Path, kind: str, marker: Path) -> None:
    """One kind of bad checkpoint at ``path`` (replacing the file, never writing through a hard link)."""
    if path.exists():
        path.unlink()
    if kind.startswith("evil"):
        evil_checkpoint(path, marker, kind.split("-", 1)[1])
    elif kind == "junk":
        path.write_bytes(b"this is not a checkpoint\n" * 20)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        torch.save({"kind": "student", "model": {"w": torch.zeros(1000)}, "config": {}}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "missing keys":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "old numpy state":  # what *_last.pt held before checkpoints were made safe
        torch.save({"kind": "student", "model": {}, "config": {}, "rng": np.random.get_state()}, path)
    else:
        raise ValueError(kind)


BAD = ["evil-torch", "evil-pickle2", "evil-pickle4", "junk", "empty", "truncated", "missing keys"]


def test_the_evil_checkpoint_does_run_code_without_weights_only(tmp_path):
    """Control: the files these tests use really are malicious."""
    evil_checkpoint(tmp_path / "evil.pt", tmp_path / "control")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert (tmp_path / "control").exists()


@pytest.mark.parametrize("kind", [*BAD, "old numpy state"])
def test_load_checkpoint_refuses_with_one_line_naming_the_file(tmp_path, kind):
    marker = tmp_path / MARKER
    bad_checkpoint(tmp_path / "x.pt", kind, marker)
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "x.pt")
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "x.pt") in message
    if kind.startswith("evil"):
        assert "refused to load" in message
    if kind == "old numpy state":
        assert "numpy" in message and "train it again" in message
    assert not marker.exists()


def test_checkpoints_rpm_writes_load_with_weights_only(trained):
    for name in ("teacher.pt", "student.pt", "student_last.pt"):
        ckpt = load_checkpoint(trained.runs / "base" / name, ("kind", "config"))
        assert ckpt["config"]["run_name"] == "base"


@pytest.mark.parametrize("kind", BAD)
def test_predict_refuses_a_bad_checkpoint(tmp_path, kind):
    from train.predict import predict_video

    marker = tmp_path / MARKER
    bad_checkpoint(tmp_path / "evil.pt", kind, marker)
    result = invoke(
        tmp_path, "predict", str(tmp_path / "face.mp4"), "--checkpoint", str(tmp_path / "evil.pt")
    )
    assert_refused(result, "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt"):
        predict_video(tmp_path / "face.mp4", tmp_path / "evil.pt", tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", BAD)
def test_report_refuses_a_bad_checkpoint(trained, tmp_path, kind):
    wd = copy_workdir(trained, tmp_path / "wd")
    marker = tmp_path / MARKER
    (wd.runs / "evil").mkdir()
    bad_checkpoint(wd.runs / "evil" / "student.pt", kind, marker)
    assert_refused(invoke(wd.root, "report", "evil"), "student.pt", progress=True)
    assert not marker.exists()


@pytest.mark.parametrize("target", ["student_last.pt", "student.pt", "teacher.pt"])
@pytest.mark.parametrize("kind", ["evil-torch", "evil-pickle4", "junk", "old numpy state"])
def test_resume_refuses_a_bad_checkpoint_and_changes_nothing(trained, tmp_path, target, kind):
    wd = copy_workdir(trained, tmp_path / "wd")
    marker = tmp_path / MARKER
    if target == "teacher.pt":  # without the cache, --resume reuses the run's own teacher.pt
        saved = json.loads((wd.runs / "base" / "config.json").read_text())
        (wd.runs / "base" / "config.json").write_text(json.dumps({**saved, "teacher_cache": False}))
    bad_checkpoint(wd.runs / "base" / target, kind, marker)
    before = snapshot(wd.root)
    result = invoke(wd.root, "train", "--name", "base", "--resume", "--epochs", "2")
    assert_refused(result, target)
    assert not marker.exists()
    assert snapshot(wd.root) == before


@pytest.mark.parametrize("kind", ["evil-torch", "evil-pickle2", "junk", "truncated"])
def test_teacher_cache_refuses_a_bad_teacher_and_changes_nothing(trained, tmp_path, kind):
    wd = copy_workdir(trained, tmp_path / "wd")
    marker = tmp_path / MARKER
    (cached,) = sorted((wd.runs / "_teachers").glob("*/teacher.pt"))
    bad_checkpoint(cached, kind, marker)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    before = snapshot(wd.root)
    assert_refused(invoke(wd.root, "train", "--config", str(config), "--name", "other"), str(cached))
    assert not marker.exists() and not (wd.runs / "other").exists()
    assert snapshot(wd.root) == before
