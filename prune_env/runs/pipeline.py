"""The one way every run goes: agents, baselines, gating and the ``episode`` command alike.

    checked options -> environment -> method.prepare -> run directory -> method.search
    (episodes, logged to TensorBoard) -> best candidate -> method.finalize -> report.json

report.json is written once, atomically, at the very end; a run that fails before its first
checkpoint leaves no directory (`prune_env.runs.rundir.run_directory`). A method is a small
object (`Method`): agents live in ``agents/``, baselines in ``baselines/``, and reach the
pipeline through `prune_env.catalog.RUNNERS`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
from torch.utils.tensorboard import SummaryWriter

from prune_env.catalog import task_of
from prune_env.config import RunConfig
from prune_env.data.datasets import load_data
from prune_env.envs.records import CandidateSummary, Report, Search
from prune_env.nn.models import check_task
from prune_env.runs.finalize import Candidate, finalize, measured_ratio, write_report
from prune_env.runs.options import env_options
from prune_env.runs.rundir import Progress, run_directory
from prune_env.runs.tensorboard import EpisodeLogger


@dataclass
class SearchResult:
    """What a method's search proposes.

    Attributes:
        candidates: the networks to choose from (target met first, then accuracy).
        episodes: episodes the search ran.
        details: the method's own report fields (`Report.details`).
        list_candidates: list every candidate in the report with its measured cost ratio
            (agents, whose candidates differ; one timing each).
    """

    candidates: list[Candidate]
    episodes: int
    details: dict[str, Any] = field(default_factory=dict)
    list_candidates: bool = False


@dataclass
class RunContext:
    """What a search sees of its run: where it writes, how it logs, where it stands."""

    run_dir: Path
    logger: EpisodeLogger
    progress: Progress
    started: float  # perf_counter at the search's start, earlier runs' seconds subtracted
    make_env: Callable[[], gym.Env]  # another environment like the run's (for workers)

    def checkpointed(self, episodes: int) -> None:
        """Record that a checkpoint of ``episodes`` episodes was written (for --resume)."""
        Progress(episodes, time.perf_counter() - self.started).write(self.run_dir)


class Method:
    """A way to prune, as the pipeline runs it; subclasses override `search` and, where
    they need to, the others.

    Attributes:
        name: the method's name in the run directory and the report.
        env_id: the environment it runs in.
        env_kwargs: arguments of that environment beyond the command line's.
    """

    name: str = "method"
    env_id: str = "prune_env/Prune-v0"
    env_kwargs: dict[str, Any] = {}

    def prepare(self, env: gym.Env) -> dict[str, Any]:
        """Choices and checks made before the run directory exists (an unreachable target is
        an error here); returns what args.json records beside the options."""
        return {}

    def search(self, env: gym.Env, run: RunContext) -> SearchResult:
        raise NotImplementedError

    def finalize(self, env: gym.Env, candidate: Candidate, run_dir: Path, *, steps: int,
                 seed: int, formats: tuple[str, ...]) -> Report:
        """The final stage: `prune_env.runs.finalize.finalize` unless the method has its own."""
        return finalize(env, candidate, run_dir, steps=steps, seed=seed, formats=formats)


def run(config: RunConfig, method: Method, *, recorded: dict[str, Any],
        resume: Path | None = None, image_every: int = 1) -> tuple[Report, Path]:
    """Run ``method`` with ``config``; returns (report, run directory).

    Args:
        recorded: what args.json holds beside the run's config (the command, the method's
            config), so that the run can be read back (`--resume`).
        resume: an unfinished training run to continue (its checkpoints are the method's).
        image_every: draw the kept-filters chart every this many episodes.
    """
    d = config.data
    check_task(d.model, task_of(d.dataset))  # before the data are read, decoded or made
    data = load_data(d.dataset, data_dir=d.data_dir, download=d.download, seed=d.seed,
                     synthetic_size=d.synthetic_size, image_size=d.image_size)
    started = time.perf_counter()
    options = env_options(config, data) | method.env_kwargs
    env_id = method.env_id  # the closure is pickled for workers: it must not hold the method

    def make_env() -> gym.Env:
        return gym.make(env_id, final_report=False, **options)

    env = make_env()
    recorded = recorded | {"run": config.to_dict(), "choices": method.prepare(env)}
    with _directory(config, method, recorded, resume) as run_dir:
        progress = Progress.read(run_dir)
        # closed before a failed run's directory is removed: its thread must not write
        # into a folder that is gone
        with SummaryWriter(str(run_dir), purge_step=progress.episodes) as writer:
            logger = EpisodeLogger(writer, env.unwrapped, image_every)
            context = RunContext(run_dir, logger, progress, started - progress.seconds, make_env)
            result = method.search(env, context)
            seconds = time.perf_counter() - context.started
            best = max(result.candidates, key=Candidate.key)
            report = method.finalize(env, best, run_dir, steps=config.final_steps, seed=d.seed,
                                     formats=config.export_formats)
            report.method, report.episodes = method.name, result.episodes
            report.details = report.details | result.details  # the final stage may add some
            report.search = Search(seconds, [
                CandidateSummary(c.source, c.accuracy, c.cost_ratio, measured_ratio(env, c))
                for c in result.candidates] if result.list_candidates else [])
            write_report(run_dir, report)
            logger.final(report, recorded)
    return report, run_dir


@contextlib.contextmanager
def _directory(config: RunConfig, method: Method, recorded: dict[str, Any],
               resume: Path | None) -> Iterator[Path]:
    if resume is not None:
        print(f"resuming {resume} at episode {Progress.read(resume).episodes}", flush=True)
        yield resume
        return
    # made only once the environment stands: a bad option leaves no run behind
    with run_directory(config.runs_dir, config.data.model, config.data.dataset, method.name,
                       config.data.seed, recorded) as run_dir:
        yield run_dir
