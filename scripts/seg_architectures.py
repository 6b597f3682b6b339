"""Segmentation architectures compared under one training protocol, in the manner of Siam et
al. ("A Comparative Study of Real-time Semantic Segmentation for Autonomous Driving", CVPR
Workshops 2018): accuracy against the cost of running each network on full frames.

Usage: .venv/bin/python scripts/seg_architectures.py --out DIR [--models NAME ...]
       [--epochs 7] [--batch-size 32] [--lr 0.05] [--synthetic-size 4000] [--seed 0]
       [--deploy-shape 1x512x1024] [--threads 1] [--deploy-blocks 5] ...

Every network of --models is trained from scratch on the offline data set fashion-scenes
with the same budget (OneCycle SGD, `prune_env.training.pretrain`, as `prune-env pretrain`
does), then measured:

- test mIoU (the checkpoint's), parameters, FLOPs at the training shape and at --deploy-shape;
- latency at batch 1 on --threads CPU threads at both shapes, all networks timed interleaved
  in one measurement per shape (`prune_env.measure.latency`): block b of every network ran in
  the same period of the machine, so each network's ratio to the first one (the reference)
  gets a paired bootstrap 95% interval; each latency gets the bootstrap interval of the
  median of its block minima;
- energy per image at the deploy shape where a meter works (RAPL, NVML, Jetson), else "not
  metered".

DIR holds one experiment: plan.json (the options), checkpoints/NAME.pt, measured.json (the
finished measurements), results.csv, results.md, results.json and results.png (mIoU against
deploy latency). The same command again reuses finished checkpoints and measurements (an
interrupted run resumes); another command on DIR exits with code 2 and says what differs.

Training uses torch's threads (all cores): on 2 cores shared with another busy process a
step took 20-40x longer here; run it alone, or with OMP_NUM_THREADS=1 beside other work.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from matplotlib.ticker import LogFormatter  # noqa: E402
from torch import nn  # noqa: E402

from prune_env import checks  # noqa: E402
from prune_env.catalog import OWN_MODELS, SEGMENTATION_MODELS  # noqa: E402
from prune_env.cli.pareto import pareto_front  # noqa: E402
from prune_env.cli.parser import add_options, config_from  # noqa: E402
from prune_env.config import DataConfig, PretrainConfig, RunConfig  # noqa: E402
from prune_env.data.datasets import DataBundle, load_data  # noqa: E402
from prune_env.envs.bench import check_deployable  # noqa: E402
from prune_env.measure import (  # noqa: E402
    EnergyUnavailableError,
    Latency,
    auto_meter,
    count_flops,
    count_params,
    measure_energy,
    measure_latency,
)
from prune_env.measure.confidence import (  # noqa: E402
    Interval,
    median_interval,
    paired_ratio_interval,
)
from prune_env.measure.hardware import hardware_id  # noqa: E402
from prune_env.measure.latency import fixed_threads  # noqa: E402
from prune_env.nn.models import build_model  # noqa: E402
from prune_env.sweep.plan import setting_differences  # noqa: E402
from prune_env.training.checkpoint import load_base  # noqa: E402
from prune_env.training.pretrain import pretrain  # noqa: E402

DATASET = "fashion-scenes"
DEFAULT_MODELS = ("resnet20-fcn", "unet-resnet18", "fpn-resnet18", "deeplabv3plus-mobilenet_v2",
                  "lraspp_mobilenet_v3_large", "unet-tu-hrnet_w18_small")
#: The script's own training budget, not `PretrainConfig`'s (3 epochs at batch 256 are 32
#: steps on 3000 scenes): 788 steps of batch 32 (lr 0.05: the seg demo's 0.1 at batch 64,
#: scaled), about 2 s a step for the six default networks together on 2 idle CPU cores, so
#: about 27 minutes of training and 30 in all.
BUDGET = {"epochs": 7.0, "batch_size": 32, "lr": 0.05, "synthetic_size": 4000}
PLAN_VERSION = 1


@dataclass(frozen=True)
class Timing:
    """How one shape is timed: untimed runs, blocks, timed runs per block (each network)."""
    warmup: int
    blocks: int
    repeats: int


@dataclass(frozen=True)
class Experiment:
    """Everything the results depend on: DIR/plan.json holds it, and a rerun must match it."""
    models: list[str]
    synthetic_size: int
    image_size: int | None
    data_dir: str | None
    pretrain: PretrainConfig  # seeded by --seed, on the CPU
    deploy_shape: str
    threads: int
    train_timing: Timing
    deploy_timing: Timing
    version: int = PLAN_VERSION

    def to_json(self) -> dict[str, Any]:
        """Plain values, as plan.json holds them (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclass(frozen=True)
class Estimate:
    """A measured value and its 95% interval."""
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Counted:
    """What a network costs by counting: parameters, FLOPs per image at both shapes."""
    params: int
    flops_train: int
    flops_deploy: int


@dataclass(frozen=True)
class Row:
    """One network's line of the results."""
    name: str
    params: int
    gflops_train: float
    gflops_deploy: float
    test_miou: float
    train_seconds: float
    latency_train_ms: Estimate
    latency_deploy_ms: Estimate
    ratio_train: Estimate  # latency / the reference's, paired over blocks
    ratio_deploy: Estimate
    energy_mj: float | None  # per image at the deploy shape; None: not metered


class Store:
    """DIR/measured.json: finished measurements by key; a rerun reads them back."""
    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str, measure: Callable[[], Any]) -> Any:
        """The stored value of ``key``, or ``measure()``, stored at once (atomically)."""
        if key not in self.data:
            self.data[key] = measure()
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=1))
            tmp.replace(self.path)
        return self.data[key]


# ---------------------------------------------------------------------------- options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seg_architectures.py", description=__doc__.split("\n\nUsage")[0],
        epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="the experiment's directory: created, or resumed when it holds "
                             "this command's plan.json")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="NAME",
                        help="segmentation networks, the first the reference of the latency "
                             f"ratios; any of {', '.join(SEGMENTATION_MODELS)} (default: "
                             f"{' '.join(DEFAULT_MODELS)})")
    add_options(parser, DataConfig, skip=("model", "dataset", "checkpoint"))
    add_options(parser, PretrainConfig)
    measure = parser.add_argument_group("measurement")
    measure.add_argument("--deploy-shape", type=checks.shape, default="1x512x1024",
                         metavar="CxHxW", help="one deployed frame, where FLOPs, latency and "
                         "energy are measured besides the training shape; its sides must "
                         "suit every network (FPN: multiples of 32) (default: 1x512x1024)")
    measure.add_argument("--threads", type=checks.positive, default=1,
                         help="CPU threads of the timing, fixed (default: 1)")
    for shape, (warmup, blocks, repeats) in {"train": (5, 15, 5), "deploy": (2, 5, 2)}.items():
        measure.add_argument(f"--{shape}-warmup", type=checks.non_negative, default=warmup,
                             help=f"untimed runs per network at the {shape} shape "
                                  f"(default: {warmup})")
        measure.add_argument(f"--{shape}-blocks", type=checks.positive, default=blocks,
                             help=f"timing blocks at the {shape} shape: the intervals "
                                  f"resample them (default: {blocks})")
        measure.add_argument(f"--{shape}-repeats", type=checks.positive, default=repeats,
                             help=f"timed runs per network per block at the {shape} shape "
                                  f"(default: {repeats})")
    own_defaults(parser, BUDGET)
    return parser


def own_defaults(parser: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    """Set the script's defaults for options the configs define, and say so in ``--help``
    (the configs' help names theirs)."""
    parser.set_defaults(**defaults)
    for action in parser._actions:  # argparse offers no public way to edit an option's help
        if action.dest in defaults and action.help:
            action.help = re.sub(r"\(default: [^)]*\)", f"(default: {defaults[action.dest]:g})",
                                 action.help)


def experiment_of(args: argparse.Namespace) -> Experiment:
    """The experiment of a command line; refuses what is not a segmentation network."""
    models = list(dict.fromkeys(args.models))  # a name given twice is one network
    refused = [why_not(name) for name in models if name not in SEGMENTATION_MODELS]
    if refused:
        raise ValueError("; ".join(refused) + f". Choose from: {', '.join(SEGMENTATION_MODELS)}")
    data = dataclasses.replace(config_from(args, DataConfig), dataset=DATASET)
    budget = RunConfig(data=data, pretrain=config_from(args, PretrainConfig)).pretraining
    return Experiment(models, data.synthetic_size, data.image_size, data.data_dir, budget,
                      args.deploy_shape, args.threads,
                      Timing(args.train_warmup, args.train_blocks, args.train_repeats),
                      Timing(args.deploy_warmup, args.deploy_blocks, args.deploy_repeats))


def why_not(name: str) -> str:
    """Why ``name`` is not compared: a classifier, or no network at all."""
    if name in OWN_MODELS or name in torchvision.models.list_models(module=torchvision.models):
        return f"{name} is a classification model (one label per image), not a segmentation one"
    return f"unknown model {name!r}"


def check_plan(out: Path, experiment: Experiment) -> None:
    """Refuse a directory that holds another experiment, saying what differs."""
    path = out / "plan.json"
    if path.exists():
        changed = setting_differences(experiment.to_json(), json.loads(path.read_text()),
                                      str(path))
        if changed:
            raise ValueError(f"{out} holds another experiment: {'; '.join(changed)}. Rerun "
                             "with its options, or pass a new --out")
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists without plan.json: pass a new or empty --out")


def save_plan(out: Path, experiment: Experiment) -> None:
    """Create DIR with plan.json: from here on DIR holds this experiment."""
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(experiment.to_json(), indent=2))


# ------------------------------------------------------------------- training, measurement


def check_deploy_shape(experiment: Experiment, in_channels: int, num_classes: int,
                       train_size: tuple[int, int]) -> tuple[int, int, int]:
    """The deploy shape, refused before any training if a network cannot take it."""
    shape = checks.parse_shape(experiment.deploy_shape)
    if shape[0] != in_channels:
        raise ValueError(f"--deploy-shape {experiment.deploy_shape}: {DATASET} has "
                         f"{in_channels} channel(s), not {shape[0]}")
    for name in experiment.models:  # untrained copies: their strides are what matters
        check_deployable(build_model(name, in_channels, num_classes, train_size), shape)
    return shape


def train_or_reuse(name: str, data: DataBundle, experiment: Experiment, out: Path
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """(network, checkpoint meta): trained now, or read back from DIR/checkpoints/NAME.pt."""
    path = out / "checkpoints" / f"{name}.pt"
    if path.exists():
        print(f"{name}: trained before ({path})")
        return load_base(path)
    return pretrain(name, data, experiment.pretrain, path)


def counted(model: nn.Module, train_shape: tuple[int, ...],
            deploy_shape: tuple[int, ...]) -> Counted:
    """Parameters and FLOPs of one image at both shapes."""
    return Counted(count_params(model), count_flops(model, train_shape),
                   count_flops(model, deploy_shape))


def timed(models: dict[str, nn.Module], shape: tuple[int, ...], timing: Timing,
          threads: int) -> dict[str, Latency]:
    """Latency of every network at ``shape``, interleaved in one measurement."""
    return measure_latency(models, shape, threads=threads, warmup=timing.warmup,
                           blocks=timing.blocks, repeats=timing.repeats,
                           progress=f"latency at {'x'.join(map(str, shape))}")


def energy_per_image(models: dict[str, nn.Module], shape: tuple[int, ...], threads: int
                     ) -> tuple[dict[str, float | None], str]:
    """Millijoules per image at ``shape`` of every network, and the meter's name; None and
    the reason where no meter works."""
    try:
        meter = auto_meter("cpu")
    except EnergyUnavailableError as err:
        return dict.fromkeys(models), f"not metered ({str(err).split(':')[0]})"
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    energy: dict[str, float | None] = {}
    with meter, fixed_threads(threads), torch.inference_mode():
        for name, net in models.items():
            net(x)  # warm-up, as for timing
            result = measure_energy(functools.partial(net, x), meter)
            energy[name] = 1e3 * result.joules_per_inference
    return energy, meter.name


def estimate(value: float, interval: Interval) -> Estimate:
    """``value`` with the ends of ``interval``."""
    return Estimate(value, interval.low, interval.high)


def rows_of(metas: dict[str, dict[str, Any]], counts: dict[str, Counted],
            latency: dict[str, dict[str, Latency]], energy: dict[str, float | None]
            ) -> list[Row]:
    """The results' rows; the first network is the latency ratios' reference."""

    def absolute(shape: str, name: str) -> Estimate:
        own = latency[shape][name]
        return estimate(own.estimate_ms, median_interval(own.block_ms))

    def ratio(shape: str, name: str) -> Estimate:
        ref, own = latency[shape][next(iter(metas))], latency[shape][name]
        return estimate(own.estimate_ms / ref.estimate_ms,
                        paired_ratio_interval(ref.block_ms, own.block_ms))

    return [Row(name, counts[name].params, counts[name].flops_train / 1e9,
                counts[name].flops_deploy / 1e9, meta["test_accuracy"], meta["train_seconds"],
                absolute("train", name), absolute("deploy", name), ratio("train", name),
                ratio("deploy", name), energy[name]) for name, meta in metas.items()]


def measure_all(models: dict[str, nn.Module], train_shape: tuple[int, ...],
                deploy_shape: tuple[int, ...], experiment: Experiment, store: Store
                ) -> tuple[dict[str, Counted], dict[str, dict[str, Latency]],
                           dict[str, float | None], str]:
    """Counts, latency at both shapes and energy: each stored once finished."""
    counts = {name: stored_counts(store, name, model, train_shape, deploy_shape)
              for name, model in models.items()}
    latency = {"train": stored_latency(store, "train", models, train_shape,
                                       experiment.train_timing, experiment.threads),
               "deploy": stored_latency(store, "deploy", models, deploy_shape,
                                        experiment.deploy_timing, experiment.threads)}
    return counts, latency, *stored_energy(store, models, deploy_shape, experiment.threads)


def stored_counts(store: Store, name: str, model: nn.Module, train_shape: tuple[int, ...],
                  deploy_shape: tuple[int, ...]) -> Counted:
    """`counted`, stored once per network."""
    return Counted(**store.get(f"counts/{name}", lambda: dataclasses.asdict(
        counted(model, train_shape, deploy_shape))))


def stored_latency(store: Store, key: str, models: dict[str, nn.Module],
                   shape: tuple[int, ...], timing: Timing, threads: int) -> dict[str, Latency]:
    """`timed`, stored once per shape (``key``): blocks pair only within one measurement."""
    measured = store.get(f"latency/{key}", lambda: {
        name: dataclasses.asdict(t) for name, t in timed(models, shape, timing, threads).items()})
    return {name: Latency(**{**t, "block_ms": tuple(t["block_ms"])})
            for name, t in measured.items()}


def stored_energy(store: Store, models: dict[str, nn.Module], shape: tuple[int, ...],
                  threads: int) -> tuple[dict[str, float | None], str]:
    """Energy per image and the meter; "not metered" is never stored (the same DIR may be
    resumed on a metered machine)."""
    if "energy" in store.data:
        return store.data["energy"], store.data["meter"]
    energy, meter = energy_per_image(models, shape, threads)
    if None not in energy.values():
        store.get("meter", lambda: meter)
        store.get("energy", lambda: energy)
    return energy, meter


# -------------------------------------------------------------------------------- results


def interval_text(e: Estimate, digits: int) -> str:
    """``value [low, high]``."""
    return f"{e.value:.{digits}f} [{e.low:.{digits}f}, {e.high:.{digits}f}]"


def markdown(rows: list[Row], experiment: Experiment, train_shape: str, meter: str,
             hardware: str) -> str:
    """results.md: one row per network, then how it was measured."""
    deploy, ref = experiment.deploy_shape, rows[0].name
    head = ["network", "params (M)", f"GFLOPs {train_shape}", f"GFLOPs {deploy}", "test mIoU",
            "train s", f"latency ms {train_shape}", f"latency ms {deploy}",
            f"ratio to {ref} {train_shape}", f"ratio to {ref} {deploy}", "energy mJ"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.name, f"{r.params / 1e6:.2f}", f"{r.gflops_train:.3f}",
                 f"{r.gflops_deploy:.2f}", f"{r.test_miou:.4f}", f"{r.train_seconds:.0f}",
                 interval_text(r.latency_train_ms, 2), interval_text(r.latency_deploy_ms, 1),
                 interval_text(r.ratio_train, 3), interval_text(r.ratio_deploy, 3),
                 "not metered" if r.energy_mj is None else f"{r.energy_mj:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    p = experiment.pretrain
    lines += ["", f"{DATASET}, {experiment.synthetic_size} training scenes at {train_shape}; "
              f"every network trained from scratch: {p.epochs:g} epochs, batch {p.batch_size}, "
              f"OneCycle SGD peak lr {p.lr:g}, seed {p.seed}. Latency: batch 1, "
              f"{experiment.threads} thread(s) on {hardware}, median of block minima with the "
              "bootstrap 95% interval over blocks; ratios paired over blocks (95% interval). "
              f"Energy: {meter}."]
    return "\n".join(lines)


def flat(row: Row) -> dict[str, Any]:
    """A CSV line: each estimate as value, low and high columns."""
    out: dict[str, Any] = {}
    for key, value in dataclasses.asdict(row).items():
        if isinstance(value, dict):
            out |= {key: value["value"], f"{key}_low": value["low"],
                    f"{key}_high": value["high"]}
        else:
            out[key] = value
    return out


def plot(rows: list[Row], experiment: Experiment, path: Path) -> None:
    """mIoU against deploy latency, one labelled point per network, the front ringed."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    points = [(r.latency_deploy_ms.value, r.test_miou) for r in rows]
    middle = (min(points)[0] * max(points)[0]) ** 0.5  # the log axis' middle
    for r, (x, y) in zip(rows, points, strict=True):
        e = r.latency_deploy_ms
        ax.errorbar([x], [y], xerr=[[x - e.low], [e.high - x]], marker="o", capsize=3)
        right = x <= middle  # names of the slower half go left of their point, inside the axes
        ax.annotate(r.name, (x, y), textcoords="offset points", xytext=(6 if right else -6, 5),
                    ha="left" if right else "right", fontsize="small")
    xs, ys = zip(*(points[i] for i in pareto_front(points)), strict=True)
    ax.scatter(xs, ys, s=160, facecolors="none", edgecolors="black", label="Pareto front")
    ax.set_xscale("log")  # the networks span more than a decade of latency
    for axis_set in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
        axis_set(LogFormatter(labelOnlyBase=False))  # 200, 500 rather than 2x10^2
    ax.margins(y=0.1)
    ax.set_xlabel(f"latency ms, input {experiment.deploy_shape}, batch 1, "
                  f"{experiment.threads} thread(s)")
    ax.set_ylabel("test mIoU")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(out: Path, rows: list[Row], experiment: Experiment, train_shape: str,
                  meter: str, hardware: str) -> str:
    """results.csv, .md, .json and .png in ``out``; returns the markdown table."""
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(flat(rows[0])))
        writer.writeheader()
        writer.writerows(flat(r) for r in rows)
    table = markdown(rows, experiment, train_shape, meter, hardware)
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(
        {"experiment": experiment.to_json(), "dataset": DATASET, "train_shape": train_shape,
         "hardware": hardware, "energy_meter": meter,
         "rows": [dataclasses.asdict(r) for r in rows]}, indent=2))
    plot(rows, experiment, out / "results.png")
    return table


# ---------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    """Check everything, then train, measure and write the results."""
    experiment = experiment_of(args)
    out = Path(args.out)
    check_plan(out, experiment)
    data = load_data(DATASET, data_dir=experiment.data_dir, download=args.download,
                     seed=experiment.pretrain.seed, synthetic_size=experiment.synthetic_size,
                     image_size=experiment.image_size)
    train_shape = (data.in_channels, *data.image_size)
    deploy_shape = check_deploy_shape(experiment, data.in_channels, data.num_classes,
                                      data.image_size)
    save_plan(out, experiment)
    models, metas = {}, {}
    for name in experiment.models:
        models[name], metas[name] = train_or_reuse(name, data, experiment, out)
    counts, latency, energy, meter = measure_all(models, train_shape, deploy_shape, experiment,
                                                 Store(out / "measured.json"))
    rows = rows_of(metas, counts, latency, energy)
    print(write_results(out, rows, experiment, "x".join(map(str, train_shape)), meter,
                        hardware_id("cpu")))
    print(f"\n{out}: results.md, results.csv, results.json, results.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The script; exit code 2 with one line saying why for a command it refuses."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help (0), or a bad option: argparse said why (2)
        return stop.code if isinstance(stop.code, int) else 2
    try:
        return run(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"seg_architectures: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
