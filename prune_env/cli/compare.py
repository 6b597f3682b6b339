"""``prune-env compare RUN_DIR...``: finished runs side by side (markdown table and CSV) and
their Pareto plot (`prune_env.cli.pareto`), as PNG files and as TensorBoard images."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from prune_env.cli.pareto import AXES, pareto_figure, pareto_plots
from prune_env.runs.finalize import load_report

#: ``table_ratio``: the cost ratio the episode looked up (the same on every run of a seed);
#: ``measured_ratio``: timed against the base at the end (what ``target_met`` judges; on a
#: shared machine it varies by a few hundredths between runs), ``ratio_low``/``ratio_high``
#: its 95% interval; ``target_met``: met, missed or within noise (the interval holds the
#: target); ``onnx_ratio``: the exported files' latency ratio in onnxruntime (the first
#: provider: the CPU's).
COLUMNS = ("method", "target", "val_acc", "test_acc", "drop", "table_ratio", "measured_ratio",
           "ratio_low", "ratio_high", "onnx_ratio", "speedup", "latency_ms", "energy_mj", "energy_ratio", "mflops", "flops_ratio", "params",
           "search_s",
           "finetune_s", "target_met", "hardware")


def row(run_dir: str | Path) -> dict[str, object]:
    """One run's numbers (see COLUMNS), from its report record; also the run's cost and its
    base's test accuracy, for the plots."""
    r = load_report(run_dir)
    p, b = r.pruned, r.base
    low, high = r.cost_ratio_ci or (None, None)
    energy = p.energy_mj / b.energy_mj if p.energy_mj and b.energy_mj else None
    final = r.final_finetune.seconds if r.final_finetune else 0.0
    return {"method": r.method or Path(run_dir).name, "target": r.target,
            "val_acc": p.val_accuracy, "test_acc": p.test_accuracy, "drop": r.accuracy_drop,
            "table_ratio": r.episode_cost_ratio, "measured_ratio": r.cost_ratio,
            "ratio_low": low, "ratio_high": high, "cost": r.cost,
            "onnx_ratio": r.deployed[0].ratio if r.deployed else None,
            "base_test_acc": b.test_accuracy,
            "latency_ms": p.latency_ms, "speedup": r.speedup, "energy_mj": p.energy_mj,
            "energy_ratio": energy, "mflops": p.flops / 1e6, "flops_ratio": p.flops / b.flops,
            "params": p.params, "search_s": r.search.seconds if r.search else None,
            "finetune_s": r.finetune.seconds + final, "target_met": r.target_met,
            "hardware": r.hardware}


def is_run(path: str | Path) -> bool:
    """A run directory (finished or not): what a glob like runs/demo-*/* also matches besides
    runs (compare.csv, the pareto images) is skipped; an unfinished run is an error later."""
    path = Path(path)
    return (path / "args.json").exists() or (path / "report.json").exists()


def fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def compare(run_dirs: list[str], csv_path: str | None = None, plot: str | None = None,
            logdir: str | None = None) -> str:
    """The markdown table of ``run_dirs``; also the CSV file at ``csv_path``, the Pareto plots
    ``{plot}-latency.png``, ``-flops.png`` (and ``-energy.png``), and the plots as
    TensorBoard images in ``logdir`` (tags ``pareto/latency``, ``pareto/flops``,
    ``pareto/energy``), each when given."""
    rows = []
    for d in filter(is_run, run_dirs):
        if not (Path(d) / "report.json").exists():  # a training run still going, or stopped
            print(f"skipped {d}: not finished (resume it with `prune-env train --resume`)",
                  file=sys.stderr)
            continue
        rows.append(row(d))
    if not rows:
        raise SystemExit(f"no run directories among {', '.join(map(str, run_dirs))}")
    if csv_path:
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    if plot:
        pareto_plots(rows, plot)
    if logdir:
        log_pareto(rows, logdir)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def log_pareto(rows: list[dict], logdir: str) -> None:
    """The Pareto figures as TensorBoard images under ``logdir``."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(logdir) as writer:
        for name, (x, label) in AXES.items():
            if all(r.get(x) is not None for r in rows):
                writer.add_figure(f"pareto/{name}", pareto_figure(rows, x, label))
