"""FTWT, Fire Together Wire Together (Elkerdawy et al., CVPR 2022): dynamic filter gating.

A *gate* switches the output filters of one conv unit on or off per input image. A small
*mask predictor* decides from the unit's input which filters fire; it learns to imitate a
*teacher mask*, the smallest set of filters that carries a fraction ``r`` (the *budget*) of the
unit's output mass on that image. So the number of active filters varies per image: easy
images fire few filters, hard ones many.

Here, for every ResNet made of *basic blocks* (two 3x3 convs with BN in the residual branch,
ReLU after the addition, `gated_blocks`): the CIFAR ResNets and the FCN of
`prune_env.nn.models`, torchvision's resnet18/34 and so the ResNet-18/34 encoders of
segmentation_models_pytorch (U-Net, FPN, DeepLabV3+, dilated or not). Both convs of every
such branch are gated (conv1's unit is conv1+bn1+ReLU, conv2's unit is conv2+bn2 before the
addition); the stem, the projection shortcuts, bottleneck blocks, decoders and classifiers
stay dense, as in the paper's ResNets. The gates act through forward hooks registered for the
duration of each forward pass, so the backbone keeps its own structure and layer names (and
``backbone(x)`` alone is the dense network).

Training is decoupled: the predictors see detached inputs and detached targets, so their BCE
loss never reaches the backbone; `PredictorTrainer` steps them with their own optimiser from
inside `prune_env.training.loop.train_steps` (as its grad hook), while the task loss trains the
backbone, its outputs masked by the predicted masks (the ones it will execute; or by the
teacher masks, ``train_masks="teacher"``).

Inference (eval mode): mask = sigmoid(logit) > 0.5 and the dense outputs are multiplied by
it, the "simulated" execution of the authors' code; `baselines.gating.dynamic` really skips the
filters.

Example:
    >>> from prune_env.nn.models import build_model
    >>> gated = GatedNetwork(build_model("resnet20", 3, 10, (32, 32)), budget=0.8)
    >>> gated.gates[:2]
    ['3.branch.0', '3.branch.3']
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prune_env.nn.blocks import residual_blocks
from prune_env.nn.device import module_device
from prune_env.nn.layers import Residual

#: Children (conv1, bn1, conv2, bn2, activation after the addition, projection shortcut) of
#: the basic blocks gating knows, by class: our `Residual` with a conv-BN-ReLU-conv-BN branch,
#: and torchvision's BasicBlock (smp's ResNet encoders are torchvision ResNets).
_RESIDUAL_UNITS = ("branch.0", "branch.1", "branch.3", "branch.4", "act", "shortcut")
_BASIC_UNITS = ("conv1", "bn1", "conv2", "bn2", "relu", "downsample")
_BRANCH_TYPES = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d)


@dataclass(frozen=True)
class BasicBlock:
    """A gated basic block: its name and the full names of its parts.

    Attributes:
        name: the block's module name.
        conv1, bn1, conv2, bn2: the branch's units (the gates are conv1 and conv2).
        act: the ReLU applied after the addition.
        shortcut: the projection (conv, BN) or None for an identity.
    """

    name: str
    conv1: str
    bn1: str
    conv2: str
    bn2: str
    act: str
    shortcut: str | None

    @property
    def gates(self) -> tuple[str, str]:
        return self.conv1, self.conv2


def _units(block: nn.Module) -> tuple[str, ...] | None:
    """The children names of a basic block gating can run (see `_RESIDUAL_UNITS`), or None."""
    kind = type(block)
    if isinstance(block, Residual):
        branch = block.branch
        if not (isinstance(branch, nn.Sequential) and len(branch) == 5 and all(
                isinstance(m, t) for m, t in zip(branch, _BRANCH_TYPES, strict=True))):
            return None
        units = _RESIDUAL_UNITS
    elif f"{kind.__module__}.{kind.__qualname__}" == "torchvision.models.resnet.BasicBlock":
        units = _BASIC_UNITS
    else:
        return None
    act = getattr(block, units[4], None)
    convs = [cast(nn.Conv2d, block.get_submodule(u)) for u in (units[0], units[2])]
    if not isinstance(act, nn.ReLU) or any(c.groups != 1 for c in convs):
        return None
    return units


def gated_blocks(model: nn.Module) -> list[BasicBlock]:
    """The basic blocks of ``model`` (any depth, module order) whose two convs gating runs."""
    blocks = []
    for block in residual_blocks(model):
        units = _units(model.get_submodule(block.name))
        if units is None:
            continue
        conv1, bn1, conv2, bn2, act, shortcut = (block.child(u) for u in units)
        projects = getattr(model.get_submodule(block.name), units[5]) is not None
        blocks.append(BasicBlock(block.name, conv1, bn1, conv2, bn2, act,
                                 shortcut if projects else None))
    if not blocks:
        raise ValueError("gating runs on ResNets of basic blocks (conv-BN-ReLU-conv-BN "
                         "branches): the CIFAR ResNets and resnet20-fcn of prune_env, "
                         "torchvision's resnet18/34 and smp networks with a resnet18/34 "
                         "encoder; this model has no such block (pass an unpruned one)")
    return blocks


def target_masks(scores: Tensor, r: float) -> Tensor:
    """The teacher masks: per input, the fewest top filters holding a fraction ``r`` of the mass.

    Scores are normalised to sum 1 per input (the caller may pass raw spatial maxima of
    |output|); sorted descending, a filter is labelled 1 while the cumulative mass up to and
    including it is <= r. The top filter is always kept: a unit with no filter would cut the
    residual branch's signal entirely.

    Example:
        >>> target_masks(torch.tensor([[1.0, 5.0, 2.0, 2.0]]), 0.75).int().tolist()
        [[0, 1, 1, 0]]

    Args:
        scores: [B, C] non-negative filter scores.
        r: the budget, in [0, 1].

    Returns:
        [B, C] bool masks.
    """
    mass = scores / scores.sum(1, keepdim=True).clamp_min(1e-12)
    # Stable: among tied filters the lower index wins, so masks are reproducible.
    sorted_mass, order = mass.sort(dim=1, descending=True, stable=True)
    # A small tolerance so that r = 0.8 keeps 0.5 + 0.3 despite float rounding.
    keep = sorted_mass.cumsum(1) <= r + 1e-6
    keep[:, 0] = True
    return torch.zeros_like(keep).scatter(1, order, keep)


def predicted_masks(logits: Tensor) -> Tensor:
    """Inference masks: sigmoid(logit) > 0.5, i.e. logit > 0, with at least the argmax kept.

    Testing ``logit > 0`` rather than the sigmoid keeps the masked and the dynamic execution
    bit-identical (sigmoid rounds tiny logits to exactly 0.5).
    """
    keep = logits > 0
    # The argmax is already on whenever any logit is positive, so setting it is harmless.
    return keep.scatter(1, logits.argmax(1, keepdim=True), True)


class MaskPredictor(nn.Module):
    """FTWT's mask predictor: softmax over the channels of the pooled input, then a 1x1 conv.

    The 1x1 conv on a 1x1 map is a `nn.Linear` (with bias) giving one logit per output filter.
    It takes the *pooled* input (global average, [B, C_in]), so the dynamic execution can
    build that vector cheaply without materialising inactive channels.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.linear = nn.Linear(in_channels, out_channels)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.linear(pooled.softmax(1))


def predictor_key(gate: str) -> str:
    """The `nn.ModuleDict` key of a gate (module names may not contain dots)."""
    return gate.replace(".", "_")


class GatedNetwork(nn.Module):
    """A ResNet whose residual-branch convs are gated per input (FTWT).

    Attributes:
        backbone: a deep copy of the wrapped network (called alone, it is the dense network).
        blocks: the gated basic blocks (`gated_blocks`), forward order.
        gates: gated conv names in the backbone, forward order ("3.branch.0", "3.branch.3", ...
            for a CIFAR ResNet; "encoder.layer1.0.conv1", ... for an smp encoder).
        budgets: r per gate (settable), the teacher's mass fraction.
        predictors: one `MaskPredictor` per gate, keyed by `predictor_key(gate)`.
        aux_loss: after a teacher forward, the predictors' BCE (a scalar whose graph only
            touches predictor parameters), summed over filters and gates and averaged over the
            batch: each filter's predictor is its own logistic regression, so summing keeps its
            step from shrinking with the width and depth of the network (a mean over filters
            made lr 0.1 far too slow).
        agreement: after a teacher forward, the mean over gates of the fraction of predicted
            bits equal to the teacher's.
        last_masks: the masks ([B, C] bool) of the last forward, per gate.
        train_masks: which masks multiply the backbone's outputs in train mode: "predicted"
            (default: the backbone learns to work with the filters it will execute) or
            "teacher". The predictors learn the teacher masks either way. Where the paper is
            silent; measured on the synthetic data at 0.6 of the base FLOPs, 30 predictor
            batches per step: validation accuracy with predicted masks 0.77 trained on
            predicted, 0.67 trained on teacher masks (0.81 with teacher masks at inference,
            which no deployment has).

    Args:
        model: a trained ResNet of basic blocks (see the module docstring).
        budget: initial r of every gate.
        train_masks: see Attributes.
    """

    def __init__(self, model: nn.Module, budget: float = 0.9, train_masks: str = "predicted"):
        super().__init__()
        self.blocks = gated_blocks(model)  # checked before copying a model we reject
        self.backbone = copy.deepcopy(model)
        self.gates = [gate for block in self.blocks for gate in block.gates]
        #: the BN whose output each gate masks (its unit's output before any ReLU)
        self._norms = {g: n for b in self.blocks
                       for g, n in ((b.conv1, b.bn1), (b.conv2, b.bn2))}
        self._second = {block.conv2 for block in self.blocks}
        self.budgets = {gate: budget for gate in self.gates}
        convs = {gate: cast(nn.Conv2d, self.backbone.get_submodule(gate)) for gate in self.gates}
        self.predictors = nn.ModuleDict({
            predictor_key(g): MaskPredictor(c.in_channels, c.out_channels)
            for g, c in convs.items()})
        self.predictors.to(module_device(self.backbone))  # where the network lives
        if hasattr(model, "input_shape"):
            self.input_shape = model.input_shape
        self.aux_loss: Tensor = torch.zeros(())
        self.agreement = float("nan")
        self.last_masks: dict[str, Tensor] = {}
        if train_masks not in ("predicted", "teacher"):
            raise ValueError(f"train_masks must be 'predicted' or 'teacher', not {train_masks!r}")
        self.train_masks = train_masks

    def predictor(self, gate: str) -> MaskPredictor:
        """The mask predictor of a gate."""
        return cast(MaskPredictor, self.predictors[predictor_key(gate)])

    def is_second(self, gate: str) -> bool:
        """Whether ``gate`` is a branch's second conv (its output is added to the shortcut)."""
        return gate in self._second

    def forward(self, x: Tensor, teacher: bool | None = None) -> Tensor:
        """Run the backbone with gated residual branches.

        Args:
            x: [B, C, H, W] images.
            teacher: mask with the teacher masks (and compute `aux_loss`) rather than the
                predicted ones; default: in train mode.
        """
        self._teacher = self.training if teacher is None else teacher
        self._losses: list[Tensor] = []
        self._agreements: list[Tensor] = []
        self._logits: dict[str, Tensor] = {}
        self.last_masks = {}
        with self._gating():
            x = self.backbone(x)
        if self._teacher:
            self.aux_loss = torch.stack(self._losses).sum()
            self.agreement = float(torch.stack(self._agreements).mean())
        return x

    @contextlib.contextmanager
    def _gating(self) -> Iterator[None]:
        """Hooks for one forward pass: each gated conv's input feeds its predictor, and its
        BN's output is masked. Registered per pass (a few dozen hooks, microseconds) so that
        the backbone stays a plain network that copies, pickles and records as such."""
        handles = []
        try:
            for gate, norm in self._norms.items():
                handles.append(self.backbone.get_submodule(gate).register_forward_pre_hook(
                    lambda _m, args, gate=gate: self._predict(gate, args[0])))
                handles.append(self.backbone.get_submodule(norm).register_forward_hook(
                    lambda _m, _a, out, gate=gate: self._gate(gate, out)))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _predict(self, gate: str, unit_in: Tensor) -> None:
        # Detached: the predictor's loss must not change the backbone (decoupled training).
        self._logits[gate] = self.predictor(gate)(unit_in.detach().mean((2, 3)))

    def _gate(self, gate: str, unit_out: Tensor) -> Tensor:
        """Mask a unit's dense output (its BN's); in teacher mode also score the predictor.

        A first conv's unit ends in a ReLU after the BN: its teacher scores are taken after
        that ReLU, and masking before it is the same as after (the mask is 0 or 1)."""
        logits = self._logits.pop(gate)
        if self._teacher:
            out = unit_out.detach()
            out = out.abs() if self.is_second(gate) else out.relu()
            mask = target_masks(out.amax((2, 3)), self.budgets[gate])
            bce = F.binary_cross_entropy_with_logits(logits, mask.float(), reduction="none")
            self._losses.append(bce.sum(1).mean())
            self._agreements.append(((logits.detach() > 0) == mask).float().mean())
            if self.training and self.train_masks == "predicted":
                mask = predicted_masks(logits.detach())
        else:
            mask = predicted_masks(logits)
        self.last_masks[gate] = mask
        return unit_out * mask[:, :, None, None].to(unit_out.dtype)


class PredictorTrainer:
    """A `prune_env.training.loop.GradHook` that trains the mask predictors with their own optimiser.

    Called after the task loss's backward pass: backpropagates the model's ``aux_loss``, steps
    SGD (lr 0.1, momentum 0.9, no weight decay: the paper's separate predictor optimiser, at a
    constant rate since the paper's schedule is the backbone's concern) or Adam (what the
    gating environment uses: the softmax makes the predictor's inputs about 1/C each, so SGD
    learns their input dependence slowly in a few dozen batches; measured 0.67 vs 0.61
    validation accuracy with predicted masks at the same budget), then sets the
    predictors' ``.grad`` to None so that the caller's optimiser, which skips parameters
    without a gradient, applies neither its update nor its weight decay to them.

    Attributes:
        bce: the predictors' BCE per mask bit at each step (``aux_loss`` / number of filters).
        agreement: the fraction of predicted mask bits equal to the teacher's at each step.
    """

    def __init__(self, model: GatedNetwork, lr: float = 0.1, momentum: float = 0.9,
                 optimizer: str = "sgd"):
        self.params = list(model.predictors.parameters())
        self.bits = sum(cast(MaskPredictor, p).linear.out_features
                        for p in model.predictors.values())
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        self.optimizer = (torch.optim.SGD(self.params, lr=lr, momentum=momentum)
                          if optimizer == "sgd" else torch.optim.Adam(self.params, lr=lr))
        self.bce: list[float] = []
        self.agreement: list[float] = []

    def __call__(self, model: nn.Module, step: int, steps: int) -> None:
        loss = getattr(model, "aux_loss", None)
        if loss is None or loss.grad_fn is None:
            raise ValueError("PredictorTrainer needs a GatedNetwork trained in train mode "
                             "(its forward sets aux_loss); pass it as train_steps' model")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        for param in self.params:
            param.grad = None
        self.bce.append(float(loss.detach()) / self.bits)
        self.agreement.append(cast(GatedNetwork, model).agreement)


def mean_active(model: GatedNetwork, images: Tensor,
                budgets: dict[str, float] | float | None = None,
                batch_size: int = 256) -> dict[str, float]:
    """Mean number of teacher-mask filters per gate over ``images`` (to choose r for a cost).

    Runs the teacher forward in eval mode (running BN statistics, no training).

    Args:
        model: the gated network.
        images: [N, C, H, W].
        budgets: r per gate, or one r for all; None uses ``model.budgets``.
        batch_size: images per forward.
    """
    saved, was = dict(model.budgets), model.training
    if isinstance(budgets, float | int):
        budgets = dict.fromkeys(model.gates, float(budgets))
    model.budgets.update(budgets or {})
    totals = dict.fromkeys(model.gates, 0.0)
    try:
        model.eval()
        with torch.inference_mode():
            for chunk in images.split(batch_size):
                model(chunk, teacher=True)
                for gate, mask in model.last_masks.items():
                    totals[gate] += float(mask.sum())
    finally:
        model.budgets.update(saved)
        model.train(was)
    return {gate: total / len(images) for gate, total in totals.items()}
