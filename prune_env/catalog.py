"""Names of what the package offers, importable without torch (so `--help` answers at once)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "imagefolder", "synthetic",
            "fashion-scenes", "cityscapes")
#: Data sets whose labels are per-pixel masks (the segmentation task).
SEGMENTATION_DATASETS = ("fashion-scenes", "cityscapes")


def task_of(dataset: str) -> str:
    """The task a data set's labels pose: "segmentation" or "classification"."""
    return "segmentation" if dataset in SEGMENTATION_DATASETS else "classification"
OWN_MODELS = ("resnet20", "resnet32", "resnet56", "vgg11", "vgg16", "mobilenetv2")
#: segmentation_models_pytorch's architectures and encoders offered as ARCH-ENCODER.
SMP_ARCHS = ("unet", "fpn", "deeplabv3plus")
SMP_ENCODERS = ("resnet18", "resnet34", "mobilenet_v2", "efficientnet-b0")
#: HRNet through smp's timm encoders ("tu-"): U-Net and FPN (smp's DeepLabV3+ needs a dilated
#: encoder, which timm's HRNet is not).
SMP_TIMM = ("unet-tu-hrnet_w18_small", "fpn-tu-hrnet_w18_small")
TORCHVISION_SEGMENTATION = ("fcn_resnet50", "deeplabv3_resnet50",
                            "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large")
#: Networks that output a map of class scores per pixel (the segmentation task).
SEGMENTATION_MODELS = ("resnet20-fcn", *(f"{a}-{e}" for a in SMP_ARCHS for e in SMP_ENCODERS),
                       *SMP_TIMM, *TORCHVISION_SEGMENTATION)
COSTS = ("latency", "energy", "flops", "params")
#: Energy sensors by name ("auto": the first that works for the device).
ENERGY_METERS = ("auto", "nvml", "rapl", "jetson", "zeus")
REWARDS = ("psi-phi", "amc", "amc-constrained", "accuracy-cost")
POLICIES = ("keep-all", "random", "l1")
BASELINES = (*POLICIES, "swd", "layerprune", "alf", "gating", "joint")
AGENTS = ("l2pf", "ppo", "a2c", "sac", "ddpg", "td3", "amc")
#: The flat actions an sb3 agent can take (`prune_env.envs.wrappers.SB3_ACTIONS`).
SB3_ACTIONS = ("ratio", "amc", "filters")

#: Where the commands that run a method find it ("module:function"), resolved only when the
#: command runs, as gymnasium resolves an environment's entry point: agents/ and baselines/
#: import prune_env, never the reverse.
RUNNERS = {"train": "agents.train:train", "baseline": "baselines.run:run_baseline",
           "episode": "baselines.run:run_episode"}


def runner(command: str) -> Callable[..., Any]:
    """The function behind ``command`` in `RUNNERS`."""
    module, _, name = RUNNERS[command].partition(":")
    return getattr(importlib.import_module(module), name)


def lazy_face(package: str, face: dict[str, str]) -> Callable[[str], Any]:
    """A package's module ``__getattr__`` (PEP 562) importing each name of ``face`` (name ->
    module) on first use, so that importing the package stays cheap."""

    def getattr_(name: str) -> Any:
        if name not in face:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(face[name]), name)

    return getattr_
