"""A real two-node Ray cluster on this machine: a head and a worker, each in its own network
namespace (two hosts joined by a veth pair, made here with `ip netns`), and a sweep submitted
to the head whose runs land on both nodes and come back whole. Where namespaces cannot be made
(not root, no `ip`, no permission) the test is skipped with the reason."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from prune_env.runs.finalize import load_report

HEAD, WORKER = "10.231.7.1", "10.231.7.2"
PORT = "6391"
RAY = str(Path(sys.executable).with_name("ray"))

# one Ray instance at a time: `make test`'s workers run these in turn
pytestmark = pytest.mark.xdist_group("ray")


def sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True)


@contextlib.contextmanager
def two_hosts():
    """Namespaces (head, worker) joined by a veth pair; removed afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("two hosts need root and iproute2's `ip` (network namespaces)")
    tag = f"pe{os.getpid() % 100000}"
    head, worker = f"{tag}h", f"{tag}w"
    steps = [("ip", "netns", "add", head), ("ip", "netns", "add", worker),
             ("ip", "link", "add", f"{tag}a", "type", "veth", "peer", "name", f"{tag}b"),
             ("ip", "link", "set", f"{tag}a", "netns", head),
             ("ip", "link", "set", f"{tag}b", "netns", worker),
             ("ip", "-n", head, "addr", "add", f"{HEAD}/24", "dev", f"{tag}a"),
             ("ip", "-n", worker, "addr", "add", f"{WORKER}/24", "dev", f"{tag}b"),
             ("ip", "-n", head, "link", "set", f"{tag}a", "up"),
             ("ip", "-n", worker, "link", "set", f"{tag}b", "up"),
             ("ip", "-n", head, "link", "set", "lo", "up"),
             ("ip", "-n", worker, "link", "set", "lo", "up")]
    try:
        for step in steps:
            done = sh(*step)
            if done.returncode:
                pytest.skip(f"cannot make network namespaces here: `{' '.join(step)}`: "
                            f"{done.stderr.strip()}")
        yield head, worker
    finally:
        sh("ip", "netns", "del", head)
        sh("ip", "netns", "del", worker)


def in_ns(ns: str, *args: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, RAY_AUTH_MODE="token", PYTHONUNBUFFERED="1")
    return subprocess.Popen(["ip", "netns", "exec", ns, *args], env=env,
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def wait_for_nodes(ns: str, n: int) -> None:
    probe = in_ns(ns, sys.executable, "-c", (
        "import ray, time\n"
        f"ray.init(address='{HEAD}:{PORT}', logging_level='ERROR')\n"
        f"deadline = time.time() + 120\n"
        f"while sum(x['Alive'] for x in ray.nodes()) < {n} and time.time() < deadline:\n"
        "    time.sleep(0.5)\n"
        f"assert sum(x['Alive'] for x in ray.nodes()) >= {n}, ray.nodes()\n"))
    out, _ = probe.communicate(timeout=180)
    assert probe.returncode == 0, out


def test_a_sweep_on_two_hosts_runs_on_both_and_brings_the_runs_back(small_args, tmp_path):
    root = tmp_path / "sweep"
    small = [a for a in small_args if a not in ("--target", "0.8")]
    with two_hosts() as (head_ns, worker_ns), \
            tempfile.TemporaryDirectory(prefix="pe-ray-", dir="/tmp") as temp:
        common = ["--num-cpus", "1", "--disable-usage-stats", "--block"]
        head = in_ns(head_ns, RAY, "start", "--head", "--node-ip-address", HEAD, "--port",
                     PORT, "--include-dashboard", "false", "--temp-dir", f"{temp}/h", *common)
        worker = None
        try:
            wait_for_nodes(head_ns, 1)
            worker = in_ns(worker_ns, RAY, "start", "--address", f"{HEAD}:{PORT}",
                           "--node-ip-address", WORKER, *common)
            wait_for_nodes(head_ns, 2)
            sweep = in_ns(head_ns, sys.executable, "-m", "prune_env.cli", "sweep", "l1",
                          "--targets", "0.8", "0.6", "--cost", "flops",
                          "--no-export", "--address", f"{HEAD}:{PORT}", "--runs-dir",
                          str(root), *small)
            out, _ = sweep.communicate(timeout=600)
            assert sweep.returncode == 0, out
        finally:
            for process in (worker, head):
                if process is not None:
                    stop(process)
    ledger = [json.loads(line) for line in (root / "sweep.jsonl").read_text().splitlines()]
    assert len(ledger) == 2 and all(o["status"] == "finished" for o in ledger)
    assert {o["node"] for o in ledger} == {HEAD, WORKER}, out
    for outcome in ledger:  # every run whole in the sweep directory, wherever it ran
        run = root / outcome["run"]
        assert {"args.json", "report.json", "compact.pt"} <= {p.name for p in run.iterdir()}
        assert list(run.glob("events.out.tfevents.*"))
        report = load_report(run)
        assert report.hardware == outcome["hardware"] and report.target in (0.8, 0.6)
    summary = (root / "summary.csv").read_text()
    assert HEAD in summary and WORKER in summary
    assert "2 node(s)" in out
