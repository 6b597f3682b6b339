"""The report record: report.json round-trips, and what is not a report is named."""

from __future__ import annotations

import json

import pytest

from prune_env.envs.records import (
    SCHEMA_VERSION,
    CandidateSummary,
    Export,
    Figures,
    Finetune,
    Report,
    Search,
)


def figures(latency: float) -> Figures:
    return Figures(val_accuracy_subset=0.9, latency_ms=latency, latency_median_ms=latency,
                   latency_iqr_ms=0.1, energy_mj=None, flops=1e6, params=1000,
                   latency_batch=32, latency_batch_ms=10 * latency, val_accuracy=0.9,
                   test_accuracy=0.88)


def a_report() -> Report:
    return Report(model="resnet20", dataset="synthetic", cost="latency", target=0.5,
                  reward={"name": "psi-phi"}, episode_reward=1.5, device="cpu", threads=1,
                  base=figures(2.0), pruned=figures(1.0), speedup=2.0, cost_ratio=0.5,
                  cost_ratio_source="measured", episode_cost_ratio=0.48, target_met="met",
                  finetune=Finetune(3.0, 12), kept_filters={"0": [16, 8]},
                  latency_note="batch 1", accuracy_drop=0.0, method="l1",
                  search=Search(4.0, [CandidateSummary("l1 policy", 0.9, 0.48, 0.5)]),
                  final_finetune=Finetune(1.0, 5),
                  exports={"onnx": Export("run/model.onnx", 1e-6)},
                  details={"ratio": 0.5}, cost_ratio_ci=[0.47, 0.52])


def test_report_round_trips_through_json_with_its_schema_version(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(a_report().to_json())
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION
    read = Report.read(path)
    assert read == a_report()
    assert isinstance(read.search.candidates[0], CandidateSummary)
    assert read.exports["onnx"].max_abs_diff == 1e-6


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("schema_version"), "schema_version None"),
    (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), f"expected {SCHEMA_VERSION}"),
    (lambda d: d["pruned"].pop("flops"), "missing fields flops"),
    (lambda d: d.update(surprise=1), "unknown fields surprise"),
    (lambda d: d.update(base=[1, 2]), "expected an object"),
])
def test_what_is_not_a_report_is_named(change, message, tmp_path):
    data = json.loads(a_report().to_json())
    change(data)
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as err:
        Report.read(path)
    assert str(path) in str(err.value)


def test_a_schema_1_report_reads_with_its_yes_no_verdict_and_no_interval(tmp_path):
    data = json.loads(a_report().to_json())
    data.update(schema_version=1, target_met=False)
    del data["cost_ratio_ci"]
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data))
    read = Report.read(path)
    assert read.target_met == "missed" and read.cost_ratio_ci is None
    assert read.schema_version == SCHEMA_VERSION
