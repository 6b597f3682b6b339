"""Baselines through the environment: SWD (selective weight decay, then its mask)."""

from __future__ import annotations

import json

import torch

from baselines.swd import SWDConfig, SWDPenalty, SWDPolicy
from prune_env.cli import main
from prune_env.finalize import policy_episode


def test_swd_drives_the_masked_filters_down_then_prunes_them_to_the_target(make_env):
    env = make_env(final_report=False, target=0.8)
    unwrapped = env.unwrapped
    penalty = SWDPenalty(unwrapped, SWDConfig(steps=100))
    candidate = policy_episode(env, SWDPolicy(unwrapped.max_filters), 0, "swd",
                               options={"warmup": (100, penalty)})
    # the masked filters' weights were driven down before the prune: 50x smaller at the end
    assert penalty.history[-1] < penalty.history[0] / 50
    # and the policy, reading only the observation, pruned what SWD masked: on target
    assert candidate.cost_ratio <= 0.8
    kept = {n: m.out_channels for n, m in candidate.model.named_modules()
            if isinstance(m, torch.nn.Conv2d)}
    for conv, dropped in penalty.dropped.items():
        assert kept.get(conv, 0) <= len(dropped) - int(dropped.sum()) + 1  # +1: forced keep
    assert candidate.finetune_steps >= 100  # the warm-up is charged to the episode


def test_swd_baseline_writes_a_report_on_target(tmp_path, checkpoint, latency_table):
    runs = tmp_path / "runs"
    assert main(["baseline", "swd", "--swd-steps", "80", "--dataset", "synthetic",
                 "--synthetic-size", "1500", "--image-size", "16", "--checkpoint",
                 str(checkpoint[0]), "--max-finetune-steps", "4", "--val-samples", "300",
                 "--threads", "1", "--latency-table", latency_table, "--final-steps", "20",
                 "--target", "0.8", "--no-export", "--runs-dir", str(runs)]) == 0
    (run,) = runs.iterdir()
    report = json.loads((run / "report.json").read_text())
    assert report["method"] == "swd" and report["episode_cost_ratio"] <= 0.8
    assert report["pruned"]["test_accuracy"] > 0.3  # 10 classes: chance is 0.1
    assert report["swd_dropped_filter_norm"][-1] < report["swd_dropped_filter_norm"][0] / 10
