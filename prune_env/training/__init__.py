"""Training: the SGD loop, pretraining of base networks, and their checkpoints."""

from prune_env.training.loop import TrainConfig, evaluate, train_steps
from prune_env.training.pretrain import PretrainConfig, load_or_pretrain, pretrain

__all__ = ["PretrainConfig", "TrainConfig", "evaluate", "load_or_pretrain", "pretrain",
           "train_steps"]
