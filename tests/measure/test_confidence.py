"""The measured ratio's interval (paired bootstrap) and the three-valued verdict on a target."""

from __future__ import annotations

import numpy as np
import pytest

from prune_env.measure.confidence import (
    Interval,
    median_interval,
    paired_ratio_interval,
    verdict,
)


def noisy_pairs(rng, ratio=0.7, blocks=15, shared=0.3, own=0.01):
    """Block minima of a base and a network ``ratio`` as fast, measured interleaved: a slow
    period (shared) hits both members of a block, plus a little noise of each's own."""
    slow = 1 + shared * rng.random(blocks)
    base = 3.0 * slow * (1 + own * rng.random(blocks))
    other = 3.0 * ratio * slow * (1 + own * rng.random(blocks))
    return base, other


def test_pairing_keeps_the_machines_slow_periods_out_of_the_interval():
    base, other = noisy_pairs(np.random.default_rng(1))
    paired = paired_ratio_interval(base, other)
    unpaired = paired_ratio_interval(base, np.random.default_rng(2).permutation(other))
    assert paired.holds(0.7) and paired.high - paired.low < 0.02
    assert unpaired.high - unpaired.low > 5 * (paired.high - paired.low)


def test_the_interval_covers_the_true_ratio_about_as_often_as_it_says():
    rng = np.random.default_rng(0)
    covered = [paired_ratio_interval(*noisy_pairs(rng, own=0.05), resamples=500).holds(0.7)
               for _ in range(200)]
    assert 0.85 <= np.mean(covered) <= 1.0


def test_the_same_samples_give_the_same_interval_and_the_mean_statistic_works():
    base, other = noisy_pairs(np.random.default_rng(3))
    assert paired_ratio_interval(base, other) == paired_ratio_interval(base, other)
    by_mean = paired_ratio_interval(base, other, statistic="mean")
    assert by_mean.low < np.mean(other) / np.mean(base) < by_mean.high


@pytest.mark.parametrize("ratio, interval, target, expected", [
    (0.7006, Interval(0.69, 0.712), 0.7, "within noise"),  # the demo's "misses"
    (0.66, Interval(0.65, 0.68), 0.7, "met"),
    (0.76, Interval(0.74, 0.78), 0.7, "missed"),
    (0.70, None, 0.7, "met"),  # counted costs are exact
    (0.71, None, 0.7, "missed"),
])
def test_a_target_is_met_missed_or_within_noise(ratio, interval, target, expected):
    assert verdict(ratio, target, interval) == expected


@pytest.mark.parametrize("base, other, statistic, message", [
    ([1.0, 2.0], [1.0], "median", "equal"),
    ([], [], "median", "non-empty"),
    ([1.0], [1.0], "mode", "unknown statistic"),
])
def test_bad_samples_are_named(base, other, statistic, message):
    with pytest.raises(ValueError, match=message):
        paired_ratio_interval(base, other, statistic=statistic)


def test_the_median_interval_covers_the_true_median_about_as_often_as_it_says():
    # block minima of one network: 3 ms plus the machine's noise, skewed (noise only adds);
    # the lognormal's median is exp(0) = 1, so the true median of the minima is 3.3 ms
    rng = np.random.default_rng(0)
    covered = [median_interval(3.0 + 0.3 * rng.lognormal(0, 0.5, 15), resamples=500).holds(3.3)
               for _ in range(200)]
    assert 0.85 <= np.mean(covered) <= 1.0


def test_the_median_interval_is_repeatable_and_one_block_gives_a_point():
    samples = [3.1, 3.4, 3.0, 3.9, 3.2]
    interval = median_interval(samples)
    assert interval == median_interval(samples)
    assert 3.0 <= interval.low <= np.median(samples) <= interval.high <= 3.9
    assert median_interval([2.5]) == Interval(2.5, 2.5)
    with pytest.raises(ValueError, match="non-empty"):
        median_interval([])
