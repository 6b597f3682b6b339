"""A latency lookup table: each layer shape timed once per machine, cached on disk.

An environment step changes a few layers' widths; timing the whole network at every step
would dominate it. Instead each (layer type, channels, kernel, stride, groups, input size,
batch, hardware, threads) is timed once, in isolation, and stored in a JSON file. A network's
predicted latency is the sum of its layers' entries plus an overhead model fitted on the base
network (BN, activations, additions, framework calls; see `prune_env.measure.costs`). Each
episode's end measures the real compact network, and the report shows predicted and measured
side by side.

Entries are relative. On a shared machine the same layer runs 2-3x slower from one minute to
the next, and a table filled over a run (a step meets a new width, a worker process times it
while another one trains) would mix fast and slow periods: a network's prediction would
depend on when its layers were first seen. So each layer is timed interleaved with a fixed
reference layer, and the table stores the ratio; a slow period slows both and cancels. The
reference's own time, from when the table was started, turns ratios back into milliseconds.

Timing waits for a quiet machine. Processes sharing a table file (parallel workers of one
run, or several runs) take a shared lock on it while they compute (fine-tuning, validation)
and an exclusive one while they time, so that nothing of theirs competes with a timing; the
process that takes it re-reads the file first, so a shape is timed once, by whichever process
meets it first, and every process predicts from the same entries.

The lock is one machine's: file locks on network file systems (NFS, SMB, ...) do not hold
between machines, and a table there would let one machine time while another trains. So the
table lives on a local disk: a table path given on a network file system is refused, and the
default path falls back to /var/tmp when the home folder is on one (clusters often share it).
Each machine of a sweep keeps its own table (`prune_env.sweep`).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune_env.checks import read_json
from prune_env.measure.hardware import hardware_id
from prune_env.measure.latency import measure_latency
from prune_env.nn.device import module_device


@dataclass(frozen=True)
class LayerShape:
    """What a layer's latency depends on, recorded from a forward pass."""

    kind: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    groups: int
    height: int
    width: int
    out_height: int = 1  # not part of the key: it follows from the rest
    out_width: int = 1
    #: the output goes straight into another conv (ALF's code conv, say): no BatchNorm or
    #: activation follows, so the overhead model leaves the layer out. Not part of the key.
    fused: bool = False

    def flops(self) -> int:
        """FLOPs at batch 1 as FlopCounterMode counts them: 2 per multiply-accumulate."""
        macs = self.in_channels // self.groups * self.out_channels * self.kernel ** 2
        return 2 * macs * self.out_height * self.out_width

    def key(self, batch: int, hardware: str, threads: int) -> str:
        """The table key on ``hardware`` (`prune_env.measure.hardware.hardware_id`)."""
        return (f"{self.kind}|{self.in_channels}|{self.out_channels}|k{self.kernel}|"
                f"s{self.stride}|g{self.groups}|{self.height}x{self.width}|b{batch}|"
                f"{hardware}|t{threads}")

    def layer(self) -> nn.Module:
        """A stand-alone layer of this shape, for timing."""
        if self.kind == "linear":
            return nn.Linear(self.in_channels, self.out_channels)
        return nn.Conv2d(self.in_channels, self.out_channels, self.kernel, self.stride,
                         self.kernel // 2, groups=self.groups, bias=False)

    def input_shape(self) -> tuple[int, ...]:
        if self.kind == "linear":
            return (self.in_channels,)
        return (self.in_channels, self.height, self.width)


def layer_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, LayerShape]:
    """The shapes of every conv and linear layer by name, in forward order, at batch 1."""
    shapes: dict[str, LayerShape] = {}
    # conv outputs by id, kept alive so that no later tensor can reuse an id
    produced: dict[int, tuple[str, torch.Tensor, int]] = {}

    def hook(name):
        def record(module, inputs, out):
            x = inputs[0]
            # a conv read another conv's output as it was (an in-place activation would
            # have bumped the tensor's version)
            if id(x) in produced and produced[id(x)][2] == x._version:
                source = produced[id(x)][0]
                shapes[source] = dataclasses.replace(shapes[source], fused=True)
            if isinstance(module, nn.Conv2d):
                produced[id(out)] = (name, out, out._version)
            if isinstance(module, nn.Conv2d):
                shapes[name] = LayerShape("conv", module.in_channels, module.out_channels,
                                          module.kernel_size[0], module.stride[0],
                                          module.groups, x.shape[-2], x.shape[-1],
                                          out.shape[-2], out.shape[-1])
            else:
                shapes[name] = LayerShape("linear", module.in_features, module.out_features,
                                          1, 1, 1, 1, 1)
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=module_device(model)))
    finally:
        model.train(was)
        for handle in handles:
            handle.remove()
    return shapes


def default_table_path() -> Path:
    """``$PRUNE_ENV_CACHE/latency-table.json`` (default ``~/.cache/prune-env``, or
    ``/var/tmp/prune-env-UID`` where the home folder is on a network file system)."""
    root = Path(os.environ.get("PRUNE_ENV_CACHE", Path.home() / ".cache" / "prune-env"))
    if "PRUNE_ENV_CACHE" not in os.environ and network_filesystem(root):
        root = Path("/var/tmp") / f"prune-env-{os.getuid()}"
    return root / "latency-table.json"


#: File system types whose file locks do not hold between machines.
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "ceph",
                       "glusterfs", "lustre", "gpfs", "beegfs", "fuse.sshfs",
                       "fuse.glusterfs", "fuse.ceph", "fuse.s3fs", "fuse.gcsfuse")


def network_filesystem(path: Path, mounts: str = "/proc/mounts") -> str | None:
    """The network file system type ``path`` is on (its closest mount point's), or None."""
    try:
        table = Path(mounts).read_text().splitlines()
    except OSError:  # not Linux: no way to tell, assume local
        return None
    path = path.absolute()
    best, kind = -1, None
    for line in table:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(fields[1].replace("\\040", " "))
        if (path == point or point in path.parents) and len(point.parts) > best:
            best, kind = len(point.parts), fields[2]
    return kind if kind in NETWORK_FILESYSTEMS else None


#: The layer every entry is timed against, interleaved: a mid-sized 3x3 conv.
REFERENCE = LayerShape("conv", 32, 32, 3, 1, 1, 16, 16, 16, 16)


class FixedInput(nn.Module):
    """A layer run on its own fixed input, whatever it is given: lets the reference be timed
    interleaved with a layer of another input shape by `measure_latency`."""

    def __init__(self, shape: LayerShape, batch: int):
        super().__init__()
        self.layer = shape.layer()
        self.register_buffer("x", torch.randn(batch, *shape.input_shape(),
                                              generator=torch.Generator().manual_seed(0)))

    def forward(self, _):
        return self.layer(self.x)


class LatencyTable:
    """Per-layer latencies for one device, thread count and batch, cached in a file.

    Keys name the hardware (the CPU model or GPU name, `hardware_id`), so one file can
    hold several machines' tables and never mixes them.

    Entries are ratios to `REFERENCE` timed interleaved with them (see the module
    docstring); `layer_ms` turns them into milliseconds with the reference's time stored
    when the table was started.

    Example:
        >>> table = LatencyTable("/tmp/lut.json", device="cpu", threads=1)  # doctest: +SKIP
        >>> table.network_ms(model, (1, 28, 28))  # times unseen layers, then sums
    """

    def __init__(self, path: str | Path | None = None, *, device: str = "cpu",
                 threads: int | None = None, batch: int = 1, repeats: int = 10):
        self.path = Path(path) if path else default_table_path()
        remote = network_filesystem(self.path)
        if remote:
            raise ValueError(f"latency table {self.path} is on a network file system ({remote}) "
                             "whose file locks do not hold between machines: give each "
                             "machine a table on a local disk (--latency-table /var/tmp/...)")
        self.device = device
        self.hardware = hardware_id(device)
        self.threads = threads or torch.get_num_threads()
        self.batch = batch
        self.repeats = repeats
        # A float (ms per reference ms) per layer key; `CostMeter.calibrate` also stores its
        # [per_layer, per_element] overhead fits here.
        self.entries: dict[str, Any] = {}
        if self.path.exists():
            self.entries = self._read()
        self.measured = 0  # layer shapes this process timed
        self._held = False

    @property
    def reference_key(self) -> str:
        return "reference|" + REFERENCE.key(self.batch, self.hardware, self.threads)

    def reference(self) -> nn.Module:
        """The reference layer, to time interleaved with anything (it ignores its input)."""
        return FixedInput(REFERENCE, self.batch)

    def to_ms(self, timed_ms: float, reference_ms: float) -> float:
        """A time taken interleaved with the reference, in the table's milliseconds."""
        return timed_ms / reference_ms * self.entries[self.reference_key]

    @contextmanager
    def computing(self) -> Iterator[None]:
        """Hold while computing (training, validating): timings wait for the block's end."""
        with self._locked(fcntl.LOCK_SH):
            yield

    @contextmanager
    def timing(self) -> Iterator[None]:
        """Hold while timing: waits until no process sharing the table is computing, and
        keeps them from starting. Re-entrant within a process."""
        with self._locked(fcntl.LOCK_EX):
            yield

    @contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        if self._held:  # already held by this process: flock would deadlock on itself
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as handle:
            fcntl.flock(handle, mode)
            self._held = True
            try:
                yield
            finally:
                self._held = False
                fcntl.flock(handle, fcntl.LOCK_UN)

    def layer_ms(self, shape: LayerShape) -> float:
        """The layer's latency, timed now if the table has not seen its shape."""
        key = "relative|" + shape.key(self.batch, self.hardware, self.threads)
        if key not in self.entries:
            with self.timing():
                self.reload()  # another process may have timed it meanwhile
                if key not in self.entries:
                    self._time(shape, key)
        return self.entries[key] * self.entries[self.reference_key]

    def _time(self, shape: LayerShape, key: str) -> None:
        # the layer's random weights must not move the global RNG: whether a shape is timed
        # depends on the cache, and agents sample from that RNG
        with torch.random.fork_rng(devices=[]):
            result = measure_latency({"layer": shape.layer(), "ref": self.reference()},
                                     shape.input_shape(), batch=self.batch,
                                     device=self.device, threads=self.threads, warmup=2,
                                     blocks=3, repeats=self.repeats)
        reference = result["ref"].estimate_ms
        self.entries.setdefault(self.reference_key, reference)
        self.entries[key] = result["layer"].estimate_ms / reference
        self.save()
        self.measured += 1

    def reload(self) -> None:
        """Add the entries other processes saved (ours are never replaced)."""
        if self.path.exists():
            self.entries = self._read() | self.entries

    def _read(self) -> dict[str, Any]:
        """The table's entries; a file that is not a table is refused, never overwritten."""
        entries = read_json(self.path, "a latency table",
                            "give another --latency-table or remove it")
        if not isinstance(entries, dict) or not all(
                isinstance(v, (int, float, list)) for v in entries.values()):
            raise ValueError(f"{self.path} is not a latency table (expected an object of "
                             "timings); give another --latency-table or remove it")
        return entries

    def network_ms(self, model: nn.Module, input_shape: tuple[int, ...]) -> float:
        """Sum of the table's entries over the network's layers (uncalibrated)."""
        return sum(self.layers_ms(layer_shapes(model, input_shape)).values())

    def layers_ms(self, shapes: dict[str, LayerShape]) -> dict[str, float]:
        """Each layer's entry (timing unseen shapes now)."""
        return {name: self.layer_ms(shape) for name, shape in shapes.items()}

    def save(self) -> None:
        """Merge our entries into the file, atomically (a killed run never leaves a broken
        file). Called under `timing`, so no other process writes meanwhile."""
        self.reload()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.entries, indent=0, sort_keys=True))
        tmp.replace(self.path)
