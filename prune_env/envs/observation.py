"""The pruning environment's observation layout, in one place: the environment writes
observations with it, and the simple policies, the L2PF policy and the baselines read them
with it (`prune_env.envs.prune.PruneEnv`'s docstring lists what each index means).

    [ descriptor (len(DESCRIPTOR)) | features (max_filters x len(FEATURES)) | mask (max_filters) ]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from gymnasium import spaces

from prune_env.envs.features import FEATURES

#: The group's descriptor, the observation's first entries.
DESCRIPTOR = (
    "progress", "kind", "in_channels", "filters", "kernel", "stride", "feature_map",
    "flops_share", "latency_share", "cost_ratio", "cost_to_target", "accuracy",
    "accuracy_drop", "prev_keep", "prev_finetune", "removable",
)

A = TypeVar("A")  # a numpy array or a torch tensor: the same slices read both


@dataclass(frozen=True)
class ObservationLayout:
    """Where the descriptor, the per-filter features and the validity mask lie in an
    observation of an environment whose largest group has ``max_filters`` filters. Its
    readers take one observation or a batch (leading dimensions), numpy or torch."""

    max_filters: int

    n_desc = len(DESCRIPTOR)
    n_feat = len(FEATURES)

    @property
    def size(self) -> int:
        return self.n_desc + (self.n_feat + 1) * self.max_filters

    @property
    def space(self) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (self.size,), np.float32)

    @property
    def mask_start(self) -> int:
        return self.n_desc + self.n_feat * self.max_filters

    @staticmethod
    def index(name: str) -> int:
        """The index of descriptor entry ``name``."""
        return DESCRIPTOR.index(name)

    @classmethod
    def descriptor(cls, obs: A) -> A:
        """The group's descriptor (`DESCRIPTOR`): the same first entries at any
        ``max_filters``."""
        return obs[..., : cls.n_desc]  # type: ignore[index]

    def features(self, obs: A) -> A:
        """(..., max_filters, len(FEATURES)): the filters' features, zero beyond the group."""
        flat = obs[..., self.n_desc: self.mask_start]  # type: ignore[index]
        return flat.reshape(*flat.shape[:-1], self.max_filters, self.n_feat)

    def mask(self, obs: A) -> A:
        """(..., max_filters): 1 where the filter slot exists in the current group."""
        return obs[..., self.mask_start: self.size]  # type: ignore[index]

    def group_size(self, obs: np.ndarray) -> int:
        """Filters in the current group (0 once the episode has ended)."""
        return int(self.mask(obs).sum())

    def feature(self, obs: np.ndarray, name: str) -> np.ndarray:
        """One feature (`prune_env.envs.features.FEATURES`) of the current group's filters."""
        return self.features(obs)[: self.group_size(obs), FEATURES.index(name)]

    def strongest(self, obs: np.ndarray, k: int) -> np.ndarray:
        """(group size,) int8: 1 for the current group's ``k`` filters of largest L1 norm
        (ties broken by position), 0 for the others."""
        l1 = self.feature(obs, "l1")
        keep = np.zeros(len(l1), dtype=np.int8)
        keep[np.argsort(-l1, kind="stable")[:k]] = 1
        return keep

    def write(self, descriptor: np.ndarray, features: np.ndarray) -> np.ndarray:
        """An observation from the descriptor's values and the group's (size, len(FEATURES))
        features."""
        obs = np.zeros(self.size, np.float32)
        obs[: self.n_desc] = descriptor
        size = len(features)
        self.features(obs)[:size] = features
        self.mask(obs)[:size] = 1.0
        return obs
