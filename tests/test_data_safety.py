"""Nothing rpm did not create is deleted or overwritten, names cannot leave their folders, and one
process at a time writes a store, a run, the split manifests or a synth folder.

Through the real CLI where it matters; the lock tests hold the lock from a second, real process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from cli import app
from pipeline.lock import LockedError, hold_lock
from pipeline.paths import PathEscapeError, Workdir, lock_beside
from pipeline.recipes.equipleth import prepare_equipleth
from pipeline.store import STORE_MARKER, StoreError, claim_store, remove_group, store_state, write_session
from pipeline.synth.equipleth import synth_equipleth
from pipeline.synth.target import SYNTH_MARKER

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
TINY_SYNTH = ["--subjects", "1", "--trials", "1", "--seconds", "2", "--crop-size", "32"]


def cli(*args, workdir: Path):
    return CliRunner().invoke(app, [*map(str, args), "--workdir", str(workdir)])


def state(folder: Path, mtimes: bool = True) -> dict:
    """Every entry under ``folder`` (itself included): folders by name, files by bytes (and mtime)."""

    def file(p: Path):
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        return (digest, p.stat().st_mtime_ns) if mtimes else digest

    if not folder.exists():
        return {}
    if folder.is_file():
        return {".": file(folder)}
    return {
        ".": "dir",
        **{str(p.relative_to(folder)): "dir" if p.is_dir() else file(p) for p in sorted(folder.rglob("*"))},
    }


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("safety") / "raw"
    synth_equipleth(out, subjects=3, trials=1, seconds=4.0, seed=2, crop_size=48, progress=False)
    return out


@pytest.fixture(scope="module")
def workdir(raw, tmp_path_factory):
    wd = tmp_path_factory.mktemp("safety_wd")
    result = cli("preprocess", "equipleth", "--root", raw, "--scheduler", "sync", workdir=wd)
    assert result.exit_code == 0, result.output
    return wd


# --------------------------------------------------------------------------- stores


def test_preprocess_refuses_a_raw_folder_as_store_and_deletes_nothing(raw, tmp_path):
    # The reported case: a sub-folder named like a session (v_1_1) used to be removed as a stale group.
    root = tmp_path / "raw"
    shutil.copytree(raw, root)
    before = state(root)
    result = cli("preprocess", "equipleth", "--root", root, "--store", root / "rgb_files", workdir=tmp_path)
    assert result.exit_code == 1
    assert "not a Zarr store made by rpm" in result.output and str(root / "rgb_files") in result.output
    assert "Traceback" not in result.output
    assert state(root) == before  # byte-identical, nothing removed
    assert not (tmp_path / "manifests").exists() and not list(tmp_path.rglob("*.lock"))


def _plain_folder(p: Path) -> None:
    p.mkdir()
    (p / "notes.txt").write_text("mine")


def _foreign_zarr(p: Path) -> None:
    zarr.open_group(str(p), mode="w", zarr_format=3).attrs["owner"] = "someone else"


def _legacy_plus_user_folder(p: Path) -> None:
    zarr.open_group(str(p), mode="w", zarr_format=3)  # looks like an old rpm store ...
    (p / "v_1_1").mkdir()
    (p / "v_1_1" / "thesis.tex").write_text("mine")  # ... but holds a user's folder named like a session


def _a_file(p: Path) -> None:
    p.write_bytes(b"not a store")


@pytest.mark.parametrize("make", [_plain_folder, _foreign_zarr, _legacy_plus_user_folder, _a_file])
def test_a_store_path_that_is_not_rpms_is_refused_before_any_write(raw, tmp_path, make):
    store = tmp_path / "s.zarr"
    make(store)
    before = state(store)
    with pytest.raises(StoreError, match=r"s\.zarr: .*(not a Zarr store made by rpm|is a file)"):
        prepare_equipleth(raw, store, tmp_path / "m", scheduler="sync")
    assert state(store) == before
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob("*.lock"))


def test_remove_group_only_removes_rpm_groups_of_a_marked_store(tmp_path):
    unmarked = tmp_path / "u.zarr"
    zarr.open_group(str(unmarked), mode="w", zarr_format=3).create_group("v_1_1")
    with pytest.raises(StoreError, match="not a store made by rpm; refusing to delete v_1_1"):
        remove_group(unmarked, "v_1_1")
    assert (unmarked / "v_1_1" / "zarr.json").is_file()

    store = tmp_path / "s.zarr"
    video = np.zeros((4, 128, 128, 3), np.uint8)
    write_session(store, "v_2_1", video, np.zeros(4), np.zeros((16, 2, 5)), np.ones(16, bool), {})
    assert store_state(store) == "rpm"
    (store / "v_3_1").mkdir()
    (store / "v_3_1" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="holds files rpm did not write"):
        remove_group(store, "v_3_1")
    assert (store / "v_3_1" / "notes.txt").read_text() == "mine"
    remove_group(store, "v_2_1")  # rpm's own group goes
    assert not (store / "v_2_1").exists()


def test_a_store_made_before_the_marker_is_adopted_unchanged(raw, workdir, tmp_path):
    store = tmp_path / "old.zarr"
    shutil.copytree(workdir / "data" / "equipleth.zarr", store)
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"] = {}  # what the previous rpm wrote
    (store / "zarr.json").write_text(json.dumps(meta, indent=2))
    assert store_state(store) == "legacy"
    groups_before = {k: v for k, v in state(store).items() if k.startswith("v_")}
    manifest = prepare_equipleth(raw, store, tmp_path / "m", scheduler="sync")
    assert (manifest.status == "ok").all()
    assert zarr.open_group(str(store), mode="r").attrs[STORE_MARKER] == {"version": 1}
    assert {k: v for k, v in state(store).items() if k.startswith("v_")} == groups_before  # resumed as-is


def test_remote_store_marked_when_created_and_foreign_group_refused():
    url = f"memory://rpm-safety-{os.getpid()}/new.zarr"
    assert store_state(url) == "absent"
    claim_store(url)
    assert store_state(url) == "rpm"
    foreign = f"memory://rpm-safety-{os.getpid()}/foreign.zarr"
    zarr.open_group(foreign, mode="w", zarr_format=3).attrs["owner"] = "someone else"
    with pytest.raises(StoreError, match="not made by rpm"):
        claim_store(foreign)
    assert STORE_MARKER not in zarr.open_group(foreign, mode="r").attrs


# --------------------------------------------------------------------------- synth


def test_synth_refuses_a_folder_it_did_not_write(tmp_path):
    target = tmp_path / "mine"
    (target / "rgb_files" / "v_1_1").mkdir(parents=True)
    (target / "rgb_files" / "v_1_1" / "holiday.png").write_bytes(b"\x89PNG mine")
    (target / "notes.txt").write_text("mine")
    before = state(target)
    result = cli("synth", "equipleth", "--out", target, *TINY_SYNTH, workdir=tmp_path)
    assert result.exit_code == 1
    assert "not empty and was not written by rpm synth" in result.output and "--force" in result.output
    assert state(target) == before and not list(tmp_path.glob("*.lock"))


def test_synth_force_writes_into_a_foreign_folder(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    result = cli("synth", "equipleth", "--out", target, *TINY_SYNTH, "--force", workdir=tmp_path)
    assert result.exit_code == 0, result.output
    assert (target / "notes.txt").read_text() == "mine"  # not synth's name: kept
    assert json.loads((target / SYNTH_MARKER).read_text())["rpm_synth"]["layout"] == "equipleth"
    assert (target / "rf_files" / "1_1" / "rf.pkl").is_file()


def test_synth_reruns_into_its_own_folder_and_adopts_a_pre_marker_one(tmp_path):
    target = tmp_path / "data" / "raw" / "equipleth"  # the default home
    assert cli("synth", "equipleth", *TINY_SYNTH, workdir=tmp_path).exit_code == 0
    before = state(target, mtimes=False)  # the small sidecar files are rewritten, byte-identical
    png = target / "rgb_files" / "v_1_1" / "rgbd_rgb_0.png"
    png_mtime = png.stat().st_mtime_ns
    assert SYNTH_MARKER in before
    again = cli("synth", "equipleth", *TINY_SYNTH, workdir=tmp_path)
    assert again.exit_code == 0, again.output
    assert state(target, mtimes=False) == before and png.stat().st_mtime_ns == png_mtime  # resumed
    (target / SYNTH_MARKER).unlink()  # a folder written before the marker existed
    old = cli("synth", "equipleth", *TINY_SYNTH, workdir=tmp_path)
    assert old.exit_code == 0, old.output
    assert state(target, mtimes=False) == before  # recognised by synth_truth.json, marked again
    assert png.stat().st_mtime_ns == png_mtime
    other = cli("synth", "physdrive", "--out", target, "--seconds", "2", workdir=tmp_path)
    assert other.exit_code == 1 and "holds rpm's synthetic EquiPleth data" in other.output
    assert state(target, mtimes=False) == before


# --------------------------------------------------------------------------- names and output paths


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".hidden", "_teachers", "x.lock", "/tmp/x"])
def test_run_names_cannot_leave_runs(tmp_path, name):
    wd = tmp_path / "wd"
    wd.mkdir()
    result = cli("train", "--name", name, workdir=wd)
    assert result.exit_code == 1 and "run name" in result.output and "Traceback" not in result.output
    assert list(wd.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["wd"]
    with pytest.raises(PathEscapeError):
        Workdir(wd).run(name)


def test_run_name_from_a_config_file_and_report_names_are_checked(tmp_path):
    (tmp_path / "c.toml").write_text('run_name = "../evil"\n')
    result = cli("train", "--config", tmp_path / "c.toml", workdir=tmp_path)
    assert result.exit_code == 1 and "run name '../evil'" in result.output
    assert not (tmp_path / "evil").exists() and not (tmp_path / "runs").exists()
    result = cli("report", "../x", workdir=tmp_path)
    assert result.exit_code == 1 and "run name '../x'" in result.output
    assert Workdir(tmp_path).run("base") == tmp_path / "runs" / "base"


@pytest.mark.parametrize(
    "args",
    [
        ["synth", "equipleth", "--out", "{f}"],
        ["synth", "physdrive", "--out", "{f}/sub"],
        ["predict", "video.mp4", "--out", "{f}"],
    ],
)
def test_an_out_that_is_a_file_is_a_named_error(tmp_path, args):
    f = tmp_path / "taken"
    f.write_text("mine")
    result = cli(*[a.format(f=f) for a in args], workdir=tmp_path)
    assert result.exit_code == 1 and "--out" in result.output and "not a folder" in result.output
    assert f.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


# --------------------------------------------------------------------------- locks


@contextmanager
def held_elsewhere(lock: Path):
    """A second, real process holding ``lock`` through pipeline.lock until the block ends."""
    code = (
        "import sys; from pipeline.lock import hold_lock\n"
        "with hold_lock(sys.argv[1], 'test'):\n"
        "    print('held', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(lock)],
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_second_preprocess_stops_at_once_and_changes_nothing(raw, workdir):
    store = workdir / "data" / "equipleth.zarr"
    lock = lock_beside(store)
    before = (state(store), state(workdir / "manifests"))
    cmd = [sys.executable, "-m", "cli", "preprocess", "equipleth", "--root", str(raw), "--overwrite"]
    with held_elsewhere(lock) as holder:
        t0 = time.monotonic()
        second = subprocess.run(
            [*cmd, "--workdir", str(workdir)], env=ENV, capture_output=True, text=True, timeout=120
        )
        elapsed = time.monotonic() - t0
        assert lock.is_file()
    assert second.returncode == 1, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr  # one line, no traceback
    assert f"store {store} is in use by another rpm process (PID {holder.pid}, lock {lock})" in lines[0]
    assert elapsed < 60  # stopped at the lock: no session was processed
    assert (state(store), state(workdir / "manifests")) == before  # --overwrite would have rewritten it
    assert not lock.exists()  # the holder removed it on release
    rerun = cli("preprocess", "equipleth", "--root", raw, "--scheduler", "sync", workdir=workdir)
    assert rerun.exit_code == 0, rerun.output
    assert state(store) == before[0] and not lock.exists()


def test_a_second_train_on_the_same_run_stops_before_writing(tmp_path):
    wd = Workdir(tmp_path)
    with held_elsewhere(wd.run_lock("base")) as holder:
        result = cli("train", "--name", "base", workdir=tmp_path)
        assert result.exit_code == 1
        assert f"run {wd.run('base')} is in use by another rpm process (PID {holder.pid}" in result.output
        assert sorted(p.name for p in wd.runs.iterdir()) == ["base.lock"]
    assert not wd.runs.exists()  # lock file and the folder made for it are gone
    after = cli("train", "--name", "base", workdir=tmp_path)  # goes past the lock to the missing split
    assert after.exit_code != 0 and "in use" not in after.output


def test_a_second_split_stops_and_leaves_the_manifests(workdir):
    wd = Workdir(workdir)
    before = state(wd.manifests)
    with held_elsewhere(wd.split_lock) as holder:
        result = cli("split", "--frames", "32", "--stride", "16", workdir=workdir)
        assert result.exit_code == 1 and f"(PID {holder.pid}, lock {wd.split_lock})" in result.output
        assert {k: v for k, v in state(wd.manifests).items() if k != "split.lock"} == before
    result = cli("split", "--frames", "32", "--stride", "16", workdir=workdir)
    assert result.exit_code == 0, result.output
    assert wd.splits_manifest.is_file() and not wd.split_lock.exists()


def test_a_second_synth_into_the_same_folder_stops(tmp_path):
    target = tmp_path / "data" / "raw" / "equipleth"
    with held_elsewhere(lock_beside(target)) as holder:
        result = cli("synth", "equipleth", *TINY_SYNTH, workdir=tmp_path)
        assert result.exit_code == 1 and f"PID {holder.pid}" in result.output
    assert not target.exists()


def test_a_killed_holder_never_leaves_a_stale_lock(tmp_path):
    lock = tmp_path / "s.zarr.lock"
    with held_elsewhere(lock) as holder:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        assert lock.read_text().strip() == str(holder.pid)  # the file stays ...
        with hold_lock(lock, "store s.zarr"):  # ... but the kernel released the lock
            assert lock.read_text().strip() == str(os.getpid())
    assert not lock.exists()


def test_a_waiting_lock_names_its_holder_and_is_taken_when_freed(tmp_path, capsys):
    lock = tmp_path / "k.lock"
    with held_elsewhere(lock) as holder:
        t0 = time.monotonic()
        threading.Timer(1.0, holder.stdin.close).start()  # the holder lets go after a second
        with hold_lock(lock, "thing k", wait=True):
            assert time.monotonic() - t0 >= 1.0
            assert lock.read_text().strip() == str(os.getpid())
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"thing k: waiting for another rpm process (PID {holder.pid}, lock {lock})"]
    assert not lock.exists()


def test_one_process_cannot_take_a_lock_twice_and_lock_folders_are_tidied(tmp_path):
    lock = tmp_path / "a" / "b" / "x.lock"
    with hold_lock(lock, "thing x"):
        with pytest.raises(
            LockedError, match=rf"thing x is in use by another rpm process \(PID {os.getpid()}"
        ):
            with hold_lock(lock, "thing x"):
                pass
    assert list(tmp_path.iterdir()) == []  # a/b were made for the lock alone


def test_claiming_a_store_removes_a_killed_runs_root_temp_file(tmp_path):
    store = tmp_path / "s.zarr"
    claim_store(store)
    stale = store / "zarr.0123abcd.partial"  # what a kill during zarr's atomic rewrite of zarr.json leaves
    stale.write_text("{")
    claim_store(store)  # a session writer's claim leaves it (other writers may be running)
    assert stale.exists()
    claim_store(store, clean_temp=True)  # the recipe's first claim, under the store's lock
    assert not stale.exists() and store_state(store) == "rpm"
