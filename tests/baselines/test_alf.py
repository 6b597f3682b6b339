"""ALF (autoencoder code filters, deployed as conv + 1x1 expansion) through the environment."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from baselines import alf
from prune_env.cli.main import main
from prune_env.measure.lookup import layer_shapes
from prune_env.runs.finalize import policy_episode


def test_alf_block_starts_equal_to_its_conv_and_deploys_exactly(checkpoint):
    from prune_env.training.checkpoint import load_base

    base, _ = load_base(checkpoint[0])
    model = alf.wrap(copy.deepcopy(base)).eval()
    x = torch.randn(3, *base.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(x) - base(x)).abs().max() < 1e-4  # SVD start: the block is the conv
        for block in alf.blocks(model).values():
            block.mask[block.rank // 2:] = 0  # half the code off: the output changes
        masked = model(x)
        assert (masked - base(x)).abs().max() > 1e-2
        for drop in (False, True):
            deployed = alf.deploy(model, drop_masked=drop).eval()
            assert (deployed(x) - masked).abs().max() < 1e-4
    kept = alf.code_filters(alf.deploy(model, drop_masked=True))
    assert kept["3.branch.0"] == [8, 16] and kept["0"] == [4, 16]  # stem: rank 9 (1x3x3)
    # the latency model knows a code conv feeds its expansion directly: no BN or ReLU
    # after it, so no element-wise overhead (it predicted ALF networks 0.16 too slow)
    shapes = layer_shapes(alf.deploy(model), base.input_shape)
    assert shapes["3.branch.0.code"].fused and not shapes["3.branch.0.expand"].fused
    assert not any(s.fused for s in layer_shapes(base, base.input_shape).values())


def test_alf_episode_prunes_the_code_to_the_target_and_equals_the_trained_blocks(make_env):
    env = make_env(final_report=False, target=0.5, cost="flops")
    unwrapped = env.unwrapped
    trainer = alf.ALFTrainer(unwrapped, alf.ALFConfig(steps=60))
    policy = alf.ALFPolicy(unwrapped, finetune=0.0)
    trained = {}

    def deploy(model):
        trained["model"] = copy.deepcopy(model)
        return policy.deploy(model)

    candidate = policy_episode(env, policy, 0, "alf",
                               options={"wrap": alf.wrap, "warmup": (60, trainer),
                                        "deploy": deploy})
    assert candidate.cost_ratio <= 0.5 and candidate.target_met
    assert candidate.accuracy > 0.5  # 10 classes: chance is 0.1
    # the code conv of every layer kept exactly the filters its mask kept
    masks = {n: int(b.mask.sum()) for n, b in alf.blocks(trained["model"]).items()}
    kept = alf.code_filters(candidate.model)
    assert {n: k for n, (k, _) in kept.items()} == masks
    # one threshold over all layers: the code is cut, though a layer may keep all of its own
    # (on some CPUs one does)
    ranks = {n: b.rank for n, b in alf.blocks(trained["model"]).items()}
    assert all(k <= ranks[n] for n, k in masks.items())
    assert sum(masks.values()) < sum(ranks.values())
    # no fine-tuning in the episode: the compact network is the trained ALF network
    x = torch.randn(4, *unwrapped.bench.input_shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        diff = (candidate.model.eval()(x) - trained["model"].eval()(x)).abs().max()
    assert diff < 1e-4
    # the autoencoder learned: reconstruction error fell while training with the task
    assert trainer.history[-1]["reconstruction"] < trainer.history[0]["reconstruction"]


def test_alf_baseline_reports_code_filters_per_layer(tmp_path, checkpoint, latency_table):
    runs = tmp_path / "runs"
    # fine-tuning between steps moves the masked (zero) code filters: still dropped
    assert main(["baseline", "alf", "--alf-steps", "40", "--dataset", "synthetic",
                 "--synthetic-size", "1500", "--image-size", "16", "--checkpoint",
                 str(checkpoint[0]), "--max-finetune-steps", "8", "--finetune", "0.5",
                 "--val-samples", "300",
                 "--threads", "1", "--latency-table", latency_table, "--final-steps", "20",
                 "--cost", "flops", "--target", "0.6", "--no-export",
                 "--runs-dir", str(runs)]) == 0
    (run,) = runs.iterdir()
    report = json.loads((run / "report.json").read_text())
    assert report["method"] == "alf" and report["target_met"] == "met"
    assert report["pruned"]["flops"] <= 0.6 * report["base"]["flops"]
    code = report["details"]["alf_code_filters"]
    assert len(code) == 19 and all(0 < k <= n for k, n in code.values())
    assert sum(k for k, _ in code.values()) < sum(n for _, n in code.values())
    # exactly the code ALF's mask kept: its share of all code filters (ranks: min(n, in*9))
    ranks = {"0": 9} | {name: n for name, (_, n) in code.items() if name != "0"}
    kept = sum(k for k, _ in code.values()) / sum(ranks.values())
    assert kept == pytest.approx(report["details"]["alf_training"][-1]["code_kept"], abs=1e-9)
    # the base convs keep their output width: ALF shrinks the code, not the layer
    assert report["kept_filters"]["3.branch.0"] == [16, 16]
    assert report["pruned"]["test_accuracy"] > 0.3
