"""A sweep's plan: every (network, method, target, seed) to run, with the settings they share.

The plan is written to ``SWEEP_DIR/plan.json`` when the sweep starts; the same command run
again finds the same plan there and resumes the sweep, and a different command is refused
(a sweep directory holds one experiment).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prune_env.catalog import AGENTS
from prune_env.config import L2PF_OPTIONS, SB3_OPTIONS, AgentConfig, BaselineConfig, RunConfig

PLAN = "plan.json"
VERSION = 1


@dataclass(frozen=True, order=True)
class Entry:
    """One run of the sweep."""

    model: str
    method: str
    target: float
    seed: int

    @property
    def name(self) -> str:
        """How logs and the progress view name the run."""
        return f"{self.model}__{self.method}__t{self.target:g}__s{self.seed}"


@dataclass
class Plan:
    """The grid (methods x targets x seeds x models) and the configs every run shares.

    Attributes:
        run, agent, baseline: the configs as `prune_env.checks.Options.to_dict` gives them;
            each entry replaces the network, seed and target of ``run`` with its own.
    """

    methods: list[str]
    targets: list[float]
    seeds: list[int]
    models: list[str]
    run: dict[str, Any]
    agent: dict[str, Any]
    baseline: dict[str, Any]
    version: int = VERSION
    entries: list[Entry] = field(init=False)

    def __post_init__(self) -> None:
        self.entries = [Entry(m, method, t, s) for t in self.targets for s in self.seeds
                        for m in self.models for method in self.methods]

    @classmethod
    def make(cls, methods: list[str], targets: list[float], seeds: list[int],
             models: list[str], run: RunConfig, agent: AgentConfig,
             baseline: BaselineConfig) -> Plan:
        """The plan of a command line; the sweep directory (``run.runs_dir``) made absolute,
        so the same command from another folder is the same plan."""
        if len(models) > 1 and run.data.checkpoint:
            raise ValueError("--checkpoint names one network's base: with several --models "
                             "each uses its default checkpoint (set $PRUNE_ENV_CHECKPOINTS)")
        check_agent_options(methods, agent)
        run = dataclasses.replace(run, runs_dir=str(Path(run.runs_dir).resolve()))
        return cls(sorted(set(methods), key=methods.index), list(dict.fromkeys(targets)),
                   list(dict.fromkeys(seeds)), list(dict.fromkeys(models)), run.to_dict(),
                   agent.to_dict(), baseline.to_dict())

    @property
    def root(self) -> Path:
        """The sweep directory."""
        return Path(self.run["runs_dir"])

    def run_config(self, entry: Entry) -> RunConfig:
        """The run config of ``entry``."""
        run = RunConfig.from_dict(self.run, str(self.root / PLAN))
        return dataclasses.replace(
            run, data=dataclasses.replace(run.data, model=entry.model, seed=entry.seed),
            env=dataclasses.replace(run.env, target=entry.target))

    def agent_config(self, entry: Entry) -> AgentConfig:
        """The agent config of ``entry``: L2PF gets the L2PF options, an sb3 agent the sb3
        ones (`AgentConfig.for_agent`)."""
        return AgentConfig.from_dict(self.agent, str(self.root / PLAN)).for_agent(entry.method)

    def baseline_config(self) -> BaselineConfig:
        return BaselineConfig.from_dict(self.baseline, str(self.root / PLAN))

    def to_dict(self) -> dict[str, Any]:
        own = dataclasses.asdict(self)
        own.pop("entries")
        return own

    def save(self) -> None:
        """Write plan.json (atomically) into the sweep directory, creating it."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{PLAN}.tmp"
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        tmp.replace(self.root / PLAN)

    @classmethod
    def load(cls, root: str | Path) -> Plan:
        """The plan saved in sweep directory ``root``."""
        path = Path(root) / PLAN
        try:
            data = json.loads(path.read_text())
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')}, this prune-env reads "
                                 f"{VERSION}")
            return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.init})
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{path} is not a sweep plan ({err!r})") from err

    def differences(self, other: Plan) -> list[str]:
        """What differs from ``other`` (the saved plan), one line per setting. An option the
        saved plan lacks (added to prune-env since) counts at its default, so that a new
        option does not make every older sweep directory unresumable."""
        try:
            saved = other.with_defaults()
        except ValueError as err:
            return [str(err)]
        return setting_differences(self.to_dict(), saved.to_dict())

    def with_defaults(self) -> Plan:
        """This plan with the options it does not name at their defaults."""
        where = str(self.root / PLAN)
        return dataclasses.replace(
            self, run=RunConfig.from_dict(self.run, where).to_dict(),
            agent=AgentConfig.from_dict(self.agent, where).to_dict(),
            baseline=BaselineConfig.from_dict(self.baseline, where).to_dict())


def check_agent_options(methods: list[str], agent: AgentConfig) -> None:
    """An agent option that none of the sweep's methods takes is an error, as it is for one
    run (each run gets only its own kind's options, `Plan.agent_config`)."""
    for options, kind, takes in (
            (L2PF_OPTIONS, "L2PF's", lambda m: m == "l2pf"),
            (SB3_OPTIONS, "the stable-baselines3 agents'", lambda m: is_agent(m) and m != "l2pf")):
        told = agent.told(options)
        if told and not any(map(takes, methods)):
            raise ValueError(f"--{', --'.join(n.replace('_', '-') for n in told)}: "
                             f"{kind}, and this sweep runs none ({' '.join(methods)}): leave "
                             "them out")


def setting_differences(now: Any, saved: Any, saved_in: str = "the sweep") -> list[str]:
    """What differs between settings ``now`` and those ``saved`` in a directory (nested
    dicts, as JSON holds them), one line per setting: ``key.sub: SAVED in SAVED_IN, NOW now``."""
    return _differences(now, saved, "", saved_in)


def _differences(a: Any, b: Any, where: str, saved_in: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [line for key in sorted(set(a) | set(b), key=str)
                for line in _differences(a.get(key), b.get(key), f"{where}.{key}".lstrip("."),
                                         saved_in)]
    return [] if a == b else [f"{where}: {b!r} in {saved_in}, {a!r} now"]


def entry_of(run_dir: Path) -> Entry | None:
    """The entry a run directory ran, from its args.json (None if it is not a run's)."""
    try:
        args = json.loads((run_dir / "args.json").read_text())
        method = (args["agent"]["agent"] if args["command"] == "train" else args["name"])
        data, env = args["run"]["data"], args["run"]["env"]
        return Entry(data["model"], method, float(env["target"]), int(data["seed"]))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def is_agent(method: str) -> bool:
    """Whether ``method`` is trained (`prune-env train`) rather than a baseline."""
    return method in AGENTS
