"""Joint end-to-end filter masks: the cost model, the masks in the network, and the baseline
reaching its target on classification and on segmentation."""

from __future__ import annotations

import json

import pytest
import torch

from baselines.joint import JointConfig, JointMasks
from prune_env.cli.main import main
from prune_env.nn.groups import merge_keep
from prune_env.nn.surgery import compact


def untrained(model: str, tmp_path) -> str:
    """An untrained base of ``model`` for the synthetic data (the cost model needs no
    training)."""
    from prune_env.nn.models import build_model
    from prune_env.training.checkpoint import save_base

    path = tmp_path / f"{model}-synthetic.pt"
    save_base(path, build_model(model, 1, 10, (16, 16)), model,
              {"model": model, "dataset": "synthetic", "num_classes": 10})
    return str(path)


def conv_flops(meter, model) -> float:
    return sum(s.flops() for s in meter.shapes(model).values() if s.kind == "conv")


@pytest.mark.parametrize(("model", "seed"), [("resnet20", 0), ("resnet20", 1),
                                             ("mobilenetv2", 0)])
def test_the_expected_cost_of_hard_masks_is_the_compact_networks_flops(make_env, tmp_path,
                                                                       model, seed):
    """Under binary masks the bilinear cost model gives exactly the conv FLOPs of the network
    surgery makes from them (MobileNetV2: depthwise convs, which scale with their filters
    only)."""
    options = {} if model == "resnet20" else {"model": model,
                                              "checkpoint": untrained(model, tmp_path)}
    env = make_env(cost="flops", **options).unwrapped
    joint = JointMasks(env, JointConfig())
    assert float(joint.cost_ratio(joint.masks()).detach()) == pytest.approx(1.0)
    g = torch.Generator().manual_seed(seed)
    keep: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for group, logits in zip(joint.groups, joint.logits, strict=True):
            mask = torch.rand(group.size, generator=g) < 0.5
            mask[0] = True
            logits.copy_(torch.where(mask, 30.0, -30.0))
            merge_keep(keep, group.keep_for(mask))
    base = env.bench.base_model
    expected = conv_flops(env.bench.meter, compact(base, keep)) / conv_flops(env.bench.meter,
                                                                              base)
    assert float(joint.cost_ratio(joint.masks()).detach()) == pytest.approx(expected, rel=1e-5)


def test_the_masks_zero_the_filters_in_the_network_and_leave_it(make_env):
    env = make_env(cost="flops").unwrapped
    joint = JointMasks(env, JointConfig())
    model = env.bench.base_model
    x = torch.randn(2, *env.bench.input_shape)
    with torch.no_grad():
        joint.logits[0][:] = -1.0  # the first group (stem and stage 1) masked away
        before = model(x)
        masked = joint.attach(model)(x)
        joint.detach(model)
        after = model(x)
    assert torch.equal(before, after) and not torch.allclose(before, masked)


def run_joint(args: list[str], tmp_path) -> dict:
    assert main(["baseline", "joint", "--no-export", "--runs-dir", str(tmp_path / "runs"),
                 *args]) == 0
    (report,) = (tmp_path / "runs").glob("*/report.json")
    return json.loads(report.read_text())


def test_joint_masks_reach_their_target_on_classification(small_args, tmp_path):
    args = [a for a in small_args if a not in ("--target", "0.8")]
    r = run_joint([*args, "--target", "0.6", "--cost", "flops", "--joint-steps", "150"],
                  tmp_path)
    assert r["method"] == "joint" and r["target_met"] == "met"
    assert r["episode_cost_ratio"] <= 0.6
    history = r["details"]["joint_training"]
    assert history["cost_ratio"][0] == pytest.approx(1.0)  # every filter kept at the start
    assert history["cost_ratio"][-1] <= 0.6 + 0.05  # the masks were pulled to the target
    assert sum(r["details"]["joint_masked"].values()) > 0
    assert r["pruned"]["test_accuracy"] > 0.3  # 10 classes: chance is 0.1
