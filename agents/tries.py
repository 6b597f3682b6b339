"""Try-and-learn's tries in parallel: workers, each with its own environment, as processes
on this machine (`TryPool`) or as Ray actors anywhere in a Ray cluster (`RayTryPool`,
``--tries-on ray``), so that one agent's search can use several machines' GPUs.

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
    from prune_env.config import RayConfig
    from prune_env.envs.prune import PruneEnv

Result = tuple[Any, float, bool, dict[str, Any], dict[str, Any]]

class TryWorker:
    """A worker's environment, built once; runs tries from snapshots."""

    def __init__(self, env_fn_bytes: bytes, threads: int):
        torch.set_num_threads(threads)
        self.env = cloudpickle.loads(env_fn_bytes)()
        self.env.reset(seed=0)  # sets up the episode order; each try restores its own state

    def run(self, snapshot: dict[str, Any], action: dict[str, Any]) -> Result:
        return run_try(self.env, snapshot, action)


_WORKER: TryWorker | None = None  # a TryPool process's worker


def _start_worker(env_fn_bytes: bytes, threads: int) -> None:
    global _WORKER
    _WORKER = TryWorker(env_fn_bytes, threads)


def _run_try(job: tuple[dict[str, Any], dict[str, Any]]) -> Result:
    if _WORKER is None:
        raise RuntimeError("_run_try runs only in a TryPool worker (after _start_worker)")
    return _WORKER.run(*job)


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


class RayTryPool:
    """``n`` Ray actors, each reserving a run's resources (``--run-cpus``, ``--run-gpus``)
    wherever the cluster has them; the same tries as `TryPool`, in order.

    Args:
        env_fn: builds one environment; called once in each actor.
        n: number of actors.
        ray_config: the cluster to join (this process's own, inside a sweep's run).
        device: the environment's device (a CUDA device reserves a GPU per actor by default).
    """

    def __init__(self, env_fn: Callable[[], gym.Env], n: int, ray_config: RayConfig,
                 device: str = "cpu"):
        import ray

        from prune_env.sweep.cluster import connect, resources

        self.cluster = connect(ray_config, device)
        actor: Any = ray.remote(TryWorker).options(**resources(ray_config, device))
        self.actors: list[Any] = [actor.remote(cloudpickle.dumps(env_fn),
                                               ray_config.run_cpus) for _ in range(n)]

    def run(self, snapshot: dict[str, Any], actions: list[dict[str, Any]]) -> list[Result]:
        """Every action tried from ``snapshot`` (sent once to the object store), in order."""
        import ray

        shared = ray.put(snapshot)
        return ray.get([self.actors[i % len(self.actors)].run.remote(shared, a)
                        for i, a in enumerate(actions)])

    def close(self) -> None:
        import ray

        from prune_env.sweep.cluster import disconnect

        for actor in self.actors:
            ray.kill(actor)
        disconnect(self.cluster)


def make_pool(env_fn: Callable[[], gym.Env], n: int, on: str = "processes",
              ray_config: RayConfig | None = None, device: str = "cpu"
              ) -> TryPool | RayTryPool:
    """The pool of ``n`` workers ``on`` processes or Ray actors."""
    if on == "ray":
        from prune_env.config import RayConfig

        return RayTryPool(env_fn, n, ray_config or RayConfig(), device)
    return TryPool(env_fn, n)
