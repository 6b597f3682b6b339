"""The methods of the same research line as baseline policies in the same environment:
keep-all, random and L1 (`simple`), SWD, LayerPrune, ALF and dynamic gating (`gating`);
`run_baseline` runs any of them through the run pipeline. Each name is imported on first use."""

from prune_env.catalog import lazy_face

_FACE = {"make_policy": "baselines.simple", "SWDPenalty": "baselines.swd",
         "SWDPolicy": "baselines.swd", "ALFTrainer": "baselines.alf",
         "ALFPolicy": "baselines.alf", "LayerPrunePolicy": "baselines.layerprune",
         "block_importance": "baselines.layerprune", "run_baseline": "baselines.run",
         "run_episode": "baselines.run"}

__all__ = sorted(_FACE)

__getattr__ = lazy_face("baselines", _FACE)
