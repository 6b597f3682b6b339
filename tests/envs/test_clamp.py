"""AMC's budget clamp through `RatioActionWrapper`: an agent that asks to keep everything
still meets the target by the table; a clamp that need not act does not."""

from __future__ import annotations

import numpy as np
import pytest

from prune_env.envs.wrappers import RatioActionWrapper

KEEP_ALL = np.array([1.0, -1.0], np.float32)  # keep every filter, no fine-tuning


def episode(env, action) -> list[dict]:
    env.reset(seed=0)
    infos, done = [], False
    while not done:
        *_, done, _, info = env.step(action)
        infos.append(info)
    return infos


@pytest.mark.parametrize("target", [0.3, 0.6])
def test_clamped_keep_all_meets_a_flops_target(make_env, target):
    """FLOPs grow with every filter kept, so the clamp's bisection is exact."""
    env = RatioActionWrapper(make_env(cost="flops", target=target, final_report=False))
    infos = episode(env, KEEP_ALL)
    # it cuts only as it must: the first group keeps everything while the rest can pay
    assert infos[0]["kept"] == 16
    assert target - 0.05 < infos[-1]["cost_ratio"] <= target


def test_clamped_keep_all_meets_a_latency_target_by_the_table(make_env):
    """A looked-up latency is not monotone in the filters to a few percent (SIMD widths), so
    the clamp lands within that of the target."""
    env = RatioActionWrapper(make_env(target=0.6, final_report=False))
    assert 0.55 < episode(env, KEEP_ALL)[-1]["cost_ratio"] <= 0.62


def test_without_the_clamp_keep_all_prunes_nothing(make_env):
    env = RatioActionWrapper(make_env(target=0.4, final_report=False), clamp=False)
    assert episode(env, KEEP_ALL)[-1]["cost_ratio"] == pytest.approx(1.0)


def test_a_clamp_that_need_not_act_keeps_the_agents_choice(make_env):
    env = RatioActionWrapper(make_env(target=1.0, final_report=False))
    infos = episode(env, np.array([0.0, -1.0], np.float32))  # half of every group
    free = episode(RatioActionWrapper(make_env(target=1.0, final_report=False), clamp=False),
                   np.array([0.0, -1.0], np.float32))
    assert [i["kept"] for i in infos] == [i["kept"] for i in free]
