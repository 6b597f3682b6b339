"""Latency of the deployed files: the exported ONNX networks timed in onnxruntime.

Networks are deployed through a runtime, not eager PyTorch, and a runtime fuses BatchNorm
and activations into the convs: the speed-up a pruned network buys there can differ from the
eager one. The pruned file and the exported base are timed interleaved, with the same blocks
and the same paired interval as the eager timing (`prune_env.measure.latency`,
`prune_env.measure.confidence`), on each execution provider installed: the CPU's always,
CUDA and TensorRT where onnxruntime has them. Each call feeds a host array and returns one,
as a deployment's Python call does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from prune_env.measure.confidence import Interval, paired_ratio_interval
from prune_env.measure.latency import Latency, measure_latency

#: The providers timed where installed, in this order.
PROVIDERS = ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider")


class OrtNetwork(nn.Module):
    """An onnxruntime session as a module that `measure_latency` can time."""

    def __init__(self, path: str | Path, provider: str, threads: int):
        super().__init__()
        import onnxruntime as ort  # imported here: only deployment timing needs it

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=[provider])
        self.input = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor):
        return self.session.run(None, {self.input: x.cpu().numpy()})[0]


@dataclass(frozen=True)
class RuntimeTiming:
    """Base and pruned files timed interleaved on one provider."""

    provider: str
    base: Latency
    pruned: Latency
    interval: Interval

    @property
    def ratio(self) -> float:
        return self.pruned.estimate_ms / self.base.estimate_ms


def installed_providers() -> list[str]:
    """The providers of `PROVIDERS` this onnxruntime has."""
    import onnxruntime as ort

    return [p for p in PROVIDERS if p in ort.get_available_providers()]


def time_onnx(base: str | Path, pruned: str | Path, input_shape: tuple[int, ...], *,
              threads: int, batch: int = 1, blocks: int = 15, repeats: int = 6
              ) -> list[RuntimeTiming]:
    """The two ONNX files timed interleaved on each installed provider."""
    timings = []
    for provider in installed_providers():
        nets = {"base": OrtNetwork(base, provider, threads),
                "pruned": OrtNetwork(pruned, provider, threads)}
        timed = measure_latency(nets, input_shape, batch=batch, threads=threads,
                                blocks=blocks, repeats=repeats)
        timings.append(RuntimeTiming(provider, timed["base"], timed["pruned"],
                                     paired_ratio_interval(timed["base"].block_ms,
                                                           timed["pruned"].block_ms)))
    return timings
