"""The configs check themselves, read back what they write, and generate the command line."""

from __future__ import annotations

import dataclasses

import pytest

from prune_env import checks
from prune_env.checks import CheckError, Options, option
from prune_env.cli.main import build_parser
from prune_env.cli.parser import config_from
from prune_env.config import AgentConfig, BaselineConfig, EnvConfig, RunConfig
from prune_env.runs.options import env_options


def test_the_command_line_defaults_are_the_configs_defaults():
    args = build_parser().parse_args(["train"])
    assert config_from(args, RunConfig) == RunConfig()
    assert config_from(args, AgentConfig) == AgentConfig()
    args = build_parser().parse_args(["baseline", "l1", "--target", "0.3", "--seed", "4"])
    run = config_from(args, RunConfig)
    assert (run.env.target, run.data.seed, run.pretraining.seed) == (0.3, 4, 4)
    assert config_from(args, BaselineConfig).ratio == "auto"


def test_the_finetune_price_reaches_the_environment():
    args = build_parser().parse_args(["train", "--finetune-price", "1.5"])
    run = config_from(args, RunConfig)
    assert env_options(run, None)["finetune_weight"] == 1.5  # type: ignore[arg-type]
    with pytest.raises(CheckError, match="^finetune_price: expected"):
        EnvConfig(finetune_price=-1.0)


@pytest.mark.parametrize("make, field", [
    (lambda: EnvConfig(target=float("nan")), "target"),
    (lambda: EnvConfig(target=1.5), "target"),
    (lambda: EnvConfig(val_samples=0), "val_samples"),
    (lambda: EnvConfig(max_finetune_steps=2.5), "max_finetune_steps"),  # not an integer
    (lambda: EnvConfig(threads=True), "threads"),  # a bool is not a number
    (lambda: EnvConfig(device="gpu"), "device"),
    (lambda: EnvConfig(cost="speed"), "cost"),
    (lambda: EnvConfig(latency_table="/root/.bashrc"), "latency_table"),
    (lambda: AgentConfig(sb3="n_steps=4"), "sb3"),  # a list, not a string
    (lambda: BaselineConfig(budget=0), "budget"),
])
def test_a_config_refuses_what_the_command_line_refuses(make, field):
    with pytest.raises(CheckError, match=f"^{field}: expected"):
        make()


def test_a_config_parses_text_and_reads_back_its_own_dict():
    config = RunConfig(env=EnvConfig(target="0.25", val_samples="300"))  # type: ignore[arg-type]
    assert (config.env.target, config.env.val_samples) == (0.25, 300)
    assert RunConfig.from_dict(config.to_dict(), "args.json") == config
    changed = dataclasses.replace(config, env=dataclasses.replace(config.env, target=0.4))
    assert changed.env.target == 0.4 and config.env.target == 0.25  # frozen: copies


def test_from_dict_names_the_file_and_the_field():
    with pytest.raises(ValueError, match=r"args.json \(env\): allowed_drop: expected"):
        RunConfig.from_dict({"env": {"allowed_drop": -1}}, "args.json")
    with pytest.raises(ValueError, match="args.json .*does not have: shell"):
        RunConfig.from_dict({"data": {"shell": "rm"}}, "args.json")
    with pytest.raises(ValueError, match="expected an object"):
        RunConfig.from_dict({"env": [1, 2]}, "args.json")


@dataclasses.dataclass(frozen=True)
class _Changed(Options):
    """an option whose default changed from 0 to 5 after runs were saved"""

    pace: float = option(5.0, "", check=checks.non_negative_real, absent=0.0)
    steps: int = option(3, "", check=checks.positive)


def test_a_saved_file_without_an_option_reads_as_it_ran_not_as_today_s_default():
    assert _Changed().pace == 5.0
    old = _Changed.from_dict({"steps": 4}, "args.json")  # written before `pace` existed
    assert (old.pace, old.steps) == (0.0, 4)
    assert _Changed.from_dict({}, "args.json").steps == 3  # no absent value: the default
    assert _Changed.from_dict({"pace": 2}, "args.json").pace == 2.0
    with pytest.raises(ValueError, match="plan.json: pace: expected"):
        _Changed.from_dict({"pace": -1}, "plan.json")
