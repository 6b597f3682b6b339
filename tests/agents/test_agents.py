"""The L2PF agent: its policy, its REINFORCE update, its tries (snapshots, workers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.l2pf import L2PF, L2PFConfig, Try
from agents.l2pf_policy import REMOVABLE, L2PFPolicy, to_env_action


def observation(max_filters: int, size: int, removable: bool) -> np.ndarray:
    policy = L2PFPolicy(max_filters)
    obs = np.zeros(policy.n_desc + (policy.n_feat + 1) * max_filters, np.float32)
    obs[REMOVABLE] = float(removable)
    start = policy.n_desc
    obs[start: start + policy.n_feat * size] = np.linspace(0, 1, policy.n_feat * size)
    obs[start + policy.n_feat * max_filters: start + policy.n_feat * max_filters + size] = 1
    return obs


def test_policy_starts_from_the_feature_prior_and_drop_removes_the_group():
    torch.manual_seed(0)
    policy = L2PFPolicy(8)
    obs = observation(8, 5, removable=True)
    action, _ = policy.predict(obs, deterministic=True)
    keep = action["keep"][:5].astype(bool)
    # the features rise with the filter index: the prior keeps the top filters
    assert 2 <= keep.sum() < 5 and keep[-1] and not keep[0]
    assert np.all(np.diff(keep.astype(int)) >= 0)
    assert 0 < action["finetune"][0] < 1
    dist = policy.distribution(torch.as_tensor(obs)[None])
    dropped = {"ratio": torch.full((1,), 0.5), "order": torch.arange(8)[None],
               "keep": torch.ones(1, 8), "drop": torch.ones(1), "finetune": torch.full((1,), 0.5)}
    assert to_env_action(dropped, 8)["keep"].sum() == 0
    assert torch.isfinite(dist.log_prob(dropped)).all()
    # not removable: the drop coin has no probability mass to spend
    fixed = policy.distribution(torch.as_tensor(observation(8, 5, removable=False))[None])
    assert fixed.sample()[0]["drop"].item() == 0


def test_a_fixed_fine_tune_is_every_action_s_and_leaves_the_gradient():
    torch.manual_seed(0)
    policy = L2PFPolicy(8, fixed_finetune=0.3)
    obs = torch.as_tensor(observation(8, 5, removable=True))[None]
    dist = policy.distribution(obs)
    action, log_prob = dist.sample()
    assert action["finetune"].item() == pytest.approx(0.3)
    assert dist.mode()["finetune"].item() == pytest.approx(0.3)
    learned = L2PFPolicy(8)
    learned.load_state_dict(policy.state_dict())
    free = learned.distribution(obs)
    # the duration's density and entropy are not counted: nothing pushes the unused head
    assert torch.allclose(log_prob, free.log_prob(action) - free.finetune.log_prob(
        action["finetune"]))
    assert torch.allclose(dist.entropy(), free.entropy() - free.finetune.entropy())


def test_reinforce_learns_which_filters_pay():
    """A bandit with the agent's own update: keeping filters 0-2 pays, keeping 3-5 costs."""
    torch.manual_seed(0)
    agent = L2PF.__new__(L2PF)  # the update alone, without an environment
    agent.config = L2PFConfig(lr=1e-2, ent_coef=0.0)
    agent.policy = L2PFPolicy(8, feature_prior=0.0)  # a blank start: the rule alone learns
    agent.optimizer = torch.optim.Adam(agent.policy.parameters(), lr=agent.config.lr)
    obs = observation(8, 6, removable=False)
    for _ in range(150):
        with torch.no_grad():
            dist = agent.policy.distribution(torch.as_tensor(obs)[None])
        tries = []
        for _ in range(4):
            action = dist.sample()[0]
            score = float(action["keep"][0, :3].sum() - action["keep"][0, 3:6].sum())
            tries.append(Try(action, score, score, obs, False, {}, {}))
        agent.update(obs, tries)
    dist = agent.policy.distribution(torch.as_tensor(obs)[None])
    first = dist.scores[0, :6].softmax(-1)
    assert first[:3].sum() > 0.9  # the first filter drawn is a paying one
    assert dist.mode()["keep"][0, :3].sum() == 3
    assert 0.3 < dist.ratio.mean.item() < 0.7  # keep about 3 of 6: the rest costs


def test_snapshot_restore_replays_a_step_exactly(make_env):
    env = make_env(final_report=False)
    obs, _ = env.reset(seed=3)
    start = env.unwrapped.snapshot()
    keep = np.zeros(env.unwrapped.bench.max_filters, np.int8)
    keep[: env.unwrapped.state.group.size // 2] = 1
    action = {"keep": keep, "finetune": np.array([0.5], np.float32)}
    first = env.step(action)
    obs_back = env.unwrapped.restore(start)
    np.testing.assert_array_equal(obs_back, obs)
    second = env.step(action)
    assert first[1] == second[1]  # same reward: same surgery, batches and validation
    assert first[4]["accuracy"] == second[4]["accuracy"]
    np.testing.assert_array_equal(first[0], second[0])


@pytest.mark.xdist_group("ray")
def test_tries_in_workers_and_ray_actors_equal_tries_in_process(make_env):
    from prune_env.config import RayConfig

    results = []
    for n_envs, on in ((1, "processes"), (2, "processes"), (2, "ray")):
        torch.manual_seed(0)
        env = make_env(final_report=False)
        agent = L2PF(env, L2PFConfig(tries=2), seed=0, n_envs=n_envs,
                     env_fn=lambda: make_env(final_report=False), tries_on=on,
                     ray_config=RayConfig(ray_cpus=2))
        obs, _ = env.reset(seed=0)
        try:
            results.append([(t.reward, t.info["accuracy"], t.info["kept"])
                            for t in agent.try_group(obs)])
        finally:
            agent.close()
    for pooled in results[1:]:
        for (r1, a1, k1), (r2, a2, k2) in zip(results[0], pooled, strict=True):
            assert k1 == k2
            assert abs(a1 - a2) < 0.01 and abs(r1 - r2) < 0.05  # threads differ: float order


def test_plackett_luce_order_probabilities_sum_to_one_and_match_sampling():
    """k = 2 of 4 filters: the probabilities of all ordered pairs sum to 1, and the Gumbel
    draw picks each first filter as often as its softmax says."""
    from itertools import permutations

    torch.manual_seed(0)
    policy = L2PFPolicy(6)
    obs = torch.as_tensor(observation(6, 4, removable=False))[None]
    with torch.no_grad():
        dist = policy.distribution(obs)
    ratio = torch.full((1,), 0.5)  # round(0.5 * 4) = 2 filters
    total = 0.0
    for pair in permutations(range(4), 2):
        rest = [i for i in range(6) if i not in pair]
        order = torch.tensor([[*pair, *rest]])
        total += dist.order_log_prob(order, ratio).exp().item()
    assert abs(total - 1) < 1e-5
    firsts = torch.stack([dist.sample()[0]["order"][0, 0] for _ in range(4000)])
    freq = torch.bincount(firsts, minlength=6).float() / len(firsts)
    np.testing.assert_allclose(freq[:4], dist.scores[0, :4].softmax(-1), atol=0.03)
    assert freq[4:].sum() == 0  # padding slots are never drawn


def test_a_checkpoint_holds_the_table_correction_the_episodes_fitted(make_env):
    """--correct-episodes: the episode's network is timed before the checkpoint is taken,
    and a resumed agent predicts with the same correction."""
    env = make_env(correct_episodes=True, final_report=False)
    agent = L2PF(env, L2PFConfig(tries=1), seed=0)
    next(agent.learn(1))
    meter = env.unwrapped.bench.meter
    assert meter.correction.observed == 1
    resumed_env = make_env(correct_episodes=True, final_report=False)
    resumed = L2PF(resumed_env, L2PFConfig(tries=1), seed=0)
    resumed.load_state_dict(agent.state_dict())
    assert resumed_env.unwrapped.bench.meter.correction_state() == meter.correction_state()


def test_the_pace_weight_rises_while_episodes_miss_the_target_and_is_checkpointed(make_env):
    env = make_env(cost="flops", target=0.5, final_report=False)
    fixed = L2PF(env, L2PFConfig(tries=1), seed=0)
    fixed.adapt_pace(0.6)
    assert fixed.pace == 10.0  # pace_adapt 0: the weight stays as configured
    agent = L2PF(env, L2PFConfig(tries=1, pace_adapt=2.0), seed=0)
    agent.adapt_pace(0.6)  # 0.1 above a 0.5 target: x exp(2 x 0.2)
    assert agent.pace == pytest.approx(10.0 * np.exp(0.4))
    agent.adapt_pace(0.45)  # met with a margin: it shrinks
    assert agent.pace == pytest.approx(10.0 * np.exp(0.4 - 0.2))
    log = next(agent.learn(1))
    assert log.pace_weight == pytest.approx(10.0 * np.exp(0.2))
    resumed = L2PF(env, L2PFConfig(tries=1, pace_adapt=2.0), seed=0)
    resumed.load_state_dict(agent.state_dict())
    assert resumed.pace == agent.pace != log.pace_weight  # adapted after the episode too


def test_the_finetune_price_holds_the_budget_and_is_checkpointed(make_env):
    env = make_env(cost="flops", target=0.5, final_report=False)
    agent = L2PF(env, L2PFConfig(tries=2, finetune_budget=0.2, budget_adapt=0.5), seed=0)

    def tries(*fractions):
        return [Try({"finetune": torch.tensor([f])}, 0.0, 0.0, np.zeros(1), False, {}, {})
                for f in fractions]

    agent.adapt_price(tries(0.5, 0.3))  # spent 0.4, twice the budget: + 0.5 x 1
    assert agent.price == pytest.approx(0.5)
    agent.adapt_price(tries(0.1, 0.1))  # spent half the budget: - 0.5 x 0.5
    assert agent.price == pytest.approx(0.25)
    agent.adapt_price(tries(0.0, 0.0))  # never below 0
    assert agent.price == 0.0
    agent.price = 1.0  # each try is charged its fine-tune fraction at that price
    obs, _ = env.reset(seed=0)
    for t in agent.try_group(obs):
        assert t.score == pytest.approx(t.reward - agent.pace * t.behind
                                        - float(t.action["finetune"][0]))
    log = next(agent.learn(1))
    assert log.finetune_price == agent.price
    resumed = L2PF(env, L2PFConfig(tries=2, finetune_budget=0.2, budget_adapt=0.5), seed=0)
    resumed.load_state_dict(agent.state_dict())
    assert resumed.price == agent.price
    assert next(L2PF(env, L2PFConfig(tries=1), seed=0).learn(1)).finetune_price is None
    with pytest.raises(ValueError, match="give one or the other"):
        L2PFConfig(fixed_finetune=0.3, finetune_budget=0.3)


def test_ddpg_noise_shrinks_as_amcs_each_episode_and_resumes_where_it_was():
    from agents.sb3 import DecayingNoise, default_kwargs

    noise = DecayingNoise(2)
    np.random.seed(0)
    first = np.std([noise() for _ in range(2000)])
    for _ in range(20):
        noise.reset()
    assert noise.sigma == pytest.approx(0.95**20) and first == pytest.approx(1.0, abs=0.05)
    assert np.std([noise() for _ in range(2000)]) == pytest.approx(0.95**20, rel=0.1)
    resumed = default_kwargs("ddpg", 12, n_envs=2, done_before=20)["action_noise"]
    assert resumed.sigma == pytest.approx(0.95**10)  # 20 episodes over 2 environments
    waiting = DecayingNoise(2, warmup=5)  # AMC's noise starts shrinking after the warm-up
    assert not waiting().any()  # and the warm-up's random actions are left uniform
    for _ in range(7):
        waiting.reset()
    assert waiting.sigma == pytest.approx(0.95**2) and waiting().any()


def test_ddpg_noise_waits_for_the_warmup_the_user_sets():
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agents.sb3 import make_agent

    vec = DummyVecEnv([lambda: gym.make("Pendulum-v1")] * 2)
    agent = make_agent("ddpg", vec, 0, {"learning_starts": 240}, episode_steps=12)
    # 240 steps over 2 environments of 12-step episodes: 10 random episodes each
    assert agent.action_noise.warmup == 10


def test_the_return_buffer_gives_each_step_its_episode_s_return_once_the_episode_ends():
    from gymnasium import spaces

    from agents.sb3 import ReturnReplayBuffer

    buffer = ReturnReplayBuffer(20, spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (2,)),
                                n_envs=2, gamma=0.5)
    obs, act, no = np.zeros((2, 3)), np.zeros((2, 2)), [{}, {}]
    # environment 0 ends after 3 steps; environment 1 is still running
    for reward, done in [([-0.1, -0.2], [0, 0]), ([-0.1, -0.2], [0, 0]), ([1.0, 0.0], [1, 0])]:
        buffer.add(obs, obs, act, np.array(reward), np.array(done), no)
    assert buffer.rewards[:3, 0] == pytest.approx([-0.1 + 0.5 * (-0.1 + 0.5), -0.1 + 0.5, 1.0])
    assert buffer.dones[:3, 0].tolist() == [1, 1, 1]
    # the running episode keeps its one-step targets until it ends
    assert buffer.rewards[:3, 1] == pytest.approx([-0.2, -0.2, 0.0])
    assert buffer.dones[:3, 1].tolist() == [0, 0, 0]
    buffer.add(obs, obs, act, np.array([-0.1, 2.0]), np.array([0, 1]), no)
    assert buffer.rewards[:4, 1] == pytest.approx([-0.2 + 0.5 * 0.3, -0.2 + 0.5 * 1.0,
                                                   0.0 + 0.5 * 2.0, 2.0])
    # environment 0's next episode is open again: its first step is one-step
    assert buffer.rewards[3, 0] == pytest.approx(-0.1) and buffer.dones[3, 0] == 0
    plain = ReturnReplayBuffer(20, spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (2,)),
                               returns=False)  # the ablation keeps sb3's one-step targets
    for reward, done in [(-0.1, 0), (1.0, 1)]:
        plain.add(obs[:1], obs[:1], act[:1], np.array([reward]), np.array([done]), no[:1])
    assert plain.rewards[:2, 0] == pytest.approx([-0.1, 1.0]) and plain.dones[0, 0] == 0


def test_amc_has_its_authors_settings():
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agents.sb3 import AMC, ReturnReplayBuffer, make_agent

    vec = DummyVecEnv([lambda: gym.make("Pendulum-v1")] * 2)
    agent = make_agent("amc", vec, 0, {}, episode_steps=12, episodes=30)
    assert isinstance(agent, AMC) and isinstance(agent.replay_buffer, ReturnReplayBuffer)
    assert agent.learning_starts == 10 * 12 and agent.action_noise.warmup == 5
    assert agent.replay_buffer.gamma == agent.gamma == 1.0
    assert [m.out_features for m in agent.actor.mu if hasattr(m, "out_features")] == [300, 300, 1]
    agent.learn(10 * 12 + 2 * 200)  # Pendulum's episodes are 200 steps
    actor_lr = agent.actor.optimizer.param_groups[0]["lr"]
    assert actor_lr == pytest.approx(1e-4) and agent.critic.optimizer.param_groups[0]["lr"] == 1e-3
