"""Runs: what turns an environment and a method into a run directory (the pipeline, final
stage, exports, TensorBoard logging, run directories). Each name is imported on first use."""

from prune_env.catalog import lazy_face

_FACE = {"Candidate": "prune_env.runs.finalize",
         "Method": "prune_env.runs.pipeline", "RunContext": "prune_env.runs.pipeline",
         "SearchResult": "prune_env.runs.pipeline", "run": "prune_env.runs.pipeline"}

__all__ = sorted(_FACE)

__getattr__ = lazy_face("prune_env.runs", _FACE)
