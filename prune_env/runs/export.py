"""Export a compact network for deployment: TorchScript and ONNX, each checked against PyTorch.

The ONNX file is run with onnxruntime and the TorchScript file with torch.jit.load on a
random batch; the largest absolute difference from the PyTorch network's outputs is returned
and an export that differs by more than ``tolerance`` is an error, so a file that would
deploy a different network is never left looking valid.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prune_env.envs.records import Export
from prune_env.nn.device import cpu_copy

FORMATS = ("onnx", "torchscript")
#: What a run exports unless asked for more: TorchScript is deprecated in torch 2.14 (and
#: torch.jit.trace with it), written on request only (``--torchscript``).
DEFAULT_FORMATS = ("onnx",)


class ExportError(RuntimeError):
    """An exported file whose outputs differ from the PyTorch network's."""


def export(model: nn.Module, input_shape: tuple[int, ...], out_dir: Path, fmt: str,
           *, tolerance: float = 1e-4, stem: str = "model") -> Export:
    """Write ``model`` as ``out_dir/{stem}.onnx`` or ``{stem}.ts``; returns path and max
    diff."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    model = cpu_copy(model).eval()  # files are written and checked on the host
    x = torch.randn(4, *input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x).numpy()
    out_dir.mkdir(parents=True, exist_ok=True)
    path, got = (to_onnx if fmt == "onnx" else to_torchscript)(model, x, out_dir / stem)
    diff = float(np.abs(got - expected).max())
    scale = max(float(np.abs(expected).max()), 1.0)
    if diff > tolerance * scale:
        raise ExportError(f"{path} gives outputs {diff:.2e} away from PyTorch's: not usable")
    return Export(path=str(path), max_abs_diff=diff)


def to_onnx(model: nn.Module, x: torch.Tensor, stem: Path) -> tuple[Path, np.ndarray]:
    """``stem``.onnx with a dynamic batch axis (torch.export), run back through
    onnxruntime."""
    import onnxruntime  # imported here: only exports need it

    path = stem.with_suffix(".onnx")
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["images"],
                      output_names=["logits"], dynamic_shapes=({0: batch},), verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return path, session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def to_torchscript(model: nn.Module, x: torch.Tensor, stem: Path) -> tuple[Path, np.ndarray]:
    """``stem``.ts by tracing (compact networks have static shapes), loaded back and run."""
    path = stem.with_suffix(".ts")
    # torch 2.14 marks TorchScript deprecated; it is still what C++ and older runtimes load
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(model, x[:1]), str(path))
        loaded = torch.jit.load(str(path))
        return path, loaded(x).numpy()
