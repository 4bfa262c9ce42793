"""Training speed on a shared CPU: alone, two trainings at once, and beside a busy process, per thread policy.

Each cell is the training time of `yololab train model=yolov8n.yaml data=synthetic epochs=2 imgsz=160 batch=16
device=cpu` (the `time` column of its results.csv after the last epoch: loading, forward, backward and step, without
validation or start-up), median over --runs runs; "two at once" and "beside busy" report the mean of the trainings in
the situation. Policies:
- `openmp`: the OpenMP runtime's own defaults (yololab's policy switched off, no OpenMP variable set): what users
  had before the policy;
- `passive`: OMP_WAIT_POLICY=PASSIVE, what our Makefile and tests used to set;
- `yololab`: nothing set, yololab's policy applies (utils/threads.py);
- `spin=N`, `threads=N`: GOMP_SPINCOUNT / OMP_NUM_THREADS set by hand (to choose the policy), combined with `/`.

    .venv/bin/python benchmarks/shared_cpu.py                     # the table recorded in RESULTS.md
    .venv/bin/python benchmarks/shared_cpu.py --policies spin=1000,spin=10000,spin=100000 --situations alone,busy

Run it on an otherwise idle machine: it makes its own load.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "benchmarks" / "records" / "shared_cpu.json"
OPENMP_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "YOLOLAB_THREAD_POLICY")
SITUATIONS = ("alone", "two_at_once", "beside_busy")


def policy_env(policy: str) -> dict[str, str]:
    """The environment of a training under ``policy`` (every OpenMP variable of ours removed first); parts joined
    by ``/`` combine, e.g. ``spin=1000/threads=1``."""
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_VARIABLES}
    for part in policy.split("/"):
        if part == "openmp":
            env["YOLOLAB_THREAD_POLICY"] = "off"
        elif part == "passive":
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        elif part.startswith("spin="):
            env["GOMP_SPINCOUNT"] = part.split("=", 1)[1]
        elif part.startswith("threads="):
            env["OMP_NUM_THREADS"] = part.split("=", 1)[1]
        elif part != "yololab":
            raise SystemExit(f"unknown policy {part!r}: openmp, passive, yololab, spin=N or threads=N")
    return env


def start_training(folder: Path, name: str, env: dict[str, str], args: argparse.Namespace) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "yololab", "train", "model=yolov8n.yaml", "data=synthetic", f"epochs={args.epochs}",
           f"imgsz={args.imgsz}", "batch=16", "device=cpu", f"project={folder}", f"name={name}", "exist_ok=true",
           "plots=false", "val=false", "verbose=false"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def training_seconds(proc: subprocess.Popen, folder: Path, name: str) -> float:
    _, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"training {name} failed:\n{err[-2000:]}")
    with open(folder / name / "results.csv", newline="") as f:
        return float(list(csv.DictReader(f))[-1]["time"])


def run_situation(situation: str, env: dict[str, str], args: argparse.Namespace) -> float:
    """Mean training time of the trainings of one situation."""
    with tempfile.TemporaryDirectory(prefix="yololab-shared-cpu-") as tmp:
        folder = Path(tmp)
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if situation == "beside_busy" else None
        try:
            names = ["a", "b"] if situation == "two_at_once" else ["a"]
            procs = {n: start_training(folder, n, env, args) for n in names}
            return statistics.mean(training_seconds(p, folder, n) for n, p in procs.items())
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policies", default="openmp,passive,yololab")
    parser.add_argument("--situations", default=",".join(SITUATIONS))
    parser.add_argument("--runs", type=int, default=3, help="repeats of each cell (median)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--record", action="store_true", help=f"write the table to {RECORD.relative_to(ROOT)}")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from yololab.utils.profile import machine_summary

    machine = machine_summary()
    policies, situations = args.policies.split(","), args.situations.split(",")
    table: dict[str, dict[str, float]] = {}
    for policy in policies:
        env = policy_env(policy)
        for situation in situations:
            times = [run_situation(situation, env, args) for _ in range(args.runs)]
            table.setdefault(policy, {})[situation] = round(statistics.median(times), 2)
            print(f"{policy:>12} {situation:<12} {statistics.median(times):7.2f} s  (runs {times})", flush=True)
    print(f"\nmachine before the runs: {machine}\n")
    print("| policy | " + " | ".join(situations) + " |")
    print("|---|" + "---:|" * len(situations))
    for policy, row in table.items():
        alone = row.get("alone")
        cells = [f"{row[s]:.1f} s" + (f" ({row[s] / alone:.1f}x)" if alone and s != "alone" else "")
                 for s in situations]
        print(f"| {policy} | " + " | ".join(cells) + " |")
    if args.record:
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps({"machine": machine, "command": " ".join(sys.argv), "seconds": table},
                                     indent=1) + "\n")


if __name__ == "__main__":
    main()
