"""``prune-env export RUN_DIR``: (re)write a finished run's ONNX and TorchScript files."""

from __future__ import annotations

import json
from pathlib import Path

from prune_env.runs.export import export
from prune_env.training.checkpoint import load_compact


def export_run(run_dir: str | Path, formats: list[str]) -> dict[str, dict]:
    """Export ``run_dir/compact.pt`` in each format; the report records the new files."""
    run_dir = Path(run_dir)
    if not (run_dir / "compact.pt").exists():
        raise FileNotFoundError(f"{run_dir / 'compact.pt'} not found: export takes the "
                                "directory of a finished train, baseline or episode run")
    model, _ = load_compact(run_dir / "compact.pt")
    results = {fmt: export(model, tuple(model.input_shape), run_dir, fmt) for fmt in formats}
    report_path = run_dir / "report.json"
    if report_path.exists():
        report = json.loads(report_path.read_text())
        report.setdefault("exports", {}).update(results)
        report_path.write_text(json.dumps(report, indent=2))
    return results
