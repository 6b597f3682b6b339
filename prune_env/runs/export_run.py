"""``prune-env export RUN_DIR``: (re)write a finished run's ONNX and TorchScript files."""

from __future__ import annotations

from pathlib import Path

from prune_env.envs.records import Export
from prune_env.nn.models import input_shape
from prune_env.runs.export import export
from prune_env.runs.finalize import load_report
from prune_env.training.checkpoint import load_compact


def export_run(run_dir: str | Path, formats: list[str]) -> dict[str, Export]:
    """Export ``run_dir/compact.pt`` in each format, beside it. report.json is left as the run
    wrote it (it lists the exports the run itself made)."""
    run_dir = Path(run_dir)
    if not (run_dir / "compact.pt").exists():
        raise FileNotFoundError(f"{run_dir / 'compact.pt'} not found: export takes the "
                                "directory of a finished train, baseline or episode run")
    model, _ = load_compact(run_dir / "compact.pt")
    return {fmt: export(model, deployed_shape(run_dir, model), run_dir, fmt) for fmt in formats}


def deployed_shape(run_dir: Path, model) -> tuple[int, ...]:
    """The shape the run measured at (its report's ``deploy_shape``), else the model's own."""
    try:
        shape = load_report(run_dir).deploy_shape
    except FileNotFoundError:  # no report (an unfinished run): the network's training shape
        shape = None
    return tuple(shape) if shape else input_shape(model)
