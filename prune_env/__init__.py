"""prune-env: structured pruning of CNNs as a Gymnasium environment.

``import prune_env`` registers ``prune_env/Prune-v0`` (filter pruning) and
``prune_env/Gate-v0`` (per-layer budgets of dynamic filter gating)::

    import gymnasium, prune_env
    env = gymnasium.make("prune_env/Prune-v0", model="resnet20", dataset="fashion-mnist",
                         cost="latency")

The names below are the package's face; each is imported on first use (torch is loaded only
then, so that ``prune-env --help`` answers at once).
"""

from gymnasium.envs.registration import register

from prune_env.catalog import lazy_face

register(id="prune_env/Prune-v0", entry_point="prune_env.envs.prune:PruneEnv")
register(id="prune_env/Gate-v0", entry_point="baselines.gating.env:GateEnv")

__version__ = "0.1.0"

_FACE = {
    "PruneEnv": "prune_env.envs.prune", "Bench": "prune_env.envs.bench",
    "ObservationLayout": "prune_env.envs.observation",
    "FlatActionWrapper": "prune_env.envs.wrappers", "Report": "prune_env.envs.records",
    "RatioActionWrapper": "prune_env.envs.wrappers",
    "RunConfig": "prune_env.config", "DataConfig": "prune_env.config",
    "EnvConfig": "prune_env.config", "PretrainConfig": "prune_env.config",
    "build_model": "prune_env.nn.models", "compact": "prune_env.nn.surgery",
    "SurgeryError": "prune_env.nn.surgery", "filter_groups": "prune_env.nn.groups",
    "load_data": "prune_env.data.datasets",
}

__all__ = ["__version__", *sorted(_FACE)]

__getattr__ = lazy_face("prune_env", _FACE)
