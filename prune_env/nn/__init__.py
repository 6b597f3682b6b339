"""Networks: the models, their layers, filter groups, filter importance, and surgery that
makes them compact."""

from prune_env.nn.groups import FilterGroup, filter_groups
from prune_env.nn.importance import L1, BNScale, Importance, WeightTaylor
from prune_env.nn.models import build_model, example_input
from prune_env.nn.surgery import SurgeryError, compact

__all__ = ["L1", "BNScale", "FilterGroup", "Importance", "SurgeryError", "WeightTaylor",
           "build_model", "compact", "example_input", "filter_groups"]
