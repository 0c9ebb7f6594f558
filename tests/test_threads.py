"""pipeline.threads: cores from affinity and cgroup quota (v1 and v2 files in a temp tree), no-spin env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.threads import (
    available_cpus,
    cgroup_cpu_limit,
    configure_process_threads,
    parse_cfs,
    parse_cpu_max,
)

REPO = Path(__file__).resolve().parents[1]


def test_parse_cpu_max():
    assert parse_cpu_max("max 100000\n") is None
    assert parse_cpu_max("150000 100000\n") == 1.5
    assert parse_cpu_max("50000") == 0.5  # period defaults to 100 ms
    for bad in ("", "abc 100000", "0 100000", "1 2 3"):
        with pytest.raises(ValueError):
            parse_cpu_max(bad)


def test_parse_cfs():
    assert parse_cfs("-1\n", "100000\n") is None
    assert parse_cfs("250000", "100000") == 2.5
    with pytest.raises(ValueError):
        parse_cfs("0", "100000")


def _tree(tmp_path: Path, proc_line: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    root.mkdir(exist_ok=True)
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(proc_line)
    return root, proc


def test_cgroup_v2_tightest_quota_along_the_path(tmp_path):
    root, proc = _tree(
        tmp_path,
        "0::/user.slice/job\n",
        {
            "cpu.max": "max 100000\n",
            "user.slice/cpu.max": "300000 100000\n",
            "user.slice/job/cpu.max": "150000 100000\n",
        },
    )
    assert cgroup_cpu_limit(root, proc) == 1.5
    assert available_cpus(affinity=8, root=root, proc_self_cgroup=proc) == 2  # 1.5 CPUs rounds up
    assert available_cpus(affinity=1, root=root, proc_self_cgroup=proc) == 1  # affinity is tighter


def test_cgroup_v1_and_no_limit(tmp_path):
    root, proc = _tree(
        tmp_path,
        "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n0::/\n",
        {"cpu/docker/abc/cpu.cfs_quota_us": "300000\n", "cpu/docker/abc/cpu.cfs_period_us": "100000\n"},
    )
    assert cgroup_cpu_limit(root, proc) == 3.0
    assert available_cpus(affinity=16, root=root, proc_self_cgroup=proc) == 3
    empty, proc2 = _tree(tmp_path / "none", "0::/\n", {"cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(empty, proc2) is None
    assert available_cpus(affinity=4, root=empty, proc_self_cgroup=proc2) == 4
    # unreadable /proc/self/cgroup and malformed files count as no limit
    bad, proc3 = _tree(tmp_path / "bad", "0::/\n", {"cpu.max": "garbage here now\n"})
    assert cgroup_cpu_limit(bad, tmp_path / "missing") is None
    assert cgroup_cpu_limit(bad, proc3) is None


def test_this_process_uses_affinity_not_cpu_count():
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


def test_configure_sets_only_absent_variables():
    env: dict[str, str] = {}
    assert configure_process_threads(env, cpus=3) == 3
    assert env == {"GOMP_SPINCOUNT": "3000", "KMP_BLOCKTIME": "0", "OMP_NUM_THREADS": "3"}
    user = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE"}
    assert configure_process_threads(user, cpus=3) == 1
    # a user's wait policy stands: no GOMP_SPINCOUNT, which would override it
    assert user == {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE", "KMP_BLOCKTIME": "0"}
    own = {"GOMP_SPINCOUNT": "0"}
    configure_process_threads(own, cpus=2)
    assert own["GOMP_SPINCOUNT"] == "0"


def test_cli_process_starts_torch_with_the_settings():
    """Importing cli before torch gives torch the available core count (1 under taskset to one core)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME", "GOMP_SPINCOUNT")
    }
    env["PYTHONPATH"] = str(REPO)
    code = (
        "import os, cli, torch; "
        "print(torch.get_num_threads(), os.environ['GOMP_SPINCOUNT'], len(os.sched_getaffinity(0)))"
    )
    cpu = sorted(os.sched_getaffinity(0))[0]
    out = subprocess.run(
        ["taskset", "-c", str(cpu), sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "3000", "1"]
