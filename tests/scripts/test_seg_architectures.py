"""scripts/seg_architectures.py on a tiny budget (two networks, 200 scenes, one epoch, a
64x128 deploy frame): its numbers agree with the library's, its intervals hold their
estimates, and its run directory is resumed by the same command and refused to another."""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import pytest
import torch

from prune_env.measure import count_params
from prune_env.measure.energy import EnergyMeter, measure_energy
from prune_env.nn.models import build_model
from prune_env.training.checkpoint import load_base

MODELS = ["resnet20-fcn", "lraspp_mobilenet_v3_large"]
TINY = ["--synthetic-size", "200", "--epochs", "1", "--deploy-shape", "1x64x128",
        "--train-warmup", "1", "--train-blocks", "5", "--train-repeats", "2",
        "--deploy-warmup", "1", "--deploy-blocks", "5", "--deploy-repeats", "1"]


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("seg_architectures")


@pytest.fixture(scope="module")
def finished(script, tmp_path_factory):
    """The run directory of one tiny comparison and its results.json."""
    out = tmp_path_factory.mktemp("seg") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a core shared with other work: 2 threads wait on each other
    try:
        assert script.main(["--out", str(out), "--models", *MODELS, *TINY]) == 0
    finally:
        torch.set_num_threads(threads)
    return out, json.loads((out / "results.json").read_text())


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: (size, mtime in ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_params_flops_and_miou_agree_with_the_library(finished):
    out, results = finished
    rows = {r["name"]: r for r in results["rows"]}
    assert list(rows) == MODELS
    for name, row in rows.items():
        assert row["params"] == count_params(build_model(name, 1, 11, (64, 64)))
        # a fully convolutional network's FLOPs grow with the pixels: 64x128 is twice 64x64
        assert row["gflops_deploy"] / row["gflops_train"] == pytest.approx(2.0, rel=0.1)
        _, meta = load_base(out / "checkpoints" / f"{name}.pt")
        assert meta["metric"] == "miou" and 0.0 <= row["test_miou"] <= 1.0
        assert row["test_miou"] == meta["test_accuracy"]
        assert row["train_seconds"] == meta["train_seconds"] > 0


def test_latency_intervals_hold_their_estimates_and_the_reference_is_one(finished):
    _, results = finished
    reference, other = results["rows"]
    for shape in ("train", "deploy"):
        assert reference[f"ratio_{shape}"] == {"value": 1.0, "low": 1.0, "high": 1.0}
        ratio = other[f"ratio_{shape}"]
        assert 0 < ratio["low"] <= ratio["value"] <= ratio["high"]
        for row in (reference, other):
            ms = row[f"latency_{shape}_ms"]
            assert 0 < ms["low"] <= ms["value"] <= ms["high"]
        assert ratio["value"] == pytest.approx(
            other[f"latency_{shape}_ms"]["value"] / reference[f"latency_{shape}_ms"]["value"])


def test_the_tables_and_the_plot_are_written(finished):
    out, results = finished
    with (out / "results.csv").open() as f:
        lines = list(csv.DictReader(f))
    assert [r["name"] for r in lines] == MODELS
    assert float(lines[1]["ratio_deploy_low"]) == results["rows"][1]["ratio_deploy"]["low"]
    table = (out / "results.md").read_text()
    assert all(f"| {name} |" in table for name in MODELS)
    if results["rows"][0]["energy_mj"] is None:  # this machine has no energy sensor
        assert "not metered" in table
    assert (out / "results.png").stat().st_size > 10_000


def test_the_same_command_reuses_everything_and_another_is_refused(script, finished, capsys):
    out, _ = finished
    before = snapshot(out)
    assert script.main(["--out", str(out), "--models", *MODELS, *TINY]) == 0
    again = snapshot(out)
    kept = [f for f in before if f.startswith("checkpoints") or f == "measured.json"]
    assert kept and all(again[f] == before[f] for f in kept)  # no training, no timing
    assert script.main(["--out", str(out), "--models", *MODELS, *TINY, "--epochs", "2"]) == 2
    assert "pretrain.epochs: 1.0 in" in capsys.readouterr().err
    assert snapshot(out) == again


@pytest.mark.parametrize("models, shape, message", [
    (["resnet20-fcn", "no_such_net"], "1x64x128", "unknown model 'no_such_net'"),
    (["resnet20-fcn", "resnet20"], "1x64x128", "resnet20 is a classification model"),
    (["resnet20-fcn", "fpn-resnet18"], "1x64x100", "divisible by 32"),
    (["resnet20-fcn"], "3x64x128", "1 channel(s), not 3"),
])
def test_what_cannot_run_is_refused_before_anything_is_made(script, tmp_path, capsys, models,
                                                              shape, message):
    out = tmp_path / "run"
    args = ["--out", str(out), "--models", *models, "--synthetic-size", "200"]
    assert script.main([*args, "--deploy-shape", shape]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


class HalfJoule(EnergyMeter):
    """A meter that counts 0.5 J per window, whatever ran."""

    name = "fake"

    def begin(self) -> None:
        pass

    def end(self) -> float:
        return 0.5


def test_energy_is_measured_per_image_where_a_meter_works(script, monkeypatch):
    monkeypatch.setattr(script, "auto_meter", lambda device: HalfJoule())
    # a window of one inference: 0.5 J each
    monkeypatch.setattr(script, "measure_energy", functools.partial(measure_energy,
                                                                      min_seconds=0.0))
    net = build_model("resnet20-fcn", 1, 11, (32, 32)).eval()
    energy, meter = script.energy_per_image({"a": net, "b": net}, (1, 32, 32), threads=1)
    assert meter == "fake" and energy == {"a": 500.0, "b": 500.0}  # mJ per image
