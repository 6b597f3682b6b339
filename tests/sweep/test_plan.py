"""The sweep's plan, its standings read from the run directories, and the transfer of run
directories (the Ray runs themselves are in test_sweep)."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile

import pytest

from prune_env.config import AgentConfig, BaselineConfig, DataConfig, EnvConfig, RunConfig
from prune_env.sweep.ledger import Outcome, Stage, leftovers, outcomes, record, standings
from prune_env.sweep.plan import Entry, Plan
from prune_env.sweep.transfer import pack, unpack


def make_plan(root, targets=(0.8, 0.6), methods=("l2pf", "l1"), seeds=(0,)) -> Plan:
    run = RunConfig(data=DataConfig(dataset="synthetic"), env=EnvConfig(target=0.5),
                    runs_dir=str(root))
    return Plan.make(list(methods), list(targets), list(seeds), ["resnet20"], run,
                     AgentConfig(episodes=1), BaselineConfig())


def fake_run(root, name, entry: Entry, *, finished=False, checkpoint=False):
    """A run directory as the pipeline leaves it: args.json, then progress.json or
    report.json."""
    run = make_plan(root).run_config(entry)
    args = ({"command": "train", "agent": {"agent": entry.method}} if entry.method == "l2pf"
            else {"command": "baseline", "name": entry.method}) | {"run": run.to_dict()}
    d = root / name
    d.mkdir(parents=True)
    (d / "args.json").write_text(json.dumps(args))
    if checkpoint:
        (d / "progress.json").write_text('{"episodes": 1, "seconds": 1.0}')
    if finished:
        (d / "report.json").write_text("{}")
    return d


def test_plan_entries_configs_and_what_differs(tmp_path):
    plan = make_plan(tmp_path / "s", seeds=(0, 1))
    assert len(plan.entries) == 2 * 2 * 2
    entry = Entry("resnet20", "l1", 0.6, 1)
    run = plan.run_config(entry)
    assert (run.env.target, run.data.seed, run.runs_dir) == (0.6, 1, str(tmp_path / "s"))
    assert plan.agent_config(Entry("resnet20", "ppo", 0.6, 1)).agent == "ppo"
    plan.save()
    again = Plan.load(tmp_path / "s")
    assert again.entries == plan.entries and again.differences(plan) == []
    other = make_plan(tmp_path / "s", targets=(0.8,), seeds=(0, 1))
    assert other.differences(plan) == ["targets: [0.8, 0.6] in the sweep, [0.8] now"]
    # an option added to prune-env since the plan was saved counts at its default ...
    older = dataclasses.replace(plan, agent={k: v for k, v in plan.agent.items()
                                             if k != "fixed_finetune"})
    assert plan.differences(older) == []
    # ... and at another value it is a difference
    ablation = dataclasses.replace(plan, agent=plan.agent | {"fixed_finetune": 0.3})
    assert ablation.differences(older) == ["agent.fixed_finetune: 'learned' in the sweep, "
                                           "0.3 now"]
    with pytest.raises(ValueError, match="--checkpoint names one network"):
        Plan.make(["l1"], [0.5], [0], ["resnet20", "vgg11"],
                  RunConfig(data=DataConfig(checkpoint="base.pt")), AgentConfig(),
                  BaselineConfig())


def test_a_sweep_gives_each_agent_its_own_kinds_options(tmp_path):
    """One command sweeps L2PF and an sb3 agent with options of each: each run gets its own
    kind's (a run given the other's refuses it); an option no method of the sweep takes is
    refused when the plan is made."""
    run = RunConfig(data=DataConfig(dataset="synthetic"), runs_dir=str(tmp_path / "s"))
    agent = AgentConfig(pace_adapt=5.0, init_policy="runs/a", sb3=["n_steps=8"],
                        sb3_action="filters")
    plan = Plan.make(["l2pf", "ppo", "l1"], [0.7], [0], ["resnet20"], run, agent,
                     BaselineConfig())
    l2pf = plan.agent_config(Entry("resnet20", "l2pf", 0.7, 0))
    ppo = plan.agent_config(Entry("resnet20", "ppo", 0.7, 0))
    assert (l2pf.pace_adapt, l2pf.init_policy, l2pf.sb3, l2pf.sb3_action) == (
        5.0, "runs/a", [], "ratio")
    assert (ppo.agent, ppo.pace_adapt, ppo.init_policy, ppo.sb3, ppo.sb3_action) == (
        "ppo", 0.0, "", ["n_steps=8"], "filters")
    with pytest.raises(ValueError, match="--init-policy, --pace-adapt: L2PF.s"):
        Plan.make(["ppo", "l1"], [0.7], [0], ["resnet20"], run,
                  AgentConfig(pace_adapt=5.0, init_policy="runs/a"), BaselineConfig())
    with pytest.raises(ValueError, match="--sb3-action: the stable-baselines3"):
        Plan.make(["l2pf"], [0.7], [0], ["resnet20"], run, AgentConfig(sb3_action="filters"),
                  BaselineConfig())


def test_standings_keep_finished_runs_resume_checkpoints_and_rerun_the_rest(tmp_path):
    root = tmp_path / "s"
    plan = make_plan(root)
    plan.save()
    done = fake_run(root, "a", Entry("resnet20", "l1", 0.8, 0), finished=True)
    ckpt = fake_run(root, "b", Entry("resnet20", "l2pf", 0.8, 0), checkpoint=True)
    killed = fake_run(root, "c", Entry("resnet20", "l1", 0.6, 0))  # no report, no checkpoint
    fake_run(root, "d", Entry("resnet20", "l1", 0.3, 0), finished=True)  # not in this plan
    s = standings(plan)
    assert s[Entry("resnet20", "l1", 0.8, 0)].stage is Stage.FINISHED
    assert s[Entry("resnet20", "l1", 0.8, 0)].run_dir == done
    assert s[Entry("resnet20", "l2pf", 0.8, 0)].run_dir == ckpt
    assert s[Entry("resnet20", "l2pf", 0.8, 0)].stage is Stage.RESUMABLE
    assert s[Entry("resnet20", "l1", 0.6, 0)].stage is Stage.TODO
    assert s[Entry("resnet20", "l2pf", 0.6, 0)].stage is Stage.TODO
    assert leftovers(plan, s) == [killed]


def test_ledger_keeps_each_entrys_last_outcome_and_skips_a_torn_line(tmp_path):
    record(tmp_path, Outcome("x", "failed", error="boom"))
    record(tmp_path, Outcome("x", "finished", run="r", node="10.0.0.2"))
    record(tmp_path, Outcome("y", "failed", error="bad"))
    with open(tmp_path / "sweep.jsonl", "a") as f:
        f.write('{"entry": "y", "stat')  # killed while writing
    last = outcomes(tmp_path)
    assert (last["x"].status, last["x"].node) == ("finished", "10.0.0.2")
    assert last["y"].error == "bad"


def test_run_directories_come_back_whole_under_a_free_name(tmp_path):
    run = tmp_path / "far" / "resnet20-synthetic__l1__0__20260101-000000"
    (run / "sub").mkdir(parents=True)
    (run / "report.json").write_text('{"a": 1}')
    (run / "sub" / "events").write_bytes(b"\x00\x01")
    archive = pack(run)
    root = tmp_path / "sweep"
    root.mkdir()
    first, second = unpack(archive, root), unpack(archive, root)
    assert first.name == run.name and second.name == f"{run.name}-2"
    assert (second / "report.json").read_text() == '{"a": 1}'
    assert (second / "sub" / "events").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in root.iterdir()) == [first.name, second.name]


def test_an_archive_cannot_write_outside_its_run_directory(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("run/../../escaped")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    root = tmp_path / "sweep"
    root.mkdir()
    with pytest.raises(tarfile.FilterError):
        unpack(buffer.getvalue(), root)
    assert not (tmp_path / "escaped").exists() and list(root.iterdir()) == []


def test_a_head_that_does_not_answer_or_a_foreign_directory_is_refused(tmp_path, capsys):
    from prune_env.cli.main import main

    args = ["sweep", "l1", "--targets", "0.5", "--dataset", "synthetic"]
    root = tmp_path / "new"
    assert main([*args, "--address", "127.0.0.1:1", "--runs-dir", str(root)]) == 2
    assert "no Ray head answers at 127.0.0.1:1" in capsys.readouterr().err
    assert not root.exists()  # nothing half made
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    assert main([*args, "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "is not a sweep directory" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["mine"]
