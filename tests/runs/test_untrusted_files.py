"""No file the project reads can run code: crafted files are refused, their payload never runs.

Each payload, if unpickled, would create ``pwned`` beside it; every test asserts that the file
was refused with a message naming it AND that the payload did not run.
"""

from __future__ import annotations

import base64
import json
import pickle
import zipfile
from pathlib import Path

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch

from prune_env.cli.main import main
from prune_env.nn.models import build_model
from prune_env.nn.record import from_record, to_record
from prune_env.nn.surgery import compact
from prune_env.training.checkpoint import load_compact, read_tensors, save_compact


class Payload:
    """Unpickling this object writes a marker file (what an attacker's code would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_a_crafted_compact_network_is_refused_by_export(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"model": Payload(marker), "meta": {}}, run / "compact.pt")
    assert main(["export", str(run)]) == 2
    err = capsys.readouterr().err
    assert "compact.pt" in err and "never unpickled" in err
    assert not marker.exists()
    assert not (run / "model.onnx").exists()


def test_a_corrupt_compact_network_names_the_file(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "compact.pt").write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["export", str(run)]) == 2
    err = capsys.readouterr().err
    assert str(run / "compact.pt") in err and "Traceback" not in err


def test_a_crafted_agent_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"config": {}, "best": Payload(marker)}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="checkpoint.pt"):
        read_tensors(tmp_path / "checkpoint.pt", "L2PF checkpoint")
    assert not marker.exists()


def test_compact_networks_are_saved_as_records_that_load_without_code(tmp_path):
    """A pruned ResNet-20 with a removed branch (its constant in a ChannelShift) round-trips
    through compact.pt read with weights_only=True, computing the same outputs."""
    torch.manual_seed(0)
    base = build_model("resnet20", 1, 10, (16, 16)).eval()
    for m in base.modules():  # non-trivial BN statistics, so constants are not zero
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.bias.data.uniform_(-0.5, 0.5)
    keep = {"3.branch.0": torch.zeros(16, dtype=torch.bool),
            "0": torch.arange(16) % 3 != 0}
    small = compact(base, keep)
    save_compact(tmp_path / "compact.pt", small, {"note": "x"})
    raw = torch.load(tmp_path / "compact.pt", weights_only=True)  # data only
    assert any(kind == "ChannelShift" for _, kind, _ in raw["network"]["layers"])
    loaded, meta = load_compact(tmp_path / "compact.pt")
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded(x), small.eval()(x), atol=1e-5)
    assert meta["note"] == "x"
    assert sum(p.numel() for p in loaded.parameters()) < sum(p.numel() for p in base.parameters())


def test_a_record_with_an_unknown_layer_type_is_refused():
    record = to_record(build_model("resnet20", 1, 10, (16, 16)))
    record["layers"].append(["0", "os.system", {}])
    with pytest.raises(ValueError, match="unknown layer type 'os.system'"):
        from_record(record)


def test_a_crafted_sb3_agent_does_not_run_code(tmp_path):
    """sb3 stores spaces and schedules with cloudpickle; our loader never unpickles them."""
    from stable_baselines3 import PPO

    from agents.sb3 import load_agent

    env = gym.make("CartPole-v1")
    agent = PPO("MlpPolicy", env, n_steps=16, batch_size=16, seed=0, device="cpu")
    agent.save(tmp_path / "agent.zip")
    marker = tmp_path / "pwned"
    with zipfile.ZipFile(tmp_path / "agent.zip") as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(files["data"])
    evil = base64.b64encode(cloudpickle.dumps(Payload(marker))).decode()
    data["lr_schedule"] = {":type:": "<class 'function'>", ":serialized:": evil}
    files["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(tmp_path / "agent.zip", "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)

    fresh = PPO("MlpPolicy", env, n_steps=16, batch_size=16, seed=1, device="cpu")
    loaded = load_agent("ppo", tmp_path, fresh)
    assert not marker.exists()
    for a, b in zip(loaded.policy.parameters(), agent.policy.parameters(), strict=True):
        assert torch.equal(a, b)  # the weights are the saved agent's, not the fresh one's


def test_a_crafted_cifar_file_is_refused(tmp_path, capsys):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    marker = tmp_path / "pwned"
    entry = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    for i in range(1, 6):
        (base / f"data_batch_{i}").write_bytes(pickle.dumps(entry))
    (base / "test_batch").write_bytes(pickle.dumps({b"data": Payload(marker)}))
    (base / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b"]}))
    assert main(["pretrain", "--dataset", "cifar10", "--data-dir", str(tmp_path),
                 "--epochs", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "test_batch" in err and "not allowed" in err
    assert not marker.exists()


def test_recording_and_rebuilding_a_network_leaves_the_global_rng_alone():
    """A checkpoint written or read mid-run must not change what the run samples next (a
    pruned network: its changed layers are built anew when recorded and rebuilt)."""
    net = compact(build_model("resnet20", 1, 10, (16, 16)).eval(),
                  {"3.branch.0": torch.zeros(16, dtype=torch.bool),
                   "0": torch.arange(16) % 3 != 0})
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    from_record(to_record(net))
    assert torch.equal(torch.rand(3), expected)
