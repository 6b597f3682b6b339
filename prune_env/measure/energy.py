"""Energy per inference, measured by a hardware sensor behind one small interface.

Every backend is an :class:`EnergyMeter`: ``begin()`` marks the start of a window and
``end()`` returns the joules consumed since then. :func:`auto_meter` picks the first
backend that works for a device, and :func:`measure_energy` turns a meter into joules
per inference.

Backends:

* :class:`NvmlMeter` -- NVIDIA GPUs through NVML (package ``nvidia-ml-py``, module
  ``pynvml``). Reads the board's cumulative energy counter
  (``nvmlDeviceGetTotalEnergyConsumption``, millijoules, Volta or newer). The counter is
  refreshed only every 20-100 ms, so windows must be much longer than that.
* :class:`RaplMeter` -- CPU packages through Linux powercap/RAPL
  (``/sys/class/powercap/intel-rapl:N/energy_uj``, microjoules). Only top-level package
  zones are summed: sub-zones (``intel-rapl:N:M``, core/uncore/dram) are already part of
  their package. Since Linux 5.10 ``energy_uj`` is readable by root only.
* :class:`JetsonMeter` -- NVIDIA Jetson boards through the INA3221 power monitors
  (``/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/in{i}_input`` in mV and
  ``curr{i}_input`` in mA; on L4T 32 and older, the ``ina3221x`` driver's
  ``*/iio:device*/in_power{i}_input`` in mW). These give instantaneous power only, so a
  background thread samples it and ``end()`` integrates over time.

`measure_idle_watts` gives a sensor's power with nothing running, so that reports put the
net energy of an inference (above idle) beside the total.

No backend ever makes a number up: when no sensor is usable,
:class:`EnergyUnavailableError` says what is missing and what to use instead.
"""

from __future__ import annotations

import abc
import functools
import importlib
import itertools
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Self

from prune_env.catalog import ENERGY_METERS

DEFAULT_RAPL_ROOT = Path("/sys/class/powercap")
DEFAULT_JETSON_ROOT = Path("/sys/bus/i2c/drivers/ina3221")

# Top-level package zones only ("intel-rapl:0", "amd-rapl:1"). This excludes sub-zones
# ("intel-rapl:0:1"), which are part of their package, and "intel-rapl-mmio:0", which
# reports the same package energy through another interface and would double count.
_RAPL_PACKAGE_ZONE = re.compile(r"[a-z]+-rapl:\d+")

# Jetson channels 1..3 are the rails of one INA3221; higher channels (Orin's in7, "sum
# of shunt voltages") are derived values, not rails.
_JETSON_CHANNELS = (1, 2, 3)

# On boards that monitor the module input, that rail already contains every other rail.
_JETSON_TOTAL_RAIL = "VDD_IN"

_FALLBACK_HINT = "use cost='latency' or 'flops' instead"


class EnergyUnavailableError(RuntimeError):
    """No usable energy sensor: missing hardware, driver, package or permission."""


class EnergyMeter(abc.ABC):
    """Measures the energy consumed between :meth:`begin` and :meth:`end`.

    Meters can be used as context managers; leaving the block calls :meth:`close`.
    """

    name: str = "energy"

    @abc.abstractmethod
    def begin(self) -> None:
        """Start a measurement window."""

    @abc.abstractmethod
    def end(self) -> float:
        """Close the window opened by :meth:`begin`.

        Returns:
            Joules consumed since the matching :meth:`begin`.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, most meters hold nothing
        """Release the sensor. The default has nothing to release."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _read_int(path: Path) -> int:
    """Read one integer from a sysfs file.

    Args:
        path: File holding a single decimal integer.

    Returns:
        The integer.
    """
    return int(path.read_text().strip())


def _read_sensor(path: Path, backend: str) -> int:
    """Read a sensor file, turning a permission problem into an actionable error.

    Args:
        path: Sysfs file to read.
        backend: Backend name for the error message.

    Returns:
        The integer in the file.

    Raises:
        EnergyUnavailableError: The file exists but this user may not read it.
    """
    try:
        return _read_int(path)
    except PermissionError as exc:
        raise EnergyUnavailableError(
            f"{backend}: cannot read {path} (permission denied); run as root or "
            f"`sudo chmod a+r {path}`, or {_FALLBACK_HINT}"
        ) from exc


# --------------------------------------------------------------------------- NVML


def _import_pynvml() -> ModuleType:
    """Import ``pynvml`` only when an NVML meter is asked for, so CPU-only installs work.

    Returns:
        The ``pynvml`` module.

    Raises:
        EnergyUnavailableError: ``nvidia-ml-py`` is not installed.
    """
    try:
        import pynvml
    except ImportError as exc:
        raise EnergyUnavailableError(
            "NVML: Python package nvidia-ml-py is not installed; "
            f"`pip install nvidia-ml-py`, or {_FALLBACK_HINT}"
        ) from exc
    return pynvml


class NvmlMeter(EnergyMeter):
    """GPU energy from NVML's cumulative counter (millijoules, Volta or newer).

    The counter only advances every 20-100 ms, so use windows of a second or more
    (see :func:`measure_energy`).
    """

    name = "nvml"

    def __init__(self, device_index: int | str = 0) -> None:
        """Open the GPU and check that it has an energy counter.

        Args:
            device_index: NVML device index (PCI bus order, not CUDA's default order), or
                the GPU's UUID ("GPU-...").

        Raises:
            EnergyUnavailableError: No package, no driver, no such GPU, or no counter.
        """
        self._nvml = _import_pynvml()
        error_type = getattr(self._nvml, "NVMLError", Exception)
        try:
            self._nvml.nvmlInit()
        except error_type as exc:
            raise EnergyUnavailableError(
                f"NVML: cannot initialise ({exc}); needs an NVIDIA GPU with its driver "
                f"loaded, or {_FALLBACK_HINT}"
            ) from exc
        self._start_mj: int | None = None
        try:
            self._handle = (self._nvml.nvmlDeviceGetHandleByUUID(device_index)
                            if isinstance(device_index, str)
                            else self._nvml.nvmlDeviceGetHandleByIndex(device_index))
            # Probe now so auto_meter can fall back instead of failing mid-measurement.
            self._read_mj()
        except error_type as exc:
            self._nvml.nvmlShutdown()
            raise EnergyUnavailableError(
                f"NVML: GPU {device_index} has no readable energy counter ({exc}); it "
                f"needs a Volta or newer GPU, or {_FALLBACK_HINT}"
            ) from exc
        self._closed = False

    def _read_mj(self) -> int:
        """Returns: the GPU's energy counter in millijoules since driver load."""
        return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))

    def begin(self) -> None:
        """Remember the counter at the start of the window."""
        self._start_mj = self._read_mj()

    def end(self) -> float:
        """Returns: joules since :meth:`begin` (the 64-bit counter does not wrap)."""
        if self._start_mj is None:
            raise RuntimeError("NvmlMeter.end() called without begin()")
        joules = (self._read_mj() - self._start_mj) / 1e3
        self._start_mj = None
        return joules

    def close(self) -> None:
        """Shut NVML down once; nvmlInit/nvmlShutdown are reference counted."""
        if not self._closed:
            self._closed = True
            self._nvml.nvmlShutdown()


# --------------------------------------------------------------------------- RAPL


@dataclass(frozen=True)
class _RaplZone:
    energy_path: Path
    max_range_uj: int


def _find_rapl_zones(root: Path) -> list[_RaplZone]:
    """Find the top-level package zones under a powercap root.

    Args:
        root: Powercap directory, normally ``/sys/class/powercap``.

    Returns:
        The package zones, sorted by name; empty when there are none.
    """
    zones = []
    for zone in sorted(root.glob("*-rapl:*")):
        if not _RAPL_PACKAGE_ZONE.fullmatch(zone.name):
            continue
        name_file = zone / "name"
        # "psys" (platform) zones on laptops include the packages: skip to avoid double counting.
        if name_file.is_file() and name_file.read_text().strip() == "psys":
            continue
        energy = zone / "energy_uj"
        max_range = zone / "max_energy_range_uj"
        if energy.is_file() and max_range.is_file():
            zones.append(_RaplZone(energy, _read_sensor(max_range, "RAPL")))
    return zones


def _counter_delta(before: int, after: int, max_range: int) -> int:
    """Difference of a wrapping counter, assuming at most one wrap in between.

    Args:
        before: Reading at the start.
        after: Reading at the end.
        max_range: The value at which the counter wraps back to zero.

    Returns:
        The amount counted between the two readings.
    """
    delta = after - before
    # At 100 W a package counter wraps roughly every 45 min, so one wrap is enough.
    return delta + max_range if delta < 0 else delta


class RaplMeter(EnergyMeter):
    """CPU energy from Linux powercap/RAPL, summed over all CPU packages."""

    name = "rapl"

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_RAPL_ROOT) -> None:
        """Find the package zones and check that their counters are readable.

        Args:
            root: Powercap directory, normally ``/sys/class/powercap``.

        Raises:
            EnergyUnavailableError: No package zone, or its counter is unreadable.
        """
        self._zones = _find_rapl_zones(Path(root))
        if not self._zones:
            raise EnergyUnavailableError(
                f"RAPL: no package zone *-rapl:N under {root}; needs an Intel or AMD CPU "
                f"with the intel_rapl driver loaded, or {_FALLBACK_HINT}"
            )
        self._start_uj: list[int] | None = None
        self._read_all()  # fail now, not mid-measurement, when only root may read

    def _read_all(self) -> list[int]:
        """Returns: each zone's counter in microjoules."""
        return [_read_sensor(zone.energy_path, "RAPL") for zone in self._zones]

    def begin(self) -> None:
        """Remember every package counter at the start of the window."""
        self._start_uj = self._read_all()

    def end(self) -> float:
        """Returns: joules since :meth:`begin`, summed over packages, wraps corrected."""
        if self._start_uj is None:
            raise RuntimeError("RaplMeter.end() called without begin()")
        after = self._read_all()
        total_uj = sum(
            _counter_delta(before, now, zone.max_range_uj)
            for zone, before, now in zip(self._zones, self._start_uj, after, strict=True)
        )
        self._start_uj = None
        return total_uj / 1e6


# --------------------------------------------------------------------------- Jetson


@dataclass(frozen=True)
class _JetsonRail:
    """One rail: its power in watts is the product of its readings over ``scale``."""

    label: str
    paths: tuple[Path, ...]  # mV and mA (ina3221), or mW (ina3221x)
    scale: float

    def watts(self) -> float:
        product = 1.0
        for path in self.paths:
            product *= _read_sensor(path, "Jetson")
        return product / self.scale


#: The older driver (L4T 32 and before: TX2, AGX Xavier, Nano on JetPack 4), beside ina3221.
_OLD_DRIVER = "ina3221x"


def _find_jetson_rails(root: Path) -> list[_JetsonRail]:
    """Find the INA3221 rails under the i2c driver directory: the hwmon layout of the
    ``ina3221`` driver (mV and mA per channel), else the iio layout of the older
    ``ina3221x`` driver (mW per channel, ``rail_name_N``), also looked for beside the
    default directory.

    Args:
        root: Driver directory, normally ``/sys/bus/i2c/drivers/ina3221``.

    Returns:
        The rails to sum. If the board monitors its total input (``VDD_IN``), only that
        rail, because the other rails are part of it.
    """
    rails = _hwmon_rails(root) or _iio_rails(root)
    if not rails and root.name != _OLD_DRIVER:
        rails = _iio_rails(root.parent / _OLD_DRIVER)
    totals = [rail for rail in rails if rail.label == _JETSON_TOTAL_RAIL]
    return totals or rails


def _hwmon_rails(root: Path) -> list[_JetsonRail]:
    """Rails of the ``ina3221`` driver: ``*/hwmon/hwmon*/in{i}_input`` (mV), ``curr{i}_input``
    (mA), ``in{i}_label``."""
    rails = []
    for hwmon in sorted(root.glob("*/hwmon/hwmon*")):
        for channel in _JETSON_CHANNELS:
            volts = hwmon / f"in{channel}_input"
            amps = hwmon / f"curr{channel}_input"
            if not (volts.is_file() and amps.is_file()):
                continue
            label_file = hwmon / f"in{channel}_label"
            label = label_file.read_text().strip() if label_file.is_file() else ""
            rails.append(_JetsonRail(label or f"{hwmon.name}/in{channel}", (volts, amps), 1e6))
    return rails


def _iio_rails(root: Path) -> list[_JetsonRail]:
    """Rails of the older ``ina3221x`` driver: ``*/iio:device*/in_power{i}_input`` (mW),
    ``rail_name_{i}``, channels 0 to 2."""
    rails = []
    for device in sorted(root.glob("*/iio:device*")):
        for channel in (0, 1, 2):
            power = device / f"in_power{channel}_input"
            if not power.is_file():
                continue
            name_file = device / f"rail_name_{channel}"
            label = name_file.read_text().strip() if name_file.is_file() else ""
            rails.append(_JetsonRail(label or f"{device.name}/power{channel}", (power,), 1e3))
    return rails


def _trapezoid(samples: list[tuple[float, float]]) -> float:
    """Integrate power samples over time with the trapezoid rule.

    Args:
        samples: ``(seconds, watts)`` pairs in time order.

    Returns:
        Joules; zero for fewer than two samples.
    """
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in itertools.pairwise(samples))


class JetsonMeter(EnergyMeter):
    """Board energy on NVIDIA Jetson, integrated from sampled INA3221 rail power."""

    name = "jetson"

    def __init__(
        self,
        root: str | os.PathLike[str] = DEFAULT_JETSON_ROOT,
        interval_s: float = 0.01,
    ) -> None:
        """Find the rails and check that they are readable.

        Args:
            root: INA3221 driver directory, normally ``/sys/bus/i2c/drivers/ina3221``.
            interval_s: Seconds between power samples taken by the background thread.

        Raises:
            EnergyUnavailableError: No rail found, or a rail is unreadable.
        """
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self._rails = _find_jetson_rails(Path(root))
        if not self._rails:
            raise EnergyUnavailableError(
                f"Jetson: no INA3221 rail (hwmon in{{i}}_input/curr{{i}}_input, or the "
                f"older ina3221x driver's iio in_power{{i}}_input) under {root}; needs an "
                f"NVIDIA Jetson board, or {_FALLBACK_HINT}"
            )
        self.interval_s = interval_s
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._power_w()  # fail now, not in the sampling thread

    def _power_w(self) -> float:
        """Returns: the summed power of all rails in watts."""
        return sum(rail.watts() for rail in self._rails)

    def _sample(self) -> None:
        self._samples.append((time.perf_counter(), self._power_w()))

    def _sample_loop(self) -> None:
        # Errors cannot propagate out of a thread; keep the first one for end() to raise.
        try:
            while not self._stop.wait(self.interval_s):
                self._sample()
        except Exception as exc:
            self._error = exc

    def begin(self) -> None:
        """Take a first sample and start sampling power in the background."""
        self._stop_thread()
        self._error = None
        self._samples = []
        self._sample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_loop, name="jetson-energy", daemon=True)
        self._thread.start()

    def end(self) -> float:
        """Returns: joules since :meth:`begin`, the trapezoid integral of sampled power."""
        if self._thread is None:
            raise RuntimeError("JetsonMeter.end() called without begin()")
        self._stop_thread()
        if self._error is not None:
            raise self._error
        self._sample()  # close the window exactly now, not at the last tick
        return _trapezoid(self._samples)

    def _stop_thread(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        """Stop the sampling thread if a window is still open."""
        self._stop_thread()


# --------------------------------------------------------------------------- zeus


class ZeusMeter(EnergyMeter):
    """Energy through Zeus (`pip install '.[zeus]'`, package ``zeus``): its ``ZeusMonitor``
    measures NVIDIA/AMD GPUs (NVML, AMDSMI) or CPUs (RAPL) over named windows. For users
    who already meter with Zeus; chosen only by name (``--energy-meter zeus``)."""

    name = "zeus"

    def __init__(self, device: str = "cuda", *, module: ModuleType | None = None) -> None:
        """Open a monitor on the device's GPU (its index among the visible ones, as Zeus
        counts them) or on every CPU package.

        Raises:
            EnergyUnavailableError: Zeus is not installed, or it cannot monitor the device.
        """
        kind, index = _parse_device(device)
        if module is None:
            try:
                module = importlib.import_module("zeus.monitor")
            except ImportError:
                raise EnergyUnavailableError(
                    "zeus is not installed: pip install 'prune-env[zeus]' (or zeus), or "
                    "leave --energy-meter at auto") from None
        gpus: list[int] = [index] if kind == "cuda" else []
        cpus: list[int] | None = [] if kind == "cuda" else None  # None: every package
        try:
            self._monitor = module.ZeusMonitor(gpu_indices=gpus, cpu_indices=cpus)
        except Exception as exc:  # Zeus raises its own types for missing drivers
            raise EnergyUnavailableError(f"zeus cannot monitor {device}: {exc}") from None
        self._window = f"prune-env-{id(self)}"
        self._open = False

    def begin(self) -> None:
        if self._open:
            self._monitor.end_window(self._window)  # a window left open by an error
        self._monitor.begin_window(self._window)
        self._open = True

    def end(self) -> float:
        if not self._open:
            raise RuntimeError("ZeusMeter.end() called without begin()")
        self._open = False
        return float(self._monitor.end_window(self._window).total_energy)


# --------------------------------------------------------------------------- selection


def _parse_device(device: str) -> tuple[str, int]:
    """Split a torch-style device string.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (a ``torch.device`` also works).

    Returns:
        The device type and its index (0 when none is given).
    """
    kind, _, index = str(device).partition(":")
    return kind, int(index) if index else 0


def _nvml_index(cuda_index: int) -> int | str:
    """Translate a CUDA device index into NVML's numbering (an index, or a GPU's UUID).

    NVML ignores ``CUDA_VISIBLE_DEVICES``, so ``cuda:0`` with ``CUDA_VISIBLE_DEVICES=2``
    is NVML device 2, and with ``CUDA_VISIBLE_DEVICES=GPU-8f2e...`` the GPU of that UUID.
    NVML counts in PCI bus order; set ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so that CUDA does the
    same on mixed-GPU machines.

    Args:
        cuda_index: Index as in ``cuda:N``.

    Returns:
        The NVML device index or the GPU's UUID.

    Raises:
        EnergyUnavailableError: the device is a MIG slice (NVML's counter is the whole
            GPU's, shared with the other slices) or an entry NVML cannot resolve: never the
            energy of a wrong GPU.
    """
    visible = [e.strip() for e in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    visible = [e for e in visible if e]
    if cuda_index >= len(visible):
        return cuda_index
    entry = visible[cuda_index]
    if entry.isdigit():
        return int(entry)
    if entry.startswith("MIG-"):
        raise EnergyUnavailableError(
            f"NVML: cuda:{cuda_index} is the MIG slice {entry}; NVML's energy counter covers "
            "the whole GPU and every slice on it, so it cannot say what this slice used. "
            "Measure energy on a whole GPU")
    if entry.startswith("GPU-"):
        return entry
    raise EnergyUnavailableError(
        f"NVML: CUDA_VISIBLE_DEVICES entry {entry!r} (for cuda:{cuda_index}) is neither an "
        "index nor a full GPU-... UUID; give one of those so the right GPU is metered")


def auto_meter(
    device: str = "cpu",
    *,
    rapl_root: str | os.PathLike[str] = DEFAULT_RAPL_ROOT,
    jetson_root: str | os.PathLike[str] = DEFAULT_JETSON_ROOT,
    prefer: str = "auto",
) -> EnergyMeter:
    """Return the first energy meter that works for a device, or the one named.

    CUDA devices try NVML, then Jetson (whose GPU NVML does not cover); the CPU tries
    RAPL, then Jetson. Zeus is used only when named.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        prefer: one of `prune_env.catalog.ENERGY_METERS`: "auto", or the only backend
            to try.
        rapl_root: Powercap directory for :class:`RaplMeter`.
        jetson_root: INA3221 driver directory for :class:`JetsonMeter`.

    Returns:
        A ready meter; close it when done.

    Raises:
        EnergyUnavailableError: No backend works; the message lists each one's reason.
    """
    if prefer not in ENERGY_METERS:
        raise ValueError(f"unknown energy meter {prefer!r}: one of {', '.join(ENERGY_METERS)}")
    kind, index = _parse_device(device)
    jetson = functools.partial(JetsonMeter, jetson_root)
    candidates: list[tuple[str, Callable[[], EnergyMeter]]]
    named: dict[str, Callable[[], EnergyMeter]] = {
        "nvml": lambda: NvmlMeter(_nvml_index(index)),
        "rapl": functools.partial(RaplMeter, rapl_root), "jetson": jetson,
        "zeus": functools.partial(ZeusMeter, device)}
    if prefer != "auto":
        make = named[prefer]
        try:
            return make()
        except EnergyUnavailableError as exc:
            raise EnergyUnavailableError(f"--energy-meter {prefer}: {exc}") from None
    if kind == "cuda":
        candidates = [
            ("NVML", functools.partial(NvmlMeter, _nvml_index(index))),
            ("Jetson", jetson),
        ]
    elif kind == "cpu":
        candidates = [("RAPL", functools.partial(RaplMeter, rapl_root)), ("Jetson", jetson)]
    else:
        raise EnergyUnavailableError(
            f"no energy backend for device {device!r}: only 'cpu' and 'cuda' are "
            f"supported; {_FALLBACK_HINT}"
        )
    reasons = []
    for backend, make in candidates:
        try:
            return make()
        except EnergyUnavailableError as exc:
            reasons.append(f"{backend}: {exc}")
    raise EnergyUnavailableError(
        f"no energy sensor found for device {device!r} (tried "
        f"{', '.join(name for name, _ in candidates)}): RAPL needs "
        "/sys/class/powercap/intel-rapl:* readable (run as root or chmod), NVML needs an "
        f"NVIDIA GPU and nvidia-ml-py, Jetson needs INA3221 sysfs; {_FALLBACK_HINT}. "
        f"Details: {' | '.join(reasons)}"
    )


# --------------------------------------------------------------------------- measurement


@dataclass(frozen=True)
class EnergyResult:
    """Energy measured over one window of repeated inferences.

    Attributes:
        joules_per_inference: all the sensor counted in the window, per inference (what a
            battery pays at full duty).
        inferences, seconds, meter: the window.
        idle_watts: the same sensor's power with nothing running (`measure_idle_watts`),
            where measured.
    """

    joules_per_inference: float
    inferences: int
    seconds: float
    meter: str
    idle_watts: float | None = None

    @property
    def net_joules_per_inference(self) -> float | None:
        """What the inferences add above idle: (joules - idle power x window) per
        inference; None where idle power was not measured."""
        if self.idle_watts is None:
            return None
        total = self.joules_per_inference * self.inferences
        return (total - self.idle_watts * self.seconds) / self.inferences


def measure_idle_watts(meter: EnergyMeter, *, seconds: float = 1.0,
                       sleep: Callable[[float], None] = time.sleep) -> float:
    """The sensor's mean power over ``seconds`` of doing nothing (the board's or package's
    idle draw, which every inference window also counts).

    Args:
        meter: energy meter; already open, not closed here.
        seconds: the idle window (at least NVML's refresh period: 1 s by default).
        sleep: how to wait (tests pass a fake clock's).
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    meter.begin()
    start = time.perf_counter()
    sleep(seconds)
    elapsed = max(time.perf_counter() - start, seconds)
    return meter.end() / elapsed


def measure_energy(
    run: Callable[[], None],
    meter: EnergyMeter,
    *,
    min_seconds: float = 1.0,
    sync: Callable[[], None] | None = None,
    idle_watts: float | None = None,
) -> EnergyResult:
    """Measure the energy of one inference by repeating it for a time window.

    Warm the model up before calling: the first runs pay for allocation and autotuning.

    Args:
        run: Performs one inference.
        meter: Energy meter; already open, not closed here.
        min_seconds: Shortest window. NVML's counter only advances every 20-100 ms and
            sampled meters need many samples, so keep it at 1 s or more for real numbers.
        sync: Waits for queued device work, e.g. ``torch.cuda.synchronize``; called
            before the window opens and before it closes, so that asynchronous work is
            counted inside the window and earlier work is not.
        idle_watts: the meter's idle power (`measure_idle_watts`), kept in the result so
            that it gives the net figure beside the total.

    Returns:
        Joules per inference, the number of inferences, the window length and the meter.
    """
    if min_seconds < 0:
        raise ValueError(f"min_seconds must be >= 0, got {min_seconds}")
    if sync is not None:
        sync()
    meter.begin()
    start = time.perf_counter()
    inferences = 0
    while True:
        run()
        inferences += 1
        if time.perf_counter() - start >= min_seconds:
            break
    if sync is not None:
        sync()
    seconds = time.perf_counter() - start
    joules = meter.end()
    return EnergyResult(joules / inferences, inferences, seconds, meter.name, idle_watts)
