"""Measurement of compact networks: parameters, FLOPs, latency (timed and looked up), energy."""

from prune_env.measure.energy import EnergyUnavailableError, auto_meter, measure_energy
from prune_env.measure.flops import count_flops, count_params
from prune_env.measure.latency import Latency, measure_latency
from prune_env.measure.lookup import LatencyTable, layer_shapes

__all__ = ["EnergyUnavailableError", "Latency", "LatencyTable", "auto_meter", "count_flops",
           "count_params", "layer_shapes", "measure_energy", "measure_latency"]
