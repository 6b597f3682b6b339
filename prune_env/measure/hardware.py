"""Which hardware a measurement ran on: the key that keeps machines' timings apart.

A latency table filled on one machine predicts nothing about another, and a sweep whose runs
ran on several machines must say which one measured each. The id names the processor model
("cpu:Intel(R) Xeon(R) ...") or the GPU ("cuda:NVIDIA H100 80GB HBM3", with the MIG
slice's id where the device is one); thread counts are keyed beside it.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch


def hardware_id(device: str) -> str:
    """``"cpu:MODEL"`` or ``"cuda:GPU NAME"`` for a torch device string ("cpu", "cuda:1")."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda:{gpu_name(dev.index or 0)}"
    if dev.type == "cpu":
        return f"cpu:{cpu_model()}"
    return dev.type


@functools.cache
def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The processor's model name (Linux's /proc/cpuinfo; the platform's name elsewhere)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def gpu_name(index: int) -> str:
    """The CUDA device's name, and its MIG slice where ``CUDA_VISIBLE_DEVICES`` selects one
    (a slice is a smaller GPU: its timings are not the whole GPU's)."""
    name = torch.cuda.get_device_name(index)
    visible = [e.strip() for e in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
               if e.strip()]
    if index < len(visible) and visible[index].startswith("MIG-"):
        return f"{name} {visible[index]}"
    return name
