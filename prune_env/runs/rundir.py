"""Run directories: ``runs/{model}-{dataset}__{method}__{seed}__{timestamp}``, never reused,
and never left half made."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prune_env.envs.records import from_dict


def new_run_dir(root: str | Path, model: str, dataset: str, method: str, seed: int) -> Path:
    """Create a fresh run directory; an existing one is never overwritten (a suffix is added)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{model}-{dataset}__{method}__{seed}__{stamp}"
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")


@contextmanager
def run_directory(root: str | Path, model: str, dataset: str, method: str, seed: int,
                  args: dict[str, Any]) -> Iterator[Path]:
    """A new run directory holding ``args.json``, removed again if the run fails (or is
    interrupted) before it wrote a checkpoint to resume from: a failed start leaves nothing
    for ``prune-env compare runs/*`` to trip over."""
    path = new_run_dir(root, model, dataset, method, seed)
    try:
        (path / "args.json").write_text(json.dumps(args, indent=2))
        yield path
    except BaseException:
        if not (path / "progress.json").exists():
            shutil.rmtree(path, ignore_errors=True)
        raise


@dataclass
class Progress:
    """A training run's last checkpoint: episodes done and search seconds (``progress.json``,
    whose presence also marks the run as resumable)."""

    episodes: int = 0
    seconds: float = 0.0

    @classmethod
    def read(cls, run_dir: Path) -> Progress:
        """The run's progress; zero for a new run."""
        path = run_dir / "progress.json"
        if not path.exists():
            return cls()
        try:
            return from_dict(cls, json.loads(path.read_text()))
        except (json.JSONDecodeError, ValueError) as err:
            raise ValueError(f"{path} is not a run's progress ({err})") from err

    def write(self, run_dir: Path) -> None:
        """Atomically: a kill during the write keeps the previous progress."""
        tmp = run_dir / f"progress.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(dataclasses.asdict(self)))
        tmp.replace(run_dir / "progress.json")
