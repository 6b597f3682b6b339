"""Surgery: turn any structured mask into a physically smaller network.

`compact(model, keep)` takes ``keep``, a map from conv module names to boolean masks over
their output filters, and returns a new, smaller `nn.Module` (the input is left untouched).

What the result equals: the *masked network*, the original in which every dropped filter's
output channel is forced to zero right after its BatchNorm (after the conv itself where no
BatchNorm follows), evaluated in eval mode. The steps, each needed for that equality:

1. Residual branches that contain a conv whose filters are all dropped output a constant
   (the BN shift left after the empty conv). The block (ours, torchvision's, smp's: see
   `prune_env.nn.blocks`) becomes a `Shortcut`: its shortcut plus that constant, folded into
   the shortcut's BatchNorm or held by a `ChannelShift` (Tessier et al. 2022 call the
   alternative "dimensional discrepancies").
2. Torch-Pruning's dependency graph couples layers that must shrink together (BN, the next
   conv or linear, residual additions, depthwise and grouped convs, concatenations). Where
   coupled convs carry different masks, the union of their kept channels survives, and in it
   each conv's own dropped channels are zeroed (BN scale and shift set to 0). With
   ``coupling="scatter"``, the last conv of each residual branch then keeps only its own
   channels and the block index-adds them into the union: Tessier et al.'s "adder that
   scatters each branch's surviving channels into the union".
3. A removed channel that still carried a constant in the masked network (a BN shift after a
   dropped depthwise channel, say) is folded into the bias of the layer that read it.

Masks that would empty a group with no shortcut (a plain conv chain) are refused with
`SurgeryError`; the environment avoids them by keeping the strongest filter. Every result is
checked: the compact network is run on the traced batch and compared with the masked network
(`check_exact`); a difference, or a failure inside Torch-Pruning, is a `SurgeryError` naming
the network, never a silently different network nor a library's traceback.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from prune_env.nn.blocks import ResidualBlock, Shortcut, replace_with_shortcut, residual_blocks
from prune_env.nn.device import on_cpu
from prune_env.nn.grouped import align_to_conv_groups, grouped_convs, grouped_input_weight
from prune_env.nn.layers import CUSTOM_PRUNERS as LAYER_PRUNERS
from prune_env.nn.layers import ChannelShift
from prune_env.nn.models import example_input
from prune_env.nn.scatter import scatter_branches
from prune_env.nn.shuffle import CUSTOM_PRUNERS as SHUFFLE_PRUNERS
from prune_env.nn.shuffle import ChannelShuffle, has_shuffles, traceable_shuffles

MaskLike = torch.Tensor | np.ndarray | Sequence[bool]
R = TypeVar("R")


class SurgeryError(ValueError):
    """A mask that cannot become a smaller network, with what to do instead."""


@dataclass
class CompactResult:
    """What `compact_report` built and what it had to do to get there.

    Attributes:
        model: the compact network.
        unions: coupled groups whose convs had different masks, as
            ``{conv name: filters kept only because a coupled conv kept them}``.
        removed_branches: names of the residual blocks whose branch was removed (each is a
            `prune_env.nn.blocks.Shortcut` now).
        scattered: with ``coupling="scatter"``, each block whose branch adds only its own
            channels into the union, and how many it adds.
        out_channels: filters left in each conv of the compact network.
        graph: Torch-Pruning's dependency graph of the compact network (it tracks the pruning
            it did), so that callers need not trace the network again.
    """

    model: nn.Module
    graph: tp.DependencyGraph | None = None
    unions: list[dict[str, int]] = field(default_factory=list)
    removed_branches: list[str] = field(default_factory=list)
    scattered: dict[str, int] = field(default_factory=dict)
    out_channels: dict[str, int] = field(default_factory=dict)


def compact(model: nn.Module, keep: Mapping[str, MaskLike],
            example_inputs: torch.Tensor | None = None, coupling: str = "union") -> nn.Module:
    """A physically smaller copy of ``model`` keeping only the filters ``keep`` marks True.

    Args:
        model: a network with ``input_shape`` set (see `prune_env.nn.models.build_model`), or
            give ``example_inputs``.
        keep: conv module name -> boolean mask over its output filters. Convs not named keep
            all their filters.
        example_inputs: a batch used to trace the network (batch size >= 2 recommended).
        coupling: ``"union"`` or ``"scatter"`` (see `compact_report`).

    Returns:
        The compact network; `compact_report` also says what was merged or removed.
    """
    return compact_report(model, keep, example_inputs, coupling=coupling).model


COUPLINGS = ("union", "scatter")


@on_cpu  # surgery builds modules and plain indices: on a CPU copy, moved back after
def compact_report(model: nn.Module, keep: Mapping[str, MaskLike],
                   example_inputs: torch.Tensor | None = None,
                   bn_of: Mapping[str, str] | None = None,
                   coupling: str = "union") -> CompactResult:
    """`compact`, returning a `CompactResult` with the notes on unions and removed branches.

    Args:
        bn_of: conv -> the BatchNorm after it (`following_batchnorms`), when it is known,
            e.g. from the unpruned network: pruning never changes it, and tracing it again at
            every step costs a forward pass.
        coupling: how branches joined by a residual addition share channels. ``"union"``:
            every coupled conv keeps the union of their kept channels (its own dropped ones
            zeroed). ``"scatter"`` (Tessier et al.'s adder): the last conv of each residual
            branch keeps only its own channels, and the block adds them into the union at
            their positions (an index-add): our `Residual` blocks and torchvision's (a
            `prune_env.nn.blocks.ScatterBlock` then); smp's EfficientNet blocks keep the
            union. A network compacted with "scatter" is for deployment: surgery does not
            compact it again.
    """
    if coupling not in COUPLINGS:
        raise SurgeryError(f"unknown coupling {coupling!r}: use one of {', '.join(COUPLINGS)}")
    masks = validate_keep(model, keep)
    x = example_inputs if example_inputs is not None else example_input(model, 2)
    with evaluating(model), torch.no_grad():
        bn_of = dict(bn_of) if bn_of is not None else following_batchnorms(model, x)
        check_norms(model, masks, bn_of)
        trace = masked_trace(model, masks, bn_of, x)
    check_called(masks, trace)
    new = copy.deepcopy(model)
    per_channel = per_channel_groupnorms(new)
    result = CompactResult(model=new)
    result.removed_branches = remove_emptied_branches(new, masks, trace)
    names = dict(new.named_modules())
    masks = {n: m for n, m in masks.items() if n in names}
    with evaluating(new):
        graph = library_call(lambda: dependency_graph(new, x), model, "tracing the network")
        modules = {m: n for n, m in new.named_modules()}
        frames = Frames.of(new)
        done: set[str] = set()
        for name in masks:
            if name in done:
                continue
            decided, concat = library_call(
                functools.partial(prune_group, graph, modules, names[name], masks, bn_of,
                                  trace, result, frames),
                model, f"pruning the group of {name!r}")
            done |= decided
            if concat:  # Torch-Pruning keeps a concat's traced offsets: trace anew
                graph = library_call(lambda: dependency_graph(new, x), model,
                                     "tracing the network again after a concatenation")
    if coupling == "scatter":
        result.scattered = scatter_branches(new, masks, bn_of, frames.outputs)
    for norm in per_channel:  # Torch-Pruning keeps num_groups (and affine=False: channels)
        if norm.weight is not None:
            norm.num_groups = norm.num_channels = norm.weight.numel()
    result.out_channels = {n: m.out_channels for n, m in new.named_modules()
                           if isinstance(m, nn.Conv2d)}
    result.graph = graph
    check_exact(trace.output, new, x, model)
    return result


#: How far the compact network may be from the masked one: max |difference| over the
#: masked output's max |value| (float32 reordering stays near 1e-6 on the zoo).
TOLERANCE = 1e-4


def library_call(call: Callable[[], R], model: nn.Module, doing: str) -> R:
    """``call()``, with a failure inside Torch-Pruning or torch turned into a `SurgeryError`
    that names the network and what surgery was doing (never a traceback from deep inside a
    library)."""
    try:
        return call()
    except SurgeryError:
        raise
    except Exception as err:  # noqa: BLE001 - any library failure becomes one clear error
        network = getattr(model, "arch", {}).get("name") or type(model).__name__
        raise SurgeryError(f"surgery failed on {network} while {doing}: "
                           f"{type(err).__name__}: {err} (please report the model)") from err


def check_exact(expected: Any, model: nn.Module, x: torch.Tensor, original: nn.Module) -> None:
    """Refuse a compact network that does not run or whose output differs from the masked
    network's: surgery never returns a network that differs silently."""
    with evaluating(model), torch.no_grad():
        got = library_call(functools.partial(model, x), original,
                           "running the compact network (a layer was cut to an invalid shape)")
    wanted, found = tensors_of(expected), tensors_of(got)
    if len(wanted) != len(found):
        raise SurgeryError(f"the compact network returns {len(found)} tensors, the masked "
                           f"network {len(wanted)} (please report the model)")
    for (where, want), (_, have) in zip(wanted, found, strict=True):
        if want.shape != have.shape:
            raise SurgeryError(f"the compact network's output {where} has shape "
                               f"{tuple(have.shape)}, the masked network's "
                               f"{tuple(want.shape)} (please report the model)")
        error = float((want - have).abs().max() / want.abs().max().clamp_min(1e-6))
        if error > TOLERANCE:
            raise SurgeryError(f"the compact network differs from the masked one by "
                               f"{error:.1e} (relative) at output {where}: this mask is not "
                               "supported exactly here (please report the model)")


def tensors_of(output: Any, where: str = "") -> list[tuple[str, torch.Tensor]]:
    """The tensors of a network's output (a tensor, or dicts and sequences of them, as
    segmentation models return), with where each lies."""
    if isinstance(output, torch.Tensor):
        return [(where or "0", output)]
    if isinstance(output, Mapping):
        return [t for k, v in output.items() for t in tensors_of(v, f"{where}[{k!r}]")]
    if isinstance(output, (list, tuple)):
        return [t for i, v in enumerate(output) for t in tensors_of(v, f"{where}[{i}]")]
    return []


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode inside the block (tracing must not update BN statistics), then restore."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def dependency_graph(model: nn.Module, x: torch.Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model`` (traced with autograd, so grad on)."""
    with torch.enable_grad(), traceable_shuffles(model):
        return tp.DependencyGraph().build_dependency(
            model, example_inputs=x, customized_pruners=PRUNERS, verbose=False)


#: Our layers' Torch-Pruning handlers.
PRUNERS = {**LAYER_PRUNERS, **SHUFFLE_PRUNERS}


def reaches_shuffle(group) -> bool:
    """Whether a pruning group's channels pass through a channel shuffle (`shuffle`)."""
    return any(isinstance(item.dep.target.module, ChannelShuffle) for item in group)


def validate_keep(model: nn.Module, keep: Mapping[str, MaskLike]) -> dict[str, torch.Tensor]:
    """Check names and shapes; return boolean tensors in the model's module order."""
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    unknown = [n for n in keep if n not in convs]
    if unknown:
        raise SurgeryError(f"keep names {unknown} that are not conv layers of the model; "
                           f"conv layers are: {', '.join(convs)}")
    masks = {}
    for name in convs:
        if name not in keep:
            continue
        mask = torch.as_tensor(np.asarray(keep[name])).flatten()
        if mask.numel() != convs[name].out_channels:
            raise SurgeryError(f"mask for {name!r} has {mask.numel()} entries but the layer "
                               f"has {convs[name].out_channels} filters")
        masks[name] = mask.bool()
    return masks


def mixes_channels(norm: nn.Module) -> bool:
    """A norm whose statistics mix channels: removing one channel changes the others' (a
    LayerNorm over channels, as in ConvNeXt; a GroupNorm with several channels per group), so
    no filter before it can be dropped exactly. BatchNorm and one-channel groups normalise
    each channel alone."""
    if isinstance(norm, nn.GroupNorm):
        return norm.num_groups < norm.num_channels
    return isinstance(norm, nn.LayerNorm)


def per_channel_groupnorms(model: nn.Module) -> list[nn.GroupNorm]:
    """The GroupNorms with one channel per group (`mixes_channels` is False for them)."""
    return [m for m in model.modules()
            if isinstance(m, nn.GroupNorm) and m.num_groups == m.num_channels]


def check_norms(model: nn.Module, masks: dict[str, torch.Tensor], bn_of: dict[str, str]) -> None:
    """Refuse masks on convs read by a norm that mixes channels (`prunable_convs` lists the
    others)."""
    names = dict(model.named_modules())
    for name, mask in masks.items():
        norm = bn_of.get(name)
        if not bool(mask.all()) and norm is not None and mixes_channels(names[norm]):
            raise SurgeryError(f"{name!r} feeds {norm!r}, a {type(names[norm]).__name__} "
                               "whose statistics mix channels: dropping a filter changes the "
                               "others'; leave it out of keep (see prunable_convs)")


def check_called(masks: dict[str, torch.Tensor], trace: Trace) -> None:
    """Refuse masks on convs the forward pass never calls (a classifier an encoder drops)."""
    for name, mask in masks.items():
        if not bool(mask.all()) and name not in trace.inputs:
            raise SurgeryError(f"{name!r} is never called by the network's forward pass: "
                               "leave it out of keep")


def prunable_convs(model: nn.Module, x: torch.Tensor | None = None) -> list[str]:
    """The convs whose filters `compact` can drop, in module order: those the forward pass
    calls, that no channel-mixing norm reads (`mixes_channels`) and whose filters pass
    through no channel shuffle."""
    x = example_input(model, 2) if x is None else x
    with evaluating(model), torch.no_grad():
        bn_of = following_batchnorms(model, x)
        trace = masked_trace(model, {}, bn_of, x)
    names = dict(model.named_modules())
    shuffled = shuffled_convs(model, x) if has_shuffles(model) else set()
    return [n for n, m in names.items() if isinstance(m, nn.Conv2d) and n in trace.inputs
            and not (n in bn_of and mixes_channels(names[bn_of[n]])) and n not in shuffled]


def shuffled_convs(model: nn.Module, x: torch.Tensor) -> set[str]:
    """Convs whose filters pass through a channel shuffle (`prune_env.nn.shuffle`)."""
    with evaluating(model):
        graph = dependency_graph(model, x)
    found = set()
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d) and conv in graph.module2node:
            group = graph.get_pruning_group(conv, graph.get_pruner_of_module(conv)
                                            .prune_out_channels, list(range(conv.out_channels)))
            if reaches_shuffle(group):
                found.add(name)
    return found


def following_batchnorms(model: nn.Module, x: torch.Tensor) -> dict[str, str]:
    """Map each conv to the norm (BatchNorm, GroupNorm or LayerNorm) that reads its output
    directly or through a permutation (ConvNeXt's channels-last LayerNorm), found by one
    forward."""
    outputs: dict[int, tuple[str, torch.Tensor]] = {}
    found: dict[str, str] = {}

    def on_conv(name):
        def hook(_module, _inputs, out):
            outputs[id(out)] = (name, out)  # the tensor is kept so its id stays unique
        return hook

    def on_bn(name):
        def hook(_module, inputs):
            conv = outputs.get(id(inputs[0]))
            if conv is not None:
                found[conv[0]] = name
        return hook

    def on_permute(_module, inputs, out):
        conv = outputs.get(id(inputs[0]))
        if conv is not None:
            outputs[id(out)] = (conv[0], out)

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(on_conv(name)))
        elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)):
            handles.append(module.register_forward_pre_hook(on_bn(name)))
        elif type(module).__name__ == "Permute":  # torchvision.ops.Permute
            handles.append(module.register_forward_hook(on_permute))
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return found


@dataclass
class Trace:
    """Activations of the masked network: inputs of each conv/linear, outputs of branches."""

    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    #: block name -> its branch's output, for the blocks whose branch surgery removes
    branch_outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    output: Any = None  # the masked network's output


def masked_trace(model: nn.Module, masks: dict[str, torch.Tensor], bn_of: dict[str, str],
                 x: torch.Tensor) -> Trace:
    """Run the masked network once, recording what surgery needs to stay exact."""
    trace = Trace()
    zero_at = {bn_of.get(name, name): mask for name, mask in masks.items()}

    def zero_dropped(mask):
        def hook(_module, _inputs, out):
            return out * mask.to(out.dtype).view(1, -1, *[1] * (out.dim() - 2))
        return hook

    def record_input(name):
        def hook(_module, inputs):
            trace.inputs[name] = inputs[0].detach().clone()
        return hook

    def record_branch(name):
        def hook(_module, _inputs, out):
            trace.branch_outputs[name] = out.detach().clone()
        return hook

    handles = []
    for name, module in model.named_modules():
        if name in zero_at:
            handles.append(module.register_forward_hook(zero_dropped(zero_at[name])))
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            handles.append(module.register_forward_pre_hook(record_input(name)))
    for block in emptied_blocks(model, masks):  # after the zeroing hooks: sees their output
        handles.append(model.get_submodule(block.output).register_forward_hook(
            record_branch(block.name)))
    try:
        trace.output = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return trace


def constant_per_channel(t: torch.Tensor, what: str) -> torch.Tensor:
    """The per-channel value of a tensor that must not depend on the input, else an error."""
    flat = t.transpose(0, 1).reshape(t.shape[1], -1)
    value = flat[:, 0]
    scale = flat.abs().max().clamp_min(1.0)
    if (flat - value[:, None]).abs().max() > 1e-4 * scale:
        raise SurgeryError(f"{what} still depends on the input; this mask cannot be removed "
                           "exactly (please report the model)")
    return value


def remove_emptied_branches(model: nn.Module, masks: dict[str, torch.Tensor],
                            trace: Trace) -> list[str]:
    """Replace each residual block whose branch holds a fully dropped conv by a `Shortcut`
    adding the branch's constant output (`prune_env.nn.blocks`)."""
    removed: list[str] = []
    for block in emptied_blocks(model, masks):
        if any(block.name.startswith(f"{r}.") for r in removed):
            continue  # inside a branch already removed
        shift = constant_per_channel(trace.branch_outputs[block.name],
                                     f"branch of {block.name!r}")
        projection = block.pattern.shortcut
        masked = projection is not None and any(
            n.startswith(f"{block.child(projection)}.") and not bool(m.all())
            for n, m in masks.items())
        fold_shift(replace_with_shortcut(model, block), shift, into_bn=not masked)
        removed.append(block.name)
    return removed


def emptied_blocks(model: nn.Module, masks: dict[str, torch.Tensor]) -> list[ResidualBlock]:
    """The residual blocks whose branch holds a conv with every filter dropped."""
    emptied = {n for n, m in masks.items() if not bool(m.any())}
    return [b for b in residual_blocks(model) if b.layers & emptied] if emptied else []


def fold_shift(block: Shortcut, shift: torch.Tensor, into_bn: bool) -> None:
    """Add a per-channel constant to a `Shortcut`'s output, as cheaply as possible: into the
    projection's last BatchNorm, else with a `ChannelShift`.

    Args:
        into_bn: the projection's BatchNorm may absorb it; not when the projection's own
            filters are masked, since zeroing those channels after the BN would zero the
            constant too.
    """
    if not bool(shift.any()):
        return
    path = getattr(block, block.shortcut_name)
    last = list(path.children())[-1] if path is not None and len(path._modules) else path
    if into_bn and isinstance(last, nn.BatchNorm2d):
        last.bias.data += shift
    else:
        block.shift = ChannelShift(shift)


@dataclass
class Frames:
    """For each conv and linear layer, the original index of each of its current input and
    output channels, updated as surgery removes them. The masked trace and the masks are
    indexed as in the original network; a layer that two groups shrink (a depthwise conv
    reading a concatenation) must be read through these once the first group is done."""

    inputs: dict[str, list[int]]
    outputs: dict[str, list[int]]

    @classmethod
    def of(cls, model: nn.Module) -> Frames:
        layers = [(n, m) for n, m in model.named_modules()
                  if isinstance(m, (nn.Conv2d, nn.Linear))]
        return cls(
            inputs={n: list(range(m.in_channels if isinstance(m, nn.Conv2d)
                                  else m.in_features)) for n, m in layers},
            outputs={n: list(range(m.out_channels)) for n, m in layers
                     if isinstance(m, nn.Conv2d)})

    @staticmethod
    def remove(frame: list[int], positions: list[int]) -> None:
        for i in sorted(positions, reverse=True):
            del frame[i]


def prune_group(graph: tp.DependencyGraph, modules: dict[nn.Module, str], root: nn.Conv2d,
                masks: dict[str, torch.Tensor], bn_of: dict[str, str], trace: Trace,
                result: CompactResult, frames: Frames) -> tuple[set[str], bool]:
    """Shrink the coupled group of ``root``'s filters to the union of its members' masks.

    Returns the names of the convs whose filters this group decided (all of them: a
    depthwise conv reading a concatenation is in one group per input of the concat), and
    whether it removed channels entering a concatenation (the graph's concat offsets are stale
    after it).
    """
    pruner = graph.get_pruner_of_module(root)
    group = graph.get_pruning_group(root, pruner.prune_out_channels,
                                    list(range(root.out_channels)))
    producers, consumers = split_group(graph, group)
    masks = {n: m[frames.outputs[n]] for n, m in masks.items()}  # as the layers are now
    union = union_of_masks(producers, modules, masks, root.out_channels)
    grouped = grouped_convs(graph, group)
    align_to_conv_groups(union, grouped)
    names = [modules[m] for m, _, _ in producers]
    decided = {modules[m] for m, idxs, _ in producers
               if not isinstance(m, nn.Conv2d) or len(set(idxs)) == m.out_channels}
    if not bool(union.any()):
        raise SurgeryError(f"the masks drop every filter of {names}, which no shortcut can "
                           "replace: keep at least one filter in this group")
    note = zero_fill(producers, modules, masks, bn_of, union)
    if note:
        result.unions.append(note)
    dropped = [int(i) for i in torch.nonzero(~union).flatten()]
    if not dropped:
        return decided, False
    if reaches_shuffle(group):
        raise SurgeryError(f"the filters of {names} pass through a channel shuffle, whose "
                           "channel order surgery does not follow: keep all their filters "
                           "(prunable_convs leaves them out)")
    for module, idxs, root_idxs in consumers:
        name = modules[module]
        removed = [i for i, r in zip(idxs, root_idxs, strict=True) if not union[r]]
        fold_removed_inputs(module, name, removed, [frames.inputs[name][i] for i in removed],
                            trace)
        Frames.remove(frames.inputs[name], removed)
    for module, idxs, root_idxs in producers:
        if isinstance(module, nn.Conv2d):
            Frames.remove(frames.outputs[modules[module]],
                          [i for i, r in zip(idxs, root_idxs, strict=True) if not union[r]])
    kernels = [(side.conv, grouped_input_weight(side, union))
               for side in grouped if side.inputs]
    graph.get_pruning_group(root, pruner.prune_out_channels, dropped).prune(
        record_history=False)
    for conv, kernel in kernels:
        conv.weight = nn.Parameter(kernel)
    concat = any(isinstance(item.dep.target.module, tp.ops._ConcatOp) for item in group)
    return decided, concat


def split_group(graph: tp.DependencyGraph, group) -> tuple[list, list]:
    """Producers (layers whose output filters are in the group) and consumers (readers)."""
    producers, consumers = [], []
    for item in group:
        module, handler = item.dep.target.module, item.dep.handler
        entry = (module, list(item.idxs), list(item.root_idxs))
        if isinstance(module, (nn.Conv2d, ChannelShift)) and graph.is_out_channel_pruning_fn(
                handler):
            producers.append(entry)
        elif isinstance(module, (nn.Conv2d, nn.Linear)) and graph.is_in_channel_pruning_fn(
                handler):
            consumers.append(entry)
    return producers, consumers


def own_keep(module: nn.Module, name: str, masks: dict[str, torch.Tensor]) -> torch.Tensor:
    """Which of a producer's own channels are live in the masked network."""
    if isinstance(module, ChannelShift):
        return module.shift.detach() != 0  # a constant is live wherever it is not zero
    if name in masks:
        return masks[name]
    # Producers are convs or ChannelShifts (see `split_group`).
    return torch.ones(cast(nn.Conv2d, module).out_channels, dtype=torch.bool)


def union_of_masks(producers: list, modules: dict[nn.Module, str],
                   masks: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """Root channels that some producer of the group keeps."""
    union = torch.zeros(size, dtype=torch.bool)
    for module, idxs, root_idxs in producers:
        keep = own_keep(module, modules[module], masks)
        union[root_idxs] |= keep[idxs]
    return union


def zero_fill(producers: list, modules: dict[nn.Module, str], masks: dict[str, torch.Tensor],
              bn_of: dict[str, str], union: torch.Tensor) -> dict[str, int]:
    """Zero, after its BN, each producer's dropped channels that the union keeps."""
    note = {}
    by_name = {n: m for m, n in modules.items()}
    for module, idxs, root_idxs in producers:
        name = modules[module]
        if name not in masks:
            continue
        extra = [i for i, r in zip(idxs, root_idxs, strict=True)
                 if union[r] and not masks[name][i]]
        if not extra:
            continue
        note[name] = len(extra)
        # the conv's BN, or the conv itself (a producer with masks is a conv)
        bn = cast("nn.BatchNorm2d | nn.Conv2d",
                  by_name[bn_of[name]] if name in bn_of else module)
        with torch.no_grad():
            bn.weight[extra] = 0
            if bn.bias is not None:
                bn.bias[extra] = 0
    return note


def fold_removed_inputs(module: nn.Conv2d | nn.Linear, name: str, removed: list[int],
                        original: list[int], trace: Trace) -> None:
    """Fold into ``module``'s bias the constants its removed input channels carried.

    Args:
        removed: the channels' positions among the layer's current inputs.
        original: the same channels' positions in the original network (the trace's).
    """
    if not removed or name not in trace.inputs:
        return
    if isinstance(module, nn.Conv2d) and module.groups == module.in_channels > 1:
        return  # depthwise: its own output channels go with its inputs
    values = constant_per_channel(trace.inputs[name][:, original], f"input of {name!r}")
    if not bool(values.any()):
        return
    check_foldable(module, name)
    weight = module.weight.detach()[:, removed]
    if weight.dim() > 2:  # a conv's kernel; sum(dim=()) would sum a linear's matrix whole
        weight = weight.sum(dim=tuple(range(2, weight.dim())))
    delta = weight @ values
    if module.bias is None:
        module.bias = nn.Parameter(torch.zeros(weight.shape[0]))
    module.bias.data += delta


def check_foldable(module: nn.Conv2d | nn.Linear, name: str) -> None:
    """A constant input folds exactly into a bias only where no zero padding touches it."""
    if isinstance(module, nn.Linear):
        return
    padded = any(p != 0 for p in module.padding) if isinstance(module.padding, tuple) else True
    if module.groups != 1 or (padded and max(module.kernel_size) > 1):
        raise SurgeryError(f"a constant channel reaches {name!r}, a padded or grouped conv, "
                           "where it cannot be folded exactly: keep that filter")
