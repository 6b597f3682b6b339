"""Accuracy against measured cost: the Pareto plot of finished runs.

One point per run; the runs of one method at several targets are joined into a curve (sorted
by cost), so methods compare along the whole trade-off, not at one target. Points on the
Pareto front of all runs (no other run both more accurate and cheaper) are ringed. Drawn for
the measured latency ratio, the FLOPs ratio, and for energy where every run has it. The base
network is the point at 1.0, each target the runs were given is a dashed line on the axis of
their cost, and measured ratios carry their 95% intervals as error bars. A sweep's plot has one
point per (method, target): the mean over seeds, with one standard deviation over the seeds
as error bars on both axes.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers
import matplotlib.pyplot as plt  # noqa: E402

#: x axes: name -> (column of `prune_env.cli.compare.row`, label); energy only where every run
#: has it.
#: The cost whose target each axis shows.
AXIS_COST = {"measured_ratio": "latency", "energy_ratio": "energy", "flops_ratio": "flops"}
AXES = {"latency": ("measured_ratio", "measured latency / base (batch 1)"),
        "energy": ("energy_ratio", "measured energy / base"),
        "flops": ("flops_ratio", "FLOPs / base (per image, as executed)")}


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, accuracy) that no other point beats on both."""
    return [i for i, (c, a) in enumerate(points)
            if not any(c2 <= c and a2 >= a and (c2, a2) != (c, a) for c2, a2 in points)]


def score_label(rows: list[dict]) -> str:
    """What the y axis shows: accuracy, mIoU (segmentation), or both when runs mix them."""
    metrics = {r.get("metric", "top1") for r in rows}
    if metrics == {"miou"}:
        return "test mIoU"
    return "test accuracy" if metrics == {"top1"} else "test accuracy or mIoU"


def pareto_figure(rows: list[dict], x: str = "measured_ratio",
                  label: str = AXES["latency"][1], base_x: float | None = 1.0):
    """The figure of test accuracy against ``x`` for the comparison rows; the base network
    is drawn at ``base_x`` (None: not drawn, where ``x`` is no ratio to the base)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    by_method = defaultdict(list)
    for r in rows:
        by_method[r["method"]].append((r[x], r["test_acc"], *error_bar(r, x),
                                       r.get("test_acc_sd") or 0.0))
    for method, points in sorted(by_method.items()):
        points.sort()
        xs, ys, below, above, spread = zip(*points, strict=True)
        ax.errorbar(xs, ys, xerr=[below, above], yerr=spread if any(spread) else None,
                    marker="o", label=method, capsize=3,
                    linestyle="-" if len(points) > 1 else "none")
    bases = sorted({r["base_test_acc"] for r in rows if r.get("base_test_acc") is not None})
    if bases and base_x is not None:
        ax.scatter([base_x] * len(bases), bases, marker="*", s=160, color="black", label="base")
    for i, target in enumerate(sorted({r["target"] for r in rows
                                       if r.get("cost") == AXIS_COST.get(x)})):
        ax.axvline(target, color="grey", linestyle="--", linewidth=1,
                   label="target" if i == 0 else None)
    everything = [(r[x], r["test_acc"]) for r in rows]
    front = [everything[i] for i in pareto_front(everything)]
    xs, ys = zip(*front, strict=True)
    ax.scatter(xs, ys, s=160, facecolors="none", edgecolors="black", label="Pareto front")
    shapes = {r.get("deploy_shape") for r in rows}
    ax.set_xlabel(f"{label}, input {shapes.pop()}" if len(shapes) == 1 and None not in shapes
                  else label)
    ax.set_ylabel(score_label(rows))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def error_bar(row: dict, x: str) -> tuple[float, float]:
    """The distances from a run's measured ratio down and up to its interval's ends (0 for
    the counted axes and reports without an interval); for a sweep's rows (means over
    seeds), one standard deviation of ``x`` over the seeds either side."""
    spread = row.get(f"{x}_sd")
    if spread is not None:
        return spread, spread
    if x != "measured_ratio" or row.get("ratio_low") is None:
        return 0.0, 0.0
    return max(row[x] - row["ratio_low"], 0.0), max(row["ratio_high"] - row[x], 0.0)


def pareto_plots(rows: list[dict], stem: str | Path) -> list[Path]:
    """PNG files ``{stem}-latency.png``, ``-flops.png`` (and ``-energy.png`` where
    measured); their paths."""
    written = []
    for name, (x, label) in AXES.items():
        if any(r.get(x) is None for r in rows):
            continue
        path = Path(f"{stem}-{name}.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig = pareto_figure(rows, x, label)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
