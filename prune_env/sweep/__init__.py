"""Sweeps on Ray: methods x targets x seeds x networks, each run a Ray task on whichever
machine of the cluster has its resources, resumed where a stopped sweep left off."""

from prune_env.sweep.engine import SweepSummary, run_sweep
from prune_env.sweep.plan import Entry, Plan

__all__ = ["Entry", "Plan", "SweepSummary", "run_sweep"]
