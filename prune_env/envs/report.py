"""The episode report: base vs pruned network, as a dict and as report.json.

One evaluation path: agents and baselines all end their episodes here, so their reports
compare. Validation accuracy in the report is on the full validation split; test accuracy is
computed only here, for the final report, never for a reward.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from prune_env.measure import count_flops, count_params
from prune_env.training.checkpoint import save_compact
from prune_env.training.loop import evaluate

if TYPE_CHECKING:
    from prune_env.envs.prune import EpisodeState, PruneEnv


def kept_filters(base: nn.Module, pruned: nn.Module) -> dict[str, list[int]]:
    """Per conv of the base network: [filters before, filters after] (0: branch removed;
    a conv that a method deployed as ``code`` and ``expand`` convs, ALF's, counts its
    expansion's filters)."""
    after = {n: m.out_channels for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d)}
    return {n: [m.out_channels, after.get(n, after.get(f"{n}.expand", 0))]
            for n, m in base.named_modules() if isinstance(m, nn.Conv2d)}


def episode_report(env: PruneEnv, state: EpisodeState, latency: dict[str, Any]) -> dict:
    """The report of a finished episode (without test accuracy; see `write_report`)."""
    shape = env.input_shape

    def side(model, key, accuracy):
        timed, batch = latency[key], latency[f"{key}_batch"]
        return {"val_accuracy_subset": accuracy, "latency_ms": timed.estimate_ms,
                "latency_median_ms": timed.median_ms, "latency_iqr_ms": timed.iqr_ms,
                f"latency_batch{batch.batch}_ms": batch.estimate_ms,
                "energy_mj": latency[f"{key}_energy_mj"], "flops": count_flops(model, shape),
                "params": count_params(model)}

    base = side(env.base_model, "base", env.base_accuracy)
    pruned = side(state.model, "pruned", state.accuracy)
    # the reward saw looked-up latency; the report judges the target on the measured one
    ratio = (pruned["latency_ms"] / base["latency_ms"] if env.cost_name == "latency"
             else state.cost / env.base_cost)
    pruned["latency_predicted_ms"] = latency["pruned_predicted_ms"]
    return common_report(env, state, base, pruned, ratio) | {
        "kept_filters": kept_filters(env.base_model, state.model),
        "latency_note": "latency_ms: batch 1, median of block minima, base and pruned "
                        "interleaved; IQR over all runs",
    }


def common_report(env: PruneEnv, state: EpisodeState, base: dict, pruned: dict,
                  ratio: float) -> dict[str, Any]:
    """The fields every method's report has (what `prune_env.cli.compare` reads), given the
    base and pruned sides and the cost ratio the target is judged on."""
    return {
        "model": env.model_name, "dataset": env.data.name, "cost": env.cost_name,
        "target": env.reward_cfg.target, "reward": dataclasses.asdict(env.reward_cfg),
        "episode_reward": state.total_reward, "device": env.meter.device,
        "threads": env.meter.threads, "base": base, "pruned": pruned,
        "speedup": base["latency_ms"] / pruned["latency_ms"],
        "cost_ratio": ratio,
        "cost_ratio_source": "measured" if env.cost_name == "latency" else "counted",
        "episode_cost_ratio": state.cost / env.base_cost,
        "target_met": ratio <= env.reward_cfg.target,
        "finetune": {"seconds": state.finetune_seconds, "steps": state.finetune_steps},
    }


def write_report(env: PruneEnv, state: EpisodeState, report: dict, out: Path,
                 meta: dict[str, Any] | None = None, network: nn.Module | None = None) -> Path:
    """Add full validation and test accuracy, write report.json and compact.pt (with
    ``meta``) to ``out``; ``network``: what compact.pt holds (default: the episode's)."""
    for key, model in (("base", env.base_model), ("pruned", state.model)):
        report[key]["val_accuracy"] = evaluate(model, env.data.val, env.task)
        report[key]["test_accuracy"] = evaluate(model, env.data.test, env.task)
    report["accuracy_drop"] = report["base"]["test_accuracy"] - report["pruned"]["test_accuracy"]
    out.mkdir(parents=True, exist_ok=True)
    save_compact(out / "compact.pt", state.model if network is None else network,
                 {"report": "report.json", **(meta or {})})
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=2))
    return path
