"""Training every model x seed of a comparison, each run in its own ``python -m yololab train`` process.

A failing run is reported without losing the others and memory is returned between runs. A finished run leaves
``result.json`` in its folder and is reused when the comparison is started again; an interrupted one resumes from
its ``last.pt``.
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import yaml

from ..cfg import command_keys
from ..checkpoint import load_checkpoint
from ..utils.files import to_jsonable, write_json
from ..utils.profile import machine_summary
from ..utils.torch_utils import same_amp
from .statistics import METRIC_LABELS, NOT_RUN, RunResult

# Keys of `yololab train` that say which run it is and where and how it executes, not what it learns. Every other
# train key is the recipe, pinned for all runs of a comparison (a later change of a default cannot change it halfway).
RUN_KEYS = ("model", "seed", "project", "name", "exist_ok", "device", "threads", "resume", "plots", "save_period",
            "cache", "json", "verbose", "compile")
_MISSING = object()
RunFn = Callable[[str, int, Path, dict, "str | None"], dict]  # (model, seed, run dir, recipe, device)
MACHINE_KEY = "machine"  # a run function may return the machine it trained on under this key (Ray workers do)
_PR_SET_PDEATHSIG = 1  # prctl option (Linux): the signal a process gets when its parent dies


def recipe_keys() -> tuple[str, ...]:
    """The train keys a comparison pins (all but ``RUN_KEYS``)."""
    return tuple(k for k in command_keys("train") if k not in RUN_KEYS)


def recorded_recipe(run_dir: Path, result: dict) -> dict[str, Any]:
    """The recipe a finished run trained with: its ``args.yaml`` (every setting, as the trainer resolved it)
    updated with the recipe its ``result.json`` records (older results record fewer keys)."""
    args_file = run_dir / "args.yaml"
    args = yaml.safe_load(args_file.read_text()) if args_file.is_file() else {}
    return {**(args or {}), **result.get("recipe", {})}


def same_recipe(recorded: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether a finished run's recorded recipe is the wanted one: every key equal, except that ``amp`` values which
    train alike on CPU and CUDA match (runs recorded ``amp: true`` are reused by ``amp: auto``)."""
    return all(recorded.get(k, _MISSING) == v or (k == "amp" and k in recorded and same_amp(recorded[k], v))
               for k, v in wanted.items())


def train_command(model: str, seed: int, run_dir: Path, recipe: dict) -> list[str]:
    """The ``yololab train`` arguments of one run: a resume of its ``last.pt`` when an earlier start of the same
    recipe was interrupted (killed, machine stopped), otherwise a fresh start (recorded in ``recipe.json``)."""
    last, started = run_dir / "weights" / "last.pt", run_dir / "recipe.json"
    if (last.is_file() and started.is_file() and json.loads(started.read_text()) == to_jsonable(recipe)
            and "optimizer" in load_checkpoint(last)):  # a finished run's last.pt has no training state
        return ["train", f"resume={last}", "json=true"]
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(started, recipe, indent=1)
    args = [f"{k}={v}" for k, v in recipe.items() if v is not None]
    return ["train", f"model={model}", f"seed={seed}", f"project={run_dir.parent}", f"name={run_dir.name}",
            "exist_ok=true", "json=true", *args]


def train_subprocess(model: str, seed: int, run_dir: Path, recipe: dict, device: str | None = None) -> dict:
    """Train (or finish) one run via ``python -m yololab train ... json=true``; return its last JSON line."""
    cmd = [sys.executable, "-m", "yololab", *train_command(model, seed, run_dir, recipe)]
    if device is not None:
        cmd.append(f"device={device}")
    with open(run_dir / "compare.log", "w") as log, open(run_dir / "stdout.log", "w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=log, env=dict(os.environ), preexec_fn=_die_with_parent())
        _, status, usage = os.wait4(proc.pid, 0)  # rusage of this run alone: its peak resident memory
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read()
    if proc.returncode != 0:
        tail = (run_dir / "compare.log").read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"exit code {proc.returncode}: {' | '.join(tail)}")
    lines = [ln for ln in stdout.strip().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError("training printed no JSON result")
    result = json.loads(lines[-1])
    result.setdefault("peak_rss_mb", round(usage.ru_maxrss / 1024, 1))  # Linux reports KiB
    return result


def _die_with_parent() -> Callable[[], None] | None:
    """What a training process runs before it starts (Linux): be killed when the process that started it dies (a
    Ray worker lost with its node, a killed ``compare``) rather than train on as an orphan holding the run folder's
    lock. libc's ``prctl`` is looked up here, in the parent: the forked child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None).prctl
    return lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def run_all(models: list[str], seeds: list[int], out: Path, recipe: dict, *, run_fn: RunFn | None = None,
            devices: list[str] | None = None, parallel: int = 1, log: Callable[[str], None] = print,
            report_only: bool = False, family_recipes: dict[str, dict] | None = None) -> list[RunResult]:
    """Run (or reuse) every model x seed, seed by seed (a partial comparison covers every model); with several
    devices, one run per device at a time, each run taking whichever device is free; without devices, ``parallel``
    runs at a time (executor=ray: as many as the cluster holds). ``report_only`` trains nothing: runs without a
    finished result come back as not run. ``family_recipes[model]`` overrides ``recipe`` for that model (its
    family's recipe, for the keys the user did not set). After each run a progress line counts the settled runs."""
    jobs = [(m, s) for s in seeds for m in models]
    slots = devices or [None] * parallel
    run_fn = run_fn or train_subprocess
    free: queue.Queue = queue.Queue()
    for device in slots:
        free.put(device)
    trained_s: list[float] = []  # wall time of each run trained by this call: the ETA of the ones left
    settled: list[RunResult] = []  # runs finished, failed, reused or not run, in the order they ended
    machine = machine_summary(load=False)
    settling = threading.Lock()

    def progress(result: RunResult) -> RunResult:
        with settling:
            settled.append(result)
            missing = sum(not r.ok for r in settled)
            log(f"{_bar(len(settled), len(jobs))} {len(settled)}/{len(jobs)} runs"
                + (f" ({missing} failed or not run)" if missing else ""))
        return result

    def one(index_job):
        index, (model, seed) = index_job
        run_recipe = {**recipe, **(family_recipes or {}).get(model, {})}
        recipe_json = to_jsonable(run_recipe)  # what a finished run's result.json holds
        name = Path(model).stem
        prefix = f"[{index + 1}/{len(jobs)}] {name} seed {seed}"
        run_dir = out / "runs" / f"{name}-seed{seed}"
        done = run_dir / "result.json"
        previous = json.loads(done.read_text()) if done.is_file() else None
        if previous is not None and same_recipe(recorded_recipe(run_dir, previous), recipe_json):
            log(f"{prefix}: reusing {done}")
            return progress(RunResult(model, seed, True, previous["metrics"], run_dir=str(run_dir),
                                      machine=previous.get("machine", "")))
        if report_only:
            log(f"{prefix}: {NOT_RUN}")
            return progress(RunResult(model, seed, False, error=NOT_RUN, run_dir=str(run_dir)))
        if previous is not None:
            log(f"{prefix}: the recipe changed since {done}, retraining")
        log(f"{prefix}: training")
        t0 = time.time()
        device = free.get()
        try:
            metrics = run_fn(model, seed, run_dir, run_recipe, device)
        except Exception as e:  # a failed run is reported, the others go on
            log(f"{prefix}: FAILED ({e})")
            return progress(RunResult(model, seed, False, error=str(e), run_dir=str(run_dir)))
        finally:
            free.put(device)
        run_machine = metrics.pop(MACHINE_KEY, machine)
        metrics.setdefault("wall_time_s", round(time.time() - t0, 1))
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(done, {"recipe": run_recipe, "metrics": metrics, "machine": run_machine}, indent=1)
        trained_s.append(time.time() - t0)
        left = len(jobs) - len(settled) - 1
        eta = f"; about {_duration(sum(trained_s) / len(trained_s) * left / len(slots))} for the {left} left" \
            if left else ""
        log(f"{prefix}: done in {_duration(trained_s[-1])}, "
            + ", ".join(f"{METRIC_LABELS[k]} {metrics[k]:.3f}" for k in ("map", "map50") if k in metrics) + eta)
        return progress(RunResult(model, seed, True, metrics, run_dir=str(run_dir), machine=run_machine))

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        return list(pool.map(one, enumerate(jobs)))


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = round(width * done / max(total, 1))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"
