"""The environments' parts: the pruning environment, its observation features, rewards,
episode report and wrappers."""

from prune_env.envs.prune import EpisodeState, PruneEnv
from prune_env.envs.reward import RewardConfig
from prune_env.envs.wrappers import FlatActionWrapper

__all__ = ["EpisodeState", "FlatActionWrapper", "PruneEnv", "RewardConfig"]
