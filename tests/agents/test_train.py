"""`prune-env train`, `baseline`, `export` and `compare` end to end on the synthetic data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from prune_env.cli.main import main


def only_run(runs: Path) -> Path:
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return run


def scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run)).Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_train_l2pf_writes_report_exports_and_tensorboard(small_args, tmp_path, capsys):
    runs = tmp_path / "runs"
    # on FLOPs the pruned network, and so its accuracy, is seed-determined; on latency it
    # follows the shared table's timings (measured 0.26-0.4 test accuracy at this budget)
    assert main(["train", "--agent", "l2pf", "--episodes", "2", "--tries", "2",
                 "--runs-dir", str(runs), *small_args, "--cost", "flops",
                 "--torchscript"]) == 0
    run = only_run(runs)
    assert run.name.startswith("resnet20-synthetic__l2pf__0__")
    report = json.loads((run / "report.json").read_text())
    assert report["method"] == "l2pf" and report["final_finetune"]["steps"] == 5
    assert {c["source"] for c in report["search"]["candidates"]} >= {"deterministic policy"}
    assert 0.3 < report["pruned"]["test_accuracy"] <= 1  # 10 classes: chance is 0.1
    assert report["exports"]["onnx"]["max_abs_diff"] < 1e-3
    assert (run / "model.onnx").exists() and (run / "model.ts").exists()
    # the deployed files timed in onnxruntime, interleaved with the exported base
    (deployed,) = report["deployed"]
    assert deployed["provider"] == "CPUExecutionProvider" and (run / "base.onnx").exists()
    low, high = deployed["ratio_ci"]
    assert low <= deployed["ratio"] <= high and deployed["pruned_ms"] > 0
    assert [s for s, _ in scalars(run, "charts/episodic_return")] == [0, 1]
    assert len(scalars(run, "losses/policy_loss")) == 2
    assert "speed-up" in capsys.readouterr().out

    # its policy, as it is (0 episodes), on the same base: the same deterministic network
    reused = tmp_path / "reused"
    assert main(["train", "--agent", "l2pf", "--episodes", "0", "--init-policy", str(run),
                 "--runs-dir", str(reused), *small_args, "--cost", "flops", "--no-export"]) == 0
    again = json.loads((only_run(reused) / "report.json").read_text())
    assert again["details"]["init_policy_checkpoint"] == str(run / "checkpoint.pt")
    policy = {c["source"]: c for c in report["search"]["candidates"]}["deterministic policy"]
    assert [c["cost_ratio"] for c in again["search"]["candidates"]] == [policy["cost_ratio"]]
    # a source that is not an L2PF run, or an agent that cannot take it: exit 2, no run
    assert main(["train", "--init-policy", str(tmp_path), "--runs-dir", str(tmp_path / "no"),
                 *small_args]) == 2
    assert main(["train", "--agent", "ppo", "--init-policy", str(run), "--runs-dir",
                 str(tmp_path / "no"), *small_args]) == 2
    assert "--init-policy" in capsys.readouterr().err
    assert main(["train", "--fixed-finetune", "0.3", "--finetune-budget", "0.3", "--runs-dir",
                 str(tmp_path / "no"), *small_args]) == 2
    assert "give one or the other" in capsys.readouterr().err
    assert main(["train", "--finetune-budget", "0.3", "--budget-adapt", "0", "--runs-dir",
                 str(tmp_path / "no"), *small_args]) == 2
    assert "--budget-adapt" in capsys.readouterr().err
    for sb3_option in (["--sb3-action", "amc"], ["--sb3", "gamma=0.9"]):
        assert main(["train", *sb3_option, "--runs-dir", str(tmp_path / "no"),
                     *small_args]) == 2
        assert "l2pf takes its own action" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()

    # export again, one format, into the same run
    (run / "model.onnx").unlink()
    assert main(["export", str(run), "--format", "onnx"]) == 0
    assert (run / "model.onnx").exists()

    # a baseline at the same target, then both in one table
    assert main(["baseline", "l1", "--runs-dir", str(runs), "--no-export", *small_args,
                 "--cost", "flops"]) == 0
    csv = tmp_path / "table.csv"
    assert main(["compare", *map(str, sorted(runs.iterdir())), "--csv", str(csv),
                 "--plot", str(tmp_path / "pareto"), "--logdir", str(tmp_path / "tb")]) == 0
    table = capsys.readouterr().out
    assert "| l2pf |" in table and "| l1 |" in table
    assert len(csv.read_text().splitlines()) == 3
    assert (tmp_path / "pareto-latency.png").stat().st_size > 10_000
    assert (tmp_path / "pareto-flops.png").stat().st_size > 10_000
    assert not (tmp_path / "pareto-energy.png").exists()  # no energy sensor here
    images = EventAccumulator(str(tmp_path / "tb")).Reload().Tags()["images"]
    assert sorted(images) == ["pareto/flops", "pareto/latency"]


@pytest.mark.parametrize(("agent", "action"), [("ppo", "ratio"), ("a2c", "ratio"),
                                               ("sac", "ratio"), ("ddpg", "amc"),
                                               ("td3", "amc"), ("amc", "amc"),
                                               ("ppo", "filters")])
def test_sb3_agents_train_through_a_flat_action(agent, action, small_args, tmp_path):
    runs = tmp_path / "runs"
    on_policy = agent in ("ppo", "a2c")
    extra = ["--sb3", "n_steps=6" if on_policy else "learning_starts=4"]
    assert main(["train", "--agent", agent, "--episodes", "1", "--no-export", "--sb3-action",
                 action, "--runs-dir", str(runs), *small_args, *extra]) == 0
    run = only_run(runs)
    report = json.loads((run / "report.json").read_text())
    assert report["method"] == agent and report["source"] == "deterministic policy"
    assert (run / "agent.zip").exists() and (run / "replay.npz").exists() != on_policy
    assert [s for s, _ in scalars(run, "charts/episodic_return")] == [0]
    ((_, finetune),) = scalars(run, "charts/finetune_fraction")
    assert 0 <= finetune <= 1
    # an agent without tries searched with what its episode fine-tuned: the curves' compute
    assert scalars(run, "charts/search_finetune_steps") == scalars(run, "charts/finetune_steps")
    args = json.loads((run / "args.json").read_text())
    assert args["agent"]["sb3_action"] == action
    with zipfile.ZipFile(run / "agent.zip") as saved:
        data = json.loads(saved.read("data"))
    shape = json.loads(json.dumps(data["action_space"]))["_shape"]
    assert shape == ([64 + 1] if action == "filters" else [2])  # ResNet-20: 64 filters at most
    seen = json.loads(json.dumps(data["observation_space"]))["_shape"]
    assert seen == ([16] if agent == "amc" else [16 + 5 * 64])  # AMC: the descriptor only


def test_a_run_from_before_sb3_action_resumes_with_the_action_it_took(tmp_path):
    """Its agent.zip holds the per-filter action space; resuming it with the new default
    (the ratio) would not load."""
    from agents.train import resumed
    from prune_env.config import AgentConfig, RunConfig

    agent = AgentConfig(agent="ppo").to_dict()
    del agent["sb3_action"]
    (tmp_path / "args.json").write_text(json.dumps(
        {"command": "train", "run": RunConfig().to_dict(), "agent": agent}))
    assert resumed(str(tmp_path))[1].sb3_action == "filters"
    # an L2PF run of that time takes no sb3 action: it resumes with the default, not refused
    agent = AgentConfig(agent="l2pf").to_dict()
    del agent["sb3_action"]
    (tmp_path / "args.json").write_text(json.dumps(
        {"command": "train", "run": RunConfig().to_dict(), "agent": agent}))
    assert resumed(str(tmp_path))[1].sb3_action == "ratio"


def run_cli(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "prune_env.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_killed_run_resumes_and_ends_as_an_uninterrupted_one(small_args, tmp_path):
    """kill -9 after the first checkpoint; --resume loses nothing before it and gives the
    same pruned network as a run never interrupted (same seed, same CPU). On FLOPs, so that
    the two runs, side by side on the two cores, cannot choose apart by their timings."""
    args = ["train", "--agent", "l2pf", "--episodes", "2", "--tries", "2", "--no-export",
            *small_args, "--cost", "flops"]
    straight = run_cli([*args, "--runs-dir", str(tmp_path / "a")])
    killed = run_cli([*args, "--runs-dir", str(tmp_path / "b")])
    deadline = time.time() + 300
    progress = None
    while time.time() < deadline:
        found = list((tmp_path / "b").glob("*/progress.json"))
        if found:
            progress = found[0]
            break
        time.sleep(0.2)
    assert progress is not None, "no checkpoint was written"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    run = progress.parent
    done = json.loads(progress.read_text())["episodes"]
    assert done == 1 and not (run / "report.json").exists()

    resumed = run_cli(["train", "--resume", str(run)])
    out, _ = resumed.communicate(timeout=400)
    straight_out, _ = straight.communicate(timeout=400)  # drained: a full pipe would block it
    assert straight.returncode == 0, straight_out
    assert resumed.returncode == 0, out
    assert f"at episode {done}" in out
    assert [s for s, _ in scalars(run, "charts/episodic_return")] == [0, 1]
    a = json.loads((only_run(tmp_path / "a") / "report.json").read_text())
    b = json.loads((run / "report.json").read_text())
    assert a["kept_filters"] == b["kept_filters"]
    assert a["pruned"]["test_accuracy"] == b["pruned"]["test_accuracy"]
    assert a["source"] == b["source"]


def test_init_policy_finds_the_sweep_run_of_the_same_seed_and_target(tmp_path):
    from agents.train import policy_source

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "plan.json").write_text("{}")
    for name, agent, seed, target in (("a", "l2pf", 0, 0.5), ("b", "l2pf", 1, 0.5),
                                      ("c", "l2pf", 1, 0.7), ("d", "ppo", 2, 0.5)):
        run = sweep / name
        run.mkdir()
        (run / "args.json").write_text(json.dumps({
            "command": "train", "agent": {"agent": agent},
            "run": {"data": {"model": "resnet20", "seed": seed}, "env": {"target": target}}}))
        (run / "checkpoint.pt").write_bytes(b"")
        (run / "report.json").write_text("{}")
    assert policy_source(str(sweep), 1, 0.5) == sweep / "b" / "checkpoint.pt"
    assert policy_source(str(sweep / "c"), 0, 0.5) == sweep / "c" / "checkpoint.pt"
    with pytest.raises(FileNotFoundError, match="no finished L2PF run of seed 2 at target 0.5"):
        policy_source(str(sweep), 2, 0.5)
    with pytest.raises(ValueError, match="not an L2PF training run"):
        policy_source(str(sweep / "d"), 2, 0.5)
    (sweep / "a" / "report.json").unlink()  # a run that did not finish is not a source
    with pytest.raises(FileNotFoundError, match="no finished L2PF run of seed 0"):
        policy_source(str(sweep), 0, 0.5)
    (sweep / "e").mkdir()  # a second network's run of the same seed and target: ambiguous
    (sweep / "e" / "args.json").write_text((sweep / "b" / "args.json").read_text())
    (sweep / "e" / "checkpoint.pt").write_bytes(b"")
    (sweep / "e" / "report.json").write_text("{}")
    with pytest.raises(ValueError, match="several L2PF runs"):
        policy_source(str(sweep), 1, 0.5)
