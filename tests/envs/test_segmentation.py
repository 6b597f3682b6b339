"""Segmentation episodes: the small FCN on Fashion-MNIST scenes, pruned by each method family,
scored by mIoU, with the command line's checks."""

from __future__ import annotations

import json

import pytest
import torch

from prune_env.cli.main import main
from prune_env.data.datasets import load_data
from prune_env.training.pretrain import PretrainConfig, pretrain

SCENES = {"synthetic_size": 600, "image_size": 32}


@pytest.fixture(scope="module")
def scenes():
    return load_data("fashion-scenes", **SCENES)


@pytest.fixture(scope="module")
def fcn(scenes, tmp_path_factory):
    """The FCN trained briefly on 540 scenes of 32 px: well above an all-background mIoU."""
    path = tmp_path_factory.mktemp("fcn") / "resnet20-fcn-fashion-scenes.pt"
    torch.manual_seed(0)
    _, meta = pretrain("resnet20-fcn", scenes, PretrainConfig(epochs=12, batch_size=32,
                                                              lr=0.1), path, progress=False)
    return path, meta


def test_the_fcn_learns_the_scenes(fcn):
    """Background alone (predicting 0 everywhere) scores about 0.7 / 11 = 0.06 mIoU."""
    _, meta = fcn
    assert meta["metric"] == "miou"
    assert meta["test_accuracy"] > 0.2, meta


def seg_args(fcn, latency_table, tmp_path, *more: str) -> list[str]:
    return ["--model", "resnet20-fcn", "--dataset", "fashion-scenes",
            "--synthetic-size", str(SCENES["synthetic_size"]), "--image-size",
            str(SCENES["image_size"]), "--checkpoint", str(fcn[0]), "--max-finetune-steps", "4",
            "--val-samples", "60", "--threads", "1", "--latency-table", latency_table,
            "--final-steps", "5", "--target", "0.6", "--cost", "flops",
            "--runs-dir", str(tmp_path / "runs"), *more]


def base_flops_at_32(fcn) -> float:
    """The base FCN's conv FLOPs per 32x32 image (2 * MACs)."""
    from prune_env.measure.flops import count_flops
    from prune_env.training.checkpoint import load_base

    model, _ = load_base(fcn[0])
    return count_flops(model, (1, 32, 32))


def report_of(tmp_path) -> dict:
    (report,) = (tmp_path / "runs").glob("*/report.json")
    return json.loads(report.read_text())


@pytest.mark.parametrize("method", ["l1", "swd", "layerprune", "alf", "joint", "gating"])
def test_a_baseline_prunes_a_segmentation_network_to_its_target(method, fcn, latency_table,
                                                                tmp_path):
    more = {"swd": ["--swd-steps", "80"], "alf": ["--alf-steps", "30"],
            "joint": ["--joint-steps", "150"],
            "layerprune": ["--criterion", "imprinting"],
            "gating": ["--gating-steps", "60", "--gating-images", "4", "--predictor-steps", "10",
                       "--deploy-shape", "1x64x64"]}.get(method, [])
    assert main(["baseline", method, "--no-export",
                 *seg_args(fcn, latency_table, tmp_path, *more)]) == 0
    r = report_of(tmp_path)
    assert r["metric"] == "miou" and r["target_met"] == "met"
    assert r["pruned"]["flops"] <= 0.6 * r["base"]["flops"]
    ious = r["pruned"]["test_class_iou"]
    assert len(ious) == 11 and all(i is None or 0.0 <= i <= 1.0 for i in ious)
    present = [i for i in ious if i is not None]
    assert r["pruned"]["test_accuracy"] == pytest.approx(sum(present) / len(present))
    if method == "joint":  # the masks themselves were pulled to the target
        assert r["details"]["joint_training"]["cost_ratio"][-1] <= 0.6 + 0.05
    if method == "gating":  # executed on the test scenes resized to the deployment shape
        assert r["deploy_shape"] == [1, 64, 64] and r["details"]["dynamic"]["images"] == 4
        assert r["base"]["flops"] == pytest.approx(4 * base_flops_at_32(fcn), rel=1e-3)


def test_l2pf_trains_on_a_segmentation_network_and_exports_it(fcn, latency_table, tmp_path):
    assert main(["train", "--agent", "l2pf", "--episodes", "1", "--tries", "2",
                 *seg_args(fcn, latency_table, tmp_path)]) == 0
    r = report_of(tmp_path)
    assert r["metric"] == "miou" and r["target_met"] == "met"
    assert 0.0 < r["pruned"]["test_accuracy"] <= 1.0
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "model.onnx").exists()  # the upsampling decoder exports and checks


def test_ppo_trains_on_a_segmentation_network(fcn, latency_table, tmp_path):
    """stable-baselines3 through the flat wrapper, rewarded on validation mIoU."""
    assert main(["train", "--agent", "ppo", "--episodes", "1", "--no-export",
                 "--sb3", "n_steps=6", *seg_args(fcn, latency_table, tmp_path)]) == 0
    r = report_of(tmp_path)
    assert r["method"] == "ppo" and r["metric"] == "miou"
    assert r["source"] == "deterministic policy" and 0.0 < r["pruned"]["test_accuracy"] <= 1.0
    assert len(r["pruned"]["test_class_iou"]) == 11


def test_a_classifier_on_segmentation_data_is_refused(fcn, latency_table, tmp_path, capsys):
    args = seg_args(fcn, latency_table, tmp_path)
    args[args.index("resnet20-fcn")] = "resnet20"
    assert main(["baseline", "l1", *args]) == 2
    assert "resnet20-fcn" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_costs_are_measured_at_the_deployment_shape(fcn, latency_table, tmp_path):
    """Trained on 32 x 32 scenes, deployed on 64 x 128 frames: FLOPs, latency and the ONNX
    files are the frame's; the report names both shapes."""
    import onnx

    assert main(["baseline", "l1", "--deploy-shape", "1x64x128",
                 *seg_args(fcn, latency_table, tmp_path)]) == 0
    r = report_of(tmp_path)
    assert r["input_shape"] == [1, 32, 32] and r["deploy_shape"] == [1, 64, 128]
    from prune_env.measure import count_flops
    from prune_env.training.checkpoint import load_base

    base, _ = load_base(fcn[0])
    assert r["base"]["flops"] == count_flops(base, (1, 64, 128))
    assert r["base"]["flops"] > 7 * count_flops(base, (1, 32, 32))
    (run,) = (tmp_path / "runs").iterdir()
    dims = onnx.load(run / "model.onnx").graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims][1:] == [1, 64, 128]
    from prune_env.cli.compare import row
    from prune_env.cli.pareto import pareto_figure

    axes = pareto_figure([row(run)]).axes[0]  # the plot says what it shows
    assert axes.get_ylabel() == "test mIoU" and "input 1x64x128" in axes.get_xlabel()


def test_a_classifier_is_deployed_at_its_own_size(checkpoint, latency_table, tmp_path,
                                                  capsys):
    assert main(["episode", "--dataset", "synthetic", "--synthetic-size", "200",
                 "--image-size", "16", "--checkpoint", str(checkpoint[0]),
                 "--deploy-shape", "1x32x32", "--latency-table", latency_table,
                 "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "fully convolutional" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("bad", ["3x0x5", "512x1024", "3x512x1024x1", "ax2x3", ""])
def test_a_bad_deploy_shape_is_refused_before_anything_is_made(bad, tmp_path, capsys):
    assert main(["baseline", "l1", f"--deploy-shape={bad}", "--runs-dir",
                 str(tmp_path / "runs")]) == 2
    assert "--deploy-shape" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_mismatches_are_refused_before_data_or_a_base_is_made(tmp_path, monkeypatch, capsys):
    """A classifier on scenes is refused before any scene is generated; a size an smp network
    cannot take (its encoder's stride) and a deployment shape it cannot take, before a base
    is pretrained: exit 2, a message saying what to do, nothing written."""
    monkeypatch.setenv("PRUNE_ENV_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("PRUNE_ENV_CHECKPOINTS", str(tmp_path / "checkpoints"))
    scenes = ["--dataset", "fashion-scenes", "--synthetic-size", "100",
              "--runs-dir", str(tmp_path / "runs")]
    assert main(["baseline", "l1", "--model", "resnet20", *scenes]) == 2
    assert "resnet20-fcn" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
    assert main(["baseline", "l1", "--model", "fpn-resnet18", "--image-size", "48",
                 *scenes]) == 2
    assert "divisible by 32" in capsys.readouterr().err
    assert main(["baseline", "l1", "--model", "fpn-resnet18", "--image-size", "32",
                 "--deploy-shape", "1x100x200", *scenes]) == 2
    err = capsys.readouterr().err
    assert "--deploy-shape" in err and "divisible by 32" in err
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "runs").exists()
    assert main(["baseline", "l1", "--model", "unet-resnet19", *scenes]) == 2
    assert "unknown segmentation model" in capsys.readouterr().err
