"""scripts/critic_fit.py on a synthetic replay buffer whose return is the sum of each
step's first action, paid at the episode's end: its episodes come out in the order they ran, and a critic fitted
on return targets predicts held-out returns where the one-step critic has only begun to."""

from __future__ import annotations

import numpy as np
import pytest

from prune_env.envs.observation import ObservationLayout

STEPS, WIDTH = 12, ObservationLayout.n_desc + 8  # ResNet-20: 12 groups


def write_replay(path, episodes_per_env: int = 30, envs: int = 2) -> None:
    """Each step's first action pays at the episode's end; the observation carries the
    step and the sum paid so far, as the environment's carries the cost reached."""
    rng = np.random.default_rng(0)
    size = episodes_per_env * STEPS
    obs = rng.uniform(0, 1, (size + 10, envs, WIDTH)).astype(np.float32)
    nxt = rng.uniform(0, 1, (size + 10, envs, WIDTH)).astype(np.float32)
    actions = rng.uniform(-1, 1, (size + 10, envs, 2)).astype(np.float32)
    rewards = np.zeros((size + 10, envs), np.float32)
    dones = np.zeros((size + 10, envs), np.float32)
    for start in range(0, size, STEPS):
        paid = np.zeros(envs, np.float32)
        for t in range(start, start + STEPS):
            obs[t, :, :2] = np.stack([np.full(envs, (t - start) / STEPS), paid / STEPS], 1)
            paid = paid + actions[t, :, 0]
            nxt[t, :, :2] = np.stack([np.full(envs, (t - start + 1) / STEPS), paid / STEPS], 1)
        rewards[start + STEPS - 1], dones[start + STEPS - 1] = paid, 1
    np.savez(path, observations=obs, next_observations=nxt, actions=actions,
             rewards=rewards, dones=dones, timeouts=np.zeros_like(dones), pos=size, full=False)


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("critic_fit")


def test_episodes_come_in_the_order_they_ran_with_their_returns(script, tmp_path):
    write_replay(tmp_path / "replay.npz")
    episodes = script.episodes_of(tmp_path / "replay.npz", 6)
    assert [len(e["rewards"]) for e in episodes] == [STEPS] * 6
    with np.load(tmp_path / "replay.npz") as raw:  # env 0's first, env 1's first, env 0's second
        assert episodes[1]["actions"][0] == pytest.approx(raw["actions"][0, 1])
        assert episodes[2]["actions"][0] == pytest.approx(raw["actions"][STEPS, 0])
    paid = episodes[0]["actions"][:, 0].sum()
    assert script.returns(episodes[0]) == pytest.approx([paid] * STEPS)
    with pytest.raises(SystemExit, match="fewer than"):
        script.episodes_of(tmp_path / "replay.npz", 61)


def test_return_targets_teach_the_critic_what_one_step_targets_have_not_yet(script, tmp_path):
    write_replay(tmp_path / "replay.npz")
    episodes = script.episodes_of(tmp_path / "replay.npz", 60)
    corr = script.action_correlations(episodes)  # every step's first action pays, the second not
    assert corr.shape == (STEPS, 2) and corr[:, 0].mean() > abs(corr[:, 1]).mean() + 0.1
    fits = {}
    for mc in (False, True):
        train, test = (script.stack(part, WIDTH, mc) for part in (episodes[:45], episodes[45:]))
        fits[mc] = script.fit(train, test, 300, seed=0)
    assert fits[True][1] > 0.6 and fits[True][1] > fits[False][1] + 0.1  # 0.72 and 0.51 here
