"""Long checks, run by `make bench` only (marker `bench`)."""

from __future__ import annotations

import time

import pytest

from prune_env.data.datasets import DEBIAN_FASHION_MNIST_DIR, load_data
from prune_env.training.pretrain import PretrainConfig, pretrain

pytestmark = [
    pytest.mark.bench,
    pytest.mark.skipif(not DEBIAN_FASHION_MNIST_DIR.exists(),
                       reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist"),
]


def test_default_pretraining_budget_reaches_90_percent_in_10_minutes(tmp_path):
    """The issue's promise for the default budget, on 2 CPU cores."""
    start = time.perf_counter()
    data = load_data("fashion-mnist")
    _, meta = pretrain("resnet20", data, PretrainConfig(), tmp_path / "base.pt",
                       progress=False)
    seconds = time.perf_counter() - start
    assert meta["test_accuracy"] >= 0.90, meta
    assert seconds <= 600, f"{seconds:.0f} s"
