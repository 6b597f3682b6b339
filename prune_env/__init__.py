"""prune-env: structured pruning of CNNs as a Gymnasium environment.

``import prune_env`` registers ``prune_env/Prune-v0`` (filter pruning) and
``prune_env/Gate-v0`` (per-layer budgets of dynamic filter gating)::

    import gymnasium, prune_env
    env = gymnasium.make("prune_env/Prune-v0", model="resnet20", dataset="fashion-mnist",
                         cost="latency")
"""

from gymnasium.envs.registration import register

register(id="prune_env/Prune-v0", entry_point="prune_env.envs.prune:PruneEnv")
register(id="prune_env/Gate-v0", entry_point="baselines.gating.env:GateEnv")

__version__ = "0.1.0"
