"""The bench: what a pruning environment holds fixed while its episodes run.

The base network (loaded or pretrained on first use), its data and task, the cost meter and
the base's accuracy and costs, the base's filter groups, the reward's and fine-tuning's
settings, and the random generator of the episode's batches. `prune_env.envs.prune.PruneEnv`
and the gating environment (`baselines.gating.env.GateEnv`) each hold one; the methods that
prepare an episode (uniform allocation, SWD, LayerPrune, ALF, gating's budget) read it: it is
the public face of an environment's set-up (``env.unwrapped.bench``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from prune_env.catalog import COSTS, task_of
from prune_env.checks import parse_shape
from prune_env.config import PretrainConfig
from prune_env.data.datasets import DataBundle, load_data, placed
from prune_env.data.task import Task, get_task
from prune_env.envs.reward import RewardConfig
from prune_env.measure.costs import COST_KEYS, CostMeter
from prune_env.nn.groups import FilterGroup, filter_groups
from prune_env.nn.models import build_model, check_task, example_input, input_shape
from prune_env.nn.surgery import evaluating, following_batchnorms
from prune_env.training.loop import GradHook, TrainConfig, evaluate, train_steps
from prune_env.training.pretrain import load_or_pretrain


class Bench:
    """The fixed set-up of a pruning environment (see the environment's Arguments).

    Attributes:
        data, task: the data set (train, validation, test splits) and the task scoring it.
        base_model, base_meta: the trained base network and its checkpoint's metadata.
        model_name, input_shape: the architecture's name and one input's shape.
        deploy_shape: one deployed input's shape, where costs are measured (`deployed_at`).
        meter: the cost meter (lookup-table latency, energy, FLOPs, parameters).
        cost_name, cost_key: the cost the reward uses, and its key in the meter's costs.
        reward_cfg, train_cfg: the reward's settings; the fine-tuning's SGD settings.
        max_finetune_steps: fine-tuning steps at finetune = 1.
        val_samples: validation images scored per step.
        base_accuracy, base_costs, base_cost: the base's validation accuracy (on the
            ``val_samples`` subset) and costs, measured once.
        base_groups: the base's filter groups (`prune_env.nn.groups`), in forward order.
        base_bn_of: conv -> the BatchNorm following it in the base.
        max_filters, max_in: the largest group; the largest conv input in the base.
        aim: the cost ratio the baselines aim their networks at (the cut they choose, the
            warm-ups' penalties, the clamp): the reward's target, unless a closed-loop aim
            (`baselines.run.OneEpisode.aim`) lowered it under a network that measured over.
        generator: the episode's batches (seeded by the environment's reset).
    """

    def __init__(self, model: str = "resnet20", dataset: str = "fashion-mnist",
                 cost: str = "latency", target: float = 0.5, reward: str = "psi-phi",
                 allowed_drop: float = 0.02, finetune_weight: float = 0.05,
                 max_finetune_steps: int = 50, finetune_lr: float = 0.01, batch_size: int = 64,
                 val_samples: int = 2000, device: str = "cpu", threads: int | None = None,
                 latency_batch: int = 32, checkpoint: str | None = None,
                 data: DataBundle | None = None, data_dir: str | None = None,
                 pretrain: PretrainConfig | None = None, latency_table: str | None = None,
                 seed: int = 0, measure_device: str | None = None, amp: str = "off",
                 deploy_shape: str | None = None, energy_meter: str = "auto",
                 correct_table: int = 0, correct_episodes: bool = False):
        if cost not in COSTS:
            raise ValueError(f"unknown cost {cost!r}: choose one of {', '.join(COSTS)}")
        if correct_episodes and cost != "latency":
            raise ValueError(f"--correct-episodes corrects the latency table; the {cost} "
                             "cost is not looked up in it (leave the option out)")
        self.correct_episodes = correct_episodes
        self.cost_name = cost
        self.cost_key = COST_KEYS[cost]
        self.reward_cfg = RewardConfig(reward, allowed_drop, finetune_weight, target)
        self.aim = target
        self.max_finetune_steps = int(max_finetune_steps)
        self.train_cfg = TrainConfig(lr=finetune_lr, batch_size=batch_size, augment=False,
                                     weight_decay=5e-4, amp=amp)
        self.val_samples = val_samples
        self.device = usable_device(device)
        # a network for another task is refused before the data are read or decoded
        check_task(model, data.task if data else task_of(dataset))
        data = data or load_data(dataset, data_dir=data_dir, seed=seed)
        self.task: Task = get_task(data.task, data.num_classes)
        self.input_shape: tuple[int, ...] = (data.in_channels, *data.image_size)
        # and a deployment shape the network cannot take before a base is pretrained
        self.deploy_shape = self.deployed_at(deploy_shape)
        if self.deploy_shape != self.input_shape:  # an untrained copy says (smp's strides)
            check_deployable(build_model(model, data.in_channels, data.num_classes,
                                         data.image_size), self.deploy_shape)
        pretrain = dataclasses.replace(pretrain or PretrainConfig(), device=device, amp=amp)
        base, self.base_meta = load_or_pretrain(model, data, checkpoint, pretrain)
        # the network under pruning and its data live where training runs, from here on
        self.base_model = base.to(self.device)
        self.data = placed(data, self.device)
        self.model_name = model
        self.input_shape = input_shape(self.base_model)
        given = (self.data.in_channels, *self.data.image_size)
        if self.input_shape != given:
            raise ValueError(f"the base checkpoint takes inputs {self.input_shape} but the data "
                             f"set gives {given}: load the data at the checkpoint's image size "
                             "(--image-size) or use another --checkpoint")
        self.meter = CostMeter(cost, self.deploy_shape, threads=threads,
                               device=str(usable_device(measure_device or device)),
                               table=latency_table, report_batch=latency_batch,
                               energy_meter=energy_meter)
        # base accuracy and costs, once: every episode starts from the same network
        self.base_accuracy = self.validate(self.base_model)
        self.base_costs: dict[str, Any] = self.meter.costs(self.base_model, calibrate=True)
        if correct_table:  # the base's own prediction is unchanged by the correction
            self.meter.correct(self.base_model, correct_table, seed)
        self.base_cost: float = self.base_costs[self.cost_key]
        self.base_groups: list[FilterGroup] = filter_groups(self.base_model)
        self.base_bn_of = batchnorms_of(self.base_model)
        self.max_filters = max(g.size for g in self.base_groups)
        self.max_in = max(m.in_channels for m in self.base_model.modules()
                          if isinstance(m, nn.Conv2d))
        self.generator = torch.Generator()

    def deployed_at(self, shape: str | None) -> tuple[int, ...]:
        """The input shape costs are measured at: ``shape`` ("CxHxW"), or the data's own.
        A fully convolutional network trained on crops runs on whole frames: its latency
        there is what a deployment pays."""
        if shape is None:
            return self.input_shape
        deployed = parse_shape(shape)
        if deployed[0] != self.input_shape[0]:
            raise ValueError(f"--deploy-shape {shape}: the network takes {self.input_shape[0]} "
                             f"channel(s), not {deployed[0]}")
        if deployed[1:] != self.input_shape[1:] and self.task.name != "segmentation":
            raise ValueError(f"--deploy-shape {shape}: a classifier is deployed at the size it "
                             f"was trained at, {'x'.join(map(str, self.input_shape))}; other "
                             "sizes are for fully convolutional (segmentation) networks")
        return deployed

    def validate(self, model: nn.Module) -> float:
        """Accuracy on the step's validation subset (``val_samples`` images)."""
        return evaluate(model, self.data.val, self.task, limit=self.val_samples)

    def finetune(self, model: nn.Module, steps: int, *, grad_hook: GradHook | None = None,
                 progress: str | None = None) -> float:
        """``steps`` SGD steps on the training split with the episode's generator; returns
        the wall time in seconds. Callers hold ``meter.computing()`` around it."""
        return train_steps(model, self.data.train, self.task, int(steps), self.train_cfg,
                           self.generator, grad_hook=grad_hook, progress=progress)

    def train_batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` training images and labels drawn with the episode's generator."""
        idx = torch.randint(len(self.data.train), (size,), generator=self.generator)
        return self.data.train.images[idx], self.data.train.labels[idx]

    def absolute(self, cost: float) -> float:
        """A cost in absolute units (microseconds, microjoules, FLOPs, parameters)."""
        return cost * 1e3 if self.cost_name in ("latency", "energy") else cost


def check_deployable(model: nn.Module, shape: tuple[int, ...]) -> None:
    """Refuse a deployment shape the network cannot take (smp's output strides)."""
    from prune_env.nn.segmentation import check_size

    check_size(model, shape[1], shape[2], "--deploy-shape gives frames of")


def usable_device(device: str) -> torch.device:
    """``device`` as a torch device, or a ValueError saying what to do when it is not there
    (a CUDA device on a machine without one, or an index past the last GPU)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA GPU is visible here "
                             "(torch.cuda.is_available() is False; check the driver, "
                             "CUDA_VISIBLE_DEVICES and that torch is a CUDA build), or use "
                             "--device cpu")
        if (dev.index or 0) >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has "
                             f"{torch.cuda.device_count()} visible GPU(s), numbered from 0")
    return dev


def batchnorms_of(model: nn.Module) -> dict[str, str]:
    """conv -> the BatchNorm following it (pruning never changes it: removed convs vanish)."""
    with evaluating(model), torch.no_grad():
        return following_batchnorms(model, example_input(model, 2))
