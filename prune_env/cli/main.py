"""The ``prune-env`` command: pretrain, prune (episode, train, baseline), compare, export.

Examples::

    prune-env pretrain --model resnet20 --dataset fashion-mnist
    prune-env episode --policy l1 --ratio 0.5 --model resnet20 --dataset fashion-mnist
    prune-env train --agent l2pf --episodes 30 --cost latency --target 0.5
    prune-env baseline l1 --target 0.5
    prune-env compare runs/*
    prune-env export runs/RUN --format onnx
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prune_env.catalog import (
    AGENTS,
    BASELINES,
    COSTS,
    DATASETS,
    OWN_MODELS,
    POLICIES,
    REWARDS,
    runner,
)

if TYPE_CHECKING:
    from prune_env.envs.records import Report
from prune_env.cli import checks


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """Options naming the model and the data, shared by every subcommand."""
    parser.add_argument("--model", default="resnet20",
                        help=f"architecture: {', '.join(OWN_MODELS)}, or a torchvision "
                             "classification model name such as resnet18 (default: resnet20)")
    parser.add_argument("--dataset", default="fashion-mnist", choices=DATASETS,
                        help="data set (default: fashion-mnist, from Debian's "
                             "dataset-fashion-mnist package when installed)")
    parser.add_argument("--data-dir", default=None,
                        help="folder holding the data set (FashionMNIST/raw, "
                             "cifar-10-batches-py, or train/ and test/ class folders)")
    parser.add_argument("--download", action="store_true",
                        help="let torchvision download a missing data set (needs internet)")
    parser.add_argument("--synthetic-size", type=checks.positive, default=3000,
                        help="training images of the synthetic data set (default: 3000)")
    parser.add_argument("--image-size", type=checks.positive, default=None,
                        help="resize images to this size (default: the data set's own; 32 "
                             "for synthetic and imagefolder)")
    parser.add_argument("--seed", type=checks.seed, default=0,
                        help="seed of the train/validation split, weights and batches")
    parser.add_argument("--checkpoint", default=None,
                        help="base checkpoint path (default: checkpoints/MODEL-DATASET.pt, or "
                             "$PRUNE_ENV_CHECKPOINTS/MODEL-DATASET.pt)")


def add_pretrain_args(parser: argparse.ArgumentParser) -> None:
    """Pretraining budget options."""
    parser.add_argument("--epochs", type=checks.positive_real, default=3.0,
                        help="passes over the training split (default: 3)")
    parser.add_argument("--batch-size", type=checks.positive, default=256, help="default: 256")
    parser.add_argument("--lr", type=checks.positive_real, default=0.2,
                        help="peak OneCycle learning rate (default: 0.2)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prune-env", description="Prune CNNs with reinforcement learning, measured on "
        "real hardware. Each subcommand has its own --help.")
    sub = parser.add_subparsers(dest="command", required=True)

    pre = sub.add_parser("pretrain", help="train the base network and save its checkpoint",
                         description="Train MODEL on DATASET from scratch (progress bar), "
                         "score it on validation and test, save the checkpoint.")
    add_data_args(pre)
    add_pretrain_args(pre)

    epi = sub.add_parser("episode", help="run one pruning episode with a simple policy",
                         description="Prune the base network once with a simple policy through "
                         "the environment; write report.json, the compact network and a "
                         "TensorBoard log to a new run directory.")
    add_data_args(epi)
    add_pretrain_args(epi)
    epi.add_argument("--policy", default="l1", choices=POLICIES,
                     help="keep-all, random (seeded), or l1: keep the largest-L1 filters "
                          "(default: l1)")
    epi.add_argument("--ratio", type=checks.share, default=0.5,
                     help="fraction of each group's filters kept by random and l1 "
                          "(default: 0.5)")
    epi.add_argument("--finetune", type=checks.fraction, default=0.2,
                     help="fine-tune fraction chosen at every step, in [0, 1] (default: 0.2)")
    add_env_args(epi)

    tra = sub.add_parser("train", help="train a pruning agent (L2PF or stable-baselines3)",
                         description="Train an agent on the environment with a progress bar and "
                         "a TensorBoard run (runs/MODEL-DATASET__AGENT__SEED__TIME); checkpoint "
                         "every N episodes; at the end the best network is fine-tuned, tested, "
                         "measured and exported (report.json, compact.pt, model.onnx, model.ts).")
    add_data_args(tra)
    add_pretrain_args(tra)
    add_env_args(tra)
    add_train_args(tra)

    bas = sub.add_parser("baseline", help="prune with a baseline method, same report as train",
                         description="Run a baseline through the same environment and final "
                         "stage as the agents: report.json, exports and a TensorBoard run.")
    bas.add_argument("name", choices=BASELINES,
                     help="keep-all, random, l1 (uniform ratio), swd (selective weight "
                          "decay, then its mask), layerprune (whole blocks removed), alf "
                          "(autoencoder code filters, deployed as conv + 1x1 expansion), or "
                          "gating (dynamic filter gating, executed at batch 1)")
    add_data_args(bas)
    add_pretrain_args(bas)
    add_env_args(bas)
    add_baseline_args(bas)
    bas.add_argument("--final-steps", type=checks.non_negative, default=300,
                     help="SGD steps of the final fine-tune (default: 300)")
    bas.add_argument("--no-export", action="store_true",
                     help="skip the ONNX and TorchScript files (`prune-env export` later)")

    exp = sub.add_parser("export", help="export a finished run's network (ONNX, TorchScript)",
                         description="Write RUN_DIR/model.onnx and/or RUN_DIR/model.ts from "
                         "RUN_DIR/compact.pt, each checked against PyTorch's outputs.")
    exp.add_argument("run_dir", help="a run directory with compact.pt")
    exp.add_argument("--format", action="append", choices=("onnx", "torchscript"),
                     help="repeatable (default: both)")

    com = sub.add_parser("compare", help="compare finished runs in one table",
                         description="Markdown table on the terminal and a CSV file: method, "
                         "accuracies, measured latency and speed-up, energy, FLOPs, params, "
                         "search compute; Pareto plots of accuracy against measured cost, "
                         "a method run at several targets drawn as a curve.")
    com.add_argument("run_dirs", nargs="+", help="run directories with report.json")
    add_compare_args(com)

    swe = sub.add_parser("sweep", help="run methods at several targets, then compare them",
                         description="Run every METHOD (agents and baselines) at every "
                         "--targets value with the same data, base network, seed and budget "
                         "into a new runs/sweep-TIME directory, then compare those runs: "
                         "table, compare.csv, Pareto plots (one curve per method).")
    swe.add_argument("methods", nargs="+", metavar="METHOD", choices=AGENTS + BASELINES,
                     help=f"any of {', '.join(AGENTS + BASELINES)}")
    swe.add_argument("--targets", nargs="+", type=checks.share, default=[0.7, 0.5, 0.3],
                     help="cost targets, each in (0, 1] (default: 0.7 0.5 0.3)")
    add_baseline_args(swe)
    add_data_args(swe)
    add_pretrain_args(swe)
    add_env_args(swe)
    add_train_args(swe)
    add_compare_args(swe)
    return parser


def add_compare_args(parser: argparse.ArgumentParser) -> None:
    """Where the comparison goes (`compare`; `sweep` defaults them into its directory)."""
    parser.add_argument("--csv", default=None, help="CSV path (default: none; sweep: "
                        "SWEEP_DIR/compare.csv)")
    parser.add_argument("--plot", default=None, metavar="STEM",
                        help="Pareto plots of test accuracy against measured latency, FLOPs "
                             "(and energy) as STEM-latency.png, ... (default: none; sweep: "
                             "SWEEP_DIR/pareto)")
    parser.add_argument("--logdir", default=None,
                        help="also log the plots as TensorBoard images there (default: none; "
                             "sweep: SWEEP_DIR/pareto)")


def add_baseline_args(parser: argparse.ArgumentParser) -> None:
    """The baselines' own options (`prune-env baseline`, `sweep`)."""
    parser.add_argument("--ratio", default="auto", type=checks.auto_or(checks.share),
                        help="fraction of each group's filters kept by random and l1, or "
                             "'auto': the largest uniform ratio whose predicted cost meets "
                             "the target (default: auto)")
    parser.add_argument("--finetune", type=checks.fraction, default=0.2,
                        help="fine-tune fraction at every step, in [0, 1] (default: 0.2)")
    parser.add_argument("--swd-steps", type=checks.positive, default=300,
                        help="swd: SGD steps of the penalised warm-up (default: 300)")
    parser.add_argument("--alf-steps", type=checks.positive, default=300,
                        help="alf: SGD steps training the autoencoder blocks (default: 300)")
    parser.add_argument("--budget", default="auto", type=checks.auto_or(checks.share),
                        help="gating: budget r of every gate, or 'auto': the largest r whose "
                             "estimated cost meets the target minus a 0.04 margin for "
                             "drift while training (default: auto)")
    parser.add_argument("--gating-steps", type=checks.positive, default=300,
                        help="gating: SGD steps training backbone and predictors together "
                             "at the budget before the episode (default: 300)")
    parser.add_argument("--predictor-steps", type=checks.non_negative, default=30,
                        help="gating: predictor-only batches after each step (default: 30)")
    parser.add_argument("--criterion", default="taylor",
                        choices=("taylor", "l1", "bn", "imprinting"),
                        help="layerprune: block importance (default: taylor)")
    parser.add_argument("--criterion-batches", type=checks.positive, default=100,
                        help="layerprune: training batches of the taylor pass (default: 100)")


def add_env_args(parser: argparse.ArgumentParser) -> None:
    """The environment's options (cost, target, reward, fine-tuning, measurement)."""
    parser.add_argument("--cost", default="latency", choices=COSTS,
                        help="cost the reward uses (default: latency)")
    parser.add_argument("--target", type=checks.share, default=0.5,
                        help="cost target as a fraction of the base cost (default: 0.5)")
    parser.add_argument("--reward", default="psi-phi", choices=REWARDS,
                        help="reward form (default: psi-phi, try-and-learn's)")
    parser.add_argument("--allowed-drop", type=checks.positive_real, default=0.02,
                        help="accuracy drop b at which psi reaches 0 (default: 0.02)")
    parser.add_argument("--max-finetune-steps", type=checks.non_negative, default=50,
                        help="fine-tuning SGD steps at finetune=1 (default: 50)")
    parser.add_argument("--val-samples", type=checks.positive, default=2000,
                        help="validation images scored at each step (default: 2000)")
    parser.add_argument("--device", default="cpu", type=checks.device,
                        help="where latency and energy are measured: cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=checks.positive, default=1,
                        help="CPU threads for timing (default: 1, embedded-style batch-1 "
                             "latency; on 2 cores ResNet-20 runs no faster on 2 threads and "
                             "its timings vary about 5x more)")
    parser.add_argument("--latency-table", default=None,
                        help="latency lookup-table file (default: ~/.cache/prune-env)")
    parser.add_argument("--runs-dir", default="runs",
                        help="parent of the new run directory (default: runs)")


def add_train_args(parser: argparse.ArgumentParser) -> None:
    """The agent, its budget and hyper-parameters, checkpoints and the final stage."""
    parser.add_argument("--agent", default="l2pf", choices=AGENTS,
                        help="l2pf (ours: hybrid action, tries) or a stable-baselines3 agent "
                             "through the flat-action wrapper (default: l2pf)")
    parser.add_argument("--episodes", type=checks.positive, default=30,
                        help="training episodes in all (default: 30)")
    parser.add_argument("--tries", type=checks.positive, default=4,
                        help="L2PF: actions tried on each group per update (default: 4)")
    parser.add_argument("--agent-lr", type=checks.positive_real, default=3e-3,
                        help="L2PF: Adam learning rate of the policy (default: 3e-3)")
    parser.add_argument("--ent-coef", type=checks.non_negative_real, default=0.01,
                        help="L2PF: entropy bonus (default: 0.01)")
    parser.add_argument("--pace-weight", type=checks.non_negative_real, default=10.0,
                        help="L2PF: weight of the term pacing the cost toward the target "
                             "(default: 10.0)")
    parser.add_argument("--sb3", nargs="*", default=[], metavar="KEY=VALUE",
                        help="stable-baselines3 hyper-parameters, e.g. n_steps=48 "
                             "learning_rate=1e-4 (default: sb3's, rollouts scaled to episodes)")
    parser.add_argument("--n-envs", type=checks.positive, default=1,
                        help="environments in parallel processes (sb3: SubprocVecEnv; L2PF: "
                             "tries) (default: 1)")
    parser.add_argument("--checkpoint-every", type=checks.positive, default=1,
                        help="checkpoint every N episodes (default: 1)")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR",
                        help="continue a stopped run from its last checkpoint (its own "
                             "arguments are used)")
    parser.add_argument("--final-steps", type=checks.non_negative, default=300,
                        help="SGD steps of the final fine-tune (default: 300)")
    parser.add_argument("--no-export", action="store_true",
                        help="skip the ONNX and TorchScript files (`prune-env export` later)")


def cmd_pretrain(args: argparse.Namespace) -> int:
    from prune_env.data.datasets import load_data  # torch is imported only once a command runs
    from prune_env.training.pretrain import PretrainConfig, default_checkpoint, pretrain

    data = load_data(args.dataset, data_dir=args.data_dir, download=args.download,
                     seed=args.seed, synthetic_size=args.synthetic_size,
                     image_size=args.image_size)
    path = args.checkpoint or default_checkpoint(args.model, args.dataset)
    config = PretrainConfig(args.epochs, args.batch_size, args.lr, args.seed)
    _, meta = pretrain(args.model, data, config, path)
    print(f"saved {path}: validation accuracy {meta['val_accuracy']:.4f}, "
          f"test accuracy {meta['test_accuracy']:.4f}, {meta['train_seconds']:.0f} s")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    report, run_dir = runner("train")(args)
    return finish(report, run_dir, args.runs_dir)


def cmd_baseline(args: argparse.Namespace) -> int:
    report, run_dir = runner("baseline")(args)
    return finish(report, run_dir, args.runs_dir)


def finish(report: Report, run_dir: Path, runs_dir: str) -> int:
    """The one-screen summary, where the files went, and how to look at the run."""
    print(summary_table(report))
    files = ", ".join(["report.json", "compact.pt", *(Path(e.path).name
                                                      for e in report.exports.values())])
    print(f"\nrun: {run_dir} ({files})\ntensorboard --logdir {runs_dir}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from prune_env.runs.export_run import export_run

    for fmt, result in export_run(args.run_dir, args.format or ["onnx", "torchscript"]).items():
        print(f"{fmt}: {result.path} (max |difference| from PyTorch "
              f"{result.max_abs_diff:.2e})")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from prune_env.cli.compare import compare

    print(compare(args.run_dirs, args.csv, args.plot, args.logdir))
    if args.plot:
        print(f"\nPareto plots: {args.plot}-latency.png, {args.plot}-flops.png")
    if args.logdir:
        print(f"tensorboard --logdir {args.logdir}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from prune_env.cli.sweep import sweep

    runs, root = sweep(args)
    if not runs:
        raise ValueError(f"no method reached any of the targets: nothing to compare in {root}")
    args.run_dirs = list(map(str, runs))
    args.csv = args.csv or str(root / "compare.csv")
    args.plot = args.plot or str(root / "pareto")
    args.logdir = args.logdir or str(root / "pareto")
    return cmd_compare(args)


def cmd_episode(args: argparse.Namespace) -> int:
    report, run_dir = runner("episode")(args)
    return finish(report, run_dir, args.runs_dir)


def summary_table(report: Report) -> str:
    """The one-screen base vs pruned comparison printed at the end of a run."""
    b, p = report.base, report.pruned
    rows = [("test accuracy", f"{b.test_accuracy:.4f}", f"{p.test_accuracy:.4f}"),
            ("val accuracy", f"{b.val_accuracy:.4f}", f"{p.val_accuracy:.4f}"),
            ("latency ms (measured)", f"{b.latency_ms:.3f}", f"{p.latency_ms:.3f}"),
            ("latency ms (predicted)", "", f"{p.latency_predicted_ms:.3f}"),
            ("energy mJ", str(b.energy_mj), str(p.energy_mj)),
            ("MFLOPs", f"{b.flops / 1e6:.2f}", f"{p.flops / 1e6:.2f}"),
            ("params", f"{b.params:,}", f"{p.params:,}")]
    lines = [f"| {'':24s} | {'base':>10s} | {'pruned':>10s} |", f"|{'-' * 26}|{'-' * 12}|"
             f"{'-' * 12}|"]
    lines += [f"| {a:24s} | {x:>10s} | {y:>10s} |" for a, x, y in rows]
    lines.append(f"speed-up {report.speedup:.2f}x, {report.cost} ratio "
                 f"{report.cost_ratio:.3f} ({report.cost_ratio_source}; target "
                 f"{report.target}, {'met' if report.target_met else 'missed'}), fine-tune "
                 f"{report.finetune.seconds:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help (0), or a bad option: argparse said why (2)
        return stop.code if isinstance(stop.code, int) else 2
    try:
        commands = {"pretrain": cmd_pretrain, "episode": cmd_episode, "train": cmd_train,
                    "baseline": cmd_baseline, "export": cmd_export, "compare": cmd_compare,
                    "sweep": cmd_sweep}
        return commands[args.command](args)
    except (FileNotFoundError, ValueError) as err:
        return fail(err)
    except RuntimeError as err:
        from prune_env.measure import EnergyUnavailableError  # torch is loaded by now

        if isinstance(err, EnergyUnavailableError):
            return fail(err)
        raise


def fail(err: Exception) -> int:
    """A user's error: one line saying what to do, exit code 2."""
    print(f"prune-env: error: {err}", file=sys.stderr)
    return 2


def options_of(command: str) -> dict[str, argparse.Action]:
    """The options of ``prune-env COMMAND`` by destination name."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices[command]._actions if a.option_strings}


def reparse(command: str, saved: dict[str, Any], source: str,
            positional: tuple[str, ...] = ()) -> argparse.Namespace:
    """Options given as values (a run's args.json, a sweep's runs), checked as the command
    line checks them; ``positional``: the command's positional arguments.

    Raises:
        ValueError: naming ``source``, for an unknown option or a value the command line
            would refuse.
    """
    actions = options_of(command)
    unknown = set(saved) - set(actions) - {"command", "name"}
    if unknown:
        raise ValueError(f"{source} holds options `prune-env {command}` does not have: "
                         f"{', '.join(sorted(unknown))}")
    argv = [command, *positional]
    for dest, value in saved.items():
        action = actions.get(dest)
        if action is None or value is None or action.dest == "help":
            continue
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            argv += [flag] if value is True else []
        elif isinstance(value, list):
            argv += [flag, *map(str, value)] if value else []
        else:
            argv += [flag, str(value)]
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return build_parser().parse_args(argv)
    except SystemExit:
        message = errors.getvalue().strip().splitlines()[-1:] or ["invalid"]
        raise ValueError(f"{source}: {message[0].removeprefix('prune-env ' + command + ': ')}") \
            from None


if __name__ == "__main__":
    sys.exit(main())


