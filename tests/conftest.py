"""Shared fixtures: a small synthetic data set and a ResNet-20 pretrained on it once; the
scripts of scripts/ loaded as modules. `make test` runs the `timing` tests alone, then
the others in two pytest-xdist workers (one per core)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from prune_env.data.datasets import load_data
from prune_env.training.pretrain import PretrainConfig, pretrain

SMALL = {"synthetic_size": 1500, "image_size": 16}


def pytest_configure(config):
    """Two workers on two cores: one thread each, here and in the processes a test starts
    (two torch processes of two threads each on two cores wait on each other's threads)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic():
    return load_data("synthetic", **SMALL)


@pytest.fixture(scope="session")
def checkpoint(synthetic, tmp_path_factory):
    """A ResNet-20 trained on the synthetic data (well above chance: asserted in test_env).
    lr 0.02: at 0.1 these 6 epochs sat on an edge, 0.64 validation accuracy on 2 threads and
    0.27 on 1 (float sums in another order); at 0.02 both reach 0.95-0.96."""
    path = tmp_path_factory.mktemp("ckpt") / "resnet20-synthetic.pt"
    torch.manual_seed(0)
    _, meta = pretrain("resnet20", synthetic, PretrainConfig(epochs=6, batch_size=64, lr=0.02),
                       path, progress=False)
    return path, meta


@pytest.fixture(scope="session")
def latency_table(tmp_path_factory):
    """One lookup table for the session: each layer shape is timed once."""
    return str(tmp_path_factory.mktemp("lut") / "lut.json")


@pytest.fixture
def make_env(synthetic, checkpoint, latency_table):
    """Build a small, fast environment on the synthetic data."""
    import gymnasium as gym

    import prune_env  # noqa: F401

    def build(env_id: str = "prune_env/Prune-v0", **kwargs):
        options = {"model": "resnet20", "dataset": "synthetic", "data": synthetic,
                   "checkpoint": str(checkpoint[0]), "max_finetune_steps": 4,
                   "val_samples": 300, "latency_table": latency_table, "threads": 1,
                   "latency_batch": 4}
        options.update(kwargs)
        return gym.make(env_id, **options)

    return build


@pytest.fixture
def small_args(checkpoint, latency_table):
    """Command-line options that make a run take seconds on the synthetic data."""
    return ["--dataset", "synthetic", "--synthetic-size", "1500", "--image-size", "16",
            "--checkpoint", str(checkpoint[0]), "--max-finetune-steps", "4",
            "--val-samples", "300", "--threads", "1", "--latency-table", latency_table,
            "--final-steps", "5", "--target", "0.8"]


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def import_script(name: str) -> ModuleType:
    """scripts/NAME.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_script():
    """`import_script`, for tests of the scripts."""
    return import_script
