"""Which networks surgery can compact: torchvision's zoo (and smp's, where installed) with
random masks on every prunable conv and one residual branch emptied, each result checked
against the masked network.

Usage: .venv/bin/python scripts/surgery_zoo.py [--size 64] [--models NAME ...]
       [--max-params 60] [--keep 0.5] [--seed 0] [--out zoo.md]

For every model (weights None: nothing is downloaded) at SIZE x SIZE: random BatchNorm
statistics, a random mask keeping about KEEP of each prunable conv's filters (at least one),
every filter of one random residual block's first conv dropped (the block must become its
shortcut plus a constant), and `prune_env.nn.surgery.compact` on it. A row says `exact` (the
compact network equals the masked one, which `compact` checks itself), `unchanged` (exact,
but coupled layers kept every masked channel), `refused` (a `SurgeryError`, with its reason)
or `crash` (anything else: a bug to fix), with the emptied
block, parameters and FLOPs before and after and the seconds it took. Models above MAX_PARAMS million parameters are skipped (2 cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision
from torch import nn
from tqdm.auto import tqdm

from prune_env.measure import count_flops, count_params
from prune_env.nn.blocks import residual_blocks
from prune_env.nn.surgery import SurgeryError, compact_report, prunable_convs

#: Not CNNs (a patch embedding and attention): out of this toolkit's scope, and Torch-Pruning's
#: trace of swin_v2 took more than 15 GB here.
TRANSFORMERS = ("vit_", "swin_", "maxvit_")

#: Classes of every head: a conv with this many filters produces the output (its filters are
#: the classes, never pruned); 11 is a width no hidden layer of the zoo has.
CLASSES = 11


@dataclass
class Row:
    model: str
    family: str
    result: str
    why: str = ""
    params: tuple[int, int] = (0, 0)
    flops: tuple[int, int] = (0, 0)
    seconds: float = 0.0
    emptied: str = ""  # the residual block whose branch was emptied, if any


def zoo(size: int) -> dict[str, tuple[str, Callable[[], nn.Module]]]:
    """name -> (family, builder) for every model the script walks."""
    models = torchvision.models
    found: dict[str, tuple[str, Callable[[], nn.Module]]] = {}
    for name in models.list_models(module=models):
        if name.startswith(TRANSFORMERS):
            continue
        found[name] = ("classification", lambda name=name: models.get_model(
            name, weights=None, num_classes=CLASSES, **extra_kwargs(name, size)))
    for name in models.list_models(module=models.segmentation):
        found[name] = ("segmentation", lambda name=name: models.get_model(
            name, weights=None, weights_backbone=None, num_classes=CLASSES, aux_loss=False))
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        return found
    for arch in ("Unet", "FPN", "DeepLabV3Plus"):
        for encoder in ("resnet18", "resnet34", "mobilenet_v2", "efficientnet-b0"):
            found[f"smp.{arch}({encoder})"] = ("smp", lambda a=arch, e=encoder: getattr(
                smp, a)(encoder_name=e, encoder_weights=None, classes=CLASSES))
    return found


def extra_kwargs(name: str, size: int) -> dict:
    """What some torchvision builders need to take a small image."""
    if name in ("inception_v3", "googlenet"):
        return {"aux_logits": False, "init_weights": False}
    return {}


def randomise(model: nn.Module, generator: torch.Generator) -> None:
    """Random BatchNorm statistics and affine terms: dropped channels leave real constants."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.uniform_(-1, 1, generator=generator)
                module.running_var.uniform_(0.5, 2, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-1, 1, generator=generator)


def random_keep(model: nn.Module, keep: float, generator: torch.Generator,
                x: torch.Tensor) -> dict:
    """About ``keep`` of each prunable conv's filters, at least one (heads excepted:
    `CLASSES`)."""
    masks = {}
    prunable = set(prunable_convs(model, x))
    for name, module in model.named_modules():
        if name in prunable and module.out_channels not in (1, CLASSES):
            mask = torch.rand(module.out_channels, generator=generator) < keep
            mask[int(torch.randint(module.out_channels, (1,), generator=generator))] = True
            masks[name] = mask
    return masks


def empty_one_branch(model: nn.Module, masks: dict, generator: torch.Generator) -> str:
    """Drop every filter of the first masked conv of one random residual block's branch (the
    block must become its shortcut plus a constant); return the block's name, or ""."""
    blocks = [b for b in residual_blocks(model) if b.layers & masks.keys()]
    if not blocks:
        return ""
    block = blocks[int(torch.randint(len(blocks), (1,), generator=generator))]
    first = next(n for n in masks if n in block.layers)
    masks[first] = torch.zeros_like(masks[first])
    return block.name


def try_model(name: str, family: str, build: Callable[[], nn.Module], size: int, keep: float,
              seed: int, max_params: float) -> Row:
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    try:
        torch.manual_seed(seed)
        model = build().eval()
    except Exception as err:  # noqa: BLE001 - a model that does not build is a row, not a stop
        return Row(name, family, "skipped", f"does not build: {err}")
    params = count_params(model)
    if params > max_params * 1e6:
        return Row(name, family, "skipped", f"{params / 1e6:.0f}M parameters")
    x = torch.randn(2, 3, size, size, generator=generator)
    try:
        with torch.no_grad():
            model(x)
    except Exception as err:  # noqa: BLE001
        return Row(name, family, "skipped", f"does not run at {size} px: {err}")
    model.input_shape = (3, size, size)  # type: ignore[assignment]
    randomise(model, generator)
    flops = count_flops(model, (3, size, size))
    row = Row(name, family, "exact", params=(params, params), flops=(flops, flops))
    try:
        masks = random_keep(model, keep, generator, x)
        if not masks:
            raise SurgeryError("no conv whose filters can be dropped exactly (prunable_convs "
                               "is empty)")
        row.emptied = empty_one_branch(model, masks, generator)
        result = compact_report(model, masks, example_inputs=x)
        if row.emptied and row.emptied not in result.removed_branches:
            raise SurgeryError(f"the branch of {row.emptied} was emptied but not removed")
        small = result.model
        row.params = (params, count_params(small))
        row.flops = (flops, count_flops(small, (3, size, size)))
        if row.params[1] == params:
            row.result = "unchanged"
            row.why = (f"coupled layers keep every channel of the {len(masks)} masked convs "
                       "(their union)")
    except SurgeryError as err:
        row.result, row.why = "refused", str(err)
    except Exception as err:  # noqa: BLE001
        row.result, row.why = "crash", f"{type(err).__name__}: {err}"
    row.seconds = time.perf_counter() - start
    return row


def table(rows: list[Row]) -> str:
    lines = ["| model | family | result | emptied block | params before -> after "
             "| MFLOPs before -> after | s | why |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sizes = (f"{r.params[0] / 1e6:.2f}M -> {r.params[1] / 1e6:.2f}M" if r.params[0] else "",
                 f"{r.flops[0] / 1e6:.0f} -> {r.flops[1] / 1e6:.0f}" if r.flops[0] else "")
        why = r.why.replace("|", "/").replace("\n", " ")[:160]
        lines.append(f"| {r.model} | {r.family} | {r.result} | {r.emptied} | {sizes[0]} | "
                     f"{sizes[1]} | "
                     f"{r.seconds:.1f} | {why} |")
    counts = {k: sum(r.result == k for r in rows) for k in ("exact", "unchanged", "refused",
                                                             "crash", "skipped")}
    lines.append("\n" + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="image size (default: 64)")
    parser.add_argument("--models", nargs="*", help="only these (default: the whole zoo)")
    parser.add_argument("--max-params", type=float, default=60.0,
                        help="skip models above this many million parameters (default: 60)")
    parser.add_argument("--keep", type=float, default=0.5, help="kept share (default: 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    models = zoo(args.size)
    names = args.models or sorted(models)
    unknown = [n for n in names if n not in models]
    if unknown:
        print(f"unknown models: {', '.join(unknown)}", file=sys.stderr)
        return 2
    rows = []
    for name in (bar := tqdm(names, unit="model")):
        bar.set_postfix_str(name)
        family, build = models[name]
        rows.append(try_model(name, family, build, args.size, args.keep, args.seed,
                              args.max_params))
    text = table(rows)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
