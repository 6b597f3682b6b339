"""The environment options every command builds from its arguments."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from prune_env.data.datasets import DataBundle
from prune_env.training.pretrain import PretrainConfig


def env_options(args: argparse.Namespace, data: DataBundle) -> dict[str, Any]:
    """The environment's arguments from the command line (shared by train and baseline)."""
    return {"model": args.model, "dataset": args.dataset, "data": data, "cost": args.cost,
            "target": args.target, "reward": args.reward, "allowed_drop": args.allowed_drop,
            "max_finetune_steps": args.max_finetune_steps, "val_samples": args.val_samples,
            # fixed here, so that worker processes (which train on fewer threads) predict
            # latency from the same table entries as the main process
            "device": args.device, "threads": args.threads or torch.get_num_threads(),
            "checkpoint": args.checkpoint,
            "seed": args.seed, "latency_table": args.latency_table,
            "pretrain": PretrainConfig(args.epochs, args.batch_size, args.lr, args.seed)}
