"""Networks: the models, their layers and residual blocks, filter groups, filter importance,
and surgery that makes them compact."""

from prune_env.nn.blocks import ScatterBlock, Shortcut, residual_blocks
from prune_env.nn.groups import FilterGroup, filter_groups, merge_keep
from prune_env.nn.importance import L1, BNScale, Importance, WeightTaylor
from prune_env.nn.models import build_model, example_input
from prune_env.nn.surgery import SurgeryError, compact, compact_report, prunable_convs

__all__ = ["L1", "BNScale", "FilterGroup", "Importance", "ScatterBlock", "Shortcut",
           "SurgeryError", "WeightTaylor", "build_model", "compact", "compact_report",
           "example_input", "filter_groups", "merge_keep", "prunable_convs", "residual_blocks"]
