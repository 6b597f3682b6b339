"""Energy meters against fake sensors: sysfs trees in tmp_path and a fake pynvml."""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

import pytest

from prune_env.measure import energy
from prune_env.measure.energy import (
    EnergyMeter,
    EnergyResult,
    EnergyUnavailableError,
    JetsonMeter,
    NvmlMeter,
    RaplMeter,
    auto_meter,
    measure_energy,
    measure_idle_watts,
)

# ----------------------------------------------------------------------------- fakes


def make_rapl_zone(root: Path, zone: str, energy_uj: int, max_uj: int, name: str) -> Path:
    path = root / zone
    path.mkdir(parents=True)
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (path / "name").write_text(f"{name}\n")
    return path


def set_counter(zone: Path, energy_uj: int) -> None:
    (zone / "energy_uj").write_text(f"{energy_uj}\n")


def make_jetson_hwmon(
    root: Path, device: str, rails: dict[int, tuple[int, int, str | None]]
) -> Path:
    """rails: channel -> (millivolts, milliamps, label or None)."""
    hwmon = root / device / "hwmon" / "hwmon3"
    hwmon.mkdir(parents=True)
    for channel, (mv, ma, label) in rails.items():
        (hwmon / f"in{channel}_input").write_text(f"{mv}\n")
        (hwmon / f"curr{channel}_input").write_text(f"{ma}\n")
        if label is not None:
            (hwmon / f"in{channel}_label").write_text(f"{label}\n")
    return hwmon


class FakeNVMLError(Exception):
    pass


def make_fake_pynvml(
    readings_mj: list[int], *, init_fails: bool = False, supported: bool = True
) -> types.ModuleType:
    """A pynvml whose energy counter returns the given readings in order."""
    fake = types.ModuleType("pynvml")
    fake.NVMLError = FakeNVMLError
    fake.calls = {"init": 0, "shutdown": 0, "index": None}
    counter = iter(readings_mj)

    def nvmlInit() -> None:
        if init_fails:
            raise FakeNVMLError("Driver Not Loaded")
        fake.calls["init"] += 1

    def nvmlShutdown() -> None:
        fake.calls["shutdown"] += 1

    def nvmlDeviceGetHandleByIndex(index: int) -> str:
        fake.calls["index"] = index
        return f"handle{index}"

    def nvmlDeviceGetTotalEnergyConsumption(handle: str) -> int:
        if not supported:
            raise FakeNVMLError("Not Supported")
        return next(counter)

    fake.nvmlInit = nvmlInit
    fake.nvmlShutdown = nvmlShutdown
    def nvmlDeviceGetHandleByUUID(uuid: str) -> str:
        fake.calls["index"] = uuid
        return f"handle-{uuid}"

    fake.nvmlDeviceGetHandleByIndex = nvmlDeviceGetHandleByIndex
    fake.nvmlDeviceGetHandleByUUID = nvmlDeviceGetHandleByUUID
    fake.nvmlDeviceGetTotalEnergyConsumption = nvmlDeviceGetTotalEnergyConsumption
    return fake


class FakeMeter(EnergyMeter):
    """Reports a fixed number of joules for every window."""

    name = "fake"

    def __init__(self, joules: float) -> None:
        self.joules = joules
        self.begun = 0
        self.ended = 0

    def begin(self) -> None:
        self.begun += 1

    def end(self) -> float:
        self.ended += 1
        return self.joules


# ----------------------------------------------------------------------------- RAPL


def test_rapl_sums_packages_and_ignores_subzones(tmp_path: Path) -> None:
    pkg0 = make_rapl_zone(tmp_path, "intel-rapl:0", 1_000_000, 262_143_328_850, "package-0")
    pkg1 = make_rapl_zone(tmp_path, "intel-rapl:1", 5_000_000, 262_143_328_850, "package-1")
    sub = make_rapl_zone(tmp_path, "intel-rapl:0:0", 0, 262_143_328_850, "core")
    mmio = make_rapl_zone(tmp_path, "intel-rapl-mmio:0", 0, 262_143_328_850, "package-0")

    meter = RaplMeter(tmp_path)
    meter.begin()
    set_counter(pkg0, 3_500_000)  # +2.5 J
    set_counter(pkg1, 5_750_000)  # +0.75 J
    set_counter(sub, 99_000_000)  # part of pkg0: must not be added
    set_counter(mmio, 99_000_000)  # same energy as pkg0 via MMIO: must not be added
    assert meter.end() == pytest.approx(3.25, abs=1e-12)
    assert meter.name == "rapl"


def test_rapl_wraparound_exact_joules(tmp_path: Path) -> None:
    zone = make_rapl_zone(tmp_path, "intel-rapl:0", 999_000_000, 1_000_000_000, "package-0")
    meter = RaplMeter(tmp_path)
    meter.begin()
    set_counter(zone, 2_000_000)  # wrapped: 1 J to the top, then 2 J from zero
    assert meter.end() == 3.0


def test_rapl_skips_psys_zone(tmp_path: Path) -> None:
    pkg = make_rapl_zone(tmp_path, "intel-rapl:0", 0, 10**9, "package-0")
    psys = make_rapl_zone(tmp_path, "intel-rapl:1", 0, 10**9, "psys")
    meter = RaplMeter(tmp_path)
    meter.begin()
    set_counter(pkg, 4_000_000)
    set_counter(psys, 9_000_000)  # platform total already contains the package
    assert meter.end() == 4.0


def test_rapl_permission_denied_says_root_or_chmod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_rapl_zone(tmp_path, "intel-rapl:0", 0, 10**9, "package-0")
    real_read = energy._read_int

    def deny_energy(path: Path) -> int:
        # Tests run as root, so chmod would not stop the read: simulate the kernel's denial.
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path)

    monkeypatch.setattr(energy, "_read_int", deny_energy)
    with pytest.raises(EnergyUnavailableError, match="root or `sudo chmod") as info:
        RaplMeter(tmp_path)
    assert str(tmp_path / "intel-rapl:0" / "energy_uj") in str(info.value)
    assert "latency" in str(info.value)
    assert real_read(tmp_path / "intel-rapl:0" / "max_energy_range_uj") == 10**9


def test_rapl_without_zones_raises(tmp_path: Path) -> None:
    with pytest.raises(EnergyUnavailableError, match="no package zone"):
        RaplMeter(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_rapl_end_without_begin(tmp_path: Path) -> None:
    make_rapl_zone(tmp_path, "intel-rapl:0", 7, 10**9, "package-0")
    meter = RaplMeter(tmp_path)
    with pytest.raises(RuntimeError, match="without begin"):
        meter.end()
    meter.begin()
    assert meter.end() == 0.0


# ----------------------------------------------------------------------------- Jetson


def test_jetson_integrates_constant_power(tmp_path: Path) -> None:
    make_jetson_hwmon(
        tmp_path,
        "1-0040",
        {1: (5000, 2000, "VDD_GPU_SOC"), 2: (1000, 500, "VDD_CPU_CV"), 3: (2000, 250, None)},
    )
    watts = 5000 * 2000 / 1e6 + 1000 * 500 / 1e6 + 2000 * 250 / 1e6  # 11.0 W
    with JetsonMeter(tmp_path, interval_s=0.005) as meter:
        start = time.perf_counter()
        meter.begin()
        time.sleep(0.1)
        joules = meter.end()
        elapsed = time.perf_counter() - start
        samples = len(meter._samples)
    assert watts == 11.0
    assert joules == pytest.approx(watts * elapsed, rel=0.1)
    assert joules <= watts * elapsed  # the window sits inside the outer timing
    assert samples >= 5  # the background thread actually sampled


def test_jetson_uses_only_total_input_rail_when_present(tmp_path: Path) -> None:
    make_jetson_hwmon(
        tmp_path,
        "1-0040",
        {1: (5000, 1000, "VDD_IN"), 2: (5000, 400, "VDD_CPU_GPU_CV"), 3: (5000, 200, "VDD_SOC")},
    )
    meter = JetsonMeter(tmp_path, interval_s=0.005)
    assert meter._power_w() == 5.0  # VDD_IN alone; the others are part of it
    meter.close()


def test_jetson_power_change_is_integrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_jetson_hwmon(tmp_path, "1-0040", {1: (1000, 1000, "VDD_IN")})
    meter = JetsonMeter(tmp_path, interval_s=10.0)  # thread never ticks: only begin/end samples
    clock = iter([1.0, 3.0])
    # Replace the module's `time` only, so pytest's own clock is untouched.
    monkeypatch.setattr(energy, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    meter.begin()  # 1 W at t=1
    (tmp_path / "1-0040/hwmon/hwmon3/curr1_input").write_text("3000\n")
    joules = meter.end()  # 3 W at t=3
    assert joules == 4.0  # trapezoid: 2 s * (1 W + 3 W) / 2


def test_trapezoid_exact() -> None:
    assert energy._trapezoid([(0.0, 1.0), (1.0, 3.0), (3.0, 3.0)]) == 8.0
    assert energy._trapezoid([(0.0, 5.0)]) == 0.0


def test_jetson_without_rails_raises(tmp_path: Path) -> None:
    (tmp_path / "1-0040" / "hwmon" / "hwmon0").mkdir(parents=True)  # no rail files
    with pytest.raises(EnergyUnavailableError, match="no INA3221 rail"):
        JetsonMeter(tmp_path)
    assert energy._find_jetson_rails(tmp_path) == []


# ----------------------------------------------------------------------------- NVML


def test_nvml_exact_joules(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_fake_pynvml([100_000, 100_000, 112_345])  # probe, begin, end (mJ)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    meter = NvmlMeter(device_index=1)
    meter.begin()
    assert meter.end() == 12.345
    meter.close()
    meter.close()
    assert fake.calls == {"init": 1, "shutdown": 1, "index": 1}


def test_nvml_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    with pytest.raises(EnergyUnavailableError, match="pip install nvidia-ml-py"):
        NvmlMeter()


def test_nvml_no_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_fake_pynvml([], init_fails=True)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with pytest.raises(EnergyUnavailableError, match="Driver Not Loaded"):
        NvmlMeter()
    assert fake.calls["init"] == 0


def test_nvml_pre_volta_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_fake_pynvml([], supported=False)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with pytest.raises(EnergyUnavailableError, match="Volta"):
        NvmlMeter()
    assert fake.calls["shutdown"] == 1  # released what it opened


# ----------------------------------------------------------------------------- auto_meter


def test_auto_meter_cpu_picks_rapl(tmp_path: Path) -> None:
    make_rapl_zone(tmp_path / "rapl", "intel-rapl:0", 0, 10**9, "package-0")
    make_jetson_hwmon(tmp_path / "jetson", "1-0040", {1: (5000, 1000, "VDD_IN")})
    meter = auto_meter("cpu", rapl_root=tmp_path / "rapl", jetson_root=tmp_path / "jetson")
    assert isinstance(meter, RaplMeter)
    assert len(meter._zones) == 1


def test_auto_meter_cpu_falls_back_to_jetson(tmp_path: Path) -> None:
    make_jetson_hwmon(tmp_path / "jetson", "1-0040", {1: (5000, 1000, "VDD_IN")})
    meter = auto_meter("cpu", rapl_root=tmp_path / "none", jetson_root=tmp_path / "jetson")
    assert isinstance(meter, JetsonMeter)
    assert meter._power_w() == 5.0
    meter.close()


def test_auto_meter_cuda_picks_nvml_with_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = make_fake_pynvml([0, 0, 2_000])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    meter = auto_meter("cuda:3", rapl_root=tmp_path, jetson_root=tmp_path)
    assert isinstance(meter, NvmlMeter)
    meter.begin()
    assert meter.end() == 2.0
    assert fake.calls["index"] == 3


def test_auto_meter_maps_cuda_visible_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = make_fake_pynvml([0])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    auto_meter("cuda:1", rapl_root=tmp_path, jetson_root=tmp_path)
    assert fake.calls["index"] == 5  # NVML ignores CUDA_VISIBLE_DEVICES


def test_auto_meter_opens_the_gpu_a_uuid_names_and_refuses_a_mig_slice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = make_fake_pynvml([0])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8f2e6a1b,MIG-4f1c2a,gpu0")
    auto_meter("cuda:0", rapl_root=tmp_path, jetson_root=tmp_path)
    assert fake.calls["index"] == "GPU-8f2e6a1b"
    fake.calls["index"] = None
    # never another GPU's energy: a slice's and an unresolvable entry's are refused
    with pytest.raises(EnergyUnavailableError, match="MIG slice MIG-4f1c2a"):
        auto_meter("cuda:1", rapl_root=tmp_path, jetson_root=tmp_path)
    with pytest.raises(EnergyUnavailableError, match="neither an index nor"):
        auto_meter("cuda:2", rapl_root=tmp_path, jetson_root=tmp_path)
    assert fake.calls["index"] is None


def test_auto_meter_cuda_falls_back_to_jetson(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    make_jetson_hwmon(tmp_path, "1-0040", {1: (4000, 500, None)})
    meter = auto_meter("cuda", rapl_root=tmp_path / "none", jetson_root=tmp_path)
    assert isinstance(meter, JetsonMeter)
    assert meter._power_w() == 2.0


@pytest.mark.parametrize(
    ("device", "tried"), [("cpu", "tried RAPL, Jetson"), ("cuda:0", "tried NVML, Jetson")]
)
def test_auto_meter_nothing_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str, tried: str
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    (tmp_path / "rapl").mkdir()
    (tmp_path / "jetson").mkdir()
    with pytest.raises(EnergyUnavailableError) as info:
        auto_meter(device, rapl_root=tmp_path / "rapl", jetson_root=tmp_path / "jetson")
    message = str(info.value)
    assert f"no energy sensor found for device {device!r}" in message
    assert tried in message
    assert "use cost='latency' or 'flops' instead" in message
    assert message.count(" | ") == 1  # one reason per backend tried


def test_auto_meter_unknown_device(tmp_path: Path) -> None:
    with pytest.raises(EnergyUnavailableError, match="'mps'"):
        auto_meter("mps", rapl_root=tmp_path, jetson_root=tmp_path)
    assert energy._parse_device("cuda:2") == ("cuda", 2)
    assert energy._parse_device("cuda") == ("cuda", 0)


# ----------------------------------------------------------------------------- measure_energy


def test_measure_energy_per_inference() -> None:
    meter = FakeMeter(joules=6.0)
    calls = {"run": 0, "sync": 0}

    def run() -> None:
        calls["run"] += 1
        time.sleep(0.002)

    def sync() -> None:
        calls["sync"] += 1

    start = time.perf_counter()
    result = measure_energy(run, meter, min_seconds=0.05, sync=sync)
    outer = time.perf_counter() - start

    assert isinstance(result, EnergyResult)
    assert result.inferences == calls["run"]
    assert result.inferences >= 2
    assert result.joules_per_inference == pytest.approx(6.0 / result.inferences)
    assert 0.05 <= result.seconds <= outer
    assert result.meter == "fake"
    assert calls["sync"] == 2  # before begin and before end
    assert (meter.begun, meter.ended) == (1, 1)


def test_measure_energy_zero_window_runs_once() -> None:
    result = measure_energy(lambda: None, FakeMeter(joules=0.5), min_seconds=0.0)
    assert result.inferences == 1
    assert result.joules_per_inference == 0.5
    with pytest.raises(ValueError, match="min_seconds"):
        measure_energy(lambda: None, FakeMeter(joules=0.5), min_seconds=-1.0)


def test_energy_result_is_frozen() -> None:
    result = EnergyResult(joules_per_inference=1.5, inferences=2, seconds=1.0, meter="x")
    with pytest.raises(AttributeError):
        result.inferences = 3  # type: ignore[misc]
    assert result.joules_per_inference * result.inferences == 3.0


# ----------------------------------------------------------------------------- idle power


class ConstantPower(EnergyMeter):
    """A sensor reading ``watts`` whatever runs: the joules of a window are watts x its
    length (an idle board whose draw inference does not change)."""

    name = "constant"

    def __init__(self, watts: float) -> None:
        self.watts = watts
        self.start = 0.0

    def begin(self) -> None:
        self.start = time.perf_counter()

    def end(self) -> float:
        return self.watts * (time.perf_counter() - self.start)


def test_idle_power_is_the_sensor_power_with_nothing_running() -> None:
    slept: list[float] = []
    assert measure_idle_watts(FakeMeter(joules=6.0), seconds=2.0,
                              sleep=slept.append) == pytest.approx(3.0)
    assert slept == [2.0]
    assert measure_idle_watts(ConstantPower(7.5), seconds=0.05) == pytest.approx(7.5, rel=0.05)
    with pytest.raises(ValueError, match="positive"):
        measure_idle_watts(FakeMeter(joules=1.0), seconds=0.0)


def test_net_energy_is_the_total_less_idle_power_over_the_window() -> None:
    result = measure_energy(lambda: time.sleep(0.002), FakeMeter(joules=6.0),
                            min_seconds=0.02, idle_watts=10.0)
    n = result.inferences
    assert result.idle_watts == 10.0 and result.joules_per_inference == pytest.approx(6.0 / n)
    assert result.net_joules_per_inference == pytest.approx((6.0 - 10.0 * result.seconds) / n)
    # a sensor whose draw inference does not change: all of it is idle, nothing is net
    meter = ConstantPower(20.0)
    idle = measure_idle_watts(meter, seconds=0.05)
    busy = measure_energy(lambda: time.sleep(0.002), meter, min_seconds=0.05,
                          idle_watts=idle)
    assert busy.joules_per_inference > 0.02  # about 20 W x 2 ms
    assert abs(busy.net_joules_per_inference) < 0.1 * busy.joules_per_inference
    assert measure_energy(lambda: None, FakeMeter(1.0), min_seconds=0.0
                          ).net_joules_per_inference is None


def test_jetson_reads_the_older_ina3221x_driver_beside_the_default(tmp_path: Path) -> None:
    """L4T 32 (TX2, AGX Xavier on JetPack 4): iio devices with mW per rail and rail names;
    found beside an empty ina3221 directory, VDD_IN alone where present."""
    (tmp_path / "ina3221").mkdir()
    device = tmp_path / "ina3221x" / "0-0040" / "iio:device0"
    device.mkdir(parents=True)
    for channel, (mw, name) in enumerate([(4200, "GPU"), (1300, "CPU"), (800, "SOC")]):
        (device / f"in_power{channel}_input").write_text(f"{mw}\n")
        (device / f"rail_name_{channel}").write_text(f"{name}\n")
    meter = JetsonMeter(tmp_path / "ina3221", interval_s=0.005)
    assert meter._power_w() == pytest.approx(6.3)  # no total rail: all three summed
    meter.close()
    (device / "rail_name_0").write_text("VDD_IN\n")
    meter = JetsonMeter(tmp_path / "ina3221x", interval_s=0.005)
    assert meter._power_w() == pytest.approx(4.2)
    meter.close()
    with pytest.raises(EnergyUnavailableError, match="ina3221x"):
        JetsonMeter(tmp_path / "nothing" / "ina3221")


# ----------------------------------------------------------------------------- zeus


def fake_zeus(joules: list[float]) -> types.ModuleType:
    """A ``zeus.monitor`` whose windows return the given energies in order."""
    module = types.ModuleType("zeus.monitor")
    readings = iter(joules)
    module.opened = []

    class ZeusMonitor:
        def __init__(self, gpu_indices, cpu_indices):
            module.opened.append((gpu_indices, cpu_indices))
            self.windows: set[str] = set()

        def begin_window(self, key: str) -> None:
            assert key not in self.windows
            self.windows.add(key)

        def end_window(self, key: str):
            self.windows.remove(key)
            return types.SimpleNamespace(total_energy=next(readings))

    module.ZeusMonitor = ZeusMonitor
    return module


def test_zeus_meter_measures_windows_on_the_device_it_names() -> None:
    module = fake_zeus([3.5, 1.25])
    meter = energy.ZeusMeter("cuda:1", module=module)
    assert module.opened == [([1], [])]  # that GPU alone, no CPU package
    result = measure_energy(lambda: None, meter, min_seconds=0.0)
    assert result.joules_per_inference == 3.5 and result.meter == "zeus"
    meter.begin()
    assert meter.end() == 1.25
    with pytest.raises(RuntimeError, match="without begin"):
        meter.end()
    energy.ZeusMeter("cpu", module=fake_zeus([]))


def test_zeus_is_optional_and_asked_for_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_zeus(name: str):
        raise ImportError(name)

    monkeypatch.setattr(energy.importlib, "import_module", no_zeus)
    with pytest.raises(EnergyUnavailableError, match=r"pip install 'prune-env\[zeus\]'"):
        auto_meter("cuda", prefer="zeus")
    with pytest.raises(ValueError, match="unknown energy meter"):
        auto_meter("cpu", prefer="ina")
