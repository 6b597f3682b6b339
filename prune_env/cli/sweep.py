"""``prune-env sweep METHOD... --targets T...``: methods at several targets.

Every method (agents and baselines) runs at every target with the same data, base network,
seed, environment budget and final fine-tuning, into one sweep directory; then the runs are
compared in one table and one Pareto plot, where each method is a curve over the targets.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from prune_env.catalog import AGENTS, runner


def sweep(args: argparse.Namespace) -> tuple[list[Path], Path]:
    """Run ``args.methods`` at ``args.targets``; returns (run directories, sweep dir).

    A stopped sweep keeps its finished runs (each a complete run directory); compare them
    with ``prune-env compare runs/sweep-TIME/*``."""
    train, run_baseline = runner("train"), runner("baseline")
    root = Path(args.runs_dir) / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    root.mkdir(parents=True, exist_ok=False)  # a sweep directory is never reused
    runs = []
    for target in args.targets:
        for method in args.methods:
            run = argparse.Namespace(**vars(args))
            run.target, run.runs_dir, run.resume = target, str(root), None
            print(f"\n== {method} at target {target} ==")
            try:
                if method in AGENTS:
                    run.agent = method
                    _, run_dir = train(run)
                else:
                    run.name = method
                    _, run_dir = run_baseline(run)
            except ValueError as err:  # a method that cannot reach this target says why
                print(f"{method} at target {target} skipped: {err}")
                continue
            runs.append(run_dir)
    return runs, root
