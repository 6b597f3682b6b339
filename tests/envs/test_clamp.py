"""AMC's budget clamp through `RatioActionWrapper`: an agent that asks to keep everything
still meets the target by the table; a clamp that need not act does not."""

from __future__ import annotations

import numpy as np
import pytest

from prune_env.envs.wrappers import AMCActionWrapper, RatioActionWrapper

KEEP_ALL = np.array([1.0, -1.0], np.float32)  # keep every filter, no fine-tuning

# timed alone: a test beside them would move their timings
pytestmark = pytest.mark.timing


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


def test_amc_bounds_keep_a_fifth_of_every_group_even_where_the_target_needs_less(make_env):
    """AMC's action spans keep ratios 0.2 to 1: -1 keeps a fifth (the unbounded ratio
    removes the branches), and a target the bound cannot reach is missed, not forced by
    cutting groups to one filter."""
    free = AMCActionWrapper(make_env(cost="flops", target=0.01, final_report=False),
                            clamp=False)
    obs, _ = free.reset(seed=0)
    size = free.layout.group_size(obs)
    assert free.action(np.array([-1.0, -1.0], np.float32))["keep"].sum() == round(0.2 * size)
    assert free.action(np.array([0.0, -1.0], np.float32))["keep"].sum() == round(0.6 * size)
    env = AMCActionWrapper(make_env(cost="flops", target=0.01, final_report=False))
    infos = episode(env, KEEP_ALL)
    assert all(i["kept"] >= 3 for i in infos)  # 0.2 of a 16-filter group, the smallest
    assert 0.02 < infos[-1]["cost_ratio"] < 0.15  # the bound's FLOPs, above the target
    unbounded = episode(RatioActionWrapper(make_env(cost="flops", target=0.01,
                                                    final_report=False)), KEEP_ALL)
    assert min(i["kept"] for i in unbounded) <= 1
