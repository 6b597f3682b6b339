"""The report of a gating episode, in the layout of `prune_env.envs.report` (so that `compare`
reads it like any other run), plus what only a dynamic network has: simulated and executed
figures side by side.

- executed: `baselines.gating.dynamic.DynamicResNet` computes only the predicted filters, one image
  at a time; its latency (``pruned.latency_ms``) is timed at batch 1 over real test images
  (resized bilinearly to the deployment shape where it differs from the data's: the frames a
  deployment sees), interleaved with the dense base with the same BNs folded
  (`baselines.gating.dynamic.folded_dense`), predictors included; its FLOPs (``pruned.flops``)
  are what it computes, averaged over the same images, predictors included.
- simulated: what the authors' code measures, the dense network with its outputs multiplied
  by the masks: its latency (``details.dynamic.latency_simulated_ms``, no faster than dense) and the
  paper's FLOPs count (``details.dynamic.flops_simulated``: gated convs at their active widths,
  predictors not counted).

Accuracy is the masked network's, evaluated in batches: it computes the same outputs as the
executed one (tested to 1e-4).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym
import torch
import torch.nn.functional as F

from baselines.gating.dynamic import (
    DynamicResNet,
    dynamic_flops,
    folded_dense,
    measure_dynamic_latency,
)
from prune_env.envs.records import CandidateSummary, EpisodeLog, Figures, Finetune, Report
from prune_env.envs.report import common_report, score
from prune_env.measure import count_params
from prune_env.measure.confidence import paired_ratio_interval
from prune_env.measure.latency import on_device
from prune_env.runs.finalize import Candidate
from prune_env.training.checkpoint import save_compact
from prune_env.training.loop import evaluate, train_steps

if TYPE_CHECKING:
    from baselines.gating.env import GateEnv
    from baselines.gating.network import GatedNetwork
    from prune_env.envs.prune import EpisodeState


def gate_report(env: GateEnv, state: EpisodeState, rounds: int = 5) -> Report:
    """The report of a finished gating episode (test accuracy added by `score`)."""
    gated = cast("GatedNetwork", state.model)  # a gating episode's network
    images = deployed_images(env)
    timed = time_dynamic(env, gated, images, rounds)
    counted = dynamic_flops(gated, images)
    executed, simulated = timed["executed"], timed["simulated"]

    def side(latency: float, iqr: float, accuracy: float, flops: float,
             params: int) -> Figures:
        return Figures(val_accuracy_subset=accuracy, latency_ms=latency,
                       latency_median_ms=latency, latency_iqr_ms=iqr, energy_mj=None,
                       flops=flops, params=params)

    base = side(executed["dense_ms"], executed["dense_iqr_ms"], env.bench.base_accuracy,
                counted["dense"], count_params(env.bench.base_model))
    pruned = side(executed["dynamic_ms"], executed["dynamic_iqr_ms"], state.accuracy,
                  counted["executed"], count_params(gated))
    pruned.latency_predicted_ms = env.bench.meter.predict_shapes_ms(
        env.mean_width_shapes(counted["active"]))
    latency = env.bench.cost_name == "latency"
    ratio = executed["ratio"] if latency else counted["executed"] / counted["dense"]
    interval = paired_ratio_interval(executed["dense_per_image_ms"],
                                     executed["dynamic_per_image_ms"], statistic="mean")
    report = common_report(
        env.bench, state, base, pruned, ratio, mean_kept_filters(env, counted["active"]),
        "latency_ms: batch 1, mean over test images of each image's median over rounds, "
        "dense base and dynamic network interleaved; IQR over images; predictors included; "
        "ratio interval: paired bootstrap over images", interval if latency else None)
    report.details["dynamic"] = {
        "budgets": dict(gated.budgets), "active_filters": counted["active"],
        "flops_simulated": counted["simulated"], "flops_executed": counted["executed"],
        "flops_dense": counted["dense"], "latency_executed_ms": executed["dynamic_ms"],
        "latency_executed_ratio": executed["ratio"],
        "latency_simulated_ms": simulated["dynamic_ms"],
        "latency_simulated_ratio": simulated["ratio"], "images": len(images),
        "rounds": rounds}
    return report


def deployed_images(env: GateEnv) -> torch.Tensor:
    """The first `report_images` test images at the deployment shape (bilinear resizing
    where the data's size differs, as a camera's frame is larger than the training crops)."""
    images = env.bench.data.test.images[: env.report_images]
    size = env.bench.deploy_shape[1:]
    if tuple(images.shape[2:]) != tuple(size):
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    return images


def time_dynamic(env: GateEnv, gated: GatedNetwork, images: torch.Tensor,
                 rounds: int = 5) -> dict[str, dict[str, Any]]:
    """Executed and simulated (masked) latency of ``gated`` against the dense base, each
    interleaved with the base at batch 1 over ``images``, while no process computes. The
    executed network is timed against the base with the same BNs folded
    (`folded_dense`), the simulated one against the base as it is: each ratio then measures
    the gating alone."""
    threads = env.bench.meter.threads or torch.get_num_threads()
    # timed where the meter measures (a GPU-trained network may be timed on the host)
    device = torch.device(env.bench.meter.device)
    dense = on_device(env.bench.base_model, device)
    gated = cast("GatedNetwork", on_device(gated, device))
    images = images.to(device)
    with env.bench.meter.table.timing():
        executed = measure_dynamic_latency(folded_dense(gated.eval()),
                                           DynamicResNet(gated), images, rounds=rounds,
                                           threads=threads)
        simulated = measure_dynamic_latency(dense, gated.eval(), images,
                                            rounds=rounds, threads=threads)
    return {"executed": executed, "simulated": simulated}


def finalize_gating(env: gym.Env, candidate: Candidate, out: Path, *, steps: int,
                    seed: int) -> Report:
    """The final stage of a gating run, as `prune_env.runs.finalize.finalize` is for pruning:
    the episode's network fine-tuned for ``steps`` SGD steps (backbone and predictors, then
    the predictors alone), scored, timed, saved to ``out/compact.pt``. No static export: a
    dynamic network's control flow depends on the image (the masked network's ONNX would run
    dense)."""
    unwrapped = cast("GateEnv", env.unwrapped)
    state = unwrapped.episode_state
    unwrapped.bench.generator.manual_seed(seed)
    seconds = train_steps(state.model, unwrapped.bench.data.train, unwrapped.bench.task, steps,
                          unwrapped.bench.train_cfg, unwrapped.bench.generator, grad_hook=unwrapped.trainer,
                          progress="final fine-tune")
    seconds += unwrapped.fit_predictors(unwrapped.predictor_steps)
    unwrapped.calibrate_predictors()
    with torch.no_grad():
        state.accuracy = evaluate(state.model, unwrapped.bench.data.val, unwrapped.bench.task,
                                  limit=unwrapped.bench.val_samples)
    report = gate_report(unwrapped, state)
    report.source = candidate.source
    report.search_result = CandidateSummary(candidate.source, candidate.accuracy,
                                            candidate.cost_ratio)
    report.final_finetune = Finetune(seconds=seconds, steps=steps)
    score(unwrapped.bench, state.model, report)
    save_gated(cast("GatedNetwork", state.model), out / "compact.pt")
    return report


def gate_log(env: GateEnv, reward: float, info: dict[str, Any],
             finetune: float) -> EpisodeLog:
    """A gating episode's log for `prune_env.runs.tensorboard.EpisodeLogger` (kept filters: the
    mean active filters of each gated conv)."""
    state = env.episode_state
    kept = {n: k for n, (_, k) in mean_kept_filters(env, info["active_filters"]).items()}
    return EpisodeLog(episode=0, reward=reward, accuracy=state.accuracy,
                      cost_ratio=state.cost / env.bench.base_cost, latency_ms=info["latency_ms"],
                      energy_mj=None, flops=info["flops"], params=info["params"],
                      finetune_seconds=state.finetune_seconds,
                      finetune_steps=state.finetune_steps, finetune_mean=finetune, kept=kept)


def mean_kept_filters(env: GateEnv, active: dict[str, float]) -> dict[str, list]:
    """Per conv of the base: [filters, mean active filters] (gated convs) or [n, n]."""
    out = {}
    for name, shape in env.bench.meter.shapes(env.bench.base_model).items():
        if shape.kind == "conv":
            out[name] = [shape.out_channels, round(active.get(name, shape.out_channels), 2)]
    return out


def save_gated(gated: GatedNetwork, path: Path) -> Path:
    """compact.pt of a gating run: the backbone as a network record and, beside it, the
    predictors' tensors and the gates' budgets (data only, as every network file)."""
    meta = {"execution": "dynamic (DynamicResNet)", "budgets": dict(gated.budgets),
            "predictors": {k: v.detach().clone() for k, v in
                           gated.predictors.state_dict().items()}}
    return save_compact(path, gated.backbone, meta)
