"""Pruning agents on the environment: L2PF (ours: hybrid action, tries) and the
stable-baselines3 agents through the flat-action wrapper; `agents.train.train` runs either
through the run pipeline. Each name is imported on first use (stable-baselines3 is slow to
import)."""

from prune_env.catalog import lazy_face

_FACE = {"L2PF": "agents.l2pf", "L2PFConfig": "agents.l2pf", "L2PFPolicy": "agents.l2pf_policy"}

__all__ = sorted(_FACE)

__getattr__ = lazy_face("agents", _FACE)
