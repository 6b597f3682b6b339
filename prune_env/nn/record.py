"""Networks as data: an architecture description plus tensors, never pickled code.

A compact network has shapes no constructor knows, yet pickling it whole would let a crafted
file run code when loaded. So a network is recorded as:

- ``arch``: the name and arguments `prune_env.nn.models.build_model` builds the base from;
- ``layers``: the changes surgery (or a method's deployment) made to that base, in tree
  order, each ``[name, type, args]`` with a type from `LAYERS` (a registry of layer types and
  their constructor arguments), or ``[name, None, {}]`` where a child was removed;
- ``state_dict``: the tensors.

Only str, int, float, bool, None, lists, dicts and tensors appear, so
``torch.load(path, weights_only=True)`` reads the file and nothing in it can run. Rebuilding
applies the changes to a freshly built base; `to_record` checks that the rebuilt network
computes what the original did before anything is written.

Example:
    >>> from prune_env.nn.models import build_model
    >>> net = build_model("resnet20", 1, 10, (28, 28))
    >>> from_record(to_record(net)).input_shape
    (1, 28, 28)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from prune_env.nn.blocks import ScatterBlock, Shortcut
from prune_env.nn.layers import ChannelShift, Residual
from prune_env.nn.models import build_model, example_input

#: The format's name, written into every record.
FORMAT = "prune-env network 1"


def _conv_args(m: nn.Conv2d) -> dict[str, Any]:
    return {"in_channels": m.in_channels, "out_channels": m.out_channels,
            "kernel_size": list(m.kernel_size), "stride": list(m.stride),
            "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
            "dilation": list(m.dilation), "groups": m.groups, "bias": m.bias is not None,
            "padding_mode": m.padding_mode}


def _bn_args(m: nn.BatchNorm2d) -> dict[str, Any]:
    return {"num_features": m.num_features, "eps": m.eps, "momentum": m.momentum,
            "affine": m.affine, "track_running_stats": m.track_running_stats}


def _inplace(m: nn.Module) -> dict[str, Any]:
    return {"inplace": bool(getattr(m, "inplace", False))}


def _none(m: nn.Module) -> dict[str, Any]:
    return {}


def _scatter_args(m: Residual) -> dict[str, Any]:
    """A scattering block records its buffer's length (no key: an unscattered one, as in
    records written before scatter existed)."""
    return {} if m.scatter is None else {"scatter": m.scatter.numel()}


def _scatter_buffer(size: int | None) -> torch.Tensor | None:
    """A placeholder of the recorded length; the state dict then fills it."""
    return None if size is None else torch.zeros(size, dtype=torch.long)


#: Layer types a record may name: type name -> (class, its constructor arguments, build).
LAYERS: dict[str, tuple[type[nn.Module], Callable[[Any], dict[str, Any]],
                        Callable[[dict[str, Any]], nn.Module]]] = {
    "Conv2d": (nn.Conv2d, _conv_args, lambda a: nn.Conv2d(**a)),
    "BatchNorm2d": (nn.BatchNorm2d, _bn_args, lambda a: nn.BatchNorm2d(**a)),
    "Linear": (nn.Linear, lambda m: {"in_features": m.in_features,
                                     "out_features": m.out_features,
                                     "bias": m.bias is not None}, lambda a: nn.Linear(**a)),
    "ReLU": (nn.ReLU, _inplace, lambda a: nn.ReLU(**a)),
    "ReLU6": (nn.ReLU6, _inplace, lambda a: nn.ReLU6(**a)),
    "Hardswish": (nn.Hardswish, _inplace, lambda a: nn.Hardswish(**a)),
    "SiLU": (nn.SiLU, _inplace, lambda a: nn.SiLU(**a)),
    "Identity": (nn.Identity, _none, lambda a: nn.Identity()),
    "Flatten": (nn.Flatten, lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim},
                lambda a: nn.Flatten(**a)),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d,
                          lambda m: {"output_size": _plain(m.output_size)},
                          lambda a: nn.AdaptiveAvgPool2d(**a)),
    "Dropout": (nn.Dropout, lambda m: {"p": m.p, "inplace": m.inplace},
                lambda a: nn.Dropout(**a)),
    # containers are built empty; their children follow as records of their own
    "Sequential": (nn.Sequential, _none, lambda a: nn.Sequential()),
    "Residual": (Residual, _scatter_args,
                 lambda a: Residual(None, scatter=_scatter_buffer(a.get("scatter")))),
    "Shortcut": (Shortcut, lambda m: {"shortcut_name": m.shortcut_name},
                 lambda a: Shortcut(**a)),
    "ScatterBlock": (ScatterBlock, lambda m: {
        "chain": list(m.chain), "shortcut_name": m.shortcut_name, "act_name": m.act_name,
        "scatter": m.scatter.numel()}, lambda a: ScatterBlock(
            a["chain"], a["shortcut_name"], a["act_name"],
            torch.zeros(a["scatter"], dtype=torch.long))),
    "ChannelShift": (ChannelShift, lambda m: {"channels": m.shift.numel()},
                     lambda a: ChannelShift(torch.zeros(a["channels"]))),
    # smp's EfficientNet convs (TensorFlow's "same" padding, fixed at construction): named by
    # import path below, so that recording imports no smp code
    "Conv2dStaticSamePadding": (nn.Conv2d, lambda m: _same_padding_args(m),
                                lambda a: _same_padding_conv(a)),
}
#: Layer classes a record names by their import path (module.qualname) -> registry name.
BY_PATH = {"segmentation_models_pytorch.encoders._efficientnet.Conv2dStaticSamePadding":
           "Conv2dStaticSamePadding"}
_NAMES = {cls: name for name, (cls, _, _) in LAYERS.items() if name not in BY_PATH.values()}


def _same_padding_args(m: nn.Module) -> dict[str, Any]:
    pad = m.static_padding
    return {**_conv_args(cast(nn.Conv2d, m)),
            "pads": list(pad.padding) if isinstance(pad, nn.ZeroPad2d) else None}


def _same_padding_conv(args: dict[str, Any]) -> nn.Module:
    from segmentation_models_pytorch.encoders._efficientnet import Conv2dStaticSamePadding

    a = dict(args)
    pads = a.pop("pads")
    conv = Conv2dStaticSamePadding(a.pop("in_channels"), a.pop("out_channels"),
                                   a.pop("kernel_size"), a.pop("stride"), image_size=1, **a)
    conv.static_padding = nn.ZeroPad2d(tuple(pads)) if pads else nn.Identity()
    return conv


class RecordError(ValueError):
    """A network that cannot be recorded, or a record that does not describe a network."""


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _describe(module: nn.Module) -> tuple[str, dict[str, Any]] | None:
    """(type name, constructor arguments), or None for a type the registry does not know."""
    name = _NAMES.get(type(module)) or BY_PATH.get(
        f"{type(module).__module__}.{type(module).__qualname__}")
    if name is None and isinstance(module, nn.Sequential) \
            and type(module).forward is nn.Sequential.forward:
        name = "Sequential"  # a subclass that only names its children (Conv2dNormActivation)
    return None if name is None else (name, LAYERS[name][1](module))


def _same(a: nn.Module, b: nn.Module) -> bool:
    """Whether ``b`` can stand for ``a`` before the tensors are loaded."""
    return type(a) is type(b) and _describe(a) == _describe(b)


def _apply(parent: nn.Module, attr: str, kind: str | None, args: dict[str, Any]) -> None:
    """One change of a record: a child built from the registry, or removed (``kind`` None)."""
    if kind is None:
        if isinstance(parent, nn.Sequential):
            del parent._modules[attr]
        else:
            setattr(parent, attr, None)
        return
    if kind not in LAYERS:
        raise RecordError(f"unknown layer type {kind!r} (known: {', '.join(LAYERS)})")
    # setattr, not add_module: it also replaces a plain None attribute (Residual's shortcut)
    setattr(parent, attr, LAYERS[kind][2](args))


def _diff(model: nn.Module, rebuilt: nn.Module, prefix: str, out: list[list[Any]]) -> None:
    """Append to ``out`` the changes that turn ``rebuilt`` into ``model`` (and apply them)."""
    for attr, child in model._modules.items():
        name = f"{prefix}.{attr}" if prefix else attr
        current = rebuilt._modules.get(attr)
        if child is None:
            if current is not None:
                out.append([name, None, {}])
                _apply(rebuilt, attr, None, {})
            continue
        if current is None or not _same(child, current):
            described = _describe(child)
            if described is None:
                raise RecordError(f"cannot record layer {name!r} of type "
                                  f"{type(child).__name__}: a record holds the layer types of "
                                  f"prune_env.nn.record.LAYERS only")
            out.append([name, *described])
            _apply(rebuilt, attr, *described)
        _diff(child, rebuilt._modules[attr], name, out)  # type: ignore[arg-type]
    for attr in [a for a in rebuilt._modules if a not in model._modules]:
        out.append([f"{prefix}.{attr}" if prefix else attr, None, {}])
        _apply(rebuilt, attr, None, {})


def _build(arch: dict[str, Any]) -> nn.Module:
    return build_model(arch["name"], arch["in_channels"], arch["num_classes"],
                       tuple(arch["input_size"]))


#: Building the base and the changed layers initialises weights that the record's tensors then
#: overwrite; that must not move the global RNG agents sample from (a checkpoint written or
#: read mid-run would otherwise change the run that follows it).
_quiet_rng = functools.partial(torch.random.fork_rng, devices=[])


@_quiet_rng()
def to_record(model: nn.Module) -> dict[str, Any]:
    """The record of ``model``, a network built by `build_model` and changed by surgery.

    Raises:
        RecordError: the network holds a layer type the registry does not know, or was not
            built by `build_model`.
    """
    arch = getattr(model, "arch", None)
    if arch is None:
        raise RecordError("cannot record a network not built by prune_env.nn.models."
                          "build_model (it has no .arch)")
    rebuilt = _build(arch)
    if type(rebuilt) is not type(model):
        raise RecordError(f"cannot record a {type(model).__name__}: a record describes a "
                          f"network built by build_model ({type(rebuilt).__name__})")
    layers: list[list[Any]] = []
    _diff(model, rebuilt, "", layers)
    record = {"format": FORMAT, "arch": dict(arch), "layers": layers,
              "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    _check_round_trip(model, record)
    return record


@_quiet_rng()
def from_record(record: Any, source: str = "the record") -> nn.Module:
    """The network a record describes, in eval mode.

    Raises:
        RecordError: naming ``source``, when the record is not one `to_record` wrote.
    """
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise RecordError(f"{source} is not a prune-env network (format {FORMAT!r})")
    try:
        model = _build(record["arch"])
        for name, kind, args in record["layers"]:
            parent_name, _, attr = name.rpartition(".")
            _apply(model.get_submodule(parent_name), attr, kind, args)
        model.load_state_dict(record["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        raise RecordError(f"{source} does not describe a network: {err}") from err
    return model.eval()


def _check_round_trip(model: nn.Module, record: dict[str, Any]) -> None:
    """The rebuilt network must compute what ``model`` computes (eval mode, to 1e-5)."""
    rebuilt = from_record(record)
    x = example_input(model, 2)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        same = torch.allclose(model(x), rebuilt(x), rtol=1e-5, atol=1e-5)
    model.train(was_training)
    if not same:
        raise RecordError("the recorded network does not compute what the network does: "
                          "a layer changed in a way the registry does not describe")
