"""``prune-env bench NAME``: one experiment of the README, run from its config, resumable.

A bench config (``prune_env/benches/NAME.json``, or any ``.json`` file) names arms. An arm is
a `prune-env sweep` command line: its methods, the options every arm shares (``common``) and
its own (``args``, which win). Each arm runs as a sweep into ``BENCH_DIR/ARM``, so a stopped
bench resumes as its sweeps do, and an arm two benches share (same name, same settings) runs
once. Then the bench writes, in ``BENCH_DIR``:

- ``NAME.md``: the table, one row per (arm or method, target), mean and spread over seeds:
  test score, measured cost ratio, measured latency speed-up, FLOPs ratio, speed-up
  efficiency (measured speed-up over FLOPs speed-up), fine-tune compute of the search
  (the SGD steps of every training episode: all of L2PF's tries; a baseline's, or a run
  of 0 episodes, those of its one episode; the final stage's are counted apart), and for
  the agents the mean return of the first and last episodes and their trained
  deterministic policy against their first episode;
- ``NAME.csv``: one row per run with the same numbers;
- ``NAME-curves.png``: the agents' learning curves (return, validation score, cost, compute
  per episode; seeds thin, their mean thick), and ``NAME-pareto-*.png``.

``--short`` appends the config's ``short`` options, then the arm's own (synthetic data, one
seed, a few episodes): the version `make bench` runs, into ``runs/bench-short``. A base
checkpoint an arm names that does not exist is pretrained first, with the options the
config's ``bases`` give it. A config is JSON data: reading one
cannot run code.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from prune_env.checks import read_json
from prune_env.cli.compare import fmt, row, summarize, write_csv
from prune_env.cli.curves import Curves, curves_figure, read_curves
from prune_env.cli.pareto import pareto_figure, pareto_plots
from prune_env.runs.finalize import load_report
from prune_env.sweep.ledger import outcomes
from prune_env.sweep.plan import entry_of, is_agent

#: Where the configs shipped with prune-env live.
BENCHES = Path(__file__).resolve().parents[1] / "benches"
ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

#: The per-run columns of NAME.csv.
RUN_COLUMNS = ("arm", "method", "target", "seed", "test_acc", "val_acc", "measured_ratio",
               "ratio_low", "ratio_high", "speedup", "flops_ratio", "efficiency", "search_steps",
               "final_steps", "search_s", "episodes", "return_first", "return_last",
               "first_val_acc", "first_cost_ratio", "policy_val_acc", "policy_cost_ratio",
               "target_met", "hardware", "model")


@dataclass(frozen=True)
class Arm:
    """One arm: the methods of its sweep, the options that are its own, and those it adds
    in the short version."""

    methods: list[str]
    args: list[str]
    short: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BenchConfig:
    """A bench: its arms and the options they share.

    Attributes:
        bases: base checkpoints the arms name, each with the `prune-env pretrain` options
            that make it where it is missing (a retrained or deeper base, the short
            version's synthetic one).
        window: the episodes averaged at each end of the learning curves.
    """

    name: str
    description: str
    common: list[str]
    short: list[str]
    arms: dict[str, Arm]
    bases: dict[str, list[str]] = field(default_factory=dict)
    window: int = 5


def available() -> list[str]:
    """The names of the configs shipped with prune-env."""
    return sorted(p.stem for p in BENCHES.glob("*.json"))


def load_bench(name: str) -> BenchConfig:
    """The config ``name`` (shipped) or at path ``name`` (ending in .json), checked.

    Raises:
        FileNotFoundError, ValueError: no such config, or one that is not a bench's.
    """
    path = Path(name) if name.endswith(".json") else BENCHES / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no bench {name!r}: give one of {', '.join(available())} or "
                                "a config file NAME.json")
    return parse_bench(path.stem, read_json(path, "valid JSON"), str(path))


def parse_bench(name: str, data: Any, source: str) -> BenchConfig:
    """A config from its JSON form; a ValueError naming ``source`` and what is wrong."""
    known = {"description", "common", "short", "arms", "bases", "window"}
    if not isinstance(data, dict) or not isinstance(data.get("arms"), dict) or not data["arms"]:
        raise ValueError(f"{source}: a bench config is an object with a non-empty 'arms'")
    if set(data) - known:
        raise ValueError(f"{source}: unknown keys {', '.join(sorted(set(data) - known))} "
                         f"(a bench config has {', '.join(sorted(known))})")
    arms = {}
    for arm, spec in data["arms"].items():
        if not ARM_NAME.match(arm):
            raise ValueError(f"{source}: arm name {arm!r} must be letters, digits, . _ - "
                             "(it names the arm's directory)")
        if not isinstance(spec, dict) or set(spec) - {"methods", "args", "short"}:
            raise ValueError(f"{source}: arm {arm!r} is an object with 'methods', 'args' "
                             "and 'short'")
        arms[arm] = Arm(_strings(spec.get("methods"), f"{source}: arm {arm!r} methods",
                                 empty=False),
                        _strings(spec.get("args", []), f"{source}: arm {arm!r} args"),
                        _strings(spec.get("short", []), f"{source}: arm {arm!r} short"))
    bases = data.get("bases", {})
    if not isinstance(bases, dict):
        raise ValueError(f"{source}: bases maps checkpoint paths to pretrain options")
    bases = {path: _strings(args, f"{source}: base {path!r}") for path, args in bases.items()}
    window = data.get("window", 5)
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"{source}: window must be a positive integer")
    return BenchConfig(name, str(data.get("description", "")),
                       _strings(data.get("common", []), f"{source}: common"),
                       _strings(data.get("short", []), f"{source}: short"), arms, bases, window)


def _strings(value: Any, where: str, empty: bool = True) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) \
            or (not empty and not value):
        raise ValueError(f"{where}: expected a list of strings"
                         + ("" if empty else " (at least one)"))
    return list(value)


def arm_argv(config: BenchConfig, arm: str, root: Path, short: bool) -> list[str]:
    """The `prune-env sweep` command line of ``arm``, into ``root/arm``; ``{root}`` in an
    option stands for the bench directory (an arm taking another arm's policy)."""
    spec = config.arms[arm]
    argv = ["sweep", *spec.methods, *config.common, *spec.args,
            *([*config.short, *spec.short] if short else []), "--runs-dir", str(root / arm)]
    return [a.replace("{root}", str(root)) for a in argv]


def missing_bases(config: BenchConfig, checkpoints: set[str]) -> dict[str, list[str]]:
    """The `prune-env pretrain` command lines of the bases among ``checkpoints`` (those the
    arms run from, as their command lines resolve) that do not exist."""
    return {path: ["pretrain", *args, "--checkpoint", path]
            for path, args in config.bases.items()
            if path in checkpoints and not Path(path).exists()}


# ----------------------------------------------------------------------------- the report
def run_rows(config: BenchConfig, root: Path) -> tuple[list[dict], dict[str, list[Curves]]]:
    """One row per finished run of every arm (`RUN_COLUMNS`), and the agents' curves by
    label. A row's ``method`` (the comparison's label) is its arm's name when the arm runs
    one method, else ARM/METHOD (the same method runs in several arms: on several bases)."""
    rows: list[dict] = []
    curves: dict[str, list[Curves]] = defaultdict(list)
    for arm, spec in config.arms.items():
        arm_dir = root / arm
        if not arm_dir.is_dir():
            continue
        for d in sorted(arm_dir.iterdir()):
            entry = entry_of(d) if d.is_dir() else None
            if entry is None or not (d / "report.json").exists():
                continue
            r = row(d) | {"arm": arm}
            label = arm if len(spec.methods) == 1 else f"{arm}/{entry.method}"
            r["method"] = label
            run_curves = read_curves(d) if is_agent(entry.method) else None
            r.update(compute_columns(d, run_curves, config.window))
            if run_curves is not None and run_curves.episodes:
                curves[label].append(run_curves)
            rows.append(r)
    return rows, dict(curves)


def compute_columns(run_dir: Path, curves: Curves | None, window: int) -> dict[str, Any]:
    """A run's compute and, for an agent, its learning: the fine-tune steps of its search
    (every try of every episode where the agent logged them, else the report's count), of
    its final stage, its speed-up efficiency (measured latency speed-up over FLOPs
    speed-up, whatever cost the run was given: 1 when latency falls as much as FLOPs do),
    the mean return of its first and last ``window`` episodes, its first episode's score
    and cost, and its trained deterministic policy's."""
    report = load_report(run_dir)
    search_steps: float = report.finetune.steps
    out: dict[str, Any] = {"final_steps": report.final_finetune.steps
                           if report.final_finetune else 0,
                           "efficiency": report.speedup * report.pruned.flops
                           / report.base.flops}
    if curves is not None and curves.episodes:
        tried = curves.values.get("charts/search_finetune_steps", [])
        kept = curves.values.get("charts/finetune_steps", [])
        if tried and not any(math.isnan(v) for v in tried):
            search_steps = sum(tried)
        elif kept and not any(math.isnan(v) for v in kept):  # an agent without tries (sb3)
            search_steps = sum(kept)
        out |= {"episodes": curves.episodes,
                "return_first": curves.window("charts/episodic_return", True, window),
                "return_last": curves.window("charts/episodic_return", False, window),
                "first_val_acc": curves.values.get("charts/accuracy", [math.nan])[0],
                "first_cost_ratio": curves.values.get("charts/cost_ratio", [math.nan])[0]}
        policy = [c for c in (report.search.candidates if report.search else [])
                  if c.source == "deterministic policy"]
        if policy:
            out |= {"policy_val_acc": policy[0].val_accuracy_subset,
                    "policy_cost_ratio": policy[0].cost_ratio}
    out["search_steps"] = search_steps
    return out


#: The extra columns of the bench's table, averaged over seeds like compare's.
EXTRA = ("efficiency", "search_steps", "final_steps", "return_first", "return_last",
         "first_val_acc", "first_cost_ratio", "policy_val_acc", "policy_cost_ratio")


def bench_table(rows: list[dict]) -> list[dict]:
    """compare's summary (per label and target, over seeds) with the bench's columns."""
    return summarize(rows, EXTRA, ("return_first", "return_last", "search_steps"))


def markdown(table: list[dict]) -> str:
    """The bench's table as markdown (mean, and +- one standard deviation over seeds)."""
    head = ("label", "target", "seeds", "test score", "cost ratio (measured)", "target met",
            "speed-up", "FLOPs ratio", "efficiency", "search steps", "return first -> last",
            "first episode: val (cost)", "trained policy: val (cost)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in table:
        learned = (f"{pm(s['return_first'], s.get('return_first_sd'))} -> "
                   f"{pm(s['return_last'], s.get('return_last_sd'))}"
                   if s.get("return_first") is not None else "-")
        lines.append("| " + " | ".join((
            str(s["method"]), fmt(s["target"]), str(s["seeds"]),
            pm(s["test_acc"], s.get("test_acc_sd")),
            pm(s["measured_ratio"], s.get("measured_ratio_sd")), str(s["target_met"]),
            fmt(s["speedup"]),
            fmt(s["flops_ratio"]), fmt(s["efficiency"]), steps(s), learned,
            pair(s.get("first_val_acc"), s.get("first_cost_ratio")),
            pair(s.get("policy_val_acc"), s.get("policy_cost_ratio")))) + " |")
    return "\n".join(lines)


def failures(config: BenchConfig, root: Path) -> list[str]:
    """One line per label (and network) and target whose runs failed (by their sweeps'
    ledgers; a run that finished since is left out): the seeds and the error, so that a method missing from the table is
    missing with its reason (ALF refusing a latency target it cannot reach, say)."""
    failed: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for arm, spec in config.arms.items():
        arm_dir = root / arm
        done = {entry.name for d in (arm_dir.iterdir() if arm_dir.is_dir() else ())
                if (d / "report.json").exists() and (entry := entry_of(d)) is not None}
        for outcome in outcomes(arm_dir).values():
            parts = outcome.entry.rsplit("__", 3)  # MODEL__METHOD__tTARGET__sSEED
            if outcome.status != "failed" or outcome.entry in done or len(parts) != 4:
                continue
            model, method, target, seed = parts
            label = arm if len(spec.methods) == 1 else f"{arm}/{method}"
            failed[(f"{label} ({model})", target.removeprefix("t"),
                    outcome.error or "no error recorded")].append(int(seed.removeprefix("s")))
    return [f"- {label} at {target}, seed(s) {', '.join(map(str, sorted(seeds)))}: {error}"
            for (label, target, error), seeds in sorted(failed.items())]


def pm(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f}" + (f" +- {sd:.4f}" if sd is not None else "")


def steps(s: dict) -> str:
    """The search's fine-tune steps: mean, and +- one standard deviation over seeds."""
    sd = s.get("search_steps_sd")
    return f"{s['search_steps']:,.0f}" + (f" +- {sd:,.0f}" if sd is not None else "")


def pair(score: float | None, cost: float | None) -> str:
    return "-" if score is None or cost is None else f"{score:.4f} ({cost:.3f})"


def write_report(config: BenchConfig, root: Path) -> list[Path]:
    """The bench's table, CSV and figures from the finished runs under ``root``; their
    paths (nothing when no run has finished)."""
    rows, curves = run_rows(config, root)
    if not rows:
        return []
    table = bench_table(rows)
    stem = root / config.name
    md = stem.with_suffix(".md")
    failed = failures(config, root)
    md.write_text(f"# {config.name}\n\n{config.description}\n\n{markdown(table)}\n"
                  + ("\nRuns that failed (no report):\n\n" + "\n".join(failed) + "\n"
                     if failed else ""))
    write_csv(stem.with_suffix(".csv"), rows, RUN_COLUMNS)
    written = [md, stem.with_suffix(".csv")]
    if curves:
        targets = {r["target"] for r in rows}
        fig = curves_figure(curves, targets.pop() if len(targets) == 1 else None)
        path = Path(f"{stem}-curves.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    written += pareto_plots(table, f"{stem}-pareto")
    written.append(compute_plot(table, Path(f"{stem}-compute.png")))
    return written


def compute_plot(table: list[dict], path: Path) -> Path:
    """Test accuracy against the fine-tune steps of the search (mean and spread over seeds
    on both axes): what each arm's accuracy cost to find, the fine-tune bench's question.
    The base is not drawn: it costs no search."""
    fig = pareto_figure(table, "search_steps",
                        "fine-tune SGD steps of the search (before the final fine-tune)",
                        base_x=None)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
