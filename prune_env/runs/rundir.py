"""Run directories: ``runs/{model}-{dataset}__{method}__{seed}__{timestamp}``, never reused."""

from __future__ import annotations

import time
from pathlib import Path


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
