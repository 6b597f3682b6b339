"""How a sweep scales with Ray workers: runs per hour of the same sweep at 1, 2, 4 workers.

Usage: .venv/bin/python scripts/sweep_scaling.py [--workers 1 2 4] [--out runs/scaling-TIME]

Each point is the same sweep (l1 and random x 4 targets = 8 runs on the synthetic data, a
ResNet-20 pretrained here first) in a new sweep directory, on a local Ray instance offering
N CPUs with one CPU (and one torch thread) per run, so N runs at once. More workers than
cores simulate a larger cluster on one machine: the runs then share the cores, and the
table shows what that costs. Wall time counts everything a user waits for: Ray's start,
the runs, the comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
from pathlib import Path

import torch

from prune_env.cli.main import main
from prune_env.data.datasets import load_data
from prune_env.training.pretrain import PretrainConfig, pretrain


def run(workers: int, out: Path, checkpoint: Path) -> float:
    """Seconds of one sweep with ``workers`` Ray CPUs."""
    args = ["sweep", "l1", "random", "--targets", "0.9", "0.8", "0.7", "0.6",
            "--dataset", "synthetic", "--synthetic-size", "3000", "--image-size", "16",
            "--checkpoint", str(checkpoint), "--cost", "flops", "--final-steps", "100",
            "--val-samples", "500", "--no-export", "--ray-cpus", str(workers),
            "--latency-table", str(out / "lut.json"), "--runs-dir", str(out / f"w{workers}")]
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    if code:
        raise SystemExit(f"the sweep with {workers} workers failed ({code})")
    return time.perf_counter() - started


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--out", type=Path,
                        default=Path("runs") / f"scaling-{time.strftime('%Y%m%d-%H%M%S')}")
    return parser.parse_args()


if __name__ == "__main__":
    options = parse()
    options.out.mkdir(parents=True)
    checkpoint = options.out / "resnet20-synthetic.pt"
    torch.manual_seed(0)
    pretrain("resnet20", load_data("synthetic", synthetic_size=3000, image_size=16),
             PretrainConfig(epochs=4, batch_size=64, lr=0.1), checkpoint, progress=False)
    print("| Ray workers (CPUs) | runs | wall time s | runs per hour |\n|---|---|---|---|")
    for n in options.workers:
        seconds = run(n, options.out, checkpoint)
        print(f"| {n} | 8 | {seconds:.0f} | {8 * 3600 / seconds:.0f} |", flush=True)
