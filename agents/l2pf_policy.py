"""The L2PF policy network: per-filter keep probabilities and a fine-tune duration.

It reads the environment's observation (see `prune_env.env.PruneEnv`): the group's
descriptor, four features per filter and the validity mask, and returns a distribution over
the hybrid action:

- ``ratio`` then ``keep``: the group's keep ratio from a Beta (AMC's per-layer action), then
  one Bernoulli per filter whose logit is the filter's score, centred on the group, plus
  logit(ratio). The score comes from the filter's own features and the group's context
  through one small network shared by all filters and all groups (the multi-task agent of
  L2PF: one policy for every layer, conditioned on the layer). Independent coins alone
  would make every try prune about the same amount; the ratio lets tries range from light
  to heavy pruning and lets the agent learn how much each layer takes.
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

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.distributions import Bernoulli, Beta

from prune_env.env import DESCRIPTOR
from prune_env.features import FEATURES

REMOVABLE = DESCRIPTOR.index("removable")
EPS = 1e-4


@dataclass
class HybridDistribution:
    """The policy's distribution over one batch of hybrid actions.

    Sampling order: the group's keep ratio rho ~ Beta; then each filter is kept with
    probability sigmoid(score_i + logit(rho)), its score centred on the group's mean, so about
    a fraction rho of the filters survives and the better-scored ones more often.

    Attributes:
        scores: centred per-filter keep scores, (B, max_filters).
        ratio: Beta over the group's keep ratio, (B,).
        drop: Bernoulli "remove the whole group", (B,); only counts where removable.
        finetune: Beta over the fine-tune fraction, (B,).
        valid: which filter slots exist, (B, max_filters).
        removable: which groups may be removed whole, (B,).
    """

    scores: torch.Tensor
    ratio: Beta
    drop: Bernoulli
    finetune: Beta
    valid: torch.Tensor
    removable: torch.Tensor

    def keep(self, ratio: torch.Tensor) -> Bernoulli:
        """The per-filter coins given the group's keep ratio."""
        return Bernoulli(logits=self.scores + torch.logit(ratio)[:, None])

    def sample(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """A sampled action (tensors) and its log-probability."""
        ratio = self.ratio.sample().clamp(EPS, 1 - EPS)
        action = {"ratio": ratio, "keep": self.keep(ratio).sample(),
                  "drop": self.drop.sample() * self.removable,
                  "finetune": self.finetune.sample().clamp(EPS, 1 - EPS)}
        return action, self.log_prob(action)

    def mode(self) -> dict[str, torch.Tensor]:
        """The deterministic action: the mean ratio, the round(ratio * n) best-scored filters
        (what the coins keep on average), the mean duration."""
        ratio = self.ratio.mean
        count = self.valid.sum(-1)
        k = (ratio * count).round().clamp(min=1)
        masked = self.scores.masked_fill(self.valid == 0, float("-inf"))
        rank = masked.argsort(-1, descending=True).argsort(-1)
        keep = ((rank < k[:, None]) & (self.valid > 0)).float()
        return {"ratio": ratio, "keep": keep,
                "drop": (self.drop.probs > 0.5).float() * self.removable,
                "finetune": self.finetune.mean}

    def log_prob(self, action: dict[str, torch.Tensor]) -> torch.Tensor:
        """log pi(action); a dropped group's ratio and filter coins do not count (they had no
        effect on the network)."""
        kept = 1 - action["drop"]
        coins = (self.keep(action["ratio"]).log_prob(action["keep"]) * self.valid).sum(-1)
        keep = (coins + self.ratio.log_prob(action["ratio"])) * kept
        drop = self.drop.log_prob(action["drop"]) * self.removable
        return keep + drop + self.finetune.log_prob(action["finetune"])

    def entropy(self) -> torch.Tensor:
        """Entropies of the ratio, the group removal and the duration (the filter coins'
        entropy follows from the ratio's)."""
        return self.ratio.entropy() + self.drop.entropy() * self.removable \
            + self.finetune.entropy()


class L2PFPolicy(nn.Module):
    """Shared-weight policy over any group of the network (see the module docstring).

    Args:
        max_filters: the environment's ``action_space["keep"].n``.
        hidden: width of the hidden layers.
        keep_ratio: initial mean of the keep-ratio Beta (its spread lets the first tries
            range from light to heavy pruning).
        feature_prior: initial weight of a filter's mean score (its four features, centred
            on the group's mean) in its keep logit. The prior that filters with larger
            norms, scales, activations and Taylor scores matter more, which the agent then
            keeps, reweights or unlearns; with a budget of a few episodes a policy that
            starts from a blank ranking only rediscovers it (0 gives that blank start).
    """

    def __init__(self, max_filters: int, hidden: int = 64, keep_ratio: float = 0.7,
                 feature_prior: float = 4.0):
        super().__init__()
        self.max_filters = max_filters
        self.n_desc, self.n_feat = len(DESCRIPTOR), len(FEATURES)
        self.context = nn.Sequential(nn.Linear(self.n_desc, hidden), nn.Tanh(),
                                     nn.Linear(hidden, hidden), nn.Tanh())
        self.filter = nn.Sequential(nn.Linear(self.n_feat + hidden, hidden), nn.Tanh(),
                                    nn.Linear(hidden, 1))
        # drop logit; fine-tune Beta (alpha, beta); keep-ratio Beta (alpha, beta)
        self.group = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.Tanh(),
                                   nn.Linear(hidden, 5))
        self.prior = nn.Parameter(torch.full((self.n_feat,), feature_prior / self.n_feat))
        for head in (self.filter[-1], self.group[-1]):
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)
        concentration = 4.0  # alpha + beta - 2 of the ratio's Beta: wide, not flat
        with torch.no_grad():
            self.group[-1].bias[0] = -1.1  # a try removes a block with p = 0.25 at first
            self.group[-1].bias[3] = inverse_softplus(concentration * keep_ratio)
            self.group[-1].bias[4] = inverse_softplus(concentration * (1 - keep_ratio))

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
        scores = self.filter[2](hidden).squeeze(-1) + feats @ self.prior
        count = valid.sum(-1, keepdim=True).clamp(min=1)
        scores = scores - (scores * valid).sum(-1, keepdim=True) / count  # centred per group
        pooled = (hidden * valid[..., None]).sum(1) / count
        head = self.group(torch.cat([ctx, pooled], -1))
        beta = [1 + nn.functional.softplus(head[:, k]) for k in range(1, 5)]
        return HybridDistribution(scores, Beta(beta[2], beta[3]), Bernoulli(logits=head[:, 0]),
                                  Beta(beta[0], beta[1]), valid, desc[:, REMOVABLE])

    def predict(self, obs: np.ndarray, state=None, episode_start=None,
                deterministic: bool = True):
        """stable-baselines3's ``predict``: the environment's action for one observation."""
        with torch.no_grad():
            dist = self.distribution(torch.as_tensor(obs, dtype=torch.float32)[None])
            action = dist.mode() if deterministic else dist.sample()[0]
        return to_env_action(action, self.max_filters), state


def inverse_softplus(y: float) -> float:
    """x with softplus(x) = y."""
    return math.log(math.expm1(y))


def to_env_action(action: dict[str, torch.Tensor], max_filters: int) -> dict[str, np.ndarray]:
    """The environment's Dict action from the policy's (batch of one) action."""
    keep = action["keep"][0].numpy().astype(np.int8)
    if action["drop"][0] > 0.5:
        keep = np.zeros(max_filters, np.int8)  # all dropped: the branch is removed
    return {"keep": keep, "finetune": action["finetune"][0:1].numpy().astype(np.float32)}
