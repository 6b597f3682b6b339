"""Union or scatter: what Tessier et al.'s adder buys on the CPU, in FLOPs and measured time.

Usage: .venv/bin/python scripts/scatter_vs_union.py [--archs resnet20 resnet56 resnet18]
       [--keep 0.3 0.5 0.7] [--batch 1 32] [--threads 1] [--seed 0]

For each network (CIFAR ResNets at 3x32x32, torchvision's ResNet-18 at 3x64x64, random BN
statistics) and kept share: a random mask per conv (each conv its own, as per-layer magnitude
pruning gives), compacted twice. "union":
convs joined by a residual addition keep the union of their channels. "scatter": each branch's
last conv keeps only its own and the block index-adds them into the union. Both equal the
masked network (`compact` checks it). The three networks (base, union, scatter) are timed
interleaved (7 blocks of 10 runs, after 3 warm-up runs; the estimate is the median of the
blocks' minima); the table gives FLOPs and latency as ratios of the base, and scatter/union.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn
from tqdm.auto import tqdm

from prune_env.measure import count_flops
from prune_env.measure.latency import measure_latency
from prune_env.nn.models import build_model
from prune_env.nn.surgery import compact_report


def shape_of(arch: str) -> tuple[int, int, int]:
    """CIFAR-size inputs for the CIFAR networks, 64 x 64 for torchvision's ResNet-18."""
    return (3, 64, 64) if arch == "resnet18" else (3, 32, 32)


def randomised(arch: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    shape = shape_of(arch)
    model = build_model(arch, shape[0], 10, shape[1:]).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-1, 1)
                m.bias.uniform_(-1, 1)
    return model


def per_conv_masks(model: nn.Module, keep: float, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    masks = {}
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d):
            mask = torch.rand(conv.out_channels, generator=generator) < keep
            mask[int(torch.randint(conv.out_channels, (1,), generator=generator))] = True
            masks[name] = mask
    return masks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["resnet20", "resnet56", "resnet18"],
                        choices=["resnet20", "resnet32", "resnet56", "mobilenetv2",
                                 "resnet18"])
    parser.add_argument("--keep", nargs="+", type=float, default=[0.3, 0.5, 0.7],
                        help="kept shares of each conv's filters (default: 0.3 0.5 0.7)")
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 32],
                        help="images per timed run (default: 1 32)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if any(not 0 < k <= 1 for k in args.keep):
        parser.error("--keep takes shares in (0, 1]")  # exits with code 2
    print("| network | keep | batch | FLOPs union | FLOPs scatter | latency union "
          "| latency scatter | scatter / union (latency) |")
    print("|---|---|---|---|---|---|---|---|")
    cases = [(a, k, b) for a in args.archs for k in args.keep for b in args.batch]
    for arch, keep, batch in tqdm(cases, unit="case", file=sys.stderr):
        base = randomised(arch, args.seed)
        masks = per_conv_masks(base, keep, args.seed)
        nets = {"base": base, "union": compact_report(base, masks).model,
                "scatter": compact_report(base, masks, coupling="scatter").model}
        flops = {n: count_flops(m, shape_of(arch)) for n, m in nets.items()}
        times = measure_latency(nets, shape_of(arch), batch=batch, threads=args.threads)
        ms = {n: t.estimate_ms for n, t in times.items()}
        print(f"| {arch} | {keep} | {batch} | {flops['union'] / flops['base']:.3f} | "
              f"{flops['scatter'] / flops['base']:.3f} | {ms['union'] / ms['base']:.3f} | "
              f"{ms['scatter'] / ms['base']:.3f} | {ms['scatter'] / ms['union']:.3f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
