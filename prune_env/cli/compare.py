"""``prune-env compare RUN_DIR...``: finished runs side by side (markdown table and CSV) and
their Pareto plot (`prune_env.cli.pareto`), as PNG files and as TensorBoard images."""

from __future__ import annotations

import csv
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from prune_env.cli.pareto import AXES, pareto_figure, pareto_plots
from prune_env.runs.finalize import load_report
from prune_env.sweep.ledger import outcomes
from prune_env.sweep.plan import PLAN, entry_of

#: ``table_ratio``: the cost ratio the episode looked up (the same on every run of a seed);
#: ``measured_ratio``: timed against the base at the end (what ``target_met`` judges; on a
#: shared machine it varies by a few hundredths between runs), ``ratio_low``/``ratio_high``
#: its 95% interval; ``target_met``: met, missed or within noise (the interval holds the
#: target); ``onnx_ratio``: the exported files' latency ratio in onnxruntime (the first
#: provider: the CPU's).
COLUMNS = ("method", "target", "val_acc", "test_acc", "drop", "table_ratio", "measured_ratio",
           "ratio_low", "ratio_high", "onnx_ratio", "speedup", "latency_ms", "energy_mj", "energy_ratio", "mflops", "flops_ratio", "params",
           "search_s",
           "finetune_s", "target_met", "hardware", "model", "seed", "node", "metric",
           "deploy_shape")

#: A sweep's table: one row per (network, method, target), means over its seeds with one
#: standard deviation (``_sd``); ``target_met`` counts the seeds' verdicts.
SUMMARY = ("model", "method", "target", "seeds", "test_acc", "test_acc_sd", "measured_ratio",
           "measured_ratio_sd", "speedup", "flops_ratio", "flops_ratio_sd", "latency_ms",
           "energy_ratio", "search_s", "finetune_s", "target_met", "hardware", "node", "metric",
           "deploy_shape")
MEANS = ("test_acc", "val_acc", "measured_ratio", "speedup", "flops_ratio", "latency_ms",
         "energy_ratio", "search_s", "finetune_s", "base_test_acc", "onnx_ratio")


def row(run_dir: str | Path, node: str | None = None) -> dict[str, object]:
    """One run's numbers (see COLUMNS), from its report record; also the run's cost and its
    base's test accuracy, for the plots. ``node``: where a sweep ran it."""
    r = load_report(run_dir)
    entry = entry_of(Path(run_dir))
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
            "hardware": r.hardware, "model": r.model, "metric": r.metric,
            "deploy_shape": "x".join(map(str, r.deploy_shape)) if r.deploy_shape else None,
            "seed": entry.seed if entry else None, "node": node}


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
    ``pareto/energy``), each when given.

    A sweep directory (one with plan.json) stands for its runs, and the table and the plots
    then show each (network, method, target) once, as the mean and spread over its seeds
    (`SUMMARY`); the CSV keeps one row per run, and ``summary.csv`` beside it the table.
    """
    rows, sweep = [], False
    for d in run_dirs:
        if (Path(d) / PLAN).exists():
            sweep = True
            rows += sweep_rows(Path(d))
        elif is_run(d):
            rows += finished_rows([Path(d)])
    if not rows:
        raise SystemExit(f"no finished runs among {', '.join(map(str, run_dirs))}")
    shown, columns = (summarize(rows), SUMMARY) if sweep else (rows, COLUMNS)
    if csv_path:
        write_csv(csv_path, rows, COLUMNS)
        if sweep:
            write_csv(Path(csv_path).with_name("summary.csv"), shown, SUMMARY)
    if plot:
        pareto_plots(shown, plot)
    if logdir:
        log_pareto(shown, logdir)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in columns) + " |" for r in shown]
    return "\n".join(lines)


def finished_rows(run_dirs: list[Path], nodes: dict[str, str] | None = None) -> list[dict]:
    """The rows of the finished runs among ``run_dirs`` (an unfinished one is said and
    skipped); ``nodes``: where a sweep ran each run, by run directory name."""
    rows = []
    for d in run_dirs:
        if not (d / "report.json").exists():  # a training run still going, or stopped
            print(f"skipped {d}: not finished (resume it with `prune-env train --resume`)",
                  file=sys.stderr)
            continue
        rows.append(row(d, (nodes or {}).get(d.name)))
    return rows


def sweep_rows(root: Path) -> list[dict]:
    """The rows of a sweep directory's finished runs, each with the node that ran it."""
    nodes = {o.run: o.node for o in outcomes(root).values() if o.run and o.node}
    runs = [d for d in sorted(root.iterdir()) if d.is_dir() and entry_of(d) is not None]
    return finished_rows([d for d in runs if (d / "report.json").exists()], nodes)


def summarize(rows: list[dict], extra: tuple[str, ...] = (),
              extra_sd: tuple[str, ...] = ()) -> list[dict]:
    """One row per (network, method, target): means over the seeds (`MEANS`), one standard
    deviation where there are several seeds, the verdicts counted; the means of the columns
    ``extra`` over the runs that have them (a bench's agent-only columns), and the standard
    deviations of ``extra_sd``."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["method"], r["target"])].append(r)
    several_models = len({r["model"] for r in rows}) > 1
    summary = []
    for (model, method, target), runs in sorted(groups.items()):
        out: dict[str, object] = {
            "model": model, "method": f"{method} ({model})" if several_models else method,
            "target": target, "seeds": len(runs), "cost": runs[0]["cost"],
            "target_met": ", ".join(f"{v} {n}/{len(runs)}" for v, n in
                                    sorted(_count(r["target_met"] for r in runs).items())),
            "hardware": _joined(r["hardware"] for r in runs),
            "metric": runs[0].get("metric"), "deploy_shape": runs[0].get("deploy_shape"),
            "node": _joined(r["node"] for r in runs)}
        for column in MEANS:
            values = [float(r[column]) for r in runs if r.get(column) is not None]
            out[column] = statistics.fmean(values) if len(values) == len(runs) else None
        for column in ("test_acc", "measured_ratio", "flops_ratio"):
            values = [float(r[column]) for r in runs]
            out[f"{column}_sd"] = statistics.stdev(values) if len(values) > 1 else None
        for column in extra:
            values = _present(runs, column)
            out[column] = statistics.fmean(values) if values else None
        for column in extra_sd:
            values = _present(runs, column)
            out[f"{column}_sd"] = statistics.stdev(values) if len(values) > 1 else None
        if len(runs) == 1:  # one seed: the run's own interval
            out["ratio_low"], out["ratio_high"] = runs[0]["ratio_low"], runs[0]["ratio_high"]
        summary.append(out)
    return summary


def _present(runs: list[dict], column: str) -> list[float]:
    """The runs' values of ``column``, leaving out the missing (None, "", NaN)."""
    values = [float(r[column]) for r in runs if r.get(column) not in (None, "")]
    return [v for v in values if not math.isnan(v)]


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for v in values:
        counts[str(v)] += 1
    return counts


def _joined(values) -> str | None:
    present = sorted({str(v) for v in values if v is not None})
    return ", ".join(present) if present else None


def write_csv(path: str | Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def log_pareto(rows: list[dict], logdir: str) -> None:
    """The Pareto figures as TensorBoard images under ``logdir``."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(logdir) as writer:
        for name, (x, label) in AXES.items():
            if all(r.get(x) is not None for r in rows):
                writer.add_figure(f"pareto/{name}", pareto_figure(rows, x, label))
