"""How sure a measured cost ratio is: a paired bootstrap interval, and the verdict on a target
(and, for one network alone, the bootstrap interval of its latency estimate).

Two networks timed interleaved give paired samples: block ``b``'s fastest run of each (or
image ``i``'s median time of each, for a dynamic network). A slow period of the machine hits
both members of a pair, so resampling the pairs together (not each network's samples on
its own) keeps that shared noise out of the ratio's interval. The statistic resampled is the
one the report gives: the ratio of the two medians of the block minima (or of the two means
of the per-image times).

A target is then ``met`` when the whole interval is at or below it, ``missed`` when the
whole interval is above it, and ``within noise`` when the interval holds it: at a 0.7 target
a method that measured 0.7006 has not missed it, the machine cannot tell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: The three verdicts on a target (`verdict`).
VERDICTS = ("met", "missed", "within noise")


@dataclass(frozen=True)
class Interval:
    """A confidence interval ``[low, high]`` at ``level`` (0.95: 95%)."""

    low: float
    high: float
    level: float = 0.95

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def width(self) -> float:
        return self.high - self.low


def paired_ratio_interval(base: Sequence[float], other: Sequence[float], *,
                          statistic: str = "median", level: float = 0.95,
                          resamples: int = 2000, seed: int = 0) -> Interval:
    """The percentile-bootstrap interval of ``statistic(other) / statistic(base)``.

    Args:
        base, other: paired samples (same length; pair ``i`` was measured together).
        statistic: "median" (of block minima) or "mean" (of per-image times).
        level: coverage of the interval.
        resamples: bootstrap resamples (pairs drawn with replacement).
        seed: the resampling's seed: the same samples give the same interval.
    """
    a, b = np.asarray(base, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired samples must be two equal, non-empty lists (got {a.shape} "
                         f"and {b.shape})")
    if statistic not in ("median", "mean"):
        raise ValueError(f"unknown statistic {statistic!r}: median or mean")
    reduce = np.median if statistic == "median" else np.mean
    idx = np.random.default_rng(seed).integers(0, len(a), size=(resamples, len(a)))
    return _percentile_interval(reduce(b[idx], axis=1) / reduce(a[idx], axis=1), level)


def median_interval(samples: Sequence[float], *, level: float = 0.95, resamples: int = 2000,
                    seed: int = 0) -> Interval:
    """The percentile-bootstrap interval of the median of ``samples``: one network's block
    minima (`prune_env.measure.latency.Latency.block_ms`), whose median is its latency
    estimate. It says how much that estimate moves between blocks of the same machine; a
    comparison between networks should use their paired ratio (`paired_ratio_interval`), which
    the machine's slow periods do not widen. With five blocks it spans about their range.

    Args:
        samples: one value per block (at least one).
        level: coverage of the interval.
        resamples: bootstrap resamples (samples drawn with replacement).
        seed: the resampling's seed: the same samples give the same interval.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"samples must be a non-empty list (got shape {x.shape})")
    idx = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    return _percentile_interval(np.median(x[idx], axis=1), level)


def _percentile_interval(estimates: np.ndarray, level: float) -> Interval:
    """The central ``level`` share of the bootstrap ``estimates``."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return Interval(float(low), float(high), level)


def verdict(ratio: float, target: float, interval: Interval | None = None) -> str:
    """"met", "missed" or "within noise" (the interval holds the target); without an
    interval (a counted cost: FLOPs, parameters) the ratio alone decides."""
    if interval is not None and interval.holds(target):
        return "within noise"
    return "met" if ratio <= target else "missed"
