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


def report_of(tmp_path) -> dict:
    (report,) = (tmp_path / "runs").glob("*/report.json")
    return json.loads(report.read_text())


@pytest.mark.parametrize("method", ["l1", "swd", "layerprune", "alf"])
def test_a_baseline_prunes_a_segmentation_network_to_its_target(method, fcn, latency_table,
                                                                tmp_path):
    more = {"swd": ["--swd-steps", "80"], "alf": ["--alf-steps", "30"],
            "layerprune": ["--criterion", "imprinting"]}.get(method, [])
    assert main(["baseline", method, "--no-export",
                 *seg_args(fcn, latency_table, tmp_path, *more)]) == 0
    r = report_of(tmp_path)
    assert r["metric"] == "miou" and r["target_met"] == "met"
    assert r["pruned"]["flops"] <= 0.6 * r["base"]["flops"]
    ious = r["pruned"]["test_class_iou"]
    assert len(ious) == 11 and all(i is None or 0.0 <= i <= 1.0 for i in ious)
    present = [i for i in ious if i is not None]
    assert r["pruned"]["test_accuracy"] == pytest.approx(sum(present) / len(present))


def test_l2pf_trains_on_a_segmentation_network_and_exports_it(fcn, latency_table, tmp_path):
    assert main(["train", "--agent", "l2pf", "--episodes", "1", "--tries", "2",
                 *seg_args(fcn, latency_table, tmp_path)]) == 0
    r = report_of(tmp_path)
    assert r["metric"] == "miou" and r["target_met"] == "met"
    assert 0.0 < r["pruned"]["test_accuracy"] <= 1.0
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "model.onnx").exists()  # the upsampling decoder exports and checks


def test_a_classifier_on_segmentation_data_is_refused(fcn, latency_table, tmp_path, capsys):
    args = seg_args(fcn, latency_table, tmp_path)
    args[args.index("resnet20-fcn")] = "resnet20"
    assert main(["baseline", "l1", *args]) == 2
    assert "resnet20-fcn" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
