"""Runs: what turns an environment and a method into a run directory (the pipeline, final
stage, exports, TensorBoard logging, run directories)."""

from prune_env.runs.finalize import Candidate, finalize
from prune_env.runs.pipeline import Method, RunContext, SearchResult, run

__all__ = ["Candidate", "Method", "RunContext", "SearchResult", "finalize", "run"]
