"""Try-and-learn's tries in parallel: worker processes, each with its own environment.

Every try starts from the same snapshot (network and random generators), so a try gives the
same result in a worker as in the main process; the pool only spreads them over cores.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import cloudpickle
import gymnasium as gym
import torch

if TYPE_CHECKING:
    from prune_env.envs.prune import PruneEnv

Result = tuple[Any, float, bool, dict[str, Any], dict[str, Any]]

_ENV: gym.Env | None = None  # the worker's environment


def _start_worker(env_fn_bytes: bytes, threads: int) -> None:
    global _ENV
    torch.set_num_threads(threads)
    _ENV = cloudpickle.loads(env_fn_bytes)()
    _ENV.reset(seed=0)  # sets up the episode order; each try restores its own state


def _run_try(job: tuple[dict[str, Any], dict[str, Any]]) -> Result:
    snapshot, action = job
    if _ENV is None:
        raise RuntimeError("_run_try runs only in a TryPool worker (after _start_worker)")
    env = cast("PruneEnv", _ENV.unwrapped)
    env.restore(snapshot)
    obs, reward, done, _, info = _ENV.step(action)
    return obs, cast(float, reward), done, info, env.snapshot()


def run_try(env: gym.Env, snapshot: dict[str, Any] | None, action: dict[str, Any]) -> Result:
    """One try in this process (from ``snapshot``, or from where the env stands if None)."""
    unwrapped = cast("PruneEnv", env.unwrapped)
    if snapshot is not None:
        unwrapped.restore(snapshot)
    obs, reward, done, _, info = env.step(action)
    return obs, cast(float, reward), done, info, unwrapped.snapshot()


class TryPool:
    """``n`` worker processes, spawned: a forked child of a process that has run OpenMP work
    hangs as soon as it uses more than one thread itself (latency timing does).

    Args:
        env_fn: builds one environment; called once in each worker.
        n: number of workers.
    """

    def __init__(self, env_fn: Callable[[], gym.Env], n: int):
        threads = max(1, (os.cpu_count() or 1) // n)  # no oversubscription of the cores
        context = multiprocessing.get_context("spawn")
        self.pool = context.Pool(n, initializer=_start_worker,
                                 initargs=(cloudpickle.dumps(env_fn), threads))

    def run(self, snapshot: dict[str, Any], actions: list[dict[str, Any]]) -> list[Result]:
        """Every action tried from ``snapshot``, in parallel, in order."""
        return self.pool.map(_run_try, [(snapshot, a) for a in actions], chunksize=1)

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()
