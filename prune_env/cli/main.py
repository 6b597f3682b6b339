"""The ``prune-env`` command: pretrain, prune (episode, train, baseline), compare, export.

Examples::

    prune-env pretrain --model resnet20 --dataset fashion-mnist
    prune-env episode --policy l1 --ratio 0.5 --model resnet20 --dataset fashion-mnist
    prune-env train --agent l2pf --episodes 30 --cost latency --target 0.5
    prune-env baseline l1 --target 0.5
    prune-env compare runs/*
    prune-env sweep l2pf l1 swd --targets 0.7 0.5 --seeds 0 1 2 --runs-dir runs/sweep
    prune-env export runs/RUN --format onnx
    prune-env bench learning
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from prune_env import checks
from prune_env.catalog import BASELINES, runner, task_of
from prune_env.cli.parser import add_options, config_from
from prune_env.config import (
    METHODS,
    AgentConfig,
    BaselineConfig,
    CompareConfig,
    DataConfig,
    EnvConfig,
    EpisodeConfig,
    PretrainConfig,
    RayConfig,
    RunConfig,
    SweepConfig,
)

if TYPE_CHECKING:
    from prune_env.envs.records import Report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prune-env", description="Prune CNNs with reinforcement learning, measured on "
        "real hardware. Each subcommand has its own --help.")
    sub = parser.add_subparsers(dest="command", required=True)

    pre = sub.add_parser("pretrain", help="train the base network and save its checkpoint",
                         description="Train MODEL on DATASET from scratch (progress bar), "
                         "score it on validation and test, save the checkpoint.")
    add_options(pre, DataConfig)
    add_options(pre, PretrainConfig)
    add_options(pre, EnvConfig, skip=[f.name for f in dataclasses.fields(EnvConfig)
                                      if f.name not in ("device", "amp")])

    epi = sub.add_parser("episode", help="run one pruning episode with a simple policy",
                         description="Prune the base network once with a simple policy through "
                         "the environment; write report.json, the compact network and a "
                         "TensorBoard log to a new run directory.")
    add_options(epi, RunConfig, skip=("final_steps", "no_export", "torchscript"))  # no final stage
    add_options(epi, EpisodeConfig)

    tra = sub.add_parser("train", help="train a pruning agent (L2PF or stable-baselines3)",
                         description="Train an agent on the environment with a progress bar and "
                         "a TensorBoard run (runs/MODEL-DATASET__AGENT__SEED__TIME); checkpoint "
                         "every N episodes; at the end the best network is fine-tuned, tested, "
                         "measured and exported (report.json, compact.pt, model.onnx, model.ts).")
    add_options(tra, RunConfig)
    add_options(tra, AgentConfig)
    add_options(tra, RayConfig)
    tra.add_argument("--resume", default=None, metavar="RUN_DIR",
                     help="continue a stopped run from its last checkpoint (its own "
                          "arguments are used)")

    bas = sub.add_parser("baseline", help="prune with a baseline method, same report as train",
                         description="Run a baseline through the same environment and final "
                         "stage as the agents: report.json, exports and a TensorBoard run.")
    bas.add_argument("name", choices=BASELINES,
                     help="keep-all, random, l1 (uniform ratio), swd (selective weight "
                          "decay, then its mask), layerprune (whole blocks removed), alf "
                          "(autoencoder code filters, deployed as conv + 1x1 expansion), "
                          "gating (dynamic filter gating, executed at batch 1), or joint "
                          "(filter masks learned with the network)")
    add_options(bas, RunConfig)
    add_options(bas, BaselineConfig)

    exp = sub.add_parser("export", help="export a finished run's network (ONNX, TorchScript)",
                         description="Write RUN_DIR/model.onnx and/or RUN_DIR/model.ts from "
                         "RUN_DIR/compact.pt, each checked against PyTorch's outputs.")
    exp.add_argument("run_dir", help="a run directory with compact.pt")
    exp.add_argument("--format", action="append", choices=("onnx", "torchscript"),
                     help="repeatable (default: onnx; torchscript is deprecated in torch "
                          "2.14)")

    com = sub.add_parser("compare", help="compare finished runs in one table",
                         description="Markdown table on the terminal and a CSV file: method, "
                         "accuracies, measured latency and speed-up, energy, FLOPs, params, "
                         "search compute; Pareto plots of accuracy against measured cost, "
                         "a method run at several targets drawn as a curve.")
    com.add_argument("run_dirs", nargs="+", help="run directories with report.json, or sweep "
                     "directories (their runs, as mean and spread over seeds)")
    add_options(com, CompareConfig)

    swe = sub.add_parser("sweep", help="run methods x targets x seeds x networks on Ray, "
                         "resumable, then compare them",
                         description="Run every METHOD (agents and baselines) at every "
                         "--targets value, for every --seeds value and --models network, each "
                         "run a Ray task (a local Ray instance, or the cluster at --address), "
                         "into the sweep directory --runs-dir. Rerunning the same command "
                         "resumes the sweep: finished runs are kept, failed and missing ones "
                         "run. Then the runs are compared: the table (mean and spread over "
                         "seeds), compare.csv, summary.csv, Pareto plots.")
    swe.add_argument("methods", nargs="+", metavar="METHOD", choices=METHODS,
                     help=f"any of {', '.join(METHODS)}")
    swe.add_argument("--targets", nargs="+", type=checks.share, default=[0.7, 0.5, 0.3],
                     help="cost targets, each in (0, 1] (default: 0.7 0.5 0.3)")
    swe.add_argument("--runs-dir", required=True, metavar="SWEEP_DIR",
                     help="the sweep directory: created with the plan, or resumed when it "
                          "holds this command's plan")
    add_options(swe, SweepConfig)
    add_options(swe, RayConfig)
    add_options(swe, RunConfig, skip=("target", "runs_dir"))
    add_options(swe, AgentConfig, skip=("agent",))
    add_options(swe, BaselineConfig)
    add_options(swe, CompareConfig)

    ben = sub.add_parser("bench", help="run one of the README's experiments from its config, "
                         "resumable, and write its table and figures",
                         description="Run every arm of the bench config NAME (a sweep each, "
                         "into BENCH_DIR/ARM; rerunning resumes them), then write "
                         "BENCH_DIR/NAME.md (the table), NAME.csv (one row per run), "
                         "NAME-curves.png (the agents' learning curves) and NAME-pareto-*.png. "
                         "Shipped configs: see NAME below; any NAME.json of the same form "
                         "works.")
    ben.add_argument("name", metavar="NAME", help="a shipped bench (learning, finetune, "
                     "cost, transfer, methods) or a config file NAME.json")
    ben.add_argument("--arms", nargs="+", default=None, metavar="ARM", help="run only these "
                     "arms (default: all); the table still shows every arm's finished runs")
    ben.add_argument("--short", action="store_true", help="the config's short version "
                     "(synthetic data, one seed, a few episodes; what `make bench` runs)")
    ben.add_argument("--runs-dir", default=None, metavar="BENCH_DIR", help="where the arms' "
                     "sweeps and the table go (default: runs/bench, or runs/bench-short "
                     "with --short)")
    ben.add_argument("--report-only", action="store_true", help="run nothing: write the "
                     "table and figures from the runs finished so far")
    return parser


def cmd_pretrain(args: argparse.Namespace) -> int:
    from prune_env.data.datasets import load_data  # torch is imported only once a command runs
    from prune_env.nn.models import check_task
    from prune_env.training.pretrain import default_checkpoint, pretrain

    data = config_from(args, DataConfig)
    run = RunConfig(data=data, pretrain=config_from(args, PretrainConfig),
                    env=config_from(args, EnvConfig))
    check_task(data.model, task_of(data.dataset))
    bundle = load_data(data.dataset, data_dir=data.data_dir, download=data.download,
                       seed=data.seed, synthetic_size=data.synthetic_size,
                       image_size=data.image_size)
    path = data.checkpoint or default_checkpoint(data.model, data.dataset)
    _, meta = pretrain(data.model, bundle, run.pretraining, path)
    score = "mIoU" if meta["metric"] == "miou" else "accuracy"
    print(f"saved {path}: validation {score} {meta['val_accuracy']:.4f}, "
          f"test {score} {meta['test_accuracy']:.4f}, {meta['train_seconds']:.0f} s")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    run = config_from(args, RunConfig)
    report, run_dir = runner("train")(run, config_from(args, AgentConfig), resume=args.resume,
                                      ray_config=config_from(args, RayConfig))
    return finish(report, run_dir)


def cmd_baseline(args: argparse.Namespace) -> int:
    run = config_from(args, RunConfig)
    report, run_dir = runner("baseline")(args.name, run, config_from(args, BaselineConfig))
    return finish(report, run_dir)


def cmd_episode(args: argparse.Namespace) -> int:
    run = dataclasses.replace(config_from(args, RunConfig), final_steps=0, no_export=True)
    report, run_dir = runner("episode")(run, config_from(args, EpisodeConfig))
    return finish(report, run_dir)


def finish(report: Report, run_dir: Path) -> int:
    """The one-screen summary, where the files went, and how to look at the run."""
    print(summary_table(report))
    files = ", ".join(["report.json", "compact.pt", *(Path(e.path).name
                                                      for e in report.exports.values())])
    print(f"\nrun: {run_dir} ({files})\ntensorboard --logdir {run_dir.parent}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from prune_env.runs.export_run import export_run

    for fmt, result in export_run(args.run_dir, args.format or ["onnx"]).items():
        print(f"{fmt}: {result.path} (max |difference| from PyTorch "
              f"{result.max_abs_diff:.2e})")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    return compare_runs(args.run_dirs, config_from(args, CompareConfig))


def compare_runs(run_dirs: list[str], config: CompareConfig) -> int:
    from prune_env.cli.compare import compare

    print(compare(run_dirs, config.csv, config.plot, config.logdir))
    if config.plot:
        print(f"\nPareto plots: {config.plot}-latency.png, {config.plot}-flops.png")
    if config.logdir:
        print(f"tensorboard --logdir {config.logdir}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from prune_env.sweep import Plan, run_sweep

    run, grid = config_from(args, RunConfig), config_from(args, SweepConfig)
    plan = Plan.make(args.methods, args.targets, grid.seeds or [run.data.seed],
                     grid.models or [run.data.model], run, config_from(args, AgentConfig),
                     config_from(args, BaselineConfig))
    summary = run_sweep(plan, config_from(args, RayConfig), shared_storage=grid.shared_storage)
    root = summary.root
    print(f"\nsweep {root}: {summary.kept} runs finished before, {len(summary.ran)} ran now "
          f"({len(summary.failed)} failed) in {summary.seconds / 60:.1f} min")
    if any((d / "report.json").exists() for d in root.iterdir() if d.is_dir()):
        given = config_from(args, CompareConfig)
        compare_runs([str(root)], CompareConfig(
            given.csv or str(root / "compare.csv"), given.plot or str(root / "pareto"),
            given.logdir or str(root / "pareto")))
    if summary.failed:
        for outcome in summary.failed:
            print(f"failed: {outcome.entry}: {outcome.error} (log: {root / str(outcome.log)})",
                  file=sys.stderr)
        print(f"{len(summary.failed)} run(s) failed; rerun the same command to run them "
              "again", file=sys.stderr)
        return 1
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from prune_env.cli import bench
    from prune_env.sweep.cluster import held

    config = bench.load_bench(args.name)
    # absolute, as a sweep's plan holds it: an arm's --init-policy {root}/ARM is then the
    # same from any folder and on any node
    root = Path(args.runs_dir or ("runs/bench-short" if args.short else "runs/bench")).resolve()
    unknown = sorted(set(args.arms or ()) - set(config.arms))
    if unknown:
        raise ValueError(f"bench {config.name}: no arm {', '.join(unknown)}; its arms: "
                         f"{', '.join(config.arms)}")
    argvs = {arm: bench.arm_argv(config, arm, root, args.short) for arm in config.arms
             if args.arms is None or arm in args.arms}
    parser, checkpoints, clusters = build_parser(), set[str](), set[tuple]()
    for arm, argv in argvs.items():  # every arm checked before any runs
        try:
            parsed = parser.parse_args(argv)
        except SystemExit:
            raise ValueError(f"bench {config.name}: arm {arm!r} is not a valid sweep "
                             f"(prune-env {' '.join(argv)}): see the message above") from None
        checkpoints.add(parsed.checkpoint)
        clusters.add((parsed.address, parsed.ray_cpus))
    failed = []
    for path, argv in bench.missing_bases(config, checkpoints).items():
        if args.report_only:
            break
        print(f"\n== bench {config.name}: base {path}: prune-env {' '.join(argv)}", flush=True)
        if main(argv) != 0:
            raise ValueError(f"bench {config.name}: could not pretrain the base {path}")
    # arms on the same Ray options share one instance; others start their own
    with held() if len(clusters) == 1 else contextlib.nullcontext():
        for arm, argv in argvs.items() if not args.report_only else ():
            print(f"\n== bench {config.name}, arm {arm}: prune-env {' '.join(argv)}",
                  flush=True)
            if main(argv) != 0:
                failed.append(arm)
    written = bench.write_report(config, root)
    if written:
        print(f"\nbench {config.name}: " + ", ".join(map(str, written)))
        print(written[0].read_text())
    else:
        print(f"bench {config.name}: no finished run under {root} yet")
        failed_runs = bench.failures(config, root)
        if failed_runs:
            print("runs that failed:\n" + "\n".join(failed_runs))
    if failed:
        print(f"arms that failed: {', '.join(failed)}; rerun the same command to resume them",
              file=sys.stderr)
        return 1
    return 0


def summary_table(report: Report) -> str:
    """The one-screen base vs pruned comparison printed at the end of a run."""
    b, p = report.base, report.pruned
    score = "mIoU" if report.metric == "miou" else "accuracy"
    rows = [(f"test {score}", f"{b.test_accuracy:.4f}", f"{p.test_accuracy:.4f}"),
            (f"val {score}", f"{b.val_accuracy:.4f}", f"{p.val_accuracy:.4f}"),
            ("latency ms (measured)", f"{b.latency_ms:.3f}", f"{p.latency_ms:.3f}"),
            ("latency ms (predicted)", "", f"{p.latency_predicted_ms:.3f}"),
            *((f"ms onnxruntime {d.provider.removesuffix('ExecutionProvider')}",
               f"{d.base_ms:.3f}", f"{d.pruned_ms:.3f}") for d in report.deployed),
            ("energy mJ", str(b.energy_mj), str(p.energy_mj)),
            *(((f"mJ above idle {report.energy_idle_w:.1f} W", f"{b.energy_net_mj:.3f}",
                f"{p.energy_net_mj:.3f}"),) if b.energy_net_mj is not None
              and p.energy_net_mj is not None and report.energy_idle_w is not None else ()),
            ("MFLOPs", f"{b.flops / 1e6:.2f}", f"{p.flops / 1e6:.2f}"),
            ("params", f"{b.params:,}", f"{p.params:,}")]
    lines = [f"| {'':24s} | {'base':>10s} | {'pruned':>10s} |", f"|{'-' * 26}|{'-' * 12}|"
             f"{'-' * 12}|"]
    lines += [f"| {a:24s} | {x:>10s} | {y:>10s} |" for a, x, y in rows]
    ci = report.cost_ratio_ci
    interval = f", 95% interval {ci[0]:.3f}-{ci[1]:.3f}" if ci else ""
    lines.append(f"speed-up {report.speedup:.2f}x, {report.cost} ratio "
                 f"{report.cost_ratio:.3f} ({report.cost_ratio_source}{interval}; target "
                 f"{report.target}: {report.target_met}), fine-tune "
                 f"{report.finetune.seconds:.1f} s, measured on {report.hardware}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help (0), or a bad option: argparse said why (2)
        return stop.code if isinstance(stop.code, int) else 2
    try:
        commands = {"pretrain": cmd_pretrain, "episode": cmd_episode, "train": cmd_train,
                    "baseline": cmd_baseline, "export": cmd_export, "compare": cmd_compare,
                    "sweep": cmd_sweep, "bench": cmd_bench}
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


if __name__ == "__main__":
    sys.exit(main())


