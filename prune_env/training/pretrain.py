"""Pretraining of the base network that an episode prunes.

`pretrain` trains a model from scratch on the training split, scores it on validation and
test, and saves a checkpoint; `load_or_pretrain` is what the environment calls: it loads the
checkpoint, or pretrains on first use and says so.

Default budget: 3 epochs of OneCycle SGD, which takes ResNet-20 on Fashion-MNIST past 90%
test accuracy in under 10 minutes on 2 CPU cores (see README for the measured run).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch
from torch import nn

from prune_env.config import PretrainConfig
from prune_env.data.datasets import DataBundle, load_data, placed
from prune_env.data.task import get_task
from prune_env.nn.models import build_model, check_task
from prune_env.training.checkpoint import load_base, save_base
from prune_env.training.loop import TrainConfig, evaluate, train_steps

log = logging.getLogger(__name__)


def default_checkpoint(model: str, dataset: str, root: str | Path | None = None) -> Path:
    """Where the base model of (model, dataset) lives: ``$PRUNE_ENV_CHECKPOINTS`` or ./checkpoints."""
    root = Path(root or os.environ.get("PRUNE_ENV_CHECKPOINTS", "checkpoints"))
    return root / f"{model}-{dataset}.pt"


def pretrain(model_name: str, data: DataBundle, config: PretrainConfig, path: str | Path,
             *, progress: bool = True) -> tuple[nn.Module, dict]:
    """Train ``model_name`` on ``data`` from scratch and save it to ``path``.

    Returns:
        The trained model (eval mode) and the checkpoint's metadata.
    """
    check_task(model_name, data.task)
    torch.manual_seed(config.seed)
    model = build_model(model_name, data.in_channels, data.num_classes, data.image_size)
    model.to(config.device)
    data = placed(data, config.device)
    steps = max(1, round(config.epochs * len(data.train) / config.batch_size))
    train = TrainConfig(lr=config.lr, batch_size=config.batch_size, schedule="onecycle",
                        augment=config.augment, amp=config.amp)
    generator = torch.Generator().manual_seed(config.seed)
    task = get_task(data.task, data.num_classes)
    seconds = train_steps(model, data.train, task, steps, train, generator,
                          progress=f"pretrain {model_name} on {data.name}" if progress else None)
    meta = {"model": model_name, "dataset": data.name, "num_classes": data.num_classes,
            "epochs": config.epochs, "steps": steps, "batch_size": config.batch_size,
            "lr": config.lr, "augment": config.augment, "seed": config.seed,
            "device": config.device, "amp": config.amp, "train_seconds": round(seconds, 1),
            "metric": task.metric,  # what the *_accuracy entries hold (top1 or miou)
            "val_accuracy": evaluate(model, data.val, task),
            "test_accuracy": evaluate(model, data.test, task),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    save_base(path, model, model_name, meta)
    return model.cpu().eval(), meta


def load_or_pretrain(model_name: str, data: DataBundle, path: str | Path | None = None,
                     config: PretrainConfig | None = None) -> tuple[nn.Module, dict]:
    """Load the base checkpoint, or pretrain it first (logged, since it takes minutes).

    Only the default path is pretrained on first use: a ``path`` given explicitly must exist
    (a mistyped one would otherwise train a new base and write it there).
    """
    if path and not Path(path).exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist: check the path, or leave "
                                "--checkpoint out to use (and on first use pretrain) "
                                f"{default_checkpoint(model_name, data.name)}")
    check_task(model_name, data.task)
    path = Path(path) if path else default_checkpoint(model_name, data.name)
    if path.exists():
        model, meta = load_base(path)
        if meta.get("dataset") != data.name or meta.get("model") != model_name:
            raise ValueError(f"checkpoint {path} holds {meta.get('model')} on "
                             f"{meta.get('dataset')}, not {model_name} on {data.name}: "
                             "pass another --checkpoint or delete it")
        return model, meta
    log.warning("no base checkpoint at %s: pretraining %s on %s first", path, model_name,
                data.name)
    print(f"prune-env: no base checkpoint at {path}; pretraining {model_name} on {data.name}")
    return pretrain(model_name, data, config or PretrainConfig(), path)


if __name__ == "__main__":  # a quick way to time the default budget: python -m prune_env.training.pretrain
    bundle = load_data("fashion-mnist")
    _, info = pretrain("resnet20", bundle, PretrainConfig(), default_checkpoint(
        "resnet20", "fashion-mnist"))
    print(info)
