"""`rpm train` SIGKILLed at random points and rerun with --resume ends with the losses of an
uninterrupted run, step for step (CPU, fixed seeds, the tiny store of ``tiny_data``).

A kill lands anywhere: in the teacher, between steps, in the middle of an epoch or of a checkpoint
write. The resumed run restarts after the last completed epoch (``student_last.pt``), drops what the
killed run logged after it, and must reproduce every per-step loss bit for bit. The kill points are
drawn afresh each run; the seed is in the failure message (set RPM_KILL_SEED to replay one).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_data import tiny_train_toml, write_tiny_dataset
from typer.testing import CliRunner

from cli import app

REPO = Path(__file__).resolve().parents[1]
EPOCHS, STEPS = 3, 2
TINY = tiny_train_toml(EPOCHS, STEPS)


@pytest.fixture(scope="module")
def wd(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("kill")
    workdir = write_tiny_dataset(root)
    (root / "tiny.toml").write_text(TINY)
    yield workdir
    torch.set_num_threads(n)


def student_steps(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            r = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
        if r["type"] == "step" and r["stage"] == "student":
            r.pop("seconds")
            out.append(r)
    return out


def run_in_process(wd, name: str, *extra: str) -> str:
    args = ["train", "--config", str(wd.root / "tiny.toml"), "--workdir", str(wd.root), "--name", name]
    result = CliRunner().invoke(app, [*args, *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def kill_after(wd, name: str, n_steps: int, extra_delay: float, resume: bool) -> int:
    """Start `python -m cli train` and SIGKILL it once ``n_steps`` student steps are logged (+ a delay)."""
    args = ["--config", str(wd.root / "tiny.toml"), "--workdir", str(wd.root), "--name", name]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "cli", "train", *args, *(["--resume"] if resume else [])]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = wd.runs / name / "log.jsonl"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            # n_steps 0: once the run has started (config.json written), i.e. in the teacher or later
            if (wd.runs / name / "config.json").is_file() and len(student_steps(log)) >= n_steps:
                break
            time.sleep(0.005)
        time.sleep(extra_delay)
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
    assert alive, f"the run ended before the kill (rc {proc.returncode}): {err[-2000:]}"
    return len(student_steps(log))


def test_killed_training_resumes_to_the_uninterrupted_losses(wd):
    seed = int(os.environ.get("RPM_KILL_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    total = EPOCHS * STEPS
    # two kills: the first before the last epoch, the second later and mid-epoch,
    first = rng.randrange(0, total - STEPS - 1)
    # at least two steps before the end, so that the kill lands before the last step is logged
    second = rng.choice([k for k in range(first + 1, total - 1) if k % STEPS])
    where = f"(RPM_KILL_SEED={seed}: kills after {first} and {second} student steps)"
    logged = kill_after(wd, "part", first, rng.uniform(0.0, 0.5), resume=False)
    assert logged < total, where
    resume = (wd.runs / "part" / "config.json").is_file()
    logged = kill_after(wd, "part", second, rng.uniform(0.0, 0.1), resume=resume)
    assert logged < total, where
    had_checkpoint = (wd.runs / "part" / "student_last.pt").is_file()
    out = run_in_process(wd, "part", "--resume")
    done = json.loads((wd.runs / "part" / "config.json").read_text())
    assert done["epochs"] == EPOCHS, where
    assert had_checkpoint == ("resuming after epoch" in out), where  # resumed whenever it could

    run_in_process(wd, "full")  # the same teacher (cached), never interrupted
    full, part = student_steps(wd.runs / "full" / "log.jsonl"), student_steps(wd.runs / "part" / "log.jsonl")
    assert [r["step"] for r in part] == list(range(total)), where  # nothing lost, nothing twice
    assert part == full, where  # every loss term, gate and weight, bit for bit
    last = torch.load(wd.runs / "part" / "student_last.pt", weights_only=True)
    ref = torch.load(wd.runs / "full" / "student_last.pt", weights_only=True)
    assert last["epoch"] == ref["epoch"] == EPOCHS - 1, where
    assert all(torch.equal(last["model"][k], ref["model"][k]) for k in ref["model"]), where
    assert not list((wd.runs / "part").glob("*.partial")), where
