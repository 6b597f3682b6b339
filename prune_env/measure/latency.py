"""Measuring latency robustly on shared, noisy machines.

The same ResNet-20 was measured at 1.2 ms, then 2.4 ms, seconds apart on these machines. The
estimate therefore (1) interleaves the networks being compared, so that a slow period hits
all of them alike, (2) repeats in blocks and takes each block's minimum (noise only ever
adds time), and (3) reports the median of those block minima, with the median and IQR of all
runs as the spread. Thread count is fixed for the measurement and CUDA is synchronised
around every timed run.
"""

from __future__ import annotations

import copy
import functools
import statistics
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from prune_env.nn.device import module_device, same_device, synchronize


@dataclass(frozen=True)
class Latency:
    """One network's latency, in milliseconds per batch.

    Attributes:
        estimate_ms: median over blocks of each block's fastest run: the robust figure.
        median_ms: median of all timed runs.
        iqr_ms: interquartile range of all timed runs (the spread).
        runs: number of timed runs.
        batch: images per run.
        device: where it ran.
        threads: CPU threads used.
        block_ms: each block's fastest run, in block order: paired with the other
            networks' of the same measurement (`prune_env.measure.confidence`).
    """

    estimate_ms: float
    median_ms: float
    iqr_ms: float
    runs: int
    batch: int
    device: str
    threads: int
    block_ms: tuple[float, ...] = ()


@contextmanager
def fixed_threads(threads: int | None):
    """Run the block with ``threads`` intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op on the CPU)."""
    return functools.partial(synchronize, device)


def time_once(model: nn.Module, x: torch.Tensor, sync: Callable[[], None]) -> float:
    """Seconds of one synchronised forward pass."""
    sync()
    start = time.perf_counter()
    model(x)
    sync()
    return time.perf_counter() - start


def measure_latency(models: Mapping[str, nn.Module], input_shape: tuple[int, ...], *,
                    batch: int = 1, device: str = "cpu", threads: int | None = None,
                    warmup: int = 10, blocks: int = 7, repeats: int = 10,
                    progress: str | None = None) -> dict[str, Latency]:
    """Time several networks interleaved; one `Latency` per name.

    Args:
        models: name -> network (moved to ``device``; the caller's copies are not changed).
        input_shape: (C, H, W) of one image.
        batch: images per forward pass (1 for embedded-style latency).
        device: "cpu", "cuda" or "cuda:N".
        threads: CPU threads to fix for the measurement (None keeps the current count).
        warmup: untimed runs per network before timing (10: a GPU's clocks and caches settle).
        blocks: rounds over all networks; each contributes one minimum per network.
        repeats: timed runs per network per block.
        progress: a progress-bar title (large inputs take seconds per run), or None for no
            bar; the bar moves between timed runs, never inside one.
    """
    dev = torch.device(device)
    sync = synchronizer(dev)
    # a private generator: timing (done or skipped, by the table's cache) must not move the
    # global RNG that agents sample from, or a resumed run would differ from a straight one
    x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0)).to(dev)
    nets = {name: on_device(model, dev) for name, model in models.items()}
    modes = {name: net.training for name, net in nets.items()}
    for net in nets.values():
        net.eval()
    samples: dict[str, list[float]] = {name: [] for name in nets}
    minima: dict[str, list[float]] = {name: [] for name in nets}
    bar = tqdm(total=len(nets) * (warmup + blocks * repeats), desc=progress, unit="run",
               disable=progress is None)
    with fixed_threads(threads) as used, torch.inference_mode(), bar:
        for net in nets.values():
            for _ in range(warmup):
                net(x)
                bar.update()
        order = list(nets)
        for block in range(blocks):
            # rotate the order so no network always runs right after another one
            for name in order[block % len(order):] + order[:block % len(order)]:
                runs = [time_once(nets[name], x, sync) for _ in range(repeats)]
                bar.update(repeats)
                samples[name] += runs
                minima[name].append(min(runs))
    for name, net in nets.items():
        net.train(modes[name])  # the caller's networks leave in the mode they came in
    return {name: _summary(samples[name], minima[name], batch, device, used) for name in nets}


def on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """The model itself if it is on ``device``, else a copy moved there (a network trained
    on a GPU and timed on the CPU, say)."""
    if not same_device(module_device(model), device):
        model = copy.deepcopy(model).to(device)
    return model


def _summary(runs: list[float], minima: list[float], batch: int, device: str,
             threads: int) -> Latency:
    q1, _, q3 = statistics.quantiles(runs, n=4) if len(runs) > 1 else (runs[0],) * 3
    return Latency(estimate_ms=1e3 * statistics.median(minima),
                   median_ms=1e3 * statistics.median(runs), iqr_ms=1e3 * (q3 - q1),
                   runs=len(runs), batch=batch, device=device, threads=threads,
                   block_ms=tuple(1e3 * m for m in minima))
