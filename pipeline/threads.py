"""How many CPU threads this process should use, and OpenMP settings that do not spin when cores are shared.

:func:`available_cpus` counts the cores the process may actually run on: the CPU affinity mask
(``os.sched_getaffinity``, e.g. ``taskset`` or a container's cpuset) capped by the cgroup CPU quota
(cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), never ``os.cpu_count()``,
which counts the machine's cores.

:func:`configure_process_threads` must run at process start, before ``torch`` (or numpy's BLAS) is
imported: OpenMP reads its environment once, when the library loads. It sets, unless the user already has:

* ``OMP_NUM_THREADS`` = :func:`available_cpus` (torch's intra-op threads, MKL's and OpenBLAS's);
* ``GOMP_SPINCOUNT=3000`` (GNU OpenMP, which torch's wheels use; only when ``OMP_WAIT_POLICY`` is not
  set) and ``KMP_BLOCKTIME=0`` (Intel OpenMP): a thread that waits for work spins for a few microseconds,
  then sleeps. OpenMP's default spin (300,000 iterations, up to ~200 ms of waiting) lets the threads of
  several processes on oversubscribed cores burn the time slices the working threads need (measured:
  3.9x the fair share beside three other training processes); sleeping at once (``PASSIVE``) costs a
  wake-up per parallel region, about 10 % of a training step on cores it has to itself. The short spin
  keeps most of that speed alone and stays at the fair share under contention
  (``bench/results/train_contention.json``).

``rpm`` calls it first thing in ``cli.py``, so ``rpm train``, ``rpm preprocess`` and ``rpm report`` all run
with it. In a process where torch is already imported the environment no longer takes effect; such
callers set ``torch.set_num_threads(available_cpus())`` themselves.
"""

from __future__ import annotations

import math
import os
from collections.abc import MutableMapping
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")

# Set when absent: OpenMP worker threads spin only briefly before they sleep (GOMP_SPINCOUNT is set only
# when the user has not chosen OMP_WAIT_POLICY, which an explicit GOMP_SPINCOUNT would override).
WAIT_ENV = {"GOMP_SPINCOUNT": "3000", "KMP_BLOCKTIME": "0"}


def parse_cpu_max(text: str) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` line ``"<quota> <period>"`` (``"max ..."``: None = no limit).

    ``"150000 100000"`` -> 1.5. Raises ValueError for a malformed line.
    """
    parts = text.split()
    if not parts or len(parts) > 2:
        raise ValueError(f"cpu.max: expected '<quota> <period>', got {text!r}")
    if parts[0] == "max":
        return None
    quota = int(parts[0])
    period = int(parts[1]) if len(parts) == 2 else 100_000
    if quota <= 0 or period <= 0:
        raise ValueError(f"cpu.max: quota and period must be positive, got {text!r}")
    return quota / period


def parse_cfs(quota_text: str, period_text: str) -> float | None:
    """CPUs allowed by cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1: None = no limit)."""
    quota, period = int(quota_text.strip()), int(period_text.strip())
    if quota < 0:
        return None
    if quota == 0 or period <= 0:
        raise ValueError(f"cfs quota {quota} / period {period}: not a CPU limit")
    return quota / period


def _cgroup_paths(proc_self_cgroup: Path) -> tuple[str | None, str | None]:
    """(cgroup v2 path, v1 ``cpu`` controller path) of this process from ``/proc/self/cgroup``."""
    v2 = v1 = None
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """The tightest CPU quota (in CPUs) of this process's cgroup and its ancestors; None without a quota.

    Reads cgroup v2 ``cpu.max`` files along the process's path under ``root`` (and ``root`` itself, which
    is the process's own group inside most containers), or, on cgroup v1, ``cpu/cpu.cfs_quota_us`` and
    ``cpu/cpu.cfs_period_us`` likewise. Unreadable or malformed files count as no limit.
    """
    v2, v1 = _cgroup_paths(proc_self_cgroup)
    limits: list[float] = []

    def ancestors(base: Path, rel: str | None) -> list[Path]:
        dirs = [base]
        if rel:
            parts = [p for p in rel.split("/") if p]
            dirs += [base.joinpath(*parts[: i + 1]) for i in range(len(parts))]
        return dirs

    for d in ancestors(root, v2):
        text = _read(d / "cpu.max")
        if text is not None:
            try:
                limit = parse_cpu_max(text)
            except ValueError:
                limit = None
            if limit is not None:
                limits.append(limit)
    for d in ancestors(root / "cpu", v1):
        quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
        if quota is not None and period is not None:
            try:
                limit = parse_cfs(quota, period)
            except ValueError:
                limit = None
            if limit is not None:
                limits.append(limit)
    return min(limits) if limits else None


def affinity_cpus() -> int:
    """Cores in this process's affinity mask (``os.cpu_count()`` where the OS has no affinity call)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def available_cpus(
    affinity: int | None = None, root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP
) -> int:
    """Cores this process can use: the affinity mask capped by the cgroup quota (rounded up), at least 1."""
    n = affinity if affinity is not None else affinity_cpus()
    quota = cgroup_cpu_limit(root, proc_self_cgroup)
    if quota is not None:
        n = min(n, math.ceil(quota - 1e-9))
    return max(1, n)


def configure_process_threads(
    environ: MutableMapping[str, str] | None = None, cpus: int | None = None
) -> int:
    """Set the thread environment for this process (see the module docstring); returns the thread count.

    Only variables that are absent are set: a user's ``OMP_NUM_THREADS`` (or wait policy) wins and its
    value is returned. Call before importing torch.
    """
    env = os.environ if environ is None else environ
    for key, value in WAIT_ENV.items():
        if key == "GOMP_SPINCOUNT" and "OMP_WAIT_POLICY" in env:
            continue
        env.setdefault(key, value)
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(cpus if cpus is not None else available_cpus())
    try:
        return max(1, int(env["OMP_NUM_THREADS"].split(",")[0]))
    except ValueError:
        return cpus if cpus is not None else available_cpus()
