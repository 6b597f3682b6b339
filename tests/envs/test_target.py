"""The largest setting meeting a target: bisection where the cost is monotone, a scan where
it is not."""

from __future__ import annotations

from prune_env.envs.target import largest_count, largest_value


def test_bisection_finds_the_largest_count_in_log_calls():
    calls = []

    def meets(n: int) -> bool:
        calls.append(n)
        return n <= 37

    assert largest_count(meets, 1, 1000) == 37
    assert len(calls) <= 10
    assert largest_count(lambda n: False, 1, 50) == 1  # none: the lowest
    assert largest_count(lambda n: True, 1, 50) == 50


def test_a_scan_finds_the_largest_where_the_cost_is_not_monotone():
    holds = {3, 4, 9}  # 9 meets, 5..8 do not (a noisy lookup)
    assert largest_count(holds.__contains__, 1, 12, monotone=False) == 9
    assert largest_count(holds.__contains__, 1, 12) != 9  # bisection would miss it


def test_largest_value_is_within_tolerance_below_the_edge():
    found = largest_value(lambda r: r <= 0.3141, 0.0, 1.0, tolerance=0.001)
    assert 0.3131 <= found <= 0.3141
    assert largest_value(lambda r: False) == 0.0
