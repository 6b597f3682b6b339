"""The ``prune-env`` command and what only it does: compare runs, Pareto plots, sweeps."""

from prune_env.cli.main import main

__all__ = ["main"]
