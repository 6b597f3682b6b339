"""Runs: what turns an environment and a method into a run directory (options, final stage,
exports, TensorBoard logging, run directories)."""
