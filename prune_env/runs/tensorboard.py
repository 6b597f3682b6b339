"""What a training run writes to TensorBoard, under cleanrl's and sb3's tag vocabulary.

- ``charts/``: per episode: episodic_return, accuracy, cost_ratio, latency_ms,
  flops_ratio, params_ratio, energy_mj (where metered), finetune_seconds,
  finetune_fraction; ``charts/kept_filters`` (a bar chart image, base vs kept per conv).
- ``best/``: the best network so far (target met first, then accuracy): accuracy,
  cost_ratio.
- ``losses/``: the agent's own (L2PF: policy_loss, entropy; sb3 writes ``train/``).
- ``final/`` and the HPARAMS tab: the final network's test accuracy, speed-up and
  measured cost ratio against the run's hyper-parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers
import matplotlib.pyplot as plt  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from prune_env.envs.records import EpisodeLog, Report  # noqa: E402
from prune_env.envs.report import kept_filters  # noqa: E402
from prune_env.runs.finalize import Candidate  # noqa: E402

if TYPE_CHECKING:
    from prune_env.envs.prune import PruneEnv


def kept_filters_figure(base: dict[str, int], kept: dict[str, float], title: str) -> Any:
    """Bar chart: filters of each conv in the base network and what is left of them."""
    names = list(base)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names)), 3.2))
    ax.bar(range(len(names)), [base[n] for n in names], color="#cccccc", label="base")
    ax.bar(range(len(names)), [kept.get(n, 0) for n in names], color="#1f77b4", label="kept")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_ylabel("filters")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def candidate_log(env: PruneEnv, candidate: Candidate, episode: int,
                  finetune_mean: float) -> EpisodeLog:
    """The log of a method that runs a single episode: its candidate's figures."""
    model = candidate.model
    costs = env.bench.meter.costs(model)
    return EpisodeLog(
        episode=episode, reward=candidate.reward, accuracy=candidate.accuracy,
        cost_ratio=candidate.cost_ratio, latency_ms=costs["latency_ms"],
        energy_mj=costs["energy_mj"], flops=costs["flops"], params=int(costs["params"]),
        finetune_seconds=candidate.finetune_seconds, finetune_steps=candidate.finetune_steps,
        finetune_mean=finetune_mean,
        # per base conv (a deployed ALF layer counts its expansion's filters)
        kept={n: after for n, (_, after) in kept_filters(env.bench.base_model, model).items()})


class EpisodeLogger:
    """Writes each training episode's log (see the module docstring).

    Args:
        writer: the run's SummaryWriter.
        env: the unwrapped environment (base network, base costs and target).
        image_every: draw the kept-filters chart every this many episodes.
    """

    def __init__(self, writer: SummaryWriter, env: Any, image_every: int):
        self.writer = writer
        self.target: float = env.bench.reward_cfg.target
        self.base_costs: dict[str, Any] = env.bench.base_costs
        self.base_kept = {n: m.out_channels for n, m in env.bench.base_model.named_modules()
                          if isinstance(m, nn.Conv2d)}
        self.image_every = max(1, image_every)
        self.best: tuple[tuple[bool, float], float, float] | None = None

    def episode(self, log: EpisodeLog) -> None:
        w, step = self.writer, log.episode
        w.add_scalar("charts/episodic_return", log.reward, step)
        for key in ("accuracy", "cost_ratio", "latency_ms", "finetune_seconds"):
            w.add_scalar(f"charts/{key}", getattr(log, key), step)
        w.add_scalar("charts/finetune_fraction", log.finetune_mean, step)
        w.add_scalar("charts/finetune_steps", log.finetune_steps, step)
        if log.search_finetune_steps is not None:
            w.add_scalar("charts/search_finetune_steps", log.search_finetune_steps, step)
        w.add_scalar("charts/flops_ratio", log.flops / self.base_costs["flops"], step)
        w.add_scalar("charts/params_ratio", log.params / self.base_costs["params"], step)
        if log.energy_mj is not None:
            w.add_scalar("charts/energy_mj", log.energy_mj, step)
        if log.pace_weight is not None:
            w.add_scalar("losses/pace_weight", log.pace_weight, step)
        if log.finetune_price is not None:
            w.add_scalar("losses/finetune_price", log.finetune_price, step)
        for loss in ("policy_loss", "entropy"):
            if getattr(log, loss) is not None:
                w.add_scalar(f"losses/{loss}", getattr(log, loss), step)
        met = log.cost_ratio <= self.target
        rank = (met, log.accuracy if met else -log.cost_ratio)
        if self.best is None or rank > self.best[0]:
            self.best = (rank, log.accuracy, log.cost_ratio)
        w.add_scalar("best/accuracy", self.best[1], step)
        w.add_scalar("best/cost_ratio", self.best[2], step)
        if (step + 1) % self.image_every == 0 or step == 0:
            w.add_figure("charts/kept_filters", kept_filters_figure(
                self.base_kept, log.kept, f"episode {step}: accuracy {log.accuracy:.3f}, "
                f"cost ratio {log.cost_ratio:.2f}"), step)
        w.flush()

    def final(self, report: Report, args: dict[str, Any]) -> None:
        """The final network's numbers, its kept filters, and the hyper-parameters."""
        pruned = report.pruned
        metrics = {"final/test_accuracy": pruned.test_accuracy,
                   "final/accuracy_drop": report.accuracy_drop,
                   "final/speedup": report.speedup, "final/cost_ratio": report.cost_ratio,
                   "final/flops_ratio": pruned.flops / report.base.flops}
        kept = {n: after for n, (_, after) in report.kept_filters.items()}
        score = "mIoU" if report.metric == "miou" else "accuracy"
        self.writer.add_figure("final/kept_filters", kept_filters_figure(
            self.base_kept, kept, f"final: test {score} {pruned.test_accuracy:.4f}, "
            f"speed-up {report.speedup:.2f}x"))
        hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                   for k, v in flat(args).items()}
        self.writer.add_hparams(hparams, metrics, run_name=".")
        self.writer.close()


def flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts (args.json) as one level of dotted keys (TensorBoard's hparams)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value
    return out
