"""An episode on real Fashion-MNIST (Debian's dataset-fashion-mnist; `make bench` runs it)."""

from __future__ import annotations

import gymnasium as gym
import pytest

import prune_env  # noqa: F401
from baselines.simple import make_policy
from prune_env.data.datasets import DEBIAN_FASHION_MNIST_DIR, load_data
from prune_env.training.pretrain import PretrainConfig

# `make bench`: 100 s on 2 cores (pretraining 0.15 epoch, scoring 32,000 images), which
# `make test` cannot afford; it checks the real data's loading (tests/data/test_data.py) and
# runs every episode path on the synthetic data
pytestmark = [pytest.mark.bench, pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST_DIR.exists(),
    reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist (make test does)")]


def test_episode_on_fashion_mnist(tmp_path, monkeypatch):
    data = load_data("fashion-mnist")
    assert (len(data.train), len(data.val), len(data.test)) == (54000, 6000, 10000)
    # the default checkpoint path (pretrained on first use), moved into tmp_path; a short
    # pretraining budget (0.15 epoch): enough to be far above chance
    monkeypatch.setenv("PRUNE_ENV_CHECKPOINTS", str(tmp_path))
    env = gym.make("prune_env/Prune-v0", model="resnet20", dataset="fashion-mnist", data=data,
                   pretrain=PretrainConfig(epochs=0.15, batch_size=128, lr=0.05),
                   max_finetune_steps=8,
                   val_samples=500, threads=1, latency_table=str(tmp_path / "lut.json"))
    assert env.unwrapped.bench.base_meta["test_accuracy"] > 0.5  # chance: 0.1
    policy = make_policy("l1", env.unwrapped.bench.max_filters, ratio=0.7, finetune=1.0)
    obs, _ = env.reset(seed=0)
    done = False
    while not done:
        obs, _, done, _, info = env.step(policy.predict(obs)[0])
    report = info["final"]
    assert report.pruned.params < 0.6 * report.base.params
    assert report.pruned.test_accuracy > 0.3  # pruned and briefly fine-tuned: far above chance
    assert report.base.test_accuracy == pytest.approx(env.unwrapped.bench.base_meta["test_accuracy"])
    assert (tmp_path / "resnet20-fashion-mnist.pt").exists()  # pretrained on first use
