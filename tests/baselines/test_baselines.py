"""Baselines through the environment: L1-uniform and random at the ratio meeting the target,
SWD (selective weight decay, then its mask) and LayerPrune (whole blocks removed to the
latency target)."""

from __future__ import annotations

import json

import pytest
import torch

from baselines.layerprune import (
    LayerPrunePolicy,
    block_importance,
    blocks_to_remove,
    removable_blocks,
)
from baselines.simple import make_policy
from baselines.swd import SWDConfig, SWDPenalty, SWDPolicy
from prune_env.cli.main import main
from prune_env.envs.uniform import uniform_ratio_for
from prune_env.nn.blocks import Shortcut
from prune_env.nn.groups import filter_groups
from prune_env.nn.models import build_model
from prune_env.runs.finalize import policy_episode


def test_swd_drives_the_masked_filters_down_then_prunes_them_to_the_target(make_env):
    env = make_env(final_report=False, target=0.8)
    unwrapped = env.unwrapped
    penalty = SWDPenalty(unwrapped, SWDConfig(steps=100))
    candidate = policy_episode(env, SWDPolicy(unwrapped.bench.max_filters), 0, "swd",
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
                 "--target", "0.8", "--cost", "flops",  # seed-determined mask (see test_train)
                 "--no-export", "--runs-dir", str(runs)]) == 0
    (run,) = runs.iterdir()
    report = json.loads((run / "report.json").read_text())
    assert report["method"] == "swd" and report["episode_cost_ratio"] <= 0.8
    assert report["pruned"]["test_accuracy"] > 0.3  # 10 classes: chance is 0.1
    norms = report["details"]["swd_dropped_filter_norm"]
    assert norms[-1] < norms[0] / 10


@pytest.mark.timing
def test_layerprune_removes_whole_blocks_and_the_network_runs_faster(make_env):
    env = make_env(final_report=False, target=0.8)
    unwrapped = env.unwrapped
    stats = {n: b.running_mean.clone() for n, b in unwrapped.bench.base_model.named_modules()
             if isinstance(b, torch.nn.BatchNorm2d)}
    importance = block_importance(unwrapped, "taylor", batches=10)
    for n, b in unwrapped.bench.base_model.named_modules():  # the base network is left as it was
        if isinstance(b, torch.nn.BatchNorm2d):
            assert torch.equal(b.running_mean, stats[n])
    leaders = removable_blocks(unwrapped)
    assert "6" not in leaders and "9" not in leaders  # projection shortcuts: not removable
    assert set(importance) == set(leaders) and all(v >= 0 for v in importance.values())
    removed = blocks_to_remove(unwrapped, importance)
    assert removed and removed == sorted(removed, key=importance.get)
    policy = LayerPrunePolicy(unwrapped.bench.max_filters, [g.leader for g in unwrapped.bench.base_groups],
                              [leaders[b] for b in removed])
    candidate = policy_episode(env, policy, 0, "layerprune")
    model = candidate.model
    for block in leaders:
        assert isinstance(model.get_submodule(block), Shortcut) == (block in removed)
    base_widths = {n: m.out_channels for n, m in unwrapped.bench.base_model.named_modules()
                   if isinstance(m, torch.nn.Conv2d)}
    for name, m in model.named_modules():  # every filter of the blocks left is kept
        if isinstance(m, torch.nn.Conv2d):
            assert m.out_channels == base_widths[name]
    assert candidate.cost_ratio <= 0.8
    assert unwrapped.bench.meter.measured_ratio(unwrapped.bench.base_model, model) < 0.95


def test_imprinting_scores_each_block_by_its_probe_gain(make_env):
    env = make_env(final_report=False)
    gain = block_importance(env.unwrapped, "imprinting", probe_images=300)
    assert set(gain) == set(removable_blocks(env.unwrapped))
    assert all(-1 <= g <= 1 for g in gain.values())
    assert len(set(gain.values())) > 1  # blocks differ


def test_layerprune_baseline_writes_a_report(tmp_path, checkpoint, latency_table):
    runs = tmp_path / "runs"
    assert main(["baseline", "layerprune", "--criterion-batches", "5", "--dataset",
                 "synthetic", "--synthetic-size", "1500", "--image-size", "16",
                 "--checkpoint", str(checkpoint[0]), "--max-finetune-steps", "4",
                 "--val-samples", "300", "--threads", "1", "--latency-table", latency_table,
                 "--final-steps", "20", "--target", "0.8", "--no-export", "--runs-dir",
                 str(runs)]) == 0
    (run,) = runs.iterdir()
    report = json.loads((run / "report.json").read_text())
    assert report["method"] == "layerprune" and report["details"]["removed_blocks"]
    assert report["episode_cost_ratio"] <= 0.8
    assert report["pruned"]["test_accuracy"] > 0.3  # 10 classes: chance is 0.1


def test_uniform_baselines_reach_their_target_at_the_auto_ratio(make_env):
    env = make_env(final_report=False, target=0.8)
    ratio = uniform_ratio_for(env.unwrapped.bench, 0.8)
    assert 0.05 <= ratio < 1
    results = {}
    for name in ("l1", "random"):
        policy = make_policy(name, env.unwrapped.bench.max_filters, ratio=ratio, seed=0)
        results[name] = policy_episode(env, policy, 0, name)
        assert results[name].cost_ratio <= 0.8
    # same widths: the uniform ratio decides the cost, not which filters are kept
    assert results["l1"].cost_ratio == results["random"].cost_ratio
    # one step up misses it: the ratio is the largest that meets the target
    policy = make_policy("l1", env.unwrapped.bench.max_filters, ratio=ratio + 0.05)
    assert policy_episode(env, policy, 0, "l1").cost_ratio > 0.8


@pytest.mark.timing
def test_l1_aims_again_by_measurement_until_it_lands_under_the_target(
        tmp_path, checkpoint, latency_table, monkeypatch):
    """--aim-rounds: the baseline times its network, refits the table's correction on it
    and aims again. On a machine where a cut buys 0.7 of what the table says (an optimistic
    table, as measured on CPUs), the table's aim misses and the re-aimed one lands."""
    from prune_env.measure.costs import CostMeter
    from prune_env.measure.latency import Latency

    real = CostMeter.measure

    def optimistic_table(self, models, batch=None, repeats=10, blocks=7):
        if set(models) != {"base", "model"}:  # only the aim's timings are scripted
            return real(self, models, batch, repeats, blocks)
        base_ms = self.table_ms(self.shapes(models["base"]))
        table = self.table_ms(self.shapes(models["model"])) / base_ms
        ms = {"base": base_ms, "model": base_ms * (1 - 0.7 * (1 - table))}
        return {name: Latency(v, v, 0.0, blocks * repeats, 1, "cpu", 1, (v,) * blocks)
                for name, v in ms.items()}

    monkeypatch.setattr(CostMeter, "measure", optimistic_table)
    runs = tmp_path / "runs"
    args = ["baseline", "l1", "--dataset", "synthetic", "--synthetic-size", "1500",
            "--image-size", "16", "--checkpoint", str(checkpoint[0]), "--max-finetune-steps",
            "2", "--val-samples", "300", "--threads", "1", "--latency-table", latency_table,
            "--final-steps", "5", "--target", "0.7", "--finetune", "0.5", "--no-export",
            "--runs-dir", str(runs)]
    assert main([*args, "--aim-rounds", "3"]) == 0
    (run,) = runs.iterdir()
    report = json.loads((run / "report.json").read_text())
    aims = report["details"]["aim"]
    assert aims[0]["measured_ratio"] > 0.72  # the table's own aim missed on this machine
    assert aims[-1]["slope"] == pytest.approx(0.7, abs=1e-3)  # the run's networks, alone
    # the re-aimed network meets the target as measured; it lands in the 0.02 tolerance
    # where the 0.01 keep grid has a network there (at 16 x 16 one step can move the
    # ratio by more), and a round that repeats the one before ends the aim
    kept = report["details"]["aim_round"]
    assert kept >= 1 and 0.65 <= aims[kept]["measured_ratio"] <= 0.7
    assert report["episodes"] == len(aims) <= 4  # the first aim and 3 more
    # it ends on a round within the tolerance, on a round that repeats the one before, or
    # out of rounds; a round that missed is never repeated (CI: a refitted table picked the
    # network that had measured 0.7037 again, and the aim stopped there)
    last = aims[-1]["measured_ratio"]
    assert 0.68 <= last <= 0.7 or aims[-1]["table_ratio"] == aims[-2]["table_ratio"] \
        or len(aims) == 4
    assert all(a["table_ratio"] != b["table_ratio"] for a, b in zip(aims, aims[1:], strict=False)
               if a["measured_ratio"] > 0.7)
    # the details are the kept round's
    assert report["source"] == f"l1 policy, ratio {report['details']['ratio']:.2f}"
    # every round's fine-tuning is the search's compute
    # every round's fine-tuning is the search's compute: one step per group per round
    groups = len(filter_groups(build_model("resnet20", 3, 10, (16, 16))))
    assert report["finetune"]["steps"] == report["episodes"] * groups
    # a counted cost has nothing to aim at: refused before any run directory exists
    assert main([*args, "--aim-rounds", "1", "--cost", "flops"]) == 2
    assert len(list(runs.iterdir())) == 1


def test_a_network_that_measured_over_the_target_is_never_aimed_at_again(make_env,
                                                                         monkeypatch):
    """Any method's closed-loop aim (`OneEpisode.aim`): where the refitted table still
    predicts a network that measured over the target under it, the methods' aim drops
    under that prediction (the reward's target stays), and LayerPrune's next round removes
    more blocks: a cheaper network, not the same miss again."""
    from baselines.run import AIM_UNDER, LayerPrune
    from prune_env.config import BaselineConfig, EnvConfig, RunConfig
    from prune_env.measure.correction import TableCorrection

    env = make_env(target=0.7)
    bench = env.unwrapped.bench
    method = LayerPrune(BaselineConfig(finetune=0.25, aim_rounds=2), "layerprune",
                        RunConfig(env=EnvConfig(target=0.7)))
    method.prepare(env)
    first = policy_episode(env, method.policy, 0, method.source)
    predicted = bench.meter.costs(first.model)["latency_ms"] / bench.base_cost
    assert predicted <= 0.7
    # timed at 0.75, and the line refitted on all the run's networks left it at the table's
    monkeypatch.setattr(bench.meter, "observe", lambda base, model, **_: TableCorrection(
        1.0, ((predicted, 0.75),), observed=1))
    aims = []
    assert not method.aim(env.unwrapped, first, aims)
    assert aims[0].measured_ratio == 0.75 and bench.reward_cfg.target == 0.7
    assert bench.aim == pytest.approx(predicted - AIM_UNDER)
    removed = list(method.removed)
    method.prepare(env)
    assert len(method.removed) > len(removed) and method.removed[:len(removed)] == removed
    again = policy_episode(env, method.policy, 0, method.source)
    assert again.cost_ratio < predicted - AIM_UNDER


@pytest.mark.parametrize("measured, chosen", [([0.52, 0.42, 0.45], 2), ([0.55, 0.53, 0.56], 1),
                                              ([0.49, 0.51], 0)])
def test_an_aim_keeps_the_round_that_meets_the_target_with_the_least_cut(measured, chosen):
    from baselines.run import AimRound, chosen_round

    aims = [AimRound(0.5, m, 0.8, 0.9) for m in measured]
    assert chosen_round(aims, 0.5) == chosen


@pytest.mark.parametrize("error", ["OutOfReach", "ValueError"])
def test_only_an_aim_out_of_reach_ends_the_rounds_early(make_env, monkeypatch, error):
    """A lowered aim the method cannot reach (`OutOfReach`) ends the rounds with the round
    it has; any other error of a method's prepare is a fault, and surfaces."""
    from types import SimpleNamespace

    from baselines.run import AimRound, Uniform
    from prune_env.config import BaselineConfig, EnvConfig, RunConfig
    from prune_env.envs.target import OutOfReach

    env = make_env(target=0.7, cost="flops", max_finetune_steps=1)
    method = Uniform(BaselineConfig(finetune=0.0, aim_rounds=3), "l1",
                     RunConfig(env=EnvConfig(target=0.7)))
    method.prepare(env)

    def missed(env, candidate, aims):  # every round measures over the target
        aims.append(AimRound(0.69, 0.75, candidate.accuracy, 1.0))
        return False

    def lowered_out_of_reach(env):
        raise {"OutOfReach": OutOfReach, "ValueError": ValueError}[error]("out of reach")

    monkeypatch.setattr(method, "aim", missed)
    monkeypatch.setattr(method, "prepare", lowered_out_of_reach)
    run = SimpleNamespace(logger=SimpleNamespace(episode=lambda *args, **kwargs: None))
    if error == "ValueError":
        with pytest.raises(ValueError, match="out of reach"):
            method.search(env, run)
        return
    result = method.search(env, run)
    assert result.episodes == 1 and len(result.candidates) == 1
    assert result.details["aim_round"] == 0 and len(result.details["aim"]) == 1
