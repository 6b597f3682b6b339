"""``prune-env sweep METHOD... --targets T...``: methods at several targets.

Every method (agents and baselines) runs at every target with the same data, base network,
seed, environment budget and final fine-tuning, into one sweep directory; then the runs are
compared in one table and one Pareto plot, where each method is a curve over the targets.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from prune_env.catalog import AGENTS, runner
from prune_env.config import AgentConfig, BaselineConfig, RunConfig


def sweep(methods: list[str], targets: list[float], run: RunConfig, agent: AgentConfig,
          baseline: BaselineConfig) -> tuple[list[Path], Path]:
    """Run ``methods`` at ``targets``; returns (run directories, sweep dir).

    A stopped sweep keeps its finished runs (each a complete run directory, whose args.json
    a training run resumes from); compare them with ``prune-env compare runs/sweep-TIME/*``.
    """
    train, run_baseline = runner("train"), runner("baseline")
    root = Path(run.runs_dir) / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    root.mkdir(parents=True, exist_ok=False)  # a sweep directory is never reused
    runs = []
    for target in targets:
        for method in methods:
            at = dataclasses.replace(run, runs_dir=str(root),
                                     env=dataclasses.replace(run.env, target=target))
            print(f"\n== {method} at target {target} ==")
            try:
                _, run_dir = (train(at, dataclasses.replace(agent, agent=method))
                              if method in AGENTS else run_baseline(method, at, baseline))
            except ValueError as err:  # a method that cannot reach this target says why
                print(f"{method} at target {target} skipped: {err}")
                continue
            runs.append(run_dir)
    return runs, root
