"""The prune-env command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from prune_env.cli.main import main


@pytest.mark.parametrize("args", [["--help"], ["pretrain", "--help"], ["episode", "--help"]])
def test_help(args):
    out = subprocess.run([sys.executable, "-m", "prune_env.cli", *args], capture_output=True,
                         text=True, check=True).stdout
    assert "usage: prune-env" in out


def test_episode_writes_a_new_run_dir_each_time(tmp_path, checkpoint, capsys):
    args = ["episode", "--dataset", "synthetic", "--synthetic-size", "1500", "--policy",
            "random", "--ratio", "0.7", "--checkpoint", str(checkpoint[0]),
            "--max-finetune-steps", "2", "--val-samples", "200", "--runs-dir",
            str(tmp_path / "runs"), "--threads", "1"]
    # the checkpoint was trained on 16x16 synthetic images, but this run loads 32x32 ones
    assert main(args) == 2
    assert "input" in capsys.readouterr().err
    args += ["--image-size", "16"]
    assert main(args) == 0
    assert main(args) == 0
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and runs[0].name.startswith("resnet20-synthetic__random__0__")
    report = json.loads((runs[0] / "report.json").read_text())
    assert report["kept_filters"]["0"] == [16, 11]
    out = capsys.readouterr().out
    assert "speed-up" in out and "tensorboard --logdir" in out
    assert any(p.name.startswith("events.out.tfevents") for p in runs[0].iterdir())


def test_missing_dataset_is_a_clear_error(tmp_path, capsys):
    code = main(["pretrain", "--dataset", "cifar10", "--data-dir", str(tmp_path)])
    assert code == 2
    assert "--download" in capsys.readouterr().err


def test_catalog_names_what_the_package_has():
    from baselines.simple import POLICIES
    from prune_env import catalog
    from prune_env.envs.prune import PruneEnv  # noqa: F401
    from prune_env.envs.reward import REWARDS

    assert tuple(POLICIES) == catalog.POLICIES and REWARDS == catalog.REWARDS


def test_an_agent_run_corrects_the_table_on_its_own_episodes(tmp_path, small_args):
    """--correct-episodes: every episode's network (the next reset's) is timed against the
    base and the line refitted; the report says on how many networks."""
    assert main(["train", "--agent", "l2pf", "--episodes", "2", "--tries", "2", "--no-export",
                 "--correct-episodes", "--runs-dir", str(tmp_path / "runs"),
                 *small_args]) == 0
    (path,) = (tmp_path / "runs").glob("*/report.json")
    fitted = json.loads(path.read_text())["details"]["table_correction"]
    # episode 0 at episode 1's reset, episode 1 at the deterministic policy's
    assert fitted["observed"] == 2 == len(fitted["probes"])
    assert all(0.0 < p < 1.0 and 0.0 < m < 1.5 for p, m in fitted["probes"])


def test_a_run_corrects_the_latency_table_by_measurement(tmp_path, small_args, monkeypatch):
    """--correct-table N times N random-width probes against the base before the run and
    reports the fitted line; the corrected prediction is what the reward and the final
    table ratio saw. The probes run on a machine where every cut buys 0.8 of what the table
    says (real timing of two noisy probes once fitted a line no network could meet the
    target on); their real timing is `tests/measure/test_correction.py`'s."""
    from prune_env.measure.correction import TableCorrection, probe_networks
    from prune_env.measure.costs import CostMeter

    def machine(meter, base, probes, seed):
        base_ms = meter.table_ms(meter.shapes(base))
        return TableCorrection.fit([(r, 1 - 0.8 * (1 - r)) for r in (
            meter.table_ms(meter.shapes(p)) / base_ms for p in probe_networks(base, probes,
                                                                              seed))])

    monkeypatch.setattr(CostMeter, "_fit_correction", machine)
    assert main(["baseline", "l1", "--no-export", "--correct-table", "4",
                 "--runs-dir", str(tmp_path / "runs"), *small_args]) == 0
    (path,) = (tmp_path / "runs").glob("*/report.json")
    report = json.loads(path.read_text())
    fitted = report["details"]["table_correction"]
    assert len(fitted["probes"]) == 4 and fitted["slope"] == pytest.approx(0.8)
    assert all(0.0 < p < 1.0 for p, _ in fitted["probes"])
    # the uniform cut aimed by the corrected line: at the table's own 0.8 it would be 0.84
    assert 0.7 < report["episode_cost_ratio"] <= 0.8 + 1e-6
