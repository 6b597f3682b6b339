"""Networks: the models, their layers, filter groups, and surgery that makes them compact."""

from prune_env.nn.groups import FilterGroup, filter_groups
from prune_env.nn.models import build_model, example_input
from prune_env.nn.surgery import SurgeryError, compact

__all__ = ["FilterGroup", "SurgeryError", "build_model", "compact", "example_input",
           "filter_groups"]
