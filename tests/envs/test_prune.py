"""The environment: checkers, episodes, rewards, actions, reports."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env, data_equivalence

from baselines.simple import make_policy
from prune_env.envs.wrappers import FlatActionWrapper, RatioActionWrapper
from prune_env.nn.blocks import Shortcut


def run(env, policy, seed=0):
    obs, _ = env.reset(seed=seed)
    rewards, infos, done = [], [], False
    while not done:
        action, _ = policy.predict(obs, deterministic=True)
        obs, reward, done, truncated, info = env.step(action)
        assert not truncated
        assert env.observation_space.contains(obs)
        rewards.append(reward)
        infos.append(info)
    return rewards, infos


def test_base_model_learned_the_synthetic_data(checkpoint):
    _, meta = checkpoint
    assert meta["val_accuracy"] > 0.85  # 10 classes: chance is 0.1
    assert meta["test_accuracy"] > 0.85


def test_gymnasium_checker_passes_with_a_real_fine_tuning_budget(make_env):
    """Steps that fine-tune for several SGD steps: a step's info holds nothing that differs
    between two identically seeded runs (wall time comes only at the episode's end)."""
    env = make_env(max_finetune_steps=8)
    check_env(env.unwrapped, skip_render_check=True)
    infos = []
    for _ in range(2):
        env.reset(seed=3)
        action = {"keep": np.ones(env.unwrapped.bench.max_filters, np.int8),
                  "finetune": np.array([1.0], np.float32)}
        infos.append(env.step(action)[4])
    assert infos[0]["finetune_steps"] == 8
    assert data_equivalence(infos[0], infos[1])


def test_stable_baselines3_checker_passes_on_flat_wrapper(make_env):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = FlatActionWrapper(make_env(max_finetune_steps=1))
    sb3_check_env(env, warn=False)


def test_l1_episode_shrinks_and_reports(make_env):
    env = make_env()
    base = env.unwrapped.bench
    policy = make_policy("l1", base.max_filters, ratio=0.5, finetune=0.5)
    rewards, infos = run(env, policy)
    assert len(infos) == len(base.base_groups) == 12  # ResNet-20: 3 stage groups + 9 blocks
    assert [i["kept"] for i in infos[:2]] == [8, 8]  # filters left after surgery
    final = infos[-1]["final"]  # a Report record (the environment writes no files)
    assert final.pruned.params < 0.4 * final.base.params
    assert final.pruned.flops < 0.4 * final.base.flops
    assert final.kept_filters["0"] == [16, 8]
    assert final.finetune.steps == 12 * 2
    assert final.pruned.latency_ms > 0 and final.pruned.latency_predicted_ms > 0
    assert final.pruned.latency_batch == 4
    assert final.pruned.latency_batch_ms > final.pruned.latency_ms
    assert final.pruned.energy_mj is None  # no sensor here: never an invented number
    measured = final.pruned.latency_ms / final.base.latency_ms
    assert final.cost_ratio == pytest.approx(measured)
    assert final.cost_ratio_source == "measured"
    assert 0.1 < final.pruned.test_accuracy <= 1.0  # 10 classes: chance is 0.1
    assert final.accuracy_drop == pytest.approx(final.base.test_accuracy
                                                - final.pruned.test_accuracy)
    assert final.episode_reward == pytest.approx(sum(rewards))


def test_keep_all_costs_nothing_but_finetuning(make_env):
    env = make_env(cost="flops", finetune_weight=0.1)
    policy = make_policy("keep-all", env.unwrapped.bench.max_filters, finetune=0.5)
    rewards, infos = run(env, policy)
    assert all(i["cost_ratio"] == 1.0 for i in infos)
    # phi = log(1) = 0, so each step pays only for fine-tuning: -0.1 * 0.5
    assert rewards[:-1] == pytest.approx([-0.05] * (len(rewards) - 1))
    # the target (0.5) is missed by (1 - 0.5) / 0.5 = 1 target_bonus
    assert rewards[-1] == pytest.approx(-0.05 - 1.0)


def test_psi_phi_reward_follows_its_formula(make_env):
    env = make_env(cost="params", allowed_drop=0.05, finetune_weight=0.0)
    base = env.unwrapped.bench
    obs, _ = env.reset(seed=0)
    action, _ = make_policy("l1", base.max_filters, ratio=0.5, finetune=0.0).predict(obs)
    _, reward, _, _, info = env.step(action)
    psi = (0.05 - (base.base_accuracy - info["accuracy"])) / 0.05
    phi = np.log(base.base_cost / info["params"])
    assert reward == pytest.approx(psi * phi)
    assert phi > 0


def test_emptying_a_stage_group_keeps_its_strongest_filter(make_env):
    env = make_env()
    obs, _ = env.reset(seed=0)
    n = env.unwrapped.bench.max_filters
    _, _, _, _, info = env.step({"keep": np.zeros(n, np.int8),
                                 "finetune": np.zeros(1, np.float32)})
    assert info["group"] == "0" and info["forced_keep"] and info["kept"] == 1


def test_emptying_a_block_removes_its_branch(make_env):
    env = make_env()
    obs, _ = env.reset(seed=0)
    n = env.unwrapped.bench.max_filters
    keep_all = {"keep": np.ones(n, np.int8), "finetune": np.zeros(1, np.float32)}
    env.step(keep_all)
    _, _, _, _, info = env.step({"keep": np.zeros(n, np.int8),
                                 "finetune": np.zeros(1, np.float32)})
    assert info["group"] == "3.branch.0" and info["removed_branches"] == ["3"]
    assert not info["forced_keep"]
    assert isinstance(env.unwrapped.model.get_submodule("3"), Shortcut)


@pytest.mark.parametrize("action, field", [
    ({"keep": np.ones(3, np.int8), "finetune": np.zeros(1, np.float32)}, "keep"),
    ({"keep": "ones", "finetune": np.zeros(1, np.float32)}, "keep"),
    ({"keep": None, "finetune": np.array([np.nan], np.float32)}, "keep"),
    ({"finetune": np.zeros(1)}, "keep"),
])
def test_bad_keep_is_a_value_error_naming_the_field(make_env, action, field):
    env = make_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=field):
        env.step(action)


@pytest.mark.parametrize("finetune", [np.array([np.nan]), np.array([1.5]), np.array([-0.1]),
                                      np.zeros(2)])
def test_bad_finetune_is_a_value_error_naming_the_field(make_env, finetune):
    env = make_env()
    env.reset(seed=0)
    n = env.unwrapped.bench.max_filters
    with pytest.raises(ValueError, match="finetune"):
        env.step({"keep": np.ones(n, np.int8), "finetune": finetune})


def test_flat_wrapper_maps_scores_to_keep(make_env):
    env = FlatActionWrapper(make_env())
    n = env.unwrapped.bench.max_filters
    action = np.zeros(n + 1, np.float32)
    action[:5] = 0.9
    action[-1] = 2.0
    mapped = env.action(action)
    assert mapped["keep"][:6].tolist() == [1, 1, 1, 1, 1, 0]
    assert mapped["finetune"].tolist() == [1.0]
    with pytest.raises(ValueError, match="shape"):
        env.action(np.zeros(3))


def test_stable_baselines3_checker_passes_on_ratio_wrapper(make_env):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    sb3_check_env(RatioActionWrapper(make_env(max_finetune_steps=1)), warn=False)


def test_ratio_wrapper_keeps_the_strongest_filters_at_the_ratio(make_env):
    """a = 0 is the middle of sb3's range: half the group, the filters L1-uniform keeps (AMC's
    budget clamp off: tests/envs/test_clamp.py)."""
    env = RatioActionWrapper(make_env(), clamp=False)
    obs, _ = env.reset(seed=0)
    n = env.unwrapped.bench.max_filters
    l1 = make_policy("l1", n, ratio=0.5).predict(obs)[0]["keep"]
    middle = env.action(np.array([0.0, 0.0], np.float32))
    assert middle["keep"].tolist() == l1.tolist() and middle["finetune"].tolist() == [0.5]
    assert RatioActionWrapper.finetune_of(np.array([0.0, 0.6])) == pytest.approx(0.8)
    size = env.layout.group_size(obs)
    assert size < n and middle["keep"].sum() == size // 2
    everything = env.action(np.array([3.0, -3.0], np.float32))  # sb3 overshoots: clipped
    assert everything["keep"].sum() == size and everything["finetune"].tolist() == [0.0]
    assert env.action(np.array([-1.0, 1.0], np.float32))["keep"].sum() == 0
    with pytest.raises(ValueError, match="shape"):
        env.action(np.zeros(3, np.float32))
    *_, info = env.step(np.array([0.5, 0.0], np.float32))  # ratio 0.75
    assert info["kept"] == round(0.75 * size)


def test_same_seed_same_episode(make_env):
    env = make_env()
    policy = make_policy("random", env.unwrapped.bench.max_filters, ratio=0.6, seed=3)
    first = [i["accuracy"] for i in run(env, policy, seed=1)[1]]
    policy = make_policy("random", env.unwrapped.bench.max_filters, ratio=0.6, seed=3)
    second = [i["accuracy"] for i in run(env, policy, seed=1)[1]]
    assert first == second


def test_unknown_cost_is_a_clear_error(make_env):
    with pytest.raises(ValueError, match="unknown cost"):
        make_env(cost="watts")


def test_energy_cost_without_a_sensor_is_a_clear_error(make_env):
    from prune_env.measure import EnergyUnavailableError

    with pytest.raises(EnergyUnavailableError):
        make_env(cost="energy")


def test_registered_with_gymnasium():
    import prune_env  # noqa: F401

    assert "prune_env/Prune-v0" in gym.registry


def test_a_torchvision_network_is_a_base_whose_blocks_can_be_removed(
        synthetic, latency_table, tmp_path):
    """torchvision's ResNet-18 as the base: its BasicBlocks' inner groups are removable, and
    emptying one removes the block's branch (and LayerPrune can choose among its blocks)."""
    import torch

    from baselines.layerprune import removable_blocks
    from prune_env.training.pretrain import PretrainConfig, pretrain

    path = tmp_path / "resnet18.pt"
    pretrain("resnet18", synthetic, PretrainConfig(epochs=0.1, batch_size=64), path,
             progress=False)
    env = gym.make("prune_env/Prune-v0", model="resnet18", dataset="synthetic", data=synthetic,
                   checkpoint=str(path), max_finetune_steps=1, val_samples=100,
                   latency_table=latency_table, threads=1, latency_batch=4, cost="flops")
    bench = env.unwrapped.bench
    assert removable_blocks(env.unwrapped) == {
        "layer1.0": "layer1.0.conv1", "layer1.1": "layer1.1.conv1",
        "layer2.1": "layer2.1.conv1", "layer3.1": "layer3.1.conv1",
        "layer4.1": "layer4.1.conv1"}  # the others project their shortcut
    env.reset(seed=0)
    n = bench.max_filters
    leaders = [g.leader for g in bench.base_groups]
    for leader in leaders[:leaders.index("layer1.0.conv1") + 1]:
        keep = np.full(n, leader != "layer1.0.conv1", np.int8)
        _, _, _, _, info = env.step({"keep": keep, "finetune": np.zeros(1, np.float32)})
    assert info["removed_branches"] == ["layer1.0"] and not info["forced_keep"]
    model = env.unwrapped.model
    assert isinstance(model.get_submodule("layer1.0"), Shortcut)
    assert info["cost_ratio"] < 1.0
    with torch.no_grad():
        assert model(torch.randn(2, *model.input_shape)).shape == (2, 10)


def test_each_ended_episode_corrects_the_table_and_snapshots_carry_it(make_env):
    """With correct_episodes, a reset times the ended episode's network against the base and
    refits the line on it; an episode's snapshot carries the correction to a try run in
    another environment (another process); FLOPs are not looked up: refused."""
    env = make_env(correct_episodes=True, final_report=False)
    meter = env.unwrapped.bench.meter
    policy = make_policy("l1", env.unwrapped.bench.max_filters, ratio=0.5, finetune=0.0)
    run(env, policy)
    assert meter.correction.observed == 0  # nothing timed until the next reset
    env.reset(seed=1)
    assert meter.correction.observed == 1 and len(meter.correction.points) == 1
    (predicted, measured), = meter.correction.points
    assert 0 < predicted < 1 and 0 < measured < 1.5
    snapshot = env.unwrapped.snapshot()
    other = make_env(final_report=False)
    other.reset(seed=1)
    assert other.unwrapped.bench.meter.correction.slope == 1.0
    other.unwrapped.restore(snapshot)
    assert other.unwrapped.bench.meter.correction == meter.correction
    with pytest.raises(ValueError, match="not looked up"):
        make_env(correct_episodes=True, cost="flops")
