"""Typed records of what passes between modules and onto disk: the report of a run (report.json,
with a schema version) and the log of one training episode.

Every method's run ends in one `Report`, written once by `prune_env.runs.pipeline`; `compare`
reads it back with `Report.read`, which names the file it cannot read. What only one method
has (SWD's penalty history, LayerPrune's removed blocks, gating's executed figures...) goes in
``details``, so the fields every report shares stay the same for all.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from prune_env.checks import read_json

#: Bumped whenever a field of `Report` changes meaning or place.
SCHEMA_VERSION = 2

T = TypeVar("T")


@dataclass
class Figures:
    """One network as the report measured it.

    Attributes:
        val_accuracy_subset: validation accuracy on the environment's fixed subset.
        latency_ms: batch-1 latency (see the report's ``latency_note``).
        latency_median_ms, latency_iqr_ms: spread of the timed runs.
        energy_mj: energy per inference where metered (all the sensor counted), else None.
        energy_net_mj: the same above the sensor's idle power (the report's
            ``energy_idle_w``), where metered.
        flops, params: counted.
        latency_batch, latency_batch_ms: the second batch size timed, and its latency.
        latency_predicted_ms: what the latency table predicted (pruned network only).
        val_accuracy, test_accuracy: on the full validation and test splits (the task's
            metric: top-1 accuracy, or mIoU for segmentation; the report's ``metric``).
        test_class_iou: segmentation: each class's IoU on the test split (None for a class
            in neither the labels nor the predictions).
    """

    val_accuracy_subset: float
    latency_ms: float
    latency_median_ms: float
    latency_iqr_ms: float
    energy_mj: float | None
    flops: float
    params: int
    latency_batch: int | None = None
    latency_batch_ms: float | None = None
    latency_predicted_ms: float | None = None
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    test_class_iou: list[float | None] | None = None
    energy_net_mj: float | None = None


@dataclass
class Finetune:
    """Fine-tuning compute: wall seconds and SGD steps."""

    seconds: float
    steps: int


@dataclass
class Export:
    """An exported file and its largest difference from PyTorch's outputs."""

    path: str
    max_abs_diff: float


@dataclass
class DeployedLatency:
    """The exported files of base and pruned network timed in a runtime, interleaved, at
    batch 1: milliseconds (median of block minima), their ratio and its 95% interval."""

    runtime: str
    provider: str
    base_ms: float
    pruned_ms: float
    ratio: float
    ratio_ci: list[float]


@dataclass
class CandidateSummary:
    """A network a method proposed, as the final choice saw it."""

    source: str
    val_accuracy_subset: float
    cost_ratio: float
    measured_cost_ratio: float | None = None


@dataclass
class Search:
    """The method's search: wall seconds (from the environment's construction; a resumed run
    counts its earlier seconds) and the candidates it ranked."""

    seconds: float
    candidates: list[CandidateSummary] = field(default_factory=list)


@dataclass
class Report:
    """A finished episode or run: base vs pruned network, cost ratio, compute.

    ``cost_ratio`` is what ``target_met`` judges: the measured latency ratio for the latency
    cost, the counted ratio otherwise; ``episode_cost_ratio`` is what the episode looked up.
    ``deployed`` times the exported ONNX files (base and pruned) in onnxruntime, one entry
    per execution provider; empty without exports. ``hardware`` names the machine that
    measured (`prune_env.measure.hardware`).
    ``cost_ratio_ci`` is the measured ratio's 95% interval [low, high] (None for a counted
    cost) and ``target_met`` is "met", "missed" or "within noise" (the interval holds the
    target; `prune_env.measure.confidence`); ``cost_ratio_timings`` is how many times the
    pair was timed to get an interval narrow enough (`CostMeter.timed_pair`). The fields
    from ``accuracy_drop`` on are filled by the run's final stage.
    """

    model: str
    dataset: str
    cost: str
    target: float
    reward: dict[str, Any]
    episode_reward: float
    device: str
    threads: int | None
    base: Figures
    pruned: Figures
    speedup: float
    cost_ratio: float
    cost_ratio_source: str
    episode_cost_ratio: float
    target_met: str
    finetune: Finetune
    kept_filters: dict[str, list[float]]
    latency_note: str
    cost_ratio_ci: list[float] | None = None
    cost_ratio_timings: int = 1
    hardware: str | None = None
    deployed: list[DeployedLatency] = field(default_factory=list)
    accuracy_drop: float | None = None
    method: str | None = None
    metric: str = "top1"  # what the *_accuracy figures hold: "top1", or "miou"
    input_shape: list[int] | None = None  # (C, H, W) the network was trained and scored at
    deploy_shape: list[int] | None = None  # where latency, energy and FLOPs were measured
    energy_idle_w: float | None = None  # the energy sensor's idle power, where metered
    episodes: int | None = None
    source: str | None = None
    search: Search | None = None
    search_result: CandidateSummary | None = None
    final_finetune: Finetune | None = None
    exports: dict[str, Export] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def read(cls, path: str | Path) -> Report:
        """The report at ``path``.

        Raises:
            FileNotFoundError: no such file.
            ValueError: naming ``path``, when it is not a report of this schema version.
        """
        path = Path(path)
        data = read_json(path, "a readable report")
        if isinstance(data, dict) and data.get("schema_version") == 1:
            data = upgrade_v1(data)
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            found = data.get("schema_version") if isinstance(data, dict) else None
            raise ValueError(f"{path} is not a report this version reads (schema_version "
                             f"{found}, expected {SCHEMA_VERSION})")
        try:
            return from_dict(cls, data)
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"{path} is not a report this version reads ({err})") from err


def upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 report (before intervals: a yes/no ``target_met``) in schema 2's form."""
    data = dict(data, schema_version=2, cost_ratio_ci=None)
    if isinstance(data.get("target_met"), bool):
        data["target_met"] = "met" if data["target_met"] else "missed"
    return data


@dataclass
class EpisodeLog:
    """One training episode, as agents yield it and `prune_env.runs.tensorboard` logs it.

    Attributes:
        kept: per conv of the base network, the filters left (mean active ones for gating).
        finetune_mean: the mean fine-tune fraction the episode chose.
        policy_loss, entropy: the agent's own, where it has them (L2PF).
        search_finetune_steps: fine-tuning SGD steps of every action tried in the episode
            (L2PF's tries; an agent without tries, its ``finetune_steps``), the search's
            compute; ``finetune_steps`` counts the kept path's.
        pace_weight: L2PF's pacing weight during the episode (it adapts with pace_adapt).
        finetune_price: L2PF's fine-tune price at the episode's end, with a fine-tune budget.
    """

    episode: int
    reward: float
    accuracy: float
    cost_ratio: float
    latency_ms: float
    energy_mj: float | None
    flops: float
    params: int
    finetune_seconds: float
    finetune_steps: int
    finetune_mean: float
    kept: dict[str, float]
    policy_loss: float | None = None
    entropy: float | None = None
    search_finetune_steps: int | None = None
    pace_weight: float | None = None
    finetune_price: float | None = None


def from_dict(cls: type[T], data: Any) -> T:
    """A dataclass from its `dataclasses.asdict` form, nested records included; unknown or
    missing fields are a ValueError naming them."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {', '.join(sorted(unknown))}")
    required = {f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    missing = required - set(data)
    if missing:
        raise ValueError(f"{cls.__name__}: missing fields {', '.join(sorted(missing))}")
    return cls(**{k: _convert(hints[k], v) for k, v in data.items()})


def _convert(hint: Any, value: Any) -> Any:
    """``value`` as ``hint`` where ``hint`` holds records (optional, lists, dicts of them)."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(inner[0], value) if len(inner) == 1 else value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value)  # type: ignore[arg-type]
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_convert(item, v) for v in value]
    if origin is dict:
        _, item = typing.get_args(hint)
        return {k: _convert(item, v) for k, v in value.items()}
    return value
