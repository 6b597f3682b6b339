"""The episode report: base vs pruned network, as a `prune_env.envs.records.Report`.

One evaluation path: agents and baselines all end their episodes here, so their reports
compare. Validation accuracy in the report is on the full validation split; test accuracy is
computed only here (`score`), for the final report, never for a reward.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from torch import nn

from prune_env.data.task import Segmentation
from prune_env.envs.records import Figures, Finetune, Report
from prune_env.measure import count_flops, count_params
from prune_env.measure.confidence import Interval, verdict
from prune_env.measure.costs import MAX_INTERVAL_WIDTH
from prune_env.training.loop import evaluate, evaluate_stats

if TYPE_CHECKING:
    from prune_env.envs.bench import Bench
    from prune_env.envs.prune import EpisodeState


def kept_filters(base: nn.Module, pruned: nn.Module) -> dict[str, list[float]]:
    """Per conv of the base network: [filters before, filters after] (0: branch removed;
    a conv that a method deployed as ``code`` and ``expand`` convs, ALF's, counts its
    expansion's filters)."""
    after = {n: m.out_channels for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d)}
    return {n: [m.out_channels, after.get(n, after.get(f"{n}.expand", 0))]
            for n, m in base.named_modules() if isinstance(m, nn.Conv2d)}


def episode_report(env: Bench, state: EpisodeState, latency: dict[str, Any]) -> Report:
    """The report of a finished episode (test accuracy is added by `score`)."""
    shape = env.deploy_shape  # the costs' shape: the deployed input's

    def side(model: nn.Module, key: str, accuracy: float) -> Figures:
        timed, batch = latency[key], latency[f"{key}_batch"]
        return Figures(val_accuracy_subset=accuracy, latency_ms=timed.estimate_ms,
                       latency_median_ms=timed.median_ms, latency_iqr_ms=timed.iqr_ms,
                       energy_mj=latency[f"{key}_energy_mj"], flops=count_flops(model, shape),
                       params=count_params(model), latency_batch=batch.batch,
                       latency_batch_ms=batch.estimate_ms,
                       energy_net_mj=latency.get(f"{key}_energy_net_mj"))

    base = side(env.base_model, "base", env.base_accuracy)
    pruned = side(state.model, "pruned", state.accuracy)
    # the reward saw looked-up latency; the report judges the target on the measured one
    ratio = (pruned.latency_ms / base.latency_ms if env.cost_name == "latency"
             else state.cost / env.base_cost)
    pruned.latency_predicted_ms = latency["pruned_predicted_ms"]
    report = common_report(env, state, base, pruned, ratio,
                           kept_filters(env.base_model, state.model),
                           "latency_ms: batch 1, median of block minima, base and pruned "
                           "interleaved; IQR over all runs; ratio interval: paired "
                           "bootstrap over blocks; a pair whose interval is wider than "
                           f"{MAX_INTERVAL_WIDTH} is timed again (cost_ratio_timings)",
                           latency["ratio_interval"] if env.cost_name == "latency" else None)
    report.cost_ratio_timings = latency.get("timings", 1)
    return report


def common_report(env: Bench, state: EpisodeState, base: Figures, pruned: Figures,
                  ratio: float, kept: dict[str, list[float]], note: str,
                  interval: Interval | None = None) -> Report:
    """The report every method's episode ends with, given the base and pruned figures, the
    cost ratio the target is judged on and that ratio's interval (None: counted, exact)."""
    target = env.reward_cfg.target
    return Report(
        model=env.model_name, dataset=env.data.name, cost=env.cost_name, target=target,
        reward=dataclasses.asdict(env.reward_cfg),
        episode_reward=state.total_reward, device=env.meter.device,
        threads=env.meter.threads, hardware=env.meter.table.hardware, base=base, pruned=pruned,
        speedup=base.latency_ms / pruned.latency_ms, cost_ratio=ratio,
        cost_ratio_source={"latency": "measured", "energy": "metered"}.get(env.cost_name,
                                                                            "counted"),
        episode_cost_ratio=state.cost / env.base_cost,
        target_met=verdict(ratio, target, interval),
        cost_ratio_ci=None if interval is None else [interval.low, interval.high],
        finetune=Finetune(seconds=state.finetune_seconds, steps=state.finetune_steps),
        kept_filters=kept, latency_note=note, input_shape=list(env.input_shape),
        deploy_shape=list(env.deploy_shape), energy_idle_w=env.meter.idle_watts,
        details=table_correction(env))


def table_correction(env: Bench) -> dict[str, Any]:
    """The latency table's correction by measurement, where the run fitted one."""
    correction = env.meter.correction
    if not correction.points:
        return {}
    return {"table_correction": {"slope": correction.slope,
                                 "probes": [list(p) for p in correction.points],
                                 "observed": correction.observed,
                                 "residuals": correction.residuals()}}


def score(env: Bench, pruned: nn.Module, report: Report) -> None:
    """Add both networks' full validation and test accuracy (or mIoU, with each class's IoU)
    and the accuracy drop."""
    report.metric = env.task.metric
    for figures, model in ((report.base, env.base_model), (report.pruned, pruned)):
        figures.val_accuracy = evaluate(model, env.data.val, env.task)
        test = evaluate_stats(model, env.data.test, env.task)
        figures.test_accuracy = env.task.finalize(test)
        if isinstance(env.task, Segmentation):
            figures.test_class_iou = env.task.class_iou(test)
    assert report.base.test_accuracy is not None and report.pruned.test_accuracy is not None
    report.accuracy_drop = report.base.test_accuracy - report.pruned.test_accuracy
