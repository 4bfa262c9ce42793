"""``seeds=auto``: train seeds in rounds and stop each variant as soon as its primary verdict is settled.

The first look comes after ``FIRST_SEEDS`` seeds, then one look per added seed up to ``max_seeds``. Every look
tests at ``alpha / looks`` (``stats.sequential_alpha``), the planned number of looks fixed in advance, so the
chance of any false verdict over all looks stays below ``alpha`` however early a variant stops.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from .statistics import RunResult

FIRST_SEEDS = 3  # seeds of the first round: the fewest that give a paired interval worth reading
SETTLED = ("better", "worse", "equivalent")

TrainRound = Callable[[list[str], list[int]], list[RunResult]]  # (models, seeds) -> their results
AnalyseLook = Callable[[list[RunResult], int], dict[str, Any]]  # (all results so far, planned looks) -> summary


def planned_looks(max_seeds: int) -> int:
    """Looks of a ``seeds=auto`` comparison: after ``FIRST_SEEDS`` seeds and after each further seed."""
    if max_seeds < FIRST_SEEDS:
        raise ValueError(f"seeds=auto needs max_seeds >= {FIRST_SEEDS}, got {max_seeds}")
    return max_seeds - FIRST_SEEDS + 1


def run_sequential(models: list[str], max_seeds: int, train: TrainRound, analyse: AnalyseLook, *, primary: str,
                   budget_s: float | None = None,
                   log: Callable[[str], None] = print) -> tuple[list[RunResult], dict[str, Any], dict[str, int]]:
    """Run rounds until every variant's ``primary`` verdict is settled, ``max_seeds`` is reached or the next round
    would overrun ``budget_s``; returns all results, the last look's summary and the seeds each variant got."""
    looks = planned_looks(max_seeds)
    start = time.time()
    results = train(models, list(range(FIRST_SEEDS)))
    active, seeds_used = list(models[1:]), {Path(m).stem: FIRST_SEEDS for m in models[1:]}
    n = FIRST_SEEDS
    while True:
        summary = analyse(results, looks)
        for model in list(active):
            conclusion = summary["models"][Path(model).stem]["vs_baseline"][primary].get("conclusion")
            if conclusion in SETTLED:
                active.remove(model)
                log(f"{Path(model).stem}: {conclusion} on {primary} after {n} seeds, stopped")
        if not active or n >= max_seeds:
            return results, summary, seeds_used
        elapsed = time.time() - start
        per_run = elapsed / max(len(results), 1)
        if budget_s is not None and elapsed + per_run * (len(active) + 1) > budget_s:
            log(f"budget_hours reached after {n} seeds: {', '.join(Path(m).stem for m in active)} not settled")
            return results, summary, seeds_used
        log(f"seed {n}: {len(active)} variant(s) not settled yet ({', '.join(Path(m).stem for m in active)})")
        results += train([models[0], *active], [n])
        n += 1
        for model in active:
            seeds_used[Path(model).stem] = n
