"""``prune-env sweep``: every run of a plan as a Ray task, resumed where the sweep stopped.

    plan.json -> standings (finished runs kept, checkpointed training runs resumed, the rest
    run) -> base checkpoints (pretrained once where missing) -> Ray tasks, each with its
    resources -> run directories in the sweep directory, outcomes in its ledger

Ray is the scheduler: a run reserves ``--run-cpus`` CPUs and ``--run-gpus`` GPUs, and Ray
starts it on a node with them free. Latency and energy are measured where the run runs,
with that machine's own latency table, keyed by its hardware.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prune_env.config import RayConfig
from prune_env.sweep.cluster import Cluster, connect, disconnect, resources
from prune_env.sweep.ledger import (
    Outcome,
    Stage,
    Standing,
    record,
    remove_leftovers,
    standings,
)
from prune_env.sweep.plan import PLAN, Entry, Plan
from prune_env.sweep.progress import SweepView
from prune_env.sweep.task import Job, Result, run_job
from prune_env.sweep.transfer import unpack


@dataclass
class SweepSummary:
    """What a sweep call did.

    Attributes:
        kept: runs finished before this call; ran: runs this call ended (finished or failed).
        seconds: this call's wall time.
    """

    root: Path
    kept: int = 0
    ran: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.ran if o.status == "failed"]


def check_plan(plan: Plan) -> bool:
    """Whether the sweep directory holds ``plan`` already (False: a new sweep).

    Raises:
        ValueError: the directory holds another plan, or other things than a sweep.
    """
    root = plan.root
    if (root / PLAN).exists():
        changed = plan.differences(Plan.load(root))
        if changed:
            raise ValueError(f"{root} holds another sweep ({'; '.join(changed[:5])}): rerun "
                             "its own command to resume it, or give a new --runs-dir")
        return True
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} exists and is not a sweep directory (no {PLAN}): give a new "
                         "or empty --runs-dir")
    return False


def run_sweep(plan: Plan, ray: RayConfig, *, shared_storage: bool = False) -> SweepSummary:
    """Run what is missing of ``plan``; returns the summary."""
    started = time.perf_counter()
    resuming = check_plan(plan)
    standing = (standings(plan) if resuming
                else {e: Standing(Stage.TODO) for e in plan.entries})
    todo = {e: s for e, s in standing.items() if s.stage is not Stage.FINISHED}
    summary = SweepSummary(plan.root, kept=len(standing) - len(todo))
    resumed = sum(s.stage is Stage.RESUMABLE for s in todo.values())
    print(f"sweep {plan.root}: {len(standing)} runs, {summary.kept} finished before, "
          f"{len(todo)} to run ({resumed} resumed from their checkpoints)", flush=True)
    if todo:
        device = plan.run_config(plan.entries[0]).env.device
        cluster = connect(ray, device)  # first: a bad --address leaves no sweep directory
        try:
            if not resuming:
                plan.save()
            for gone in remove_leftovers(plan, standing):
                print(f"removed {gone.name}: killed before its first checkpoint, run again")
            _announce(cluster)
            summary.ran = _run_all(plan, todo, cluster, ray, device, shared_storage)
        finally:
            disconnect(cluster)
    summary.seconds = time.perf_counter() - started
    return summary


def _announce(cluster: Cluster) -> None:
    where = f"Ray: {len(cluster.nodes)} node(s) ({', '.join(cluster.nodes)}), " \
            f"{cluster.slots} run(s) at once"
    print(where + (f"; dashboard {cluster.dashboard}" if cluster.dashboard else ""),
          flush=True)


def _run_all(plan: Plan, todo: dict, cluster: Cluster, config: RayConfig, device: str,
             shared_storage: bool) -> list[Outcome]:
    import ray

    need = resources(config, device)
    bases = {m: base_checkpoint(plan, m, cluster, need) for m in sorted({e.model for e in todo})}
    sent: dict[str, Any] = {m: ray.put(Path(p).read_bytes()) for m, p in bases.items()}
    task = ray.remote(run_job).options(**need, max_retries=0)
    pending = {task.remote(Job(plan, e, bases[e.model], cluster.node_id, shared_storage,
                               config.run_cpus, str(s.run_dir) if s.run_dir else None),
                           sent[e.model]): e for e, s in todo.items()}
    view = SweepView(len(pending), cluster.slots)
    ended = []
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                outcome = land(plan.root, _result(ref, pending.pop(ref)))
                ended.append(outcome)
                view.ended(outcome)
            view.running(len(pending))
    finally:
        view.close()
        for ref in pending:  # stopped early: no run outlives its sweep, even on a held instance
            ray.cancel(ref, force=True)
    return ended


def _result(ref, entry: Entry) -> Result:
    """The task's result, or a failed outcome where Ray lost the task (a worker killed, out
    of memory, a node gone)."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:
        return Result(Outcome(entry.name, "failed", error=f"{type(err).__name__}: "
                              f"{str(err).splitlines()[0][:500]}"), "")


def land(root: Path, result: Result) -> Outcome:
    """File a task's result in the sweep directory: its run directory (unpacked where it
    came through Ray), its log appended to ``logs/ENTRY.log``, its outcome in the ledger."""
    outcome = result.outcome
    if result.archive is not None:
        outcome.run = unpack(result.archive, root).name
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    log = logs / f"{outcome.entry}.log"
    with open(log, "a") as f:
        f.write(f"== {outcome.ended}, {outcome.host} ({outcome.node}): {outcome.status}\n"
                f"{result.log}\n")
    outcome.log = str(log.relative_to(root))
    record(root, outcome)
    return outcome


def base_checkpoint(plan: Plan, model: str, cluster: Cluster, need: dict[str, float]) -> str:
    """The base checkpoint of ``model`` on this machine, pretrained first (on this machine,
    through Ray, with a run's resources) where the default one is missing; its path."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from prune_env.training.pretrain import default_checkpoint

    run = plan.run_config(Entry(model, plan.methods[0], plan.targets[0], plan.seeds[0]))
    given = run.data.checkpoint
    path = Path(given or default_checkpoint(model, run.data.dataset)).resolve()
    if path.exists():
        return str(path)
    if given:
        raise FileNotFoundError(f"checkpoint {given} does not exist: check the path, or leave "
                                "--checkpoint out to pretrain the default one")
    print(f"no base checkpoint at {path}: pretraining {model} first", flush=True)
    here = NodeAffinitySchedulingStrategy(cluster.node_id, soft=False)
    task = ray.remote(pretrain_base).options(scheduling_strategy=here, max_retries=0, **need)
    ray.get(task.remote(run, str(path)))
    return str(path)


def pretrain_base(run, path: str) -> None:
    """Pretrain the base network of ``run`` into ``path`` (a Ray task)."""
    from prune_env.data.datasets import load_data
    from prune_env.training.pretrain import pretrain

    d = run.data
    data = load_data(d.dataset, data_dir=d.data_dir, download=d.download, seed=d.seed,
                     synthetic_size=d.synthetic_size, image_size=d.image_size)
    pretrain(d.model, data, run.pretraining, path, progress=False)
