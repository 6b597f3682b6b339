"""The GPU paths, run where an NVIDIA GPU is visible (`make gpu`); skipped elsewhere, with the
reason. The same code runs on the CPU in every other test."""

from __future__ import annotations

import copy
import json
import time

import pytest
import torch

from prune_env.cli.main import main
from prune_env.data.datasets import Split, placed
from prune_env.data.task import Classification
from prune_env.measure.confidence import paired_ratio_interval
from prune_env.measure.latency import measure_latency
from prune_env.nn.device import module_device
from prune_env.nn.models import build_model
from prune_env.nn.surgery import compact
from prune_env.training.loop import TrainConfig, evaluate, train_steps

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="no CUDA GPU visible here (torch.cuda.is_available() "
                                        "is False): run `make gpu` on a machine with one")]


def half(model):
    keep = {n: torch.arange(m.out_channels) % 2 == 0 for n, m in model.named_modules()
            if isinstance(m, torch.nn.Conv2d)}
    return compact(model, keep)


def test_cuda_timing_sees_a_half_width_network_faster_with_an_interval():
    model = build_model("resnet56", 3, 10, (32, 32)).eval()
    timed = measure_latency({"base": model, "half": half(model)}, (3, 32, 32), batch=256,
                            device="cuda", blocks=15, repeats=5)
    ratio = timed["half"].estimate_ms / timed["base"].estimate_ms
    interval = paired_ratio_interval(timed["base"].block_ms, timed["half"].block_ms)
    assert timed["base"].device == "cuda" and ratio < 0.9
    assert interval.low <= ratio <= interval.high


def test_nvml_energy_rises_under_load():
    from prune_env.measure.energy import auto_meter, measure_energy

    meter = auto_meter("cuda")
    a = torch.randn(4096, 4096, device="cuda")
    idle = measure_energy(lambda: time.sleep(0.01), meter, min_seconds=1.0)
    busy = measure_energy(lambda: a @ a, meter, min_seconds=1.0,
                          sync=torch.cuda.synchronize)
    idle_j = idle.joules_per_inference * idle.inferences / idle.seconds  # watts
    busy_j = busy.joules_per_inference * busy.inferences / busy.seconds
    assert busy_j > 1.2 * idle_j > 0


def test_a_finetune_step_on_cuda_matches_the_cpu_one(synthetic):
    torch.manual_seed(0)
    cpu = build_model("resnet20", synthetic.in_channels, 10, synthetic.image_size)
    gpu = copy.deepcopy(cpu).cuda()
    config = TrainConfig(lr=0.01, batch_size=64, augment=False)
    for model, split in ((cpu, synthetic.train), (gpu, synthetic.train.to("cuda"))):
        train_steps(model, split, Classification(), 3, config, torch.Generator().manual_seed(1))
    for (name, a), b in zip(cpu.state_dict().items(), gpu.state_dict().values(), strict=True):
        if a.is_floating_point():
            assert torch.allclose(a, b.cpu(), rtol=1e-3, atol=1e-4), name
    val = synthetic.val
    assert evaluate(gpu, Split(val.images.cuda(), val.labels.cuda()), Classification()) == \
        pytest.approx(evaluate(cpu, val, Classification()), abs=0.01)


def test_bf16_finetuning_on_cuda_trains(synthetic):
    torch.manual_seed(0)
    model = build_model("resnet20", synthetic.in_channels, 10, synthetic.image_size).cuda()
    data = placed(synthetic, "cuda")
    before = evaluate(model, data.val, Classification())
    train_steps(model, data.train, Classification(), 60,
                TrainConfig(lr=0.05, batch_size=64, augment=True, amp="bf16"),
                torch.Generator().manual_seed(1))
    assert evaluate(model, data.val, Classification()) > before + 0.1


def test_a_whole_episode_runs_on_cuda_and_is_timed_there(make_env):
    env = make_env(device="cuda")
    bench = env.unwrapped.bench
    assert module_device(bench.base_model).type == "cuda"
    assert bench.data.train.images.is_cuda  # a small data set lives on the GPU whole
    obs, _ = env.reset(seed=0)
    done, info = False, {}
    while not done:
        keep = torch.ones(bench.max_filters, dtype=torch.int8).numpy()
        keep[::2] = 0
        obs, _, done, _, info = env.step({"keep": keep, "finetune": [0.5]})
    report = info["final"]
    assert report.device == "cuda" and report.hardware.startswith("cuda:")
    assert module_device(env.unwrapped.model).type == "cuda"
    assert report.cost_ratio_ci is not None and report.pruned.test_accuracy > 0.2


def test_training_on_cuda_and_timing_on_the_cpu(make_env):
    env = make_env(device="cuda", measure_device="cpu")
    env.reset(seed=0)
    assert env.unwrapped.bench.meter.device == "cpu"
    assert env.unwrapped.bench.meter.table.hardware.startswith("cpu:")


def test_an_l2pf_run_on_cuda(tmp_path, checkpoint, latency_table):
    runs = tmp_path / "runs"
    assert main(["train", "--agent", "l2pf", "--episodes", "1", "--tries", "2",
                 "--dataset", "synthetic", "--synthetic-size", "1500", "--image-size", "16",
                 "--checkpoint", str(checkpoint[0]), "--max-finetune-steps", "4",
                 "--val-samples", "300", "--latency-table", latency_table,
                 "--final-steps", "5", "--target", "0.8", "--device", "cuda",
                 "--runs-dir", str(runs)]) == 0
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    report = json.loads((run / "report.json").read_text())
    assert report["device"] == "cuda" and report["exports"]["onnx"]["max_abs_diff"] < 1e-3


def test_onnxruntime_cuda_provider_runs_the_export(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here (install onnxruntime-gpu)")
    from prune_env.runs.export import export

    model = build_model("resnet20", 3, 10, (32, 32)).eval()
    path = export(model, (3, 32, 32), tmp_path, "onnx").path
    session = ort.InferenceSession(path, providers=["CUDAExecutionProvider"])
    x = torch.randn(2, 3, 32, 32)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        assert abs(got - model(x).numpy()).max() < 1e-3
