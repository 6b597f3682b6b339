"""The one search every method with a budget knob uses: the largest setting whose cost meets
the target.

A method's cost grows with its setting (filters kept, a uniform ratio, a gating budget r), so
the largest setting that meets the target is found by bisection: ``meets(setting)`` says
whether the cost at that setting is at or below the target. The uniform allocation, SWD's and
ALF's global thresholds and gating's budget all call these.
"""

from __future__ import annotations

from collections.abc import Callable


class OutOfReach(ValueError):
    """No setting of the method meets the target (or a baseline's aim, lowered after a
    measured miss): the message says to raise the target. A ValueError, so a command that
    meets it at the start exits 2 with the message; an aim round meeting it stops aiming."""


def largest_count(meets: Callable[[int], bool], low: int, high: int, *,
                  monotone: bool = True) -> int:
    """The largest n in [low, high] with ``meets(n)``; ``low`` where none does (callers that
    must tell check ``meets(low)``).

    ``monotone``: ``meets`` holds up to some n and not above it, so bisection finds it in
    log2(high - low) calls. Otherwise every n is tried from ``high`` down (a looked-up latency
    is not monotone in channel counts to a few percent: SIMD widths, cache sizes).
    """
    if not monotone:
        return next((n for n in range(high, low, -1) if meets(n)), low)
    while low < high:
        mid = (low + high + 1) // 2
        if meets(mid):
            low = mid
        else:
            high = mid - 1
    return low


def largest_value(meets: Callable[[float], bool], low: float = 0.0, high: float = 1.0,
                  tolerance: float = 0.005) -> float:
    """The largest x in [low, high] (to ``tolerance``, from below) with ``meets(x)``; ``low``
    where none does."""
    while high - low > tolerance:
        mid = (low + high) / 2
        if meets(mid):
            low = mid
        else:
            high = mid
    return low
