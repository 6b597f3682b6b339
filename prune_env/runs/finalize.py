"""The end of every method's run: pick the pruned network, fine-tune it, report, export.

Agents and baselines all finish here, so their reports compare: the same final fine-tuning
budget, the same validation and test scoring, the same interleaved timing against the base,
the same exports (TorchScript and ONNX, each checked against PyTorch).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym
import torch
from torch import nn

from prune_env.envs.prune import EpisodeState
from prune_env.envs.records import CandidateSummary, DeployedLatency, Finetune, Report
from prune_env.envs.report import episode_report, score
from prune_env.measure.onnx_runtime import time_onnx
from prune_env.runs.export import DEFAULT_FORMATS, export
from prune_env.training.checkpoint import save_compact
from prune_env.training.loop import train_steps

if TYPE_CHECKING:
    from prune_env.envs.prune import PruneEnv

#: Looked-up cost ratios in the same bin of this width tie when candidates that all missed
#: the target are ranked, and accuracy decides. The width is about the half-width of a
#: measured ratio's 95% interval on a CPU (0.01-0.02): a 0.001 difference in the table's
#: ratio must not outweigh points of accuracy (it did: 0.5105 at val. 0.632 beat 0.5115 at
#: 0.688). Bins rather than "within 0.01 of each other" keep the ranking an order, so the
#: best of many candidates does not depend on the order they came in.
RATIO_TIE = 0.01


@dataclass
class Candidate:
    """A pruned network a method proposes, with what its episode measured.

    Attributes:
        model: the compact network.
        source: where it came from (e.g. "deterministic policy", "best try, episode 7").
        accuracy: validation accuracy (the env's fixed subset) at the episode's end.
        cost_ratio: the episode's cost / base cost (looked up for latency).
        target_met: cost_ratio <= target.
        reward: the episode's reward.
        finetune_seconds: fine-tuning spent in the episode.
        finetune_steps: SGD steps spent in the episode.
    """

    model: nn.Module
    source: str
    accuracy: float
    cost_ratio: float
    target_met: bool
    reward: float
    finetune_seconds: float
    finetune_steps: int

    def key(self) -> tuple:
        """Target met first, then accuracy; among those that missed, a lower cost ratio (in
        bins of `RATIO_TIE`), then accuracy."""
        if self.target_met:
            return (True, 0, self.accuracy)
        # the small epsilon keeps 0.51 / 0.01 = 50.99999... in bin 51
        return (False, -math.floor(self.cost_ratio / RATIO_TIE + 1e-9), self.accuracy)


def policy_episode(env: gym.Env, policy: Any, seed: int, source: str,
                   options: dict[str, Any] | None = None) -> Candidate:
    """Run one episode of ``policy.predict(obs, deterministic=True)`` (reset with
    ``options``); the network it left."""
    obs, _ = env.reset(seed=seed, options=options)
    done, reward = False, 0.0
    while not done:
        action, _ = policy.predict(obs, deterministic=True)
        obs, r, done, _, info = env.step(action)
        reward += float(r)
    return candidate_from(env, source, reward)


def candidate_from(env: gym.Env, source: str, reward: float) -> Candidate:
    """The environment's current network as a candidate."""
    unwrapped = cast("PruneEnv", env.unwrapped)
    state = unwrapped.episode_state
    ratio = state.cost / unwrapped.bench.base_cost
    return Candidate(state.model, source, state.accuracy, ratio,
                     ratio <= unwrapped.bench.reward_cfg.target, reward, state.finetune_seconds,
                     state.finetune_steps)


def measured_ratio(env: gym.Env, candidate: Candidate) -> float:
    """The candidate's cost ratio as the report will judge it (latency timed interleaved
    with the base). Shown beside the looked-up ratio; candidates are picked on the looked-up
    one, so that the same seed on the same machine gives the same report."""
    unwrapped = cast("PruneEnv", env.unwrapped)
    return unwrapped.bench.meter.measured_ratio(unwrapped.bench.base_model, candidate.model)


def finalize(env: gym.Env, candidate: Candidate, out_dir: Path, *, steps: int, seed: int,
             formats: tuple[str, ...] = DEFAULT_FORMATS) -> Report:
    """Fine-tune ``candidate`` for ``steps`` SGD steps, measure, score, save, export.

    Writes ``out_dir/compact.pt`` and the exports; the report (`episode_report`'s, plus
    ``source``, ``search_result``, ``final_finetune`` and ``exports``) is returned for the
    pipeline to complete and write once.
    """
    unwrapped = cast("PruneEnv", env.unwrapped)
    model = copy.deepcopy(candidate.model)
    generator = torch.Generator().manual_seed(seed)
    bench = unwrapped.bench
    seconds = train_steps(model, bench.data.train, bench.task, steps, bench.train_cfg,
                          generator, progress="final fine-tune")
    model.eval()
    accuracy = bench.validate(model)
    costs = bench.meter.costs(model)
    state = EpisodeState(model=model, cost=costs[bench.cost_key], accuracy=accuracy,
                         finetune_seconds=candidate.finetune_seconds,
                         finetune_steps=candidate.finetune_steps,
                         total_reward=candidate.reward)
    report = episode_report(bench, state, bench.meter.measure_pair(bench.base_model, model))
    report.source = candidate.source
    report.search_result = CandidateSummary(candidate.source, candidate.accuracy,
                                            candidate.cost_ratio)
    report.final_finetune = Finetune(seconds=seconds, steps=steps)
    report.exports = {fmt: export(model, bench.deploy_shape, out_dir, fmt) for fmt in formats}
    if "onnx" in report.exports:
        report.deployed = deployed_latency(bench, Path(report.exports["onnx"].path), out_dir)
    score(bench, model, report)
    save_compact(out_dir / "compact.pt", model, {"report": "report.json"})
    return report


def deployed_latency(bench, pruned_onnx: Path, out_dir: Path) -> list[DeployedLatency]:
    """The pruned ONNX file and the base's (exported beside it as base.onnx) timed in
    onnxruntime, interleaved, on each installed provider."""
    base = export(bench.base_model, bench.deploy_shape, out_dir, "onnx", stem="base")
    with bench.meter.table.timing():
        timings = time_onnx(base.path, pruned_onnx, bench.deploy_shape,
                            threads=bench.meter.threads)
    return [DeployedLatency("onnxruntime", t.provider, t.base.estimate_ms,
                            t.pruned.estimate_ms, t.ratio, [t.interval.low, t.interval.high])
            for t in timings]


def write_report(run_dir: Path, report: Report) -> Path:
    """report.json, written once at a run's end, atomically (a reader never sees half)."""
    path = run_dir / "report.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(report.to_json())
    tmp.replace(path)
    return path


def load_report(run_dir: str | Path) -> Report:
    """A run's report.json, with a clear error naming the file when the run has none (yet)
    or it cannot be read."""
    path = Path(run_dir) / "report.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: the run has not finished (resume it "
                                "with `prune-env train --resume RUN_DIR`)")
    return Report.read(path)
