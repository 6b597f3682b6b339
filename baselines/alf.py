"""ALF, Autoencoder-based Low-rank Filter-sharing (Frickenstein et al., DAC 2020), in the env.

An ALF block replaces a conv's filters W (n filters) by an autoencoder over them: the encoder
E mixes the n filters into c "code" filters, a learned pruning mask m switches code filters
off, and the decoder D rebuilds n filters from the surviving code:

    W_hat = D (m * (E W)),    conv(x, W_hat) = D-as-1x1-conv( conv(x, m * (E W)) )

The block trains with the task (the network computes with W_hat) plus a reconstruction term
||W - W_hat||^2 / ||W||^2 and a sparsity term on the mask. Because convolution is linear in
its weights, the trained block IS a conv with the surviving code filters followed by a 1x1
expansion conv (weights D): that is what ALF deploys, the autoencoder itself dropped.

Here: `wrap` parametrises every k x k conv (k > 1) of a network as an ALF block, `ALFTrainer`
(a `prune_env.training.loop.GradHook`) adds ALF's terms and keeps the hard mask on target, and
`deploy` writes each block as ``Sequential(code=Conv2d, expand=Conv2d 1x1)`` with ALL its
code filters, the masked ones exactly zero, so the deployed network equals the trained one.
The environment then walks the deployed network: each ``code`` conv is a group of its own,
so the keep/drop action applies to the code; `ALFPolicy` drops the code filters ALF masked.
Agents can act on the same deployed network (reset options ``wrap``, ``warmup``,
``deploy``; see `PruneEnv`).

Choices where the paper is silent (no public code was found), and why:
- E and D start at the SVD of W (E = U^T, D = U, code = S V^T, c = rank): the block starts
  equal to the conv and the code is ordered by singular value, so the first masks are
  truncated SVDs.
- The mask is binary in the forward pass and learned through a straight-through estimator:
  gate g = sigmoid(alpha), started at each code filter's singular value relative to its
  layer's largest. Every ``every`` steps the hard mask becomes the code filters whose gate
  lies above ONE global threshold, the lowest at which the deployed network's looked-up cost
  meets the environment's target (found by bisection), as SWD's mask does: the paper prunes
  to a parameter budget; the environment's target is a cost.
- Loss weights: reconstruction 1, sparsity 1e-3 (mean gate per layer); 1x1 convs are left
  as they are (an ALF block of a 1x1 conv costs more than it saves unless c < n/2).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.utils.parametrize as parametrize
from torch import nn

from baselines.simple import SimplePolicy
from prune_env.envs.target import OutOfReach, largest_count


@dataclass(frozen=True)
class ALFConfig:
    """ALF's training settings (see the module docstring)."""

    steps: int = 300
    reconstruction: float = 1.0
    sparsity: float = 1e-3
    every: int = 20


class ALFWeight(nn.Module):
    """The ALF autoencoder over one conv's filters, as a parametrisation of its weight.

    Example:
        >>> conv = nn.Conv2d(4, 8, 3, bias=False)
        >>> block = ALFWeight(conv.weight.detach())
        >>> torch.allclose(block(conv.weight), conv.weight, atol=1e-5)  # starts equal
        True
    """

    mask: torch.Tensor  # a buffer: the hard mask over the code filters

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        u, s, _ = torch.linalg.svd(weight.detach().flatten(1), full_matrices=False)
        self.encoder = nn.Parameter(u.T.clone())  # (c, n)
        self.decoder = nn.Parameter(u.clone())  # (n, c)
        rel = (s / s[0].clamp_min(1e-12)).clamp(0.05, 0.95)
        self.gate_logit = nn.Parameter(torch.log(rel / (1 - rel)))
        self.register_buffer("mask", torch.ones(len(s), device=s.device))

    @property
    def rank(self) -> int:
        return self.encoder.shape[0]

    def gate(self) -> torch.Tensor:
        """The mask in the forward pass: hard, with the soft gate's gradient (STE)."""
        soft = torch.sigmoid(self.gate_logit)
        return self.mask + soft - soft.detach()

    def code(self, weight: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        """The code filters m * (E W), shaped like conv weights (c, in, k, k)."""
        gate = self.gate() if gate is None else gate
        flat = gate[:, None] * (self.encoder @ weight.flatten(1))
        return flat.view(self.rank, *weight.shape[1:])

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        code = self.code(weight)
        return (self.decoder @ code.flatten(1)).view_as(weight)

    def reconstruction(self, weight: torch.Tensor) -> torch.Tensor:
        """||W - W_hat||^2 / ||W||^2: how far the code has drifted from the filters."""
        return (self.forward(weight) - weight).pow(2).sum() / weight.pow(2).sum().clamp_min(1e-12)


def alf_convs(model: nn.Module) -> list[str]:
    """The convs an ALF block replaces: every ungrouped conv with a kernel larger than 1."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)
            and m.kernel_size[0] * m.kernel_size[1] > 1 and m.groups == 1]


def wrap(model: nn.Module) -> nn.Module:
    """Parametrise ``model``'s convs (in place) as ALF blocks; returns ``model``."""
    names = alf_convs(model)
    if not names:
        raise ValueError("ALF needs ungrouped convs with kernels larger than 1x1: this "
                         "network has none")
    for name in names:
        conv = cast(nn.Conv2d, model.get_submodule(name))
        parametrize.register_parametrization(conv, "weight", ALFWeight(conv.weight.detach()))
    return model


def _original_weight(conv: nn.Module) -> torch.Tensor:
    """The weight of a conv parametrised by `wrap` before its ALF block (torch's parametrize
    adds the ``parametrizations`` dict, which the type checker cannot see)."""
    return cast(torch.Tensor, cast(nn.ModuleDict, conv.parametrizations)["weight"].original)


def blocks(model: nn.Module) -> dict[str, ALFWeight]:
    """The ALF blocks of a wrapped network, by conv name."""
    return {name: module.parametrizations["weight"][0] for name, module in model.named_modules()
            if parametrize.is_parametrized(module, "weight")
            and isinstance(module.parametrizations["weight"][0], ALFWeight)}


def deploy(model: nn.Module, masks: dict[str, torch.Tensor] | None = None, *,
           drop_masked: bool = False) -> nn.Module:
    """The deployed network: each ALF block as a conv with its code filters, then a 1x1
    expansion conv; the autoencoder dropped. ``model`` is left as it was.

    Args:
        model: a network wrapped by `wrap`.
        masks: code masks to deploy instead of the blocks' own (what-if costs).
        drop_masked: leave masked code filters out (the deployed cost); by default they stay,
            with zero weights, for the environment's keep/drop action to remove.
    """
    out = copy.deepcopy(model)
    for name, block in blocks(out).items():
        conv = cast(nn.Conv2d, out.get_submodule(name))
        mask = block.mask if masks is None else masks[name]
        with torch.no_grad():
            weight = _original_weight(conv)
            code = block.code(weight, mask.to(weight.dtype))
            decoder: torch.Tensor = block.decoder
            if drop_masked:
                alive = mask.bool()
                code, decoder = code[alive], decoder[:, alive]
        parent, _, attr = name.rpartition(".")
        setattr(out.get_submodule(parent) if parent else out, attr,
                deployed_block(conv, code, decoder))
    return out


def deployed_block(conv: nn.Conv2d, code: torch.Tensor, decoder: torch.Tensor) -> nn.Sequential:
    """``Sequential(code=conv with the code filters, expand=1x1 conv with the decoder)``."""
    first = nn.Conv2d(conv.in_channels, code.shape[0], cast("tuple[int, int]", conv.kernel_size),
                      cast("tuple[int, int]", conv.stride),
                      cast("str | tuple[int, int]", conv.padding),
                      cast("tuple[int, int]", conv.dilation), bias=False)
    first.weight = nn.Parameter(code.detach().clone())
    expand = nn.Conv2d(code.shape[0], conv.out_channels, 1, bias=conv.bias is not None)
    expand.weight = nn.Parameter(decoder.detach().clone()[:, :, None, None])
    if conv.bias is not None:
        expand.bias = nn.Parameter(conv.bias.detach().clone())
    return nn.Sequential(OrderedDict(code=first, expand=expand))


class ALFTrainer:
    """ALF's training, a `prune_env.training.loop.GradHook`: after the task's backward pass, adds
    the reconstruction and sparsity gradients; every ``config.every`` steps, sets each block's
    hard mask to the gates above the global threshold that meets the target.

    Args:
        env: the unwrapped `PruneEnv` (its cost meter, base cost and target).
        config: ALF's settings.
    """

    def __init__(self, env, config: ALFConfig = ALFConfig()):
        self.env = env
        self.config = config
        self.history: list[dict[str, float]] = []  # reconstruction, kept code share

    def __call__(self, model: nn.Module, step: int, steps: int) -> None:
        found = blocks(model)
        if step % self.config.every == 0:
            self.set_masks(model, found)
        convs = {name: model.get_submodule(name) for name in found}
        # A tensor: a wrapped network has at least one ALF block (`wrap` checks).
        rec = cast(torch.Tensor, sum(b.reconstruction(_original_weight(convs[n]))
                                     for n, b in found.items()))
        sparsity = sum(torch.sigmoid(b.gate_logit).mean() for b in found.values())
        (self.config.reconstruction * rec + self.config.sparsity * sparsity).backward()
        if step % self.config.every == 0 or step == steps - 1:
            kept = sum(float(b.mask.sum()) for b in found.values())
            self.history.append({"step": step, "reconstruction": float(rec.detach()) / len(found),
                                 "code_kept": kept / sum(b.rank for b in found.values())})

    def set_masks(self, model: nn.Module, found: dict[str, ALFWeight]) -> None:
        """The hard masks: gates above the lowest global threshold meeting the target."""
        gates = {n: torch.sigmoid(b.gate_logit.detach()) for n, b in found.items()}
        order = torch.sort(torch.cat(list(gates.values())), descending=True).values
        # number of code filters kept: the most that meets the target
        kept = largest_count(lambda n: self.meets(model, masks_at(gates, order[n - 1])),
                             1, len(order))
        masks = masks_at(gates, order[kept - 1])
        if kept == 1 and not self.meets(model, masks):
            bench = self.env.bench
            floor = bench.meter.costs(deploy(model, masks, drop_masked=True))[bench.cost_key]
            raise OutOfReach(
                f"ALF cannot reach a {bench.cost_name} target of {bench.reward_cfg.target} "
                f"here: with one code filter per layer its deployed network still costs "
                f"{floor / bench.base_cost:.2f} of the base (each ALF layer adds a 1x1 conv); "
                "choose a higher --target or --cost flops")
        for name, mask in masks.items():
            found[name].mask.copy_(mask)

    def meets(self, model: nn.Module, masks: dict[str, torch.Tensor]) -> bool:
        bench = self.env.bench
        cost = bench.meter.costs(deploy(model, masks, drop_masked=True))[bench.cost_key]
        return cost <= bench.aim * bench.base_cost


def masks_at(gates: dict[str, torch.Tensor], threshold: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per block, the code filters whose gate reaches ``threshold`` (at least one each)."""
    out = {}
    for name, gate in gates.items():
        mask = gate >= threshold
        mask[int(torch.argmax(gate))] = True
        out[name] = mask.float()
    return out


def code_filters(model: nn.Module) -> dict[str, list[int]]:
    """Per deployed ALF layer of ``model``: [code filters, output filters]."""
    return {name[: -len(".code")]: [cast(nn.Conv2d, m).out_channels, cast(nn.Conv2d, (
                model.get_submodule(name[: -len("code")] + "expand"))).out_channels]
            for name, m in model.named_modules() if name.endswith(".code")}


class ALFPolicy(SimplePolicy):
    """ALF's own episode: drop exactly the code filters ALF masked, keep every other filter.

    Its `deploy` is the environment's ``deploy`` reset option: it records each block's mask
    before deploying, and at each step the policy finds the group being visited from the
    observation's progress and the environment's `visit_order` (as `LayerPrunePolicy`
    does). Not from the filters' weights: the masked code filters start at zero, but the
    fine-tuning of earlier steps moves them off it before their group is visited.

    Args:
        env: the unwrapped `PruneEnv`.
        finetune: fine-tune fraction at every step.
    """

    def __init__(self, env, finetune: float = 0.0):
        super().__init__(env.bench.max_filters, finetune)
        self.env = env
        self.masks: dict[str, np.ndarray] = {}

    def deploy(self, model: nn.Module) -> nn.Module:
        """`deploy`, recording the masks (by code conv name) for the episode."""
        self.masks = {f"{name}.code": block.mask.bool().cpu().numpy()
                      for name, block in blocks(model).items()}
        return deploy(model)

    def keep(self, obs: np.ndarray, n: int) -> np.ndarray:
        order = self.env.visit_order
        leader = order[min(round(float(obs[0]) * len(order)), len(order) - 1)]
        mask = self.masks.get(leader)
        return np.ones(n, np.int8) if mask is None else mask.astype(np.int8)
