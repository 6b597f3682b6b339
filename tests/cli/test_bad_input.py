"""Bad input: a clear message, exit code 2, and nothing created (no run directory, no file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prune_env.cli.main import main

#: option -> (subcommand, values the option must refuse)
NOT_A_NUMBER = st.sampled_from(["nan", "inf", "-inf", "abc", "", "1e999"])
BELOW = {
    "--val-samples": 0, "--episodes": -1, "--checkpoint-every": 0, "--tries": 0,
    "--n-envs": 0, "--threads": 0, "--max-finetune-steps": -1, "--final-steps": -1,
    "--synthetic-size": 0, "--batch-size": 0, "--seed": -1, "--latency-batch": 0,
    "--joint-steps": 0,
}
SHARES = ("--target", "--ratio", "--finetune", "--allowed-drop", "--epochs", "--lr",
          "--agent-lr", "--joint-weight")
ALLOW_ZERO = ("--finetune",)


def bad_values() -> st.SearchStrategy[tuple[str, str]]:
    integers = st.sampled_from(sorted(BELOW)).flatmap(lambda opt: st.tuples(
        st.just(opt), st.one_of(
            st.integers(max_value=BELOW[opt]).map(str), NOT_A_NUMBER,
            st.floats(0.1, 9.9).map(lambda f: f"{f:.2f}"))))  # not an integer
    def too_big(opt: str) -> list[st.SearchStrategy[str]]:
        return [st.floats(1.001, 1e6).map(str)] if opt in ("--target", "--ratio",
                                                           "--finetune") else []

    def too_small(opt: str) -> st.SearchStrategy[str]:
        # a fine-tune fraction of 0 is valid (no fine-tuning); every other share must be > 0
        top = -1e-9 if opt in ALLOW_ZERO else 0.0
        return st.floats(max_value=top).map(str)

    reals = st.sampled_from(SHARES).flatmap(lambda opt: st.tuples(
        st.just(opt), st.one_of(NOT_A_NUMBER, too_small(opt), *too_big(opt))))
    devices = st.tuples(st.just("--device"), st.text(min_size=1, max_size=8).filter(
        lambda t: t not in ("cpu", "cuda") and not t.startswith("cuda:")))
    return st.one_of(integers, reals, devices)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=bad_values())
def test_fuzzed_bad_numbers_exit_2_with_a_message_and_create_nothing(bad, tmp_path, capsys):
    option, value = bad
    runs = tmp_path / str(abs(hash(bad)))  # tmp_path is shared by the examples
    command = ("baseline" if option in ("--ratio", "--finetune", "--joint-steps",
                                        "--joint-weight") else "train")
    argv = [command, *(["l1"] if command == "baseline" else []), f"{option}={value}",
            "--runs-dir", str(runs)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert option in err and "expected" in err, err
    assert not runs.exists()


def test_sb3_unknown_key_is_refused_before_anything_is_built(tmp_path, capsys):
    assert main(["train", "--agent", "ppo", "--sb3", "n_stepz=4", "--runs-dir",
                 str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "n_stepz" in err and "n_steps" in err
    assert not (tmp_path / "runs").exists()


def test_a_mistyped_explicit_checkpoint_is_an_error_not_a_new_base(tmp_path, capsys):
    missing = tmp_path / "resnet20-synthtic.pt"
    assert main(["episode", "--dataset", "synthetic", "--synthetic-size", "200",
                 "--checkpoint", str(missing), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not missing.exists() and not (tmp_path / "runs").exists()


def fake_run(tmp_path: Path, args: dict, report: bool) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "args.json").write_text(json.dumps(args))
    if report:
        (run / "report.json").write_text('{"done": true}')
    return run


def test_resume_refuses_a_finished_run_and_leaves_it_as_it_was(tmp_path, capsys):
    run = fake_run(tmp_path, {"command": "train", "agent": {"agent": "l2pf", "episodes": 2}},
                   report=True)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert main(["train", "--resume", str(run)]) == 2
    assert "finished" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_resume_refuses_a_run_that_is_not_a_training_run(tmp_path, capsys):
    run = fake_run(tmp_path, {"command": "baseline", "name": "l1"}, report=False)
    assert main(["train", "--resume", str(run)]) == 2
    assert "only training runs resume" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["args.json"]


@pytest.mark.parametrize("saved, message", [
    ({"command": "train", "run": {}, "agent": {"agent": "l2pf", "episodes": -1}}, "episodes"),
    ({"command": "train", "run": {"env": {"latency_table": None}, "evil": "/etc"},
      "agent": {}}, "evil"),
    ({"command": "train", "run": {}, "agent": {"agent": "rm -rf"}}, "agent: expected"),
    ({"command": "train", "run": {"env": {"latency_table": "/root/.bashrc"}}, "agent": {}},
     ".json"),
    ({"command": "train", "agent": "l2pf", "episodes": 2}, "start a new run"),  # older, flat
])
def test_resume_checks_args_json_as_the_command_line(saved, message, tmp_path, capsys):
    run = fake_run(tmp_path, saved, report=False)
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert message in err and "args.json" in err
    assert sorted(p.name for p in run.iterdir()) == ["args.json"]


def test_compare_skips_unfinished_runs_and_names_an_unreadable_report(tmp_path, capsys):
    unfinished = tmp_path / "a"
    unfinished.mkdir()
    (unfinished / "args.json").write_text("{}")
    corrupt = tmp_path / "b"
    corrupt.mkdir()
    (corrupt / "report.json").write_text('{"base": ')
    assert main(["compare", str(unfinished), str(corrupt)]) == 2
    err = capsys.readouterr().err
    assert f"skipped {unfinished}" in err and str(corrupt / "report.json") in err
    (corrupt / "report.json").write_text('{"pruned": {}}')
    assert main(["compare", str(corrupt)]) == 2
    assert "not a report this version reads" in capsys.readouterr().err


def test_energy_cost_without_a_sensor_is_a_message(tmp_path, checkpoint, monkeypatch, capsys):
    from prune_env.measure import energy

    monkeypatch.setattr(energy.auto_meter, "__kwdefaults__",
                        {"rapl_root": tmp_path / "no-rapl", "jetson_root": tmp_path / "no-ina"})
    assert main(["episode", "--cost", "energy", "--dataset", "synthetic", "--synthetic-size",
                 "1500", "--image-size", "16", "--checkpoint", str(checkpoint[0]),
                 "--val-samples", "100", "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "energy" in err.lower() and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_an_energy_meter_asked_for_but_absent_is_a_message(tmp_path, checkpoint, monkeypatch,
                                                          capsys):
    """--energy-meter names the sensor: where it cannot work the run stops before it starts,
    even on the latency cost (auto would silently go without energy)."""
    from prune_env.measure import energy

    monkeypatch.setattr(energy.auto_meter, "__kwdefaults__",
                        {"rapl_root": tmp_path / "no-rapl", "jetson_root": tmp_path / "no-ina",
                         "prefer": "auto"})
    assert main(["episode", "--energy-meter", "rapl", "--dataset", "synthetic",
                 "--synthetic-size", "1500", "--image-size", "16", "--checkpoint",
                 str(checkpoint[0]), "--val-samples", "100",
                 "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "--energy-meter rapl" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_a_run_that_fails_after_its_start_leaves_no_directory(tmp_path, checkpoint,
                                                              latency_table, monkeypatch):
    import baselines.run

    def broken(*args, **kwargs):
        raise RuntimeError("the episode broke")

    monkeypatch.setattr(baselines.run, "policy_episode", broken)
    with pytest.raises(RuntimeError, match="the episode broke"):
        main(["baseline", "l1", "--ratio", "0.5", "--dataset", "synthetic",
              "--synthetic-size", "1500", "--image-size", "16", "--checkpoint",
              str(checkpoint[0]), "--val-samples", "100", "--latency-table", latency_table,
              "--runs-dir", str(tmp_path / "runs")])
    assert list((tmp_path / "runs").iterdir()) == []
