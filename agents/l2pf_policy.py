"""The L2PF policy network: per-filter keep probabilities and a fine-tune duration.

It reads the environment's observation (see `prune_env.env.PruneEnv`): the group's
descriptor, four features per filter and the validity mask, and returns a distribution over
the hybrid action:

- ``keep``: one Bernoulli per filter. Its logit comes from the filter's own features and the
  group's context through one small network shared by all filters and all groups (the
  multi-task agent of L2PF: one policy for every layer, conditioned on the layer).
- ``drop``: for groups whose filters can all go (residual branches), one more Bernoulli that
  removes the whole group. Independent per-filter coins almost never drop all 16 filters of a
  group together, so without it the agent could not find block removal, which on
  overhead-bound hardware is where real latency is won.
- ``finetune``: a Beta distribution over the fine-tune fraction in [0, 1] (bounded, so no
  squashing correction is needed).

Example:
    >>> policy = L2PFPolicy(max_filters=64)                       # doctest: +SKIP
    >>> dist = policy.distribution(torch.as_tensor(obs)[None])    # doctest: +SKIP
    >>> action, log_prob = dist.sample()                          # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.distributions import Bernoulli, Beta

from prune_env.env import DESCRIPTOR
from prune_env.features import FEATURES

REMOVABLE = DESCRIPTOR.index("removable")


@dataclass
class HybridDistribution:
    """The policy's distribution over one batch of hybrid actions.

    Attributes:
        keep: Bernoulli over filters, (B, max_filters).
        drop: Bernoulli "remove the whole group", (B,); only counts where removable.
        finetune: Beta over the fine-tune fraction, (B,).
        valid: which filter slots exist, (B, max_filters).
        removable: which groups may be removed whole, (B,).
    """

    keep: Bernoulli
    drop: Bernoulli
    finetune: Beta
    valid: torch.Tensor
    removable: torch.Tensor

    def sample(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """A sampled action (tensors) and its log-probability."""
        action = {"keep": self.keep.sample(), "drop": self.drop.sample() * self.removable,
                  "finetune": self.finetune.sample().clamp(1e-4, 1 - 1e-4)}
        return action, self.log_prob(action)

    def mode(self) -> dict[str, torch.Tensor]:
        """The deterministic action: keep where p > 0.5, the Beta's mean duration."""
        return {"keep": (self.keep.probs > 0.5).float(),
                "drop": (self.drop.probs > 0.5).float() * self.removable,
                "finetune": self.finetune.mean}

    def log_prob(self, action: dict[str, torch.Tensor]) -> torch.Tensor:
        """log pi(action); a dropped group's filter coins do not count (they had no effect)."""
        dropped = action["drop"]
        keep = (self.keep.log_prob(action["keep"]) * self.valid).sum(-1) * (1 - dropped)
        drop = self.drop.log_prob(action["drop"]) * self.removable
        return keep + drop + self.finetune.log_prob(action["finetune"])

    def entropy(self) -> torch.Tensor:
        """Mean per-filter entropy plus the group and duration entropies."""
        keep = (self.keep.entropy() * self.valid).sum(-1) / self.valid.sum(-1).clamp(min=1)
        return keep + self.drop.entropy() * self.removable + self.finetune.entropy()


class L2PFPolicy(nn.Module):
    """Shared-weight policy over any group of the network (see the module docstring).

    Args:
        max_filters: the environment's ``action_space["keep"].n``.
        hidden: width of the hidden layers.
        keep_bias: initial keep logit (1.0: each filter starts kept with p = 0.73).
        feature_prior: initial weight of a filter's mean score (its four features, centred
            on the group's mean) in its keep logit. The prior that filters with larger
            norms, scales, activations and Taylor scores matter more, which the agent then
            keeps, reweights or unlearns; with a budget of a few episodes a policy that
            starts from a blank ranking only rediscovers it (0 gives that blank start).
    """

    def __init__(self, max_filters: int, hidden: int = 64, keep_bias: float = 1.0,
                 feature_prior: float = 4.0):
        super().__init__()
        self.max_filters = max_filters
        self.n_desc, self.n_feat = len(DESCRIPTOR), len(FEATURES)
        self.context = nn.Sequential(nn.Linear(self.n_desc, hidden), nn.Tanh(),
                                     nn.Linear(hidden, hidden), nn.Tanh())
        self.filter = nn.Sequential(nn.Linear(self.n_feat + hidden, hidden), nn.Tanh(),
                                    nn.Linear(hidden, 1))
        self.group = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.Tanh(),
                                   nn.Linear(hidden, 3))  # drop logit, Beta alpha, Beta beta
        self.prior = nn.Parameter(torch.full((self.n_feat,), feature_prior / self.n_feat))
        for head, bias in ((self.filter[-1], keep_bias), (self.group[-1], 0.0)):
            nn.init.normal_(head.weight, std=0.01)
            nn.init.constant_(head.bias, bias)
        with torch.no_grad():
            self.group[-1].bias[0] = -2.0  # removing a block starts unlikely (p = 0.12)

    def split(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(descriptor, per-filter features, validity mask) of a batch of observations."""
        m, d, f = self.max_filters, self.n_desc, self.n_feat
        feats = obs[:, d: d + f * m].reshape(-1, m, f)
        return obs[:, :d], feats, obs[:, d + f * m: d + (f + 1) * m]

    def distribution(self, obs: torch.Tensor) -> HybridDistribution:
        desc, feats, valid = self.split(obs)
        ctx = self.context(desc)
        per_filter = torch.cat([feats, ctx[:, None].expand(-1, self.max_filters, -1)], -1)
        hidden = self.filter[:2](per_filter)
        score = feats @ self.prior  # the feature prior, centred per group
        mean = (score * valid).sum(-1, keepdim=True) / valid.sum(-1, keepdim=True).clamp(min=1)
        keep_logits = self.filter[2](hidden).squeeze(-1) + score - mean
        pooled = (hidden * valid[..., None]).sum(1) / valid.sum(-1, keepdim=True).clamp(min=1)
        head = self.group(torch.cat([ctx, pooled], -1))
        alpha = 1 + nn.functional.softplus(head[:, 1])
        beta = 1 + nn.functional.softplus(head[:, 2])
        return HybridDistribution(Bernoulli(logits=keep_logits), Bernoulli(logits=head[:, 0]),
                                  Beta(alpha, beta), valid, desc[:, REMOVABLE])

    def predict(self, obs: np.ndarray, state=None, episode_start=None,
                deterministic: bool = True):
        """stable-baselines3's ``predict``: the environment's action for one observation."""
        with torch.no_grad():
            dist = self.distribution(torch.as_tensor(obs, dtype=torch.float32)[None])
            action = dist.mode() if deterministic else dist.sample()[0]
        return to_env_action(action, self.max_filters), state


def to_env_action(action: dict[str, torch.Tensor], max_filters: int) -> dict[str, np.ndarray]:
    """The environment's Dict action from the policy's (batch of one) action."""
    keep = action["keep"][0].numpy().astype(np.int8)
    if action["drop"][0] > 0.5:
        keep = np.zeros(max_filters, np.int8)  # all dropped: the branch is removed
    return {"keep": keep, "finetune": action["finetune"][0:1].numpy().astype(np.float32)}
