"""The environment's arguments from a run's config (shared by every method)."""

from __future__ import annotations

from typing import Any

from prune_env.config import RunConfig
from prune_env.data.datasets import DataBundle


def env_options(config: RunConfig, data: DataBundle) -> dict[str, Any]:
    """The arguments of ``gymnasium.make`` for ``config`` on the loaded ``data``."""
    env = config.env
    return {"model": config.data.model, "dataset": config.data.dataset, "data": data,
            "cost": env.cost, "target": env.target, "reward": env.reward,
            "allowed_drop": env.allowed_drop, "finetune_weight": env.finetune_price,
            "max_finetune_steps": env.max_finetune_steps,
            "val_samples": env.val_samples,
            # fixed here, so that worker processes (which train on fewer threads) predict
            # latency from the same table entries as the main process
            "device": env.device, "measure_device": env.measure_device, "amp": env.amp,
            "threads": env.threads, "deploy_shape": env.deploy_shape,
            "latency_batch": env.latency_batch,
            "checkpoint": config.data.checkpoint, "seed": config.data.seed,
            "latency_table": env.latency_table, "energy_meter": env.energy_meter,
            "correct_table": env.correct_table, "correct_episodes": env.correct_episodes,
            "pretrain": config.pretraining}
