"""The latency table checked against measurement: a per-run correction fitted on probes.

The table predicts a network's latency as the sum of its layers' isolated timings plus an
overhead model (`prune_env.measure.costs`). Inside a real network layers run differently
(caches, memory traffic, the runtime's per-call cost), so the prediction drifts from what
the final report measures, and a reward that sees the table can meet a target the report
then misses (README: 0.70 predicted, 0.717-0.726 measured at 512 x 1024).

`TableCorrection` maps the table's ratio ``p`` (network / base, both predicted) to the
measured one, ``m = 1 - slope * (1 - p)``: a line through (1, 1), since the base is the base.
The slope is fitted by least squares on *probes*: copies of the base network with random
widths per filter group (between `PROBE_KEEP` of their filters), each timed interleaved with
the base. A slope below 1 means the table is optimistic (a cut buys less on the machine than
in the table: slope 0.9 turns a predicted 0.5 into a measured 0.55); above 1, pessimistic.

Probes are random networks, and the table's miss is partly network-specific (README: probes
found slope 0.98 where L1's network measured 0.723 at a predicted 0.698), so a run can also
close the loop on its own networks: each episode's final network is timed against the base
and the line refitted on every point so far (`CostMeter.observe`), so the predictions the
reward sees converge on what the report will measure for the networks the method makes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

#: Fraction of each filter group a probe keeps, drawn uniformly in this range.
PROBE_KEEP = (0.3, 0.9)


@dataclass(frozen=True)
class TableCorrection:
    """measured ratio = 1 - slope * (1 - predicted ratio).

    Attributes:
        slope: the fitted slope (1: the table as it is).
        points: the probes' (predicted ratio, measured ratio), then the run's own networks'.
        observed: how many of the last points are the run's own networks (timed at the end
            of its episodes, `CostMeter.observe`) rather than random-width probes.
    """

    slope: float = 1.0
    points: tuple[tuple[float, float], ...] = ()
    observed: int = 0

    @classmethod
    def fit(cls, points: Sequence[tuple[float, float]]) -> TableCorrection:
        """The least-squares slope through (1, 1) of ``points`` (predicted, measured).

        Example:
            >>> TableCorrection.fit([(0.5, 0.4), (0.8, 0.76)]).slope
            1.2
        """
        cut = sum((1 - p) ** 2 for p, _ in points)
        if not points or cut <= 0:
            raise ValueError("a correction needs probes cheaper than the base (predicted "
                             "ratio below 1)")
        slope = sum((1 - p) * (1 - m) for p, m in points) / cut
        return cls(round(slope, 6), tuple((float(p), float(m)) for p, m in points))

    def ratio(self, predicted: float) -> float:
        """The measured ratio the table's ``predicted`` ratio stands for."""
        return 1 - self.slope * (1 - predicted)

    def ms(self, predicted_ms: float, base_ms: float) -> float:
        """``predicted_ms`` (a network's looked-up latency) corrected, given the base's."""
        return base_ms * self.ratio(predicted_ms / base_ms)

    def residuals(self) -> list[float]:
        """Each probe's measured ratio minus the corrected prediction."""
        return [m - self.ratio(p) for p, m in self.points]


def probe_networks(model: nn.Module, count: int, seed: int) -> list[nn.Module]:
    """``count`` compact copies of ``model``, each filter group keeping a random fraction
    (uniform in `PROBE_KEEP`) of its filters (its first ones: which ones does not change
    the latency)."""
    from prune_env.nn.groups import filter_groups, merge_keep
    from prune_env.nn.surgery import compact

    generator = torch.Generator().manual_seed(seed)
    groups = filter_groups(model)
    low, high = PROBE_KEEP
    probes = []
    for _ in range(count):
        keep: dict[str, torch.Tensor] = {}
        for group in groups:
            share = low + (high - low) * float(torch.rand((), generator=generator))
            mask = torch.zeros(group.size, dtype=torch.bool)
            mask[: max(1, round(share * group.size))] = True
            merge_keep(keep, group.keep_for(mask))
        probes.append(compact(model, keep))
    return probes
