"""The CPU thread policy: how torch's OpenMP threads wait between parallel regions, and how many there are.

torch's OpenMP runtime (GNU libgomp) lets an idle thread spin for a long while before it sleeps, which is fastest on
an idle machine and disastrous on a shared one: spinning threads hold the cores that data-loader workers and other
processes need, and a training beside one busy process ran 12-15x slower instead of about 2x
(``benchmarks/shared_cpu.py``). yololab shortens the spin (``SPIN_COUNT``, chosen by that benchmark) so idle threads
sleep soon; the runtime reads it when it loads, so ``yololab/__init__`` calls ``apply_environment`` before anything
imports torch. A variable the user set (``GOMP_SPINCOUNT``, ``OMP_WAIT_POLICY``) always wins, and
``YOLOLAB_THREAD_POLICY=off`` leaves the environment as it is. The number of intra-op threads follows the cores this
process may use (affinity and cgroup quota), or the ``threads=`` setting.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

SPIN_COUNT = "1000"  # GOMP_SPINCOUNT: libgomp's default spins 300,000 times before an idle thread sleeps
POLICY_SWITCH = "YOLOLAB_THREAD_POLICY"  # "off": keep the OpenMP runtime's own defaults
USER_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")  # either one set by the user: their choice stands

_applied: dict[str, str] = {}  # what apply_environment set (empty: the user's environment or off)


def apply_environment() -> dict[str, str]:
    """Set the OpenMP wait policy unless the user chose one (or switched the policy off); returns what was set."""
    if os.environ.get(POLICY_SWITCH, "").lower() == "off" or any(v in os.environ for v in USER_VARIABLES):
        return {}
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    _applied["GOMP_SPINCOUNT"] = SPIN_COUNT
    return dict(_applied)


def available_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup CPU quota when one is set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota()
    return max(1, min(cores, math.ceil(quota))) if quota else max(1, cores)


def _cgroup_quota() -> float | None:
    """CPUs granted by the cgroup (v2 ``cpu.max`` or v1 ``cfs_quota_us / cfs_period_us``), None when unlimited."""
    v2 = Path("/sys/fs/cgroup/cpu.max")
    try:
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = Path("/sys/fs/cgroup/cpu")
        quota = int((v1 / "cpu.cfs_quota_us").read_text())
        return None if quota <= 0 else quota / int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None


def set_threads(threads: int | None = None) -> int:
    """Use ``threads`` intra-op threads (default: the available cores, unless OMP_NUM_THREADS says otherwise)."""
    import torch

    if threads is None and "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()  # the user's own setting
    n = threads or available_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def describe() -> str:
    """The policy in force, for run headers: wait policy, and threads against available cores."""
    import torch

    if _applied:
        wait = ", ".join(f"{k}={v}" for k, v in _applied.items()) + " (yololab)"
    else:
        chosen = [f"{v}={os.environ[v]}" for v in USER_VARIABLES if v in os.environ]
        wait = ", ".join(chosen) + " (yours)" if chosen else "OpenMP defaults"
    return f"{torch.get_num_threads()} threads of {available_cores()} cores, {wait}"
