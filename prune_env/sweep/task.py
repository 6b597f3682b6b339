"""One run of a sweep, as a Ray task: it runs wherever Ray places it and reports back.

On the sweep's own machine (or with ``--shared-storage``) the run writes its directory
straight into the sweep directory; a training run killed there resumes from its checkpoint.
On another machine it runs in a scratch folder with the base checkpoint the sweep sent, and
returns its run directory packed (`prune_env.sweep.transfer`): Ray carries it back, and a run
killed there starts again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from prune_env.catalog import runner
from prune_env.sweep.ledger import Outcome
from prune_env.sweep.plan import Entry, Plan, is_agent
from prune_env.sweep.transfer import pack

#: At most this much of a run's output is kept in its log (the end, where errors are).
LOG_CHARS = 1_000_000


@dataclass
class Job:
    """What a task needs: the plan, its entry, where the sweep runs from.

    Attributes:
        checkpoint: the base checkpoint's path on the sweep's machine.
        driver_node: the Ray node id of the sweep's machine.
        resume: a training run's directory to continue (in place only).
    """

    plan: Plan
    entry: Entry
    checkpoint: str
    driver_node: str
    shared_storage: bool
    threads: int
    resume: str | None = None


@dataclass
class Result:
    """A task's answer: the outcome, the run's output, and its packed run directory when
    it ran away from the sweep directory."""

    outcome: Outcome
    log: str
    archive: bytes | None = None


def run_job(job: Job, checkpoint_bytes: bytes | None) -> Result:
    """Run ``job`` here; never raises for the run's own failure (it is the outcome)."""
    import ray
    import torch

    torch.set_num_threads(job.threads)
    in_place = job.shared_storage or ray.get_runtime_context().get_node_id() == job.driver_node
    started = time.perf_counter()
    outcome = Outcome(job.entry.name, "failed", node=ray.util.get_node_ip_address(),
                      host=socket.gethostname())
    output = io.StringIO()
    with contextlib.ExitStack() as stack:
        scratch = None if in_place else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="prune-env-run-")))
        try:
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                report, run_dir = _run(job, scratch, checkpoint_bytes)
            outcome.status, outcome.run, outcome.hardware = "finished", run_dir.name, \
                report.hardware
            archive = pack(run_dir) if scratch else None
        except Exception as err:  # the run's failure is reported, the sweep goes on
            output.write(traceback.format_exc())
            outcome.error = f"{type(err).__name__}: {err}".splitlines()[0][:500]
            archive = None
    outcome.seconds = time.perf_counter() - started
    return Result(outcome, output.getvalue()[-LOG_CHARS:], archive)


def _run(job: Job, scratch: Path | None, checkpoint_bytes: bytes | None):
    entry, plan = job.entry, job.plan
    run = plan.run_config(entry)
    checkpoint = job.checkpoint
    if scratch is not None:  # another machine: its own copy of the base, its own folder
        if checkpoint_bytes is None:
            raise RuntimeError("a run away from the sweep's machine needs the checkpoint")
        checkpoint = str(scratch / Path(job.checkpoint).name)
        Path(checkpoint).write_bytes(checkpoint_bytes)
    run = dataclasses.replace(run, runs_dir=str(scratch / "runs") if scratch else run.runs_dir,
                              data=dataclasses.replace(run.data, checkpoint=checkpoint))
    if is_agent(entry.method):
        if job.resume and scratch is None:
            return runner("train")(run, plan.agent_config(entry), resume=job.resume)
        return runner("train")(run, plan.agent_config(entry))
    return runner("baseline")(entry.method, run, plan.baseline_config())
