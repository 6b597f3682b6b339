"""`prune-env sweep` on a local Ray instance (2 CPUs): runs in parallel, killed and resumed,
failures reported while the other runs go on."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from prune_env.cli.main import main

# one Ray instance at a time: `make test`'s workers run these in turn
pytestmark = pytest.mark.xdist_group("ray")


def sweep_args(small_args, root, targets=("0.8", "0.6")) -> list[str]:
    """Two methods x two targets x two networks, each from its default checkpoint."""
    i = small_args.index("--checkpoint")
    small = [a for j, a in enumerate(small_args) if j not in (i, i + 1)
             and a not in ("--target", "0.8")]
    return ["sweep", "l2pf", "l1", "--targets", *targets, "--models", "resnet20", "resnet32",
            "--episodes", "1", "--tries", "2", "--no-export", "--cost", "flops",
            "--ray-cpus", "2", "--runs-dir", str(root), *small]


def checkpoints(folder, checkpoint):
    """resnet20's base, and a resnet32 "base" that is not a checkpoint: its runs fail."""
    folder.mkdir()
    shutil.copy(checkpoint[0], folder / "resnet20-synthetic.pt")
    (folder / "resnet32-synthetic.pt").write_bytes(b"not a checkpoint")
    return str(folder)


def finished(root) -> dict[tuple[str, float], str]:
    """(method, target) -> run directory name, of the finished runs."""
    runs = {}
    for report in root.glob("*/report.json"):
        r = json.loads(report.read_text())
        assert (r["method"], r["target"]) not in runs, "an entry ran twice"
        runs[(r["method"], r["target"])] = report.parent.name
    return runs


def test_a_killed_sweep_resumes_and_runs_only_what_is_missing(small_args, checkpoint, tmp_path,
                                                             capsys, monkeypatch):
    """Two methods x two targets x two networks, two runs at a time; the second network's
    base is broken, so its four runs fail. kill -9 once a run has finished; the same command
    resumes: the finished runs are kept as they are, the others run (the failed ones again),
    and the comparison covers the four finished runs."""
    root = tmp_path / "sweep"
    args = sweep_args(small_args, root)
    monkeypatch.setenv("PRUNE_ENV_CHECKPOINTS", checkpoints(tmp_path / "bases", checkpoint))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    killed = subprocess.Popen([sys.executable, "-m", "prune_env.cli", *args], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)  # its Ray processes die with it
    deadline = time.time() + 300
    while time.time() < deadline and not list(root.glob("*/report.json")):
        assert killed.poll() is None, killed.stdout.read()
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    before = {name: (root / name / "report.json").stat().st_mtime_ns
              for name in finished(root).values()}
    assert before, "no run finished before the kill"
    capsys.readouterr()

    assert main(args) == 1  # resnet32's runs failed
    out, err = capsys.readouterr()
    assert f"{len(before)} finished before" in out
    runs = finished(root)
    assert sorted(runs) == [("l1", 0.6), ("l1", 0.8), ("l2pf", 0.6), ("l2pf", 0.8)]
    for name, mtime in before.items():  # kept, not run again
        assert (root / name / "report.json").stat().st_mtime_ns == mtime
    reports = {k: json.loads((root / v / "report.json").read_text()) for k, v in runs.items()}
    for method in ("l1", "l2pf"):  # a lower target gives a cheaper network
        assert (reports[(method, 0.6)]["episode_cost_ratio"]
                < reports[(method, 0.8)]["episode_cost_ratio"])

    ledger = [json.loads(line) for line in (root / "sweep.jsonl").read_text().splitlines()]
    failed = {o["entry"] for o in ledger if o["status"] == "failed"}
    assert failed == {f"resnet32__{m}__t{t}__s0" for m in ("l1", "l2pf") for t in (0.8, 0.6)}
    assert all("is not a base checkpoint" in o["error"] for o in ledger
               if o["status"] == "failed")
    assert "Traceback" in (root / "logs" / "resnet32__l1__t0.6__s0.log").read_text()
    assert "resnet32__l1__t0.6__s0" in err and "rerun the same command" in err
    assert all(o["node"] and o["hardware"] for o in ledger if o["status"] == "finished")

    assert len((root / "compare.csv").read_text().splitlines()) == 1 + 4
    summary = (root / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 4 and summary[0].startswith("model,method,target,seeds")
    assert (root / "pareto-latency.png").exists()

    # another plan is refused: the directory holds one sweep
    assert main(sweep_args(small_args, root, targets=("0.8",))) == 2
    assert "holds another sweep" in capsys.readouterr().err
