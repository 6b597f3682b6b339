"""Where a sweep stands: its run directories are the truth, its ledger adds the rest.

A finished run is a run directory with report.json whose args.json names the entry; a
training run with a checkpoint (progress.json) and no report resumes from it. The ledger,
``SWEEP_DIR/sweep.jsonl``, appends one line per run that ended (finished or failed): where it
ran (node address, host name, hardware), how long it took, and a failure's error. Appending a
line is all it writes, so a sweep killed at any moment leaves at most its last line torn,
which reading skips.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from prune_env.envs.records import from_dict
from prune_env.sweep.plan import Entry, Plan, entry_of, is_agent

LEDGER = "sweep.jsonl"


@dataclass
class Outcome:
    """How one run of the sweep ended.

    Attributes:
        entry: `Entry.name`.
        status: "finished" or "failed".
        run: its run directory's name in the sweep directory (finished runs).
        node: the Ray node's address where it ran; host: that machine's name.
        hardware: what measured its latency (`prune_env.measure.hardware.hardware_id`).
        seconds: wall time of the run on its node.
        error: why it failed (the exception's last line).
        log: its output, ``logs/ENTRY.log`` in the sweep directory.
    """

    entry: str
    status: str
    run: str | None = None
    node: str | None = None
    host: str | None = None
    hardware: str | None = None
    seconds: float = 0.0
    error: str | None = None
    log: str | None = None
    ended: str = dataclasses.field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))


def record(root: Path, outcome: Outcome) -> None:
    """Append ``outcome`` to the ledger (flushed to disk before returning)."""
    with open(root / LEDGER, "a") as f:
        f.write(json.dumps(dataclasses.asdict(outcome)) + "\n")
        f.flush()
        os.fsync(f.fileno())


def outcomes(root: Path) -> dict[str, Outcome]:
    """The last outcome of each entry in the ledger (a torn or foreign line is skipped)."""
    last: dict[str, Outcome] = {}
    path = root / LEDGER
    if not path.exists():
        return last
    for line in path.read_text().splitlines():
        try:
            outcome = from_dict(Outcome, json.loads(line))
        except (json.JSONDecodeError, ValueError, TypeError):
            continue
        last[outcome.entry] = outcome
    return last


class Stage(Enum):
    """Where an entry stands."""

    FINISHED = "finished"  # its run directory has report.json: kept
    RESUMABLE = "resumable"  # a training run with a checkpoint: continued from it
    TODO = "todo"  # missing, failed, or killed before a checkpoint: run (again)


@dataclass
class Standing:
    """An entry's stage, and its run directory where it has one."""

    stage: Stage
    run_dir: Path | None = None


def standings(plan: Plan) -> dict[Entry, Standing]:
    """Every entry's standing, read from the run directories in the sweep directory."""
    found: dict[Entry, list[Path]] = {}
    for run_dir in sorted(p for p in plan.root.iterdir() if p.is_dir()):
        entry = entry_of(run_dir)
        if entry is not None:
            found.setdefault(entry, []).append(run_dir)
    result = {}
    for entry in plan.entries:
        dirs = found.get(entry, [])
        finished = [d for d in dirs if (d / "report.json").exists()]
        resumable = [d for d in dirs if (d / "progress.json").exists() and is_agent(entry.method)]
        if finished:
            result[entry] = Standing(Stage.FINISHED, finished[-1])
        elif resumable:
            result[entry] = Standing(Stage.RESUMABLE, resumable[-1])
        else:
            result[entry] = Standing(Stage.TODO)
    return result


def leftovers(plan: Plan, standing: dict[Entry, Standing]) -> list[Path]:
    """Run directories of this plan's entries that neither finished nor can resume (a run
    killed before its first checkpoint): they are run again, elsewhere."""
    keep = {s.run_dir for s in standing.values() if s.run_dir is not None}
    return [d for d in plan.root.iterdir() if d.is_dir() and d not in keep
            and entry_of(d) in standing and not (d / "report.json").exists()]


def remove_leftovers(plan: Plan, standing: dict[Entry, Standing]) -> list[Path]:
    """Remove `leftovers` (nothing half made stays beside the finished runs)."""
    gone = leftovers(plan, standing)
    for d in gone:
        shutil.rmtree(d)
    return gone
