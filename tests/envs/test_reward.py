"""Reward formulas."""

from __future__ import annotations

import math

import pytest

from prune_env.envs.reward import RewardConfig, final_reward, step_reward


def test_psi_phi():
    cfg = RewardConfig(allowed_drop=0.02, finetune_weight=0.1)
    # drop of 1 point, half the allowed: psi = 0.5; cost halved: phi = log 2
    r = step_reward(cfg, 0.90, 0.89, 2.0, 1.0, 2.0, finetune_fraction=0.5)
    assert r == pytest.approx(0.5 * math.log(2) - 0.05)
    # beyond the allowed drop, a cost cut is punished
    assert step_reward(cfg, 0.90, 0.85, 2.0, 1.0, 2.0, 0.0) < 0


def test_target_term():
    cfg = RewardConfig(target=0.5, target_bonus=2.0)
    assert final_reward(cfg, 0.9, 0.4, 1.0, 400.0) == 2.0
    assert final_reward(cfg, 0.9, 0.75, 1.0, 750.0) == pytest.approx(-1.0)


def test_amc_prefers_lower_error_and_lower_cost():
    cfg = RewardConfig(name="amc", target=1.0, target_bonus=0.0)
    assert step_reward(cfg, 0.9, 0.5, 2, 1, 2, 1.0) == 0.0
    assert final_reward(cfg, 0.9, 1, 1, 1e6) > final_reward(cfg, 0.8, 1, 1, 1e6)
    assert final_reward(cfg, 0.9, 1, 1, 1e5) > final_reward(cfg, 0.9, 1, 1, 1e6)


def test_amc_constrained_scores_error_alone_and_prices_finetuning():
    cfg = RewardConfig(name="amc-constrained", target=0.5, target_bonus=1.0, finetune_weight=0.1)
    # steps: only the fine-tune price, whatever the accuracy or the cost cut
    assert step_reward(cfg, 0.9, 0.5, 2, 1, 2, 0.5) == pytest.approx(-0.05)
    assert step_reward(cfg, 0.9, 0.9, 2, 2, 2, 0.0) == 0.0
    # end: -error plus the target term; a deeper cut under the target earns nothing more
    assert final_reward(cfg, 0.85, 0.5, 1.0, 500.0) == pytest.approx(1.0 - 0.15)
    assert final_reward(cfg, 0.85, 0.2, 1.0, 200.0) == pytest.approx(1.0 - 0.15)
    assert final_reward(cfg, 0.85, 0.75, 1.0, 750.0) == pytest.approx(-0.5 - 0.15)


def test_bad_reward_config():
    with pytest.raises(ValueError, match="unknown reward"):
        RewardConfig(name="nope")
    with pytest.raises(ValueError, match="allowed_drop"):
        RewardConfig(allowed_drop=0)
    with pytest.raises(ValueError, match="target"):
        RewardConfig(target=1.5)
