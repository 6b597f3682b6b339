"""The Ray cluster a sweep (or an agent's tries) runs on: a new local instance by default,
nothing to set up; a running cluster with ``--address`` (``ray start --head`` on one machine,
``ray start --address HEAD:PORT`` on each other one)."""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prune_env.config import RayConfig


@dataclass
class Cluster:
    """What the sweep needs to know of the cluster it joined.

    Attributes:
        node_id: this (the driver's) Ray node.
        started: whether this process started the instance (and so shuts it down).
        slots: runs the cluster holds at once with each run's resources.
        nodes: the alive nodes' addresses.
        dashboard: the dashboard's URL, where Ray's dashboard is installed.
    """

    node_id: str
    started: bool
    slots: int
    nodes: list[str]
    dashboard: str | None


def resources(config: RayConfig, device: str) -> dict[str, float]:
    """A run's Ray resources: its CPUs, and its GPUs (1 on a CUDA device unless given)."""
    gpus = config.run_gpus or (1.0 if device.startswith("cuda") else 0.0)
    return {"num_cpus": config.run_cpus, "num_gpus": gpus}


def connect(config: RayConfig, device: str = "cpu") -> Cluster:
    """Join the cluster of ``config`` (or the one this process is already in: a sweep's run
    starting an agent's tries)."""
    import ray

    started = not ray.is_initialized()
    if started:
        # runs' output goes to their logs in the sweep directory, not to this terminal
        if config.address:
            reachable(config.address)
            context = ray.init(address=config.address, log_to_driver=False,
                               logging_level=logging.WARNING)
        else:
            context = ray.init(address="local", num_cpus=config.ray_cpus or os.cpu_count(),
                               include_dashboard=None, log_to_driver=False,
                               logging_level=logging.WARNING)
        dashboard = getattr(context, "dashboard_url", None) or None
    else:
        dashboard = None
    need = resources(config, device)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    slots = sum(_fits(n.get("Resources", {}), need) for n in nodes)
    if slots == 0:
        held = ", ".join(f"{n['NodeManagerAddress']}: {n.get('Resources', {}).get('CPU', 0):g} "
                         f"CPUs, {n.get('Resources', {}).get('GPU', 0):g} GPUs" for n in nodes)
        raise ValueError(f"no Ray node can hold a run of {need['num_cpus']:g} CPUs and "
                         f"{need['num_gpus']:g} GPUs ({held}): lower --run-cpus/--run-gpus or "
                         "add nodes")
    return Cluster(ray.get_runtime_context().get_node_id(), started, slots,
                   [n["NodeManagerAddress"] for n in nodes],
                   f"http://{dashboard}" if dashboard and "://" not in dashboard else dashboard)


def reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse at once a HOST:PORT head that does not answer (Ray would wait a minute).

    Raises:
        ValueError: saying how to start the head.
    """
    host, _, port = address.rpartition(":")
    if "://" in address or not port.isdigit():
        return  # "auto", "ray://...": Ray's own forms, checked by Ray
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ValueError(f"no Ray head answers at {address} ({err}): start one there with "
                         f"`ray start --head --port {port}`, or leave --address out for a "
                         "local Ray instance") from None


def _fits(held: dict[str, float], need: dict[str, float]) -> int:
    """How many runs needing ``need`` a node holding ``held`` takes at once."""
    counts = [int(held.get("CPU", 0) // need["num_cpus"])]
    if need["num_gpus"]:
        counts.append(int(held.get("GPU", 0) // need["num_gpus"]))
    return min(counts)


#: Inside `held()`: a sweep leaves the instance it started running for the next one.
_HELD = False


@contextmanager
def held() -> Iterator[None]:
    """Keep the Ray instance the first sweep starts until the block ends: a bench's arms are
    sweeps one after another, with the same Ray options; one start (several seconds) serves
    them all. An instance that was up before the block (a notebook's) is left up."""
    global _HELD
    ray = sys.modules.get("ray")  # no sweep runs: nothing to shut down, nothing to import
    was_up = ray is not None and ray.is_initialized()
    _HELD = True
    try:
        yield
    finally:
        _HELD = False
        ray = sys.modules.get("ray")
        if not was_up and ray is not None and ray.is_initialized():
            ray.shutdown()


def disconnect(cluster: Cluster) -> None:
    """Shut the local instance down if this process started it (unless `held()`)."""
    import ray

    if cluster.started and not _HELD:
        ray.shutdown()
