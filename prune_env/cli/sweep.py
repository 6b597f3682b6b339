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
    from prune_env.cli.main import options_of, reparse

    train, run_baseline = runner("train"), runner("baseline")
    keep = {command: set(options_of(command)) for command in ("train", "baseline")}
    root = Path(args.runs_dir) / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    root.mkdir(parents=True, exist_ok=False)  # a sweep directory is never reused
    runs = []
    for target in args.targets:
        for method in args.methods:
            values = vars(args) | {"target": target, "runs_dir": str(root), "agent": method}
            command = "train" if method in AGENTS else "baseline"
            # each run's options exactly as `prune-env train` or `baseline` would parse them
            # (its args.json then holds nothing foreign, and --resume accepts it)
            run = reparse(command, {k: v for k, v in values.items() if k in keep[command]},
                          "the sweep's options", () if method in AGENTS else (method,))
            print(f"\n== {method} at target {target} ==")
            try:
                _, run_dir = (train if method in AGENTS else run_baseline)(run)
            except ValueError as err:  # a method that cannot reach this target says why
                print(f"{method} at target {target} skipped: {err}")
                continue
            runs.append(run_dir)
    return runs, root
