"""The bad-invocation matrix (issue 14): every command refuses bad options and unusable files with one line.

Each CLI case runs ``rpm`` in-process on a small working directory (synthetic EquiPleth, preprocessed,
split and trained once per module) after an optional setup that breaks one thing, and asserts:

* the exit status (2: an option the parser or rpm refuses; 1: a file or the data; never 0);
* no ``Traceback`` and no boxed usage message: exactly one ``error: ...`` line, which names the
  option or the file and matches the case's pattern;
* nothing in the working directory changed: no file written, removed or touched by the refused command.

Dataset faults (a bad file inside one session) do not stop a run: the session is ``failed`` with a
reason naming the file, or stored with a note in ``repairs``. ``test_faults`` holds the EquiPleth and
PhysDrive faults of issue 7; these are the ones issue 14 found accepted silently. The train options
and checkpoints have their own matrix (``test_faults_train``).
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_recipes import file_state, write_folder_session
from tiny_data import tiny_train_toml
from typer.testing import CliRunner

from cli import app
from pipeline import dca1000
from pipeline.equipleth import prepare_equipleth
from pipeline.folder import prepare_folder
from pipeline.paths import Workdir
from pipeline.split import write_splits
from pipeline.synth_equipleth import synth_equipleth
from pipeline.video import synthetic_face_frames, write_video

REPO = Path(__file__).resolve().parents[1]
SECONDS = 10.0  # 275 aligned frames: one default 256-frame clip per session


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Workdir:
    """3 subjects (fold: 1 train, 3 val, 2 test), preprocessed, split, and a tiny run ``r`` (T = 64)."""
    import torch

    wd = Workdir(tmp_path_factory.mktemp("matrix"))
    synth_equipleth(
        wd.raw("equipleth"), subjects=3, trials=1, seconds=SECONDS, seed=2, crop_size=48, progress=False
    )
    prepare_equipleth(wd.raw("equipleth"), wd.store("equipleth"), wd.manifests, scheduler="sync")
    write_splits(
        wd.sessions_manifest("equipleth"),
        wd.splits_manifest,
        wd.splits_meta,
        3,
        clips_path=wd.clips_manifest,
        stores={"equipleth": str(wd.store("equipleth"))},
    )
    (wd.root / "tiny.toml").write_text(tiny_train_toml().replace("frames = 24", "frames = 64"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run(wd.root, "train", "--config", str(wd.root / "tiny.toml"), "--name", "r")
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    write_video(wd.root / "face.mp4", synthetic_face_frames(seconds=3.0, bpm=80.0))
    return wd


def run(root: Path, *args: str):
    return CliRunner().invoke(app, [*args, "--workdir", str(root)])


# ----------------------------------------------------------------------------------------- setups
# Each takes the working directory's root and breaks one thing in it.


def write(rel: str, data: bytes | str):
    def setup(root: Path) -> None:
        path = root / rel
        path.unlink(missing_ok=True) if path.is_file() else shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())

    return setup


def remove(rel: str):
    def setup(root: Path) -> None:
        path = root / rel
        path.unlink() if path.is_file() else shutil.rmtree(path)

    return setup


def remove_test_session(array: str = ""):
    """Delete the test session's store group (or one of its arrays) after the split was made."""

    def setup(root: Path) -> None:
        splits = pd.read_csv(Workdir(root).splits_manifest)
        session = splits.session[splits.split == "test"].iloc[0]
        remove(f"data/equipleth.zarr/{session}/{array}".rstrip("/"))(root)

    return setup


def pickled(rel: str, obj):
    return write(rel, pickle.dumps(obj))


def physdrive_with_pairing(columns: str):
    def setup(root: Path) -> None:
        (root / "pd" / "RGB and IR" / "AFH1" / "AS").mkdir(parents=True)
        (root / "pd" / "pairing.csv").write_text(f"{columns}\nAFH1,AS\n")

    return setup


RAW = "data/raw/equipleth"
SESSIONS_CSV = "manifests/equipleth_sessions.csv"


@dataclass
class Case:
    id: str
    args: list[str]
    status: int
    pattern: str  # must match the one error line
    setup: object = None  # root -> None


CASES = [
    # --- global
    Case("unknown command", ["frobnicate"], 2, r"No such command 'frobnicate'"),
    Case("unknown option", ["split", "--sead", "3"], 2, r"No such option: --sead"),
    Case("debug after the command", ["split", "--debug"], 2, r"--debug goes before the command"),
    # --- synth
    Case("synth seed negative", ["synth", "equipleth", "--seed", "-1"], 2, r"'--seed'"),
    Case("synth crop size 8", ["synth", "equipleth", "--crop-size", "8"], 2, r"'--crop-size'"),
    Case("synth seconds inf", ["synth", "equipleth", "--seconds", "inf"], 2, r"--seconds must be a finite"),
    Case("synth seconds 1", ["synth", "equipleth", "--seconds", "1"], 2, r"'--seconds'"),
    Case("synth seconds nan", ["synth", "equipleth", "--seconds", "nan"], 2, r"'--seconds'"),
    Case("synth size huge", ["synth", "equipleth", "--size", "huge"], 2, r"--size must be small or full"),
    Case("synth subjects 0", ["synth", "equipleth", "--subjects", "0"], 2, r"'--subjects'"),
    Case(
        "synth physdrive trials", ["synth", "physdrive", "--trials", "2"], 2, r"--trials applies to equipleth"
    ),
    Case("synth equipleth sessions", ["synth", "equipleth", "--sessions", "2"], 2, r"--sessions applies to"),
    Case("synth physdrive crop size", ["synth", "physdrive", "--crop-size", "64"], 2, r"--crop-size applies"),
    Case("synth unknown layout", ["synth", "folder"], 2, r"'folder' is not one of|Invalid value"),
    Case(
        "synth out is a file",
        ["synth", "equipleth", "--out", "{root}/afile", "--subjects", "1", "--trials", "1", "--seconds", "3"],
        1,
        r"afile",
        write("afile", "keep me"),
    ),
    # --- preprocess
    Case(
        "preprocess scheduler", ["preprocess", "equipleth", "--scheduler", "bogus"], 2, r"--scheduler must be"
    ),
    Case("preprocess workers 0", ["preprocess", "equipleth", "--workers", "0"], 2, r"'--workers'"),
    Case("preprocess workers -1", ["preprocess", "equipleth", "--workers", "-1"], 2, r"'--workers'"),
    Case(
        "preprocess rf decoder",
        ["preprocess", "equipleth", "--rf-decoder", "fast"],
        2,
        r"--rf-decoder must be",
    ),
    Case(
        "preprocess face rate 2", ["preprocess", "physdrive", "--min-face-rate", "2"], 2, r"'--min-face-rate'"
    ),
    Case("preprocess unknown dataset", ["preprocess", "mmwave"], 2, r"'mmwave' is not one of|Invalid value"),
    Case(
        "preprocess root missing",
        ["preprocess", "equipleth", "--root", "{root}/nowhere"],
        1,
        r"nowhere: not an EquiPleth root",
    ),
    Case(
        "preprocess folder root missing",
        ["preprocess", "folder", "--root", "{root}/nowhere"],
        1,
        r"nowhere: no such folder",
    ),
    Case(
        "fitzpatrick labels None",
        ["preprocess", "equipleth"],
        1,
        r"fitzpatrick_labels\.pkl: expected \{'v_<s>': type\}, got NoneType",
        pickled(f"{RAW}/fitzpatrick_labels.pkl", None),
    ),
    Case(
        "fitzpatrick labels junk",
        ["preprocess", "equipleth"],
        1,
        r"fitzpatrick_labels\.pkl: not a readable pickle",
        write(f"{RAW}/fitzpatrick_labels.pkl", b"\x80junk"),
    ),
    Case(
        "fold file None",
        ["preprocess", "equipleth"],
        1,
        r"demo_fold\.pkl: expected \{fold:",
        pickled(f"{RAW}/demo_fold.pkl", None),
    ),
    Case(
        "fold list None",
        ["preprocess", "equipleth"],
        1,
        r"demo_fold\.pkl: fold 0 test is NoneType, not a list",
        pickled(f"{RAW}/demo_fold.pkl", {0: {"test": None}}),
    ),
    Case(
        "manifests is a file",
        ["preprocess", "equipleth"],
        1,
        r"manifests/ .*manifests: not a folder",
        write("manifests", "x"),
    ),
    Case(
        "pairing.csv without columns",
        ["preprocess", "physdrive", "--root", "{root}/pd"],
        1,
        r"pd/pairing\.csv: missing columns",
        physdrive_with_pairing("subject,session"),
    ),
    # --- split
    Case("split seed negative", ["split", "--seed", "-1"], 2, r"'--seed'"),
    Case("split frames 2", ["split", "--frames", "2"], 2, r"'--frames'"),
    Case(
        "split frames 100000",
        ["split", "--frames", "100000"],
        1,
        r"--frames 100000: no train session is that long \(the longest has 275 frames\)",
    ),
    Case("split stride 0", ["split", "--stride", "0"], 2, r"'--stride'"),
    Case(
        "split test frac 1.5",
        ["split", "--protocol", "holdout", "--test-frac", "1.5"],
        2,
        r"--test-frac must be",
    ),
    Case("split val frac 0", ["split", "--val-frac", "0"], 2, r"--val-frac must be in \(0, 1\)"),
    Case(
        "split labeled frac nan",
        ["split", "--labeled-frac", "nan"],
        2,
        r"--labeled-frac must be in \(0, 1\], got nan",
    ),
    Case("split labeled frac 0", ["split", "--labeled-frac", "0"], 2, r"--labeled-frac must be"),
    Case("split shift prob 2", ["split", "--shift-prob", "2"], 2, r"'--shift-prob'"),
    Case("split protocol unknown", ["split", "--protocol", "kfold"], 2, r"--protocol must be one of"),
    Case(
        "split cross without target", ["split", "--protocol", "cross"], 2, r"--protocol cross needs --target"
    ),
    Case(
        "split target without cross",
        ["split", "--target", "physdrive"],
        2,
        r"--target applies to --protocol cross",
    ),
    Case(
        "split fold with holdout", ["split", "--protocol", "holdout", "--fold", "0"], 2, r"--fold applies to"
    ),
    Case("split fold unknown", ["split", "--fold", "9"], 1, r"fold 9; none were found"),
    Case(
        "split cross target unprocessed",
        ["split", "--protocol", "cross", "--target", "physdrive"],
        1,
        r"physdrive_sessions\.csv: no target sessions manifest",
    ),
    Case(
        "sessions manifest missing",
        ["split"],
        1,
        r"equipleth_sessions\.csv: no sessions manifest",
        remove(SESSIONS_CSV),
    ),
    Case(
        "sessions manifest without columns",
        ["split"],
        1,
        r"equipleth_sessions\.csv: missing column\(s\) session, dataset, subject, status, n_frames",
        write(SESSIONS_CSV, "x,y\n1,2\n"),
    ),
    Case(
        "sessions manifest empty",
        ["split"],
        1,
        r"equipleth_sessions\.csv: empty file",
        write(SESSIONS_CSV, ""),
    ),
    Case(
        "sessions manifest binary",
        ["split"],
        1,
        r"equipleth_sessions\.csv: not a readable CSV",
        write(SESSIONS_CSV, b"\xff\xfe\x00\x01"),
    ),
    Case(
        "sessions manifest frames not numbers",
        ["split"],
        1,
        r"n_frames is not a whole number",
        write(SESSIONS_CSV, "session,dataset,subject,status,n_frames\nv_1_1,equipleth,1,ok,many\n"),
    ),
    Case(
        "split store group deleted",
        ["split"],
        1,
        r"equipleth\.zarr/v_1_1: no such session in the store",
        remove("data/equipleth.zarr/v_1_1"),
    ),
    Case(
        "split store array deleted",
        ["split"],
        1,
        r"v_1_1: array\(s\) radar_ok missing",
        remove("data/equipleth.zarr/v_1_1/radar_ok"),
    ),
    # --- report
    Case(
        "report splits.csv missing",
        ["report", "r"],
        1,
        r"splits\.csv: no split",
        remove("manifests/splits.csv"),
    ),
    Case(
        "report splits.csv without columns",
        ["report", "r"],
        1,
        r"splits\.csv: missing column\(s\)",
        write("manifests/splits.csv", "a,b\n1,2\n"),
    ),
    Case(
        "report splits.csv empty",
        ["report", "r"],
        1,
        r"splits\.csv: empty file",
        write("manifests/splits.csv", ""),
    ),
    Case(
        "report unknown split name",
        ["report", "r"],
        1,
        r"splits\.csv: unknown split name\(s\) \['holdout'\]",
        write("manifests/splits.csv", "session,dataset,subject,split\nv_2_1,equipleth,2,holdout\n"),
    ),
    Case(
        "report store group deleted",
        ["report", "r"],
        1,
        r"equipleth\.zarr/v_\d_1: no such session in the store",
        remove_test_session(),
    ),
    Case(
        "report store video deleted",
        ["report", "r"],
        1,
        r"v_\d_1: array\(s\) video missing",
        remove_test_session("video"),
    ),
    Case(
        "report reports is a file",
        ["report", "r"],
        1,
        r"reports/ .*reports: not a folder",
        write("reports", "x"),
    ),
    Case("report device tpu", ["report", "r", "--device", "tpu"], 2, r"--device must be auto, cpu, cuda"),
    Case(
        "report device cuda 99",
        ["report", "r", "--device", "cuda:99"],
        2,
        r"--device cuda:99: this machine has",
    ),
    Case("report eval stride 0", ["report", "r", "--eval-stride", "0"], 2, r"'--eval-stride'"),
    Case("report unknown run", ["report", "nope"], 1, r"runs/nope: no such run"),
    # --- predict
    Case(
        "predict video missing",
        ["predict", "{root}/gone.mp4", "--checkpoint", "r"],
        1,
        r"gone\.mp4: no such file",
    ),
    Case(
        "predict video is a folder",
        ["predict", "{root}/runs", "--checkpoint", "r"],
        1,
        r"runs: a folder, not a video file",
    ),
    Case(
        "predict junk video",
        ["predict", "{root}/junk.mp4", "--checkpoint", "r"],
        1,
        r"junk\.mp4: not a readable video",
        write("junk.mp4", b"\x00\x00\x00\x18ftypmp42 not really"),
    ),
    Case(
        "predict out is a file",
        ["predict", "{root}/face.mp4", "--checkpoint", "r", "--out", "{root}/tiny.toml"],
        1,
        r"--out .*tiny\.toml: not a folder",
    ),
    Case(
        "predict default out is a file",
        ["predict", "{root}/face.mp4", "--checkpoint", "r"],
        1,
        r"predictions/face: exists and is not a folder",
        write("predictions/face", "x"),
    ),
    Case(
        "predict format xml",
        ["predict", "{root}/face.mp4", "--format", "xml"],
        2,
        r"--format must be csv or json",
    ),
    Case("predict device tpu", ["predict", "{root}/face.mp4", "--device", "tpu"], 2, r"--device must be"),
    Case("predict stride 0", ["predict", "{root}/face.mp4", "--stride", "0"], 2, r"'--stride'"),
    Case(
        "predict checkpoint unknown",
        ["predict", "{root}/face.mp4", "--checkpoint", "nope"],
        1,
        r"checkpoint 'nope': neither a \.pt file",
    ),
    Case(
        "predict teacher checkpoint",
        ["predict", "{root}/face.mp4", "--checkpoint", "{root}/runs/r/teacher.pt"],
        1,
        r"teacher\.pt: a radar teacher checkpoint",
    ),
    # --- demo (refused before it writes anything)
    Case("demo subjects 1", ["demo", "--subjects", "1"], 2, r"'--subjects'"),
    Case("demo labeled frac 0", ["demo", "--labeled-frac", "0"], 2, r"--labeled-frac must be in \(0, 1\]"),
    Case("demo seconds -1", ["demo", "--seconds", "-1"], 2, r"'--seconds'"),
    Case("demo seconds inf", ["demo", "--seconds", "inf"], 2, r"--seconds must be a finite"),
    Case("demo seed -1", ["demo", "--seed", "-1"], 2, r"'--seed'"),
]


def one_error_line(output: str) -> str:
    """The output's single ``error:`` line (and no traceback or boxed usage message)."""
    assert "Traceback" not in output, output
    assert "╭" not in output and "Usage:" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_invocation_is_one_line_and_changes_nothing(workdir, tmp_path, case):
    root = workdir.root
    if case.setup is not None:
        root = tmp_path / "wd"
        shutil.copytree(workdir.root, root, symlinks=True)
        case.setup(root)
    before = file_state(root)
    result = run(root, *[a.replace("{root}", str(root)) for a in case.args])
    line = one_error_line(result.output)
    assert result.exit_code == case.status, result.output
    assert re.search(case.pattern, line), line
    assert file_state(root) == before  # nothing written, removed or touched


def test_enough_cases():
    assert len(CASES) >= 45


# ------------------------------------------------------------------------- debug and unexpected errors


def test_debug_shows_the_traceback(workdir):
    args = ["split", "--frames", "100000", "--workdir", str(workdir.root)]
    plain = run(workdir.root, "split", "--frames", "100000")
    assert "Traceback" not in plain.output
    result = CliRunner().invoke(app, ["--debug", *args])
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.output and "SplitError" in result.output
    assert result.output.rstrip().splitlines()[-1].startswith("error: --frames 100000")
    env = {
        **os.environ,
        "RPM_DEBUG": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "cli", *args], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and "error: --frames 100000" in proc.stderr


def test_an_unexpected_exception_is_one_line_with_status_3(workdir, monkeypatch):
    import pipeline.split

    def broken(*args, **kwargs):
        raise KeyError("v_9_9")

    monkeypatch.setattr(pipeline.split, "write_splits", broken)
    result = run(workdir.root, "split")
    line = one_error_line(result.output)
    assert result.exit_code == 3
    assert line == "error: KeyError: 'v_9_9' (unexpected; rerun with --debug for the traceback)"


def test_an_os_error_names_the_file(workdir, monkeypatch):
    import pipeline.split

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(workdir.splits_manifest))

    monkeypatch.setattr(pipeline.split, "write_splits", denied)
    result = run(workdir.root, "split")
    assert one_error_line(result.output) == f"error: {workdir.splits_manifest}: Permission denied"
    assert result.exit_code == 1


# --------------------------------------------------------------------------------- dataset faults
# session (subject) -> fault; each ends as a failed session with its reason or a note in ``repairs``

EQ_FAULTS = {
    1: "clean",
    2: "ppg with two columns",
    3: "ppg not numeric",
    4: "rf.pkl packets of the wrong size",
    5: "ppg at another rate than the video",
    6: "skin type outside 1-6",
}


@pytest.fixture(scope="module")
def faulty_equipleth(tmp_path_factory):
    base = tmp_path_factory.mktemp("matrix_eq")
    root = base / "raw"
    synth_equipleth(
        root, subjects=len(EQ_FAULTS), trials=1, seconds=6.0, seed=4, crop_size=48, progress=False
    )
    ppg = {s: root / "rgb_files" / f"v_{s}_1" / "rgbd_ppg.npy" for s in EQ_FAULTS}
    x = np.load(ppg[2])
    np.save(ppg[2], np.stack([x, np.full_like(x, 3.0)], axis=1))  # (N, 2): time and value, say
    np.save(ppg[3], np.array(["a"] * 200))
    rf = root / "rf_files" / "4_1" / "rf.pkl"
    cap = dca1000.read_rf_pkl(rf)
    cap.payloads = [p[:512] for p in cap.payloads]  # byte counts still step by 728 values
    dca1000.write_rf_pkl(rf, cap)
    x = np.load(ppg[5])
    t = np.arange(x.size)
    np.save(ppg[5], np.interp(t * 30 / 500, t, x))  # a 500 Hz recording stored as if it were 30 Hz
    labels = pickle.loads((root / "fitzpatrick_labels.pkl").read_bytes())
    labels["v_6"] = 9
    (root / "fitzpatrick_labels.pkl").write_bytes(pickle.dumps(labels))
    manifest = prepare_equipleth(root, base / "eq.zarr", base / "m", scheduler="sync")
    return manifest.set_index("session")


EQ_FAILED = {
    2: r"v_2_1/rgbd_ppg\.npy: PPG has shape \(\d+, 2\); expected one channel",
    3: r"v_3_1/rgbd_ppg\.npy: PPG is not numeric",
    4: r"rf_files/4_1/rf\.pkl: no complete radar frame: packets carry 512 values but the byte counts advance "
    r"by 728 values per packet",
}
EQ_NOTED = {
    5: r"ppg: only \d+% of the label's power is in the heart-rate band 45-180 bpm",
    6: r"skin_type: v_6 is 9 in fitzpatrick_labels\.pkl, not 1-6 \(recorded as -1\)",
}


@pytest.mark.parametrize("subject", list(EQ_FAILED), ids=[EQ_FAULTS[s] for s in EQ_FAILED])
def test_equipleth_session_failed_with_reason(faulty_equipleth, subject):
    row = faulty_equipleth.loc[f"v_{subject}_1"]
    assert row.status == "failed" and re.search(EQ_FAILED[subject], row.reason), row.reason
    assert not row.reason.startswith(("RfFormatError", "SessionError"))


@pytest.mark.parametrize("subject", list(EQ_NOTED), ids=[EQ_FAULTS[s] for s in EQ_NOTED])
def test_equipleth_session_stored_with_a_note(faulty_equipleth, subject):
    row = faulty_equipleth.loc[f"v_{subject}_1"]
    assert row.status == "ok" and re.search(EQ_NOTED[subject], row.repairs), row.repairs


def test_clean_session_has_no_plausibility_note(faulty_equipleth):
    row = faulty_equipleth.loc["v_1_1"]
    assert row.status == "ok" and "ppg: only" not in row.repairs and "radar: only" not in row.repairs
    assert faulty_equipleth.loc["v_6_1"].skin_type == -1


FOLDER_FAULTS = {
    "ok_1": "clean",
    "ms_1": "ppg.csv time in milliseconds",
    "late_1": "radar starts after the video ends",
    "short_1": "radar covers a third of the video",
}


@pytest.fixture(scope="module")
def faulty_folder(tmp_path_factory):
    base = tmp_path_factory.mktemp("matrix_folder")
    root = base / "rec"
    starts = {"ok_1": 0.0, "ms_1": 0.0, "late_1": 30.0, "short_1": 3.0}
    for k, (name, start) in enumerate(starts.items()):
        write_folder_session(root, name, radar_start_s=start, strongest=3, seed=k)
    ppg = pd.read_csv(root / "ms_1" / "ppg.csv")
    ppg["time_s"] *= 1000.0
    ppg.to_csv(root / "ms_1" / "ppg.csv", index=False)
    manifest = prepare_folder(root, base / "f.zarr", base / "m", scheduler="sync")
    return manifest.set_index("session")


def test_folder_faults(faulty_folder):
    by = faulty_folder
    assert by.loc["ok_1", "status"] == "ok" and "only" not in by.loc["ok_1", "repairs"]
    ms = by.loc["ms_1"]
    assert ms.status == "failed"
    assert re.search(r"ms_1/ppg\.csv: samples 15\.625 s apart .* time_s must be in seconds", ms.reason), (
        ms.reason
    )
    late = by.loc["late_1"]
    assert (
        late.status == "failed" and "late_1: none of its" in late.reason and "radar coverage 0" in late.reason
    )
    short = by.loc["short_1"]
    assert short.status == "ok" and short.radar_coverage < 0.5
    assert re.search(r"radar: only \d+% of the radar frames hold data \(< 50%\)", short.repairs), (
        short.repairs
    )
