"""Learning curves: an agent's per-episode scalars, read back from its TensorBoard events, and
the figure of several runs' curves (each seed thin, the mean over seeds thick).

A resumed run has several event files, and the episodes it ran again after its last checkpoint
appear twice: the last value written for an episode is the one kept.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers
import matplotlib.pyplot as plt  # noqa: E402

#: The curves drawn: TensorBoard tag -> label.
CURVES = {"charts/episodic_return": "episode return",
          "charts/accuracy": "validation score at the episode's end",
          "charts/cost_ratio": "cost / base (the reward's)",
          "charts/search_finetune_steps": "fine-tune steps of all tries"}
#: The curves read: those drawn, and the kept path's fine-tune steps (an agent without tries).
READ = (*CURVES, "charts/finetune_steps")


@dataclass
class Curves:
    """One run's per-episode values, by tag (`READ`); an episode a tag lacks is NaN."""

    run_dir: Path
    values: dict[str, list[float]] = field(default_factory=dict)

    @property
    def episodes(self) -> int:
        return max((len(v) for v in self.values.values()), default=0)

    def window(self, tag: str, first: bool, size: int) -> float:
        """Mean of ``tag`` over the first (or last) ``size`` episodes; NaN where missing."""
        values = self.values.get(tag, [])
        chosen = values[:size] if first else values[-size:]
        chosen = [v for v in chosen if not math.isnan(v)]
        return statistics.fmean(chosen) if chosen else math.nan


def read_curves(run_dir: str | Path) -> Curves:
    """The per-episode scalars of `READ` from a run directory's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(run_dir)
    by_tag: dict[str, dict[int, float]] = defaultdict(dict)
    for events in sorted(run_dir.glob("events.out.tfevents.*")):  # written in time order
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in set(acc.Tags()["scalars"]) & set(READ):
            for event in acc.Scalars(tag):
                by_tag[tag][event.step] = event.value  # a re-run episode: the later value
    count = max((max(steps) + 1 for steps in by_tag.values() if steps), default=0)
    return Curves(run_dir, {tag: [by_tag[tag].get(k, math.nan) for k in range(count)]
                            for tag in READ if tag in by_tag})


def curves_figure(arms: dict[str, list[Curves]], target: float | None = None):
    """One panel per curve; per arm, each run (seed) a thin line and their mean a thick one."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (tag, label) in zip(axes.flat, CURVES.items(), strict=True):
        for k, (arm, runs) in enumerate(arms.items()):
            color = colors[k % len(colors)]
            series = [r.values[tag] for r in runs if tag in r.values]
            for values in series:
                ax.plot(range(len(values)), values, color=color, alpha=0.3, linewidth=0.8)
            if series:
                mean = nanmean_by_episode(series)
                ax.plot(range(len(mean)), mean, color=color, linewidth=2,
                        label=f"{arm} (mean of {len(series)})")
        if tag == "charts/cost_ratio" and target is not None:
            ax.axhline(target, color="grey", linestyle="--", linewidth=1, label="target")
        ax.set_xlabel("episode")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def nanmean_by_episode(series: list[list[float]]) -> list[float]:
    """Per episode, the mean over the runs that have it (runs may differ in length)."""
    out = []
    for k in range(max(len(s) for s in series)):
        values = [s[k] for s in series if k < len(s) and not math.isnan(s[k])]
        out.append(statistics.fmean(values) if values else math.nan)
    return out
