"""The L2PF policy network: per-filter keep probabilities and a fine-tune duration.

It reads the environment's observation (see `prune_env.envs.prune.PruneEnv`): the group's
descriptor, four features per filter and the validity mask, and returns a distribution over
the hybrid action:

- ``ratio`` then ``keep``: the group's keep ratio rho from a Beta (AMC's per-layer action),
  then exactly k = round(rho * n) filters drawn without replacement, each next one with
  probability proportional to exp(score) (Plackett-Luce, sampled as the top k of the scores
  plus Gumbel noise). The score comes from the filter's own features and the group's
  context through one small network shared by all filters and all groups (the multi-task
  agent of L2PF: one policy for every layer, conditioned on the layer), plus a prior on the
  features. Departure: L2PF draws one Bernoulli per filter; independent coins make the kept
  count random around the mean, and unless the scores are far apart they pick close to a
  random subset, which on a trained network costs most of its accuracy. The ratio lets tries
  range from light to heavy pruning and lets the agent learn how much each layer takes; the
  ranking decides which filters go.
- ``drop``: for groups whose filters can all go (residual branches), one more Bernoulli that
  removes the whole group. The draw keeps at least one filter, so without it the agent could
  not find block removal, which on overhead-bound hardware is where real latency is won.
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
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.distributions import Bernoulli, Beta

from prune_env.envs.observation import ObservationLayout

REMOVABLE = ObservationLayout.index("removable")
EPS = 1e-4


@dataclass
class HybridDistribution:
    """The policy's distribution over one batch of hybrid actions.

    Sampling order: the group's keep ratio rho ~ Beta; then k = round(rho * n) filters,
    chosen by Plackett-Luce sampling without replacement over the filters' scores. The
    log-probability counts the order in which the k filters were drawn (the sampled random
    variable; the network depends only on the set, a function of it, so REINFORCE with it
    stays unbiased).

    Attributes:
        scores: centred per-filter keep scores, (B, max_filters).
        ratio: Beta over the group's keep ratio, (B,).
        drop: Bernoulli "remove the whole group", (B,); only counts where removable.
        finetune: Beta over the fine-tune fraction, (B,).
        valid: which filter slots exist, (B, max_filters).
        removable: which groups may be removed whole, (B,).
        fixed_finetune: the fine-tune fraction of every action when the duration is not
            learned (the fixed-duration ablation): ``finetune`` is then neither sampled nor
            counted in the log-probability and the entropy.
    """

    scores: torch.Tensor
    ratio: Beta
    drop: Bernoulli
    finetune: Beta
    valid: torch.Tensor
    removable: torch.Tensor
    fixed_finetune: float | None = None

    def count(self, ratio: torch.Tensor) -> torch.Tensor:
        """Filters kept at a keep ratio: round(ratio * n), at least 1."""
        n = self.valid.sum(-1)
        return (ratio * n).round().clamp(min=1).minimum(n)

    def masked_scores(self) -> torch.Tensor:
        """Scores with padding slots pushed last (finite, so that gradients stay finite)."""
        return self.scores.masked_fill(self.valid == 0, -1e9)

    def kept(self, order: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        """The keep mask of the first k = count(ratio) filters of ``order``."""
        first = torch.arange(order.shape[-1]) < self.count(ratio)[:, None]
        keep = torch.zeros_like(self.scores).scatter(-1, order, first.float())
        return keep * self.valid

    def sample(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """A sampled action (tensors) and its log-probability."""
        ratio = self.ratio.sample().clamp(EPS, 1 - EPS)
        gumbel = -torch.log(-torch.log(torch.rand_like(self.scores).clamp(1e-20, 1)))
        order = (self.masked_scores() + gumbel).argsort(-1, descending=True)
        action = {"ratio": ratio, "order": order, "keep": self.kept(order, ratio),
                  "drop": self.drop.sample() * self.removable,
                  "finetune": self.duration(self.finetune.sample().clamp(EPS, 1 - EPS))}
        return action, self.log_prob(action)

    def duration(self, learned: torch.Tensor) -> torch.Tensor:
        """The fine-tune fraction: the learned one, or the fixed one of the ablation."""
        if self.fixed_finetune is None:
            return learned
        return torch.full_like(learned, self.fixed_finetune)

    def mode(self) -> dict[str, torch.Tensor]:
        """The deterministic action: the mean ratio, the round(ratio * n) best-scored filters,
        the mean duration; the group removed if that is more likely than not."""
        ratio = self.ratio.mean
        order = self.masked_scores().argsort(-1, descending=True)
        return {"ratio": ratio, "order": order, "keep": self.kept(order, ratio),
                "drop": (self.drop.probs > 0.5).float() * self.removable,
                "finetune": self.duration(self.finetune.mean)}

    def order_log_prob(self, order: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        """log P(the first k filters of ``order`` drawn in that order): the sum over j < k of
        score(o_j) - logsumexp(scores of the filters not drawn before j)."""
        drawn = self.masked_scores().gather(-1, order)
        rest = drawn.flip(-1).logcumsumexp(-1).flip(-1)  # logsumexp over o_j, o_j+1, ...
        first = torch.arange(order.shape[-1]) < self.count(ratio)[:, None]
        terms = (drawn - rest).masked_fill(~first, 0.0)
        return terms.sum(-1)

    def log_prob(self, action: dict[str, torch.Tensor]) -> torch.Tensor:
        """log pi(action); a dropped group's ratio and filters do not count (they had no
        effect on the network)."""
        kept = 1 - action["drop"]
        keep = self.ratio.log_prob(action["ratio"]) \
            + self.order_log_prob(action["order"], action["ratio"])
        drop = self.drop.log_prob(action["drop"]) * self.removable
        log_prob = keep * kept + drop
        if self.fixed_finetune is None:
            log_prob = log_prob + self.finetune.log_prob(action["finetune"])
        return log_prob

    def entropy(self) -> torch.Tensor:
        """Entropies of the ratio, the group removal and the duration (the filters' choice
        follows the scores, which the reward shapes)."""
        entropy = self.ratio.entropy() + self.drop.entropy() * self.removable
        if self.fixed_finetune is None:
            entropy = entropy + self.finetune.entropy()
        return entropy


class L2PFPolicy(nn.Module):
    """Shared-weight policy over any group of the network (see the module docstring).

    Args:
        max_filters: the environment's ``action_space["keep"].n``.
        hidden: width of the hidden layers.
        keep_ratio: initial mean of the keep-ratio Beta, clipped to [0.15, 0.85] (its
            spread lets the first tries range from lighter to heavier pruning).
        feature_prior: initial weight of a filter's summed features (each in [0, 1], the
            sum centred on the group's mean) in its score. The prior that filters with larger
            norms, scales, activations and Taylor scores matter more, which the agent then
            keeps, reweights or unlearns; with a budget of a few episodes a policy that
            starts from a blank ranking only rediscovers it (0 gives that blank start). At
            16 the draw's Gumbel noise (scale 1) swaps filters whose features are close, so
            tries explore near the features' ranking, not among random subsets.
        fixed_finetune: fine-tune every group for this fraction of the budget instead of
            learning the duration (None: learned, L2PF's hybrid action).
    """

    def __init__(self, max_filters: int, hidden: int = 64, keep_ratio: float = 0.7,
                 feature_prior: float = 16.0, fixed_finetune: float | None = None):
        super().__init__()
        self.max_filters = max_filters
        self.fixed_finetune = fixed_finetune
        self.layout = ObservationLayout(max_filters)
        self.n_desc, self.n_feat = self.layout.n_desc, self.layout.n_feat
        self.context = nn.Sequential(nn.Linear(self.n_desc, hidden), nn.Tanh(),
                                     nn.Linear(hidden, hidden), nn.Tanh())
        self.filter = nn.Sequential(nn.Linear(self.n_feat + hidden, hidden), nn.Tanh(),
                                    nn.Linear(hidden, 1))
        # drop logit; fine-tune Beta (alpha, beta); keep-ratio Beta (alpha, beta)
        self.group = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.Tanh(),
                                   nn.Linear(hidden, 5))
        self.prior = nn.Parameter(torch.full((self.n_feat,), feature_prior / self.n_feat))
        group_head = cast(nn.Linear, self.group[-1])
        for head in (cast(nn.Linear, self.filter[-1]), group_head):
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)
        # alpha + beta of the ratio's Beta: wide (std 0.17 at a mean of 0.5), not flat; the
        # mean is clipped so that alpha, beta = 1 + softplus(.) can be reached
        total, mean = 8.0, min(max(keep_ratio, 0.15), 0.85)
        with torch.no_grad():
            group_head.bias[0] = -2.2  # a try removes a block with p = 0.1 at first
            group_head.bias[3] = inverse_softplus(total * mean - 1)
            group_head.bias[4] = inverse_softplus(total * (1 - mean) - 1)

    def split(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(descriptor, per-filter features, validity mask) of a batch of observations."""
        layout = self.layout
        return layout.descriptor(obs), layout.features(obs), layout.mask(obs)

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
                                  Beta(beta[0], beta[1]), valid, desc[:, REMOVABLE],
                                  self.fixed_finetune)

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
