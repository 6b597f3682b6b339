"""The environments' parts: the pruning environment, the bench it holds (base network, data,
meter, base costs, groups), its observation layout and features, rewards, the target search,
the episode report and wrappers."""

from prune_env.envs.bench import Bench
from prune_env.envs.observation import DESCRIPTOR, ObservationLayout
from prune_env.envs.prune import EpisodeState, PruneEnv
from prune_env.envs.reward import RewardConfig
from prune_env.envs.target import largest_count, largest_value
from prune_env.envs.wrappers import FlatActionWrapper, RatioActionWrapper

__all__ = ["DESCRIPTOR", "Bench", "EpisodeState", "FlatActionWrapper", "ObservationLayout",
           "PruneEnv", "RatioActionWrapper", "RewardConfig", "largest_count", "largest_value"]
