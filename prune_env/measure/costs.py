"""The costs the environment rewards: latency, energy, FLOPs and parameters of a network.

During an episode latency is *predicted* from the per-layer lookup table plus an overhead
model fitted once on the base network (a step must not spend seconds timing);
at the episode's end the real compact network is timed, interleaved with the base. Energy,
when it is the cost, is metered at every step; otherwise it is metered for the report only
where a sensor exists (None elsewhere: never an invented number).
"""

from __future__ import annotations

import dataclasses
import hashlib
import weakref
from typing import Any

import torch
from torch import nn

from prune_env.measure.confidence import Interval, paired_ratio_interval
from prune_env.measure.correction import TableCorrection, probe_networks
from prune_env.measure.energy import (
    EnergyMeter,
    EnergyResult,
    EnergyUnavailableError,
    auto_meter,
    measure_energy,
    measure_idle_watts,
)
from prune_env.measure.flops import count_params
from prune_env.measure.latency import Latency, measure_latency, on_device, synchronizer
from prune_env.measure.lookup import LatencyTable, LayerShape, layer_shapes

#: Key of each cost in the dict `CostMeter.costs` returns.
COST_KEYS = {"latency": "latency_ms", "energy": "energy_mj", "flops": "flops",
             "params": "params"}

#: A report's measured ratio whose 95% interval is wider than this is timed again: typical
#: widths on a 2-core CPU VM are 0.02-0.06; one burst of the machine's noise gave 0.381-0.701
#: (estimate 0.691 where the table said 0.481), and a verdict must not rest on such a timing.
MAX_INTERVAL_WIDTH = 0.1
#: How many more times at most (each about as long as the first).
RETIMES = 2


def output_elements(shapes: dict[str, LayerShape]) -> int:
    """Output values at batch 1 of the conv and linear layers that element-wise work
    follows (all but the `LayerShape.fused` ones)."""
    return sum(s.out_channels * s.out_height * s.out_width for s in shapes.values()
               if not s.fused)


def overhead_layers(shapes: dict[str, LayerShape]) -> int:
    """How many layers the per-layer overhead applies to (the unfused ones)."""
    return sum(not s.fused for s in shapes.values())


def half_width(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every filter group halved (for calibration: same depth)."""
    from prune_env.nn.groups import filter_groups, merge_keep
    from prune_env.nn.surgery import compact

    keep: dict[str, torch.Tensor] = {}
    for group in filter_groups(model):
        merge_keep(keep, group.keep_for(torch.arange(group.size) % 2 == 0))
    return compact(model, keep)


class CostMeter:
    """Measures a network's costs on one device.

    Args:
        cost: the cost being rewarded (latency, energy, flops, params).
        input_shape: (C, H, W) of one image.
        device: where latency and energy are measured.
        threads: CPU threads for timing (None: the current count).
        table: latency lookup-table file (None: the default cache).
        batch: images per timed inference during the episode (1: embedded-style latency).
        report_batch: a second batch size timed for the report at the episode's end.
        energy_meter: the sensor (`prune_env.measure.energy.auto_meter`'s ``prefer``).
    """

    def __init__(self, cost: str, input_shape: tuple[int, ...], *, device: str = "cpu",
                 threads: int | None = None, table: str | None = None, batch: int = 1,
                 report_batch: int = 32, energy_meter: str = "auto"):
        self.cost = cost
        self.input_shape = tuple(input_shape)
        self.device = device
        self.threads = threads or torch.get_num_threads()
        self.batch = batch
        self.report_batch = report_batch
        self.table = LatencyTable(table, device=device, threads=self.threads, batch=batch)
        self.overhead = (0.0, 0.0)  # ms per layer, ms per output element (`calibrate`)
        self.correction = TableCorrection()  # the table as it is until `correct` runs
        self._base_ms: float | None = None  # the corrected predictions' base (`correct`)
        # layer shapes per network object: a network's shapes never change once built
        self._shapes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.energy_meter: EnergyMeter | None = None
        self.idle_watts: float | None = None  # the sensor's idle power, once metered
        try:
            self.energy_meter = auto_meter(device, prefer=energy_meter)
        except EnergyUnavailableError:
            if cost == "energy" or energy_meter != "auto":  # asked for: say why not
                raise

    def costs(self, model: nn.Module, *, calibrate: bool = False) -> dict[str, Any]:
        """latency_ms (looked up), energy_mj (metered if it is the cost), flops, params.

        Args:
            calibrate: fit the overhead model on ``model`` (the base network), see
                `calibrate`.
        """
        if calibrate:
            self.overhead = self.calibrate(model)
        return {"latency_ms": self.predict_ms(model),
                "energy_mj": self.energy_mj(model) if self.cost == "energy" else None,
                "flops": self.flops(model), "params": count_params(model)}

    def shapes(self, model: nn.Module) -> dict[str, LayerShape]:
        """`layer_shapes` of ``model``, traced once per network object."""
        if model not in self._shapes:
            self._shapes[model] = layer_shapes(model, self.input_shape)
        return self._shapes[model]

    def flops(self, model: nn.Module) -> int:
        """FLOPs at batch 1 from the traced layer shapes: what `count_flops`
        (FlopCounterMode) counts, asserted equal in the tests, without a second trace."""
        return sum(s.flops() for s in self.shapes(model).values())

    def calibrate(self, model: nn.Module) -> tuple[float, float]:
        """The overhead model (ms per layer, ms per output element) fitted on ``model``.

        What the layers' table entries do not explain (BatchNorm, activations, additions,
        framework calls) has a part fixed per layer and a part that scales with the layers'
        output sizes (element-wise work). Two networks of the same depth, ``model`` and its
        half-width copy, are timed interleaved; their two unexplained remainders give the
        two coefficients, in the table's units (timed with its reference layer). Cached in
        the table's file, so every run on this machine predicts the same latencies and the
        same seed gives the same episode.
        """
        shapes = self.shapes(model)
        key = "overhead3|" + hashlib.sha1("/".join(
            s.key(self.batch, self.table.hardware, self.threads) for s in shapes.values()
        ).encode()).hexdigest()
        with self.table.timing():
            self.table.reload()
            if key not in self.table.entries:
                self.table.entries[key] = self._fit_overhead(model)
                self.table.save()
        per_layer, per_element = self.table.entries[key]
        return per_layer, per_element

    def _fit_overhead(self, model: nn.Module) -> list[float]:
        """[ms per layer, ms per output element] from ``model`` and its half-width copy."""
        shapes = self.shapes(model)
        half = half_width(model)
        layers = {n: sum(self.table.layers_ms(self.shapes(m)).values())
                  for n, m in (("base", model), ("half", half))}
        # with the table's reference, so that the remainders are in the table's units
        timed = self.measure({"base": model, "half": half, "ref": self.table.reference()})
        rest = {n: self.table.to_ms(timed[n].estimate_ms, timed["ref"].estimate_ms)
                - layers[n] for n in layers}
        elements = {"base": output_elements(shapes),
                    "half": output_elements(self.shapes(half))}
        per_element = max(0.0, (rest["base"] - rest["half"])
                          / max(elements["base"] - elements["half"], 1))
        per_layer = (rest["base"] - per_element * elements["base"]) / overhead_layers(shapes)
        if per_layer < 0:  # all of it scales with size
            per_layer, per_element = 0.0, max(rest["base"], 0.0) / elements["base"]
        return [per_layer, per_element]

    def predict_ms(self, model: nn.Module) -> float:
        """Looked-up latency: the layers' table entries plus the fitted overhead.

        The overhead goes with the number of layers and their output sizes, so a network
        that lost residual branches loses their share, and a thinner one its element-wise
        work.
        """
        return self.predict_shapes_ms(self.shapes(model))

    def predict_shapes_ms(self, shapes: dict[str, LayerShape]) -> float:
        """`predict_ms` of a network given by its layer shapes (a dynamic network's mean
        widths, say, which no static module has), corrected by measurement once `correct`
        has run."""
        raw = self.table_ms(shapes)
        if self._base_ms is None:
            return raw
        return self.correction.ms(raw, self._base_ms)

    def table_ms(self, shapes: dict[str, LayerShape]) -> float:
        """The table's own prediction: layers' entries plus the fitted overhead."""
        table = sum(self.table.layers_ms(shapes).values())
        per_layer, per_element = self.overhead
        return (table + per_layer * overhead_layers(shapes)
                + per_element * output_elements(shapes))

    def correct(self, base: nn.Module, probes: int, seed: int = 0) -> TableCorrection:
        """Check the table against measurement and correct it from now on
        (`prune_env.measure.correction`): ``probes`` random-width copies of ``base``, each
        timed interleaved with it. Cached in the table's file (keyed by the base's shapes,
        the probes and the seed), so every run on this machine corrects alike and the same
        seed gives the same episode."""
        shapes = self.shapes(base)
        key = "correction1|" + hashlib.sha1("/".join(
            [*(s.key(self.batch, self.table.hardware, self.threads) for s in shapes.values()),
             f"{probes}|{seed}"]).encode()).hexdigest()
        with self.table.timing():
            self.table.reload()
            if key not in self.table.entries:
                fitted = self._fit_correction(base, probes, seed)
                self.table.entries[key] = [fitted.slope, [list(p) for p in fitted.points]]
                self.table.save()
        slope, points = self.table.entries[key]
        self.correction = TableCorrection(slope, tuple((p, m) for p, m in points))
        self._base_ms = self.table_ms(shapes)
        return self.correction

    def observe(self, base: nn.Module, model: nn.Module, *, own_only: bool = False,
                blocks: int = 7) -> TableCorrection:
        """Close the loop on a network the run made: time ``model`` against ``base``
        (interleaved) and refit the correction on every point so far (probes first, then
        the run's networks), or with ``own_only`` on the run's own networks alone (the
        probes dropped: an aim that converges on the method's networks rather than on an
        average with random ones); the predictions follow it from now on. A network the
        table cannot tell from the base (no cut) adds a point that does not move the line.
        ``blocks``: interleaved blocks of 5 runs each (7 per episode, as cheap as is useful;
        15, the final report's, where one timing decides)."""
        base_ms = self.table_ms(self.shapes(base))
        timed = self.measure({"base": base, "model": model}, repeats=5, blocks=blocks)
        point = (self.table_ms(self.shapes(model)) / base_ms,
                 timed["model"].estimate_ms / timed["base"].estimate_ms)
        previous = self.correction.points
        if own_only:
            previous = previous[len(previous) - self.correction.observed:]
        points = (*previous, point)
        fitted = (TableCorrection.fit(points) if any(p < 1 for p, _ in points)
                  else TableCorrection(self.correction.slope, points))  # no line to fit yet
        self.correction = dataclasses.replace(fitted, observed=self.correction.observed + 1)
        self._base_ms = base_ms
        return self.correction

    def correction_state(self) -> tuple[TableCorrection, float | None]:
        """What `restore_correction` needs (an episode's snapshot carries it to the tries)."""
        return self.correction, self._base_ms

    def restore_correction(self, state: tuple[TableCorrection, float | None]) -> None:
        self.correction, self._base_ms = state

    def _fit_correction(self, base: nn.Module, probes: int, seed: int) -> TableCorrection:
        """`TableCorrection.fit` on the probes' (table ratio, measured ratio)."""
        base_ms = self.table_ms(self.shapes(base))
        points = []
        for probe in probe_networks(base, probes, seed):
            timed = self.measure({"base": base, "probe": probe}, repeats=5)
            points.append((self.table_ms(self.shapes(probe)) / base_ms,
                           timed["probe"].estimate_ms / timed["base"].estimate_ms))
        return TableCorrection.fit(points)

    def measure(self, models: dict[str, nn.Module], batch: int | None = None,
                repeats: int = 10, blocks: int = 7):
        """Time the networks for real, interleaved (see `measure_latency`), once no process
        sharing the table computes."""
        with self.table.timing():
            return measure_latency(models, self.input_shape, batch=batch or self.batch,
                                   device=self.device, threads=self.threads, repeats=repeats,
                                   blocks=blocks)

    def measured_ratio(self, base: nn.Module, model: nn.Module) -> float:
        """``model``'s cost / ``base``'s, timed interleaved for latency (the figure reports
        judge targets on), from the other costs as counted."""
        if self.cost != "latency":
            key = COST_KEYS[self.cost]
            return self.costs(model)[key] / self.costs(base)[key]
        timed = self.measure({"base": base, "model": model})
        return timed["model"].estimate_ms / timed["base"].estimate_ms

    def computing(self):
        """Hold while training or validating (see `LatencyTable.computing`)."""
        return self.table.computing()

    def energy_mj(self, model: nn.Module) -> float | None:
        """Metered millijoules per image (all the sensor counts), or None where no sensor
        exists."""
        result = self.energy(model)
        return None if result is None else 1e3 * result.joules_per_inference / self.batch

    def energy(self, model: nn.Module) -> EnergyResult | None:
        """One metered window of ``model``'s inferences at the meter's batch (with the
        sensor's idle power, measured once per meter), or None where no sensor exists."""
        if self.energy_meter is None:
            return None
        dev = torch.device(self.device)
        net = on_device(model, dev)
        was = net.training
        net.eval()
        x = torch.randn(self.batch, *self.input_shape,
                        generator=torch.Generator().manual_seed(0)).to(dev)
        try:
            with torch.inference_mode(), self.table.timing():
                if self.idle_watts is None:  # with nothing running: the lock is held
                    self.idle_watts = measure_idle_watts(self.energy_meter)
                for _ in range(10):  # warm-up, as for timing
                    net(x)
                return measure_energy(lambda: net(x), self.energy_meter,
                                      sync=synchronizer(dev), idle_watts=self.idle_watts)
        finally:
            net.train(was)

    def group_shares(self, model: nn.Module, convs: tuple[str, ...]) -> tuple[float, ...]:
        """(feature-map area / input area, FLOPs share, latency share) of a group's convs."""
        shapes = self.shapes(model)
        times = self.table.layers_ms(shapes)
        flops = {n: s.flops() for n, s in shapes.items()}
        first = shapes[convs[0]]
        area = first.height * first.width / (self.input_shape[1] * self.input_shape[2])
        return (min(area, 1.0), sum(flops[c] for c in convs) / sum(flops.values()),
                sum(times[c] for c in convs) / sum(times.values()))

    def measure_pair(self, base: nn.Module, pruned: nn.Module) -> dict[str, Any]:
        """Measured latency of base and pruned (interleaved), the 95% interval of their
        ratio, predicted latency, energy; ``timings``: how many times the pair was timed
        (`timed_pair`)."""
        timed, interval, timings = self.timed_pair(base, pruned)
        big = self.measure({"base": base, "pruned": pruned}, self.report_batch, repeats=3)
        return {"base": timed["base"], "pruned": timed["pruned"],
                "ratio_interval": interval, "timings": timings,
                "base_batch": big["base"], "pruned_batch": big["pruned"],
                "pruned_predicted_ms": self.predict_ms(pruned),
                **self._energy_pair(base, pruned)}

    def timed_pair(self, base: nn.Module, pruned: nn.Module
                   ) -> tuple[dict[str, Latency], Interval, int]:
        """Base and pruned timed interleaved at batch 1, with their ratio's 95% interval.

        A pair whose interval is wider than `MAX_INTERVAL_WIDTH` is timed again, up to
        `RETIMES` more times, and the narrowest interval's timing is kept: the width is the
        machine's noise during that timing, not the networks', so choosing on it does not
        choose the ratio. Returns (timings, interval, how many times it was timed).
        """
        kept: tuple[dict[str, Latency], Interval] | None = None
        timings = 0
        while True:
            timings += 1
            # more, shorter blocks than a step's timing: the interval resamples the blocks
            timed = self.measure({"base": base, "pruned": pruned}, repeats=6, blocks=15)
            interval = paired_ratio_interval(timed["base"].block_ms, timed["pruned"].block_ms)
            if kept is None or interval.width < kept[1].width:
                kept = (timed, interval)
            if interval.width <= MAX_INTERVAL_WIDTH or timings > RETIMES:
                return kept[0], kept[1], timings

    def _energy_pair(self, base: nn.Module, pruned: nn.Module) -> dict[str, float | None]:
        """Both networks' metered millijoules per image, total and net of idle power."""
        out: dict[str, float | None] = {}
        for key, model in (("base", base), ("pruned", pruned)):
            result = self.energy(model)
            net = None if result is None else result.net_joules_per_inference
            out[f"{key}_energy_mj"] = (None if result is None
                                       else 1e3 * result.joules_per_inference / self.batch)
            out[f"{key}_energy_net_mj"] = None if net is None else 1e3 * net / self.batch
        out["idle_watts"] = self.idle_watts
        return out
