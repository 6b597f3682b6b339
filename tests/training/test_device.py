"""The device options on a machine without a GPU: the same code paths on the CPU, mixed
precision, and clear refusals of a device that is not there."""

from __future__ import annotations

import copy

import pytest
import torch

from prune_env.cli.main import main
from prune_env.data.datasets import placed
from prune_env.data.task import Classification
from prune_env.envs.bench import usable_device
from prune_env.nn.device import cpu_copy, module_device, on_cpu, same_device
from prune_env.nn.models import build_model
from prune_env.training.loop import TrainConfig, evaluate, train_steps

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")


def test_bf16_autocast_finetunes_on_the_cpu_close_to_float32(synthetic, checkpoint):
    """Fine-tuning (what --amp is for) from the trained base: bf16 ends within a few points
    of float32, with other weights than float32's (autocast really ran). From scratch, 40
    steps diverge by chance alone (0.74 vs 0.93 on an EPYC with avx512_bf16). 12 steps: a
    bf16 step on a CPU costs several float32 ones."""
    from prune_env.training.checkpoint import load_base

    base, _ = load_base(checkpoint[0])
    scores, weights = {}, {}
    for amp in ("off", "bf16"):
        model = copy.deepcopy(base)
        train_steps(model, synthetic.train, Classification(), 12,
                    TrainConfig(lr=0.01, batch_size=64, augment=False, amp=amp),
                    torch.Generator().manual_seed(1))
        scores[amp] = evaluate(model, synthetic.val, Classification())
        weights[amp] = next(model.parameters())
        assert weights[amp].dtype == torch.float32  # autocast: the weights stay float32
    chance = 1 / synthetic.num_classes
    assert scores["bf16"] > chance + 0.3 and abs(scores["bf16"] - scores["off"]) < 0.05, scores
    assert not torch.equal(weights["bf16"], weights["off"])
    with pytest.raises(ValueError, match="unknown amp"):
        train_steps(copy.deepcopy(base), synthetic.train, Classification(), 1,
                    TrainConfig(amp="fp8"), torch.Generator())


def test_on_the_cpu_nothing_is_copied_or_moved(synthetic):
    model = build_model("resnet20", 3, 10, (16, 16))
    assert cpu_copy(model) is model and module_device(model) == torch.device("cpu")
    assert placed(synthetic, "cpu") is synthetic
    assert same_device("cpu", torch.device("cpu")) and not same_device("cpu", "meta")

    @on_cpu
    def identity(net, masks):
        assert all(m.device.type == "cpu" for m in masks.values())
        return net

    assert identity(model, {"0": torch.ones(3)}) is model


@no_gpu
def test_a_cuda_device_without_a_gpu_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="no CUDA GPU is visible.*--device cpu"):
        usable_device("cuda:1")
    assert usable_device("cpu") == torch.device("cpu")


@no_gpu
@pytest.mark.parametrize("option", ["--device", "--measure-device"])
def test_the_command_line_refuses_a_missing_gpu_with_exit_code_2(option, tmp_path, capsys,
                                                                  checkpoint):
    runs = tmp_path / "runs"
    assert main(["episode", "--dataset", "synthetic", "--synthetic-size", "1500",
                 "--image-size", "16", "--checkpoint", str(checkpoint[0]), option, "cuda",
                 "--runs-dir", str(runs)]) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err
    assert not runs.exists() or not any(runs.iterdir())  # nothing half-made


def test_measurement_may_name_its_own_device(make_env):
    env = make_env(device="cpu", measure_device="cpu")
    assert env.unwrapped.bench.meter.device == "cpu"
    assert env.unwrapped.bench.meter.table.hardware.startswith("cpu:")
