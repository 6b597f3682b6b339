"""`prune-env bench`: configs checked before anything runs, arms run as resumable sweeps,
the table, CSV and figures written from the finished runs."""

from __future__ import annotations

import csv
import json

import pytest

from prune_env.cli import bench
from prune_env.cli.main import main
from prune_env.sweep.ledger import Outcome, record


def test_every_shipped_config_is_a_valid_bench():
    assert set(bench.available()) >= {"learning", "finetune", "cost", "methods"}
    for name in bench.available():
        config = bench.load_bench(name)
        assert config.arms and config.short
        assert "l2pf-latency" in config.arms  # the arm the benches share, run once


def test_an_arm_two_shipped_benches_share_has_the_same_settings_in_both():
    # it runs once, into the same directory: the second bench must mean the same runs
    seen: dict[str, tuple[str, list[str], list[str]]] = {}
    for name in bench.available():
        config = bench.load_bench(name)
        for arm, spec in config.arms.items():
            settings = (spec.methods, config.common + spec.args)
            if arm in seen:
                assert settings == seen[arm][1:], f"arm {arm}: {seen[arm][0]} and {name} differ"
            seen[arm] = (name, *settings)


@pytest.mark.parametrize("data, message", [
    ({"arms": {}}, "non-empty 'arms'"),
    ({"arms": {"a": {"methods": ["l1"]}}, "runs": 3}, "unknown keys runs"),
    ({"arms": {"../up": {"methods": ["l1"]}}}, "must be letters"),
    ({"arms": {"a": {"methods": []}}}, "methods: expected a list of strings (at least one)"),
    ({"arms": {"a": {"methods": ["l1"], "args": "--seed 1"}}}, "args: expected a list"),
    ({"arms": {"a": {"methods": ["l1"]}}, "window": 0}, "window must be a positive"),
])
def test_a_bad_config_is_refused_with_the_reason(data, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        bench.parse_bench("x", data, "x.json")


def test_bad_bench_names_and_arms_stop_before_anything_runs(tmp_path, capsys):
    assert main(["bench", "nosuch"]) == 2
    assert "give one of" in capsys.readouterr().err
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"arms": {"ok": {"methods": ["l1"]},
                                         "bad": {"methods": ["l1"], "args": ["--nope"]}}}))
    root = tmp_path / "out"
    assert main(["bench", str(path), "--runs-dir", str(root)]) == 2
    assert "arm 'bad' is not a valid sweep" in capsys.readouterr().err
    assert not root.exists()
    assert main(["bench", str(path), "--runs-dir", str(root), "--arms", "nosuch"]) == 2
    assert "no arm nosuch; its arms: ok, bad" in capsys.readouterr().err
    # only the arms asked for are parsed and run
    assert main(["bench", str(path), "--runs-dir", str(root), "--arms", "ok",
                 "--report-only"]) == 0
    assert "no finished run" in capsys.readouterr().out
    # no run finished, some failed: their reasons are printed, and reporting is no failure
    (root / "ok").mkdir(parents=True)
    record(root / "ok", Outcome("resnet20__l1__t0.5__s0", "failed", error="ValueError: no"))
    path.write_text(json.dumps({"arms": {"ok": {"methods": ["l1"]}}}))
    assert main(["bench", str(path), "--runs-dir", str(root), "--report-only"]) == 0
    assert "- ok (resnet20) at 0.5, seed(s) 0: ValueError: no" in capsys.readouterr().out
    path.write_text("{not json")
    assert main(["bench", str(path)]) == 2


@pytest.mark.xdist_group("ray")
def test_a_bench_runs_its_arms_writes_its_table_and_resumes(small_args, tmp_path, capsys):
    """An agent arm and a baseline arm on the synthetic data; the same command again runs
    nothing and writes the same table."""
    small = [a for a in small_args if a not in ("--target", "0.8")]  # a sweep has --targets
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({
        "description": "two arms", "window": 1,
        "common": [*small, "--targets", "0.8", "--cost", "flops", "--episodes", "2",
                   "--tries", "2", "--no-export", "--ray-cpus", "2", "--run-cpus", "1"],
        "arms": {"agent": {"methods": ["l2pf"]}, "plain": {"methods": ["l1"]}}}))
    root = tmp_path / "bench"
    assert main(["bench", str(config), "--runs-dir", str(root)]) == 0
    import ray

    assert not ray.is_initialized()  # the arms' one instance ends with the bench
    table = (root / "tiny.md").read_text()
    assert "| agent | 0.8000 | 1 |" in table and "| plain | 0.8000 | 1 |" in table
    rows = {r["method"]: r for r in csv.DictReader((root / "tiny.csv").read_text().splitlines())}
    assert set(rows) == {"agent", "plain"}
    agent = rows["agent"]
    assert agent["episodes"] == "2"
    # every try (2 per group, 12 groups, at most 4 steps each) of both episodes: more than
    # the kept path of the chosen network, at most 2 x 2 x 12 x 4
    (run,) = [d for d in (root / "agent").iterdir() if (d / "report.json").exists()]
    kept = json.loads((run / "report.json").read_text())["finetune"]["steps"]
    assert kept < float(agent["search_steps"]) <= 2 * 2 * 12 * 4
    assert float(rows["plain"]["search_steps"]) == 12  # L1: round(0.2 x 4) at each group
    assert float(agent["policy_cost_ratio"]) > 0 and agent["return_first"] != ""
    assert (root / "tiny-curves.png").stat().st_size > 0
    assert (root / "tiny-pareto-flops.png").exists()
    assert (root / "tiny-compute.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["bench", str(config), "--runs-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.count("finished before, 0 to run") == 2
    assert (root / "tiny.md").read_text() == table
    assert main(["bench", str(config), "--runs-dir", str(root), "--report-only"]) == 0


def test_failed_runs_are_listed_with_their_reason(tmp_path):
    config = bench.parse_bench("t", {"arms": {"base": {"methods": ["l1", "alf"]},
                                              "agent": {"methods": ["l2pf"]}}}, "t")
    for arm, entry, status, error in (
            ("base", "resnet20__alf__t0.7__s0", "failed", "ValueError: out of reach"),
            ("base", "resnet20__alf__t0.7__s1", "failed", "ValueError: out of reach"),
            ("base", "resnet20__l1__t0.7__s0", "finished", None),
            ("agent", "resnet20__l2pf__t0.5__s2", "failed", "RuntimeError: boom"),
            ("agent", "resnet20__l2pf__t0.5__s3", "failed", None),
            ("agent", "resnet20__l2pf__t0.5__s3", "finished", None)):  # failed, then ran
        (tmp_path / arm).mkdir(exist_ok=True)
        record(tmp_path / arm, Outcome(entry, status, error=error))
    assert bench.failures(config, tmp_path) == [
        "- agent (resnet20) at 0.5, seed(s) 2: RuntimeError: boom",
        "- base/alf (resnet20) at 0.7, seed(s) 0, 1: ValueError: out of reach"]
