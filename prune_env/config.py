"""The configs: what each command and each library entry point takes, one dataclass per
concern, each field carrying its help and its check (cleanrl's style).

The command line is generated from these fields (`prune_env.cli.parser`), a run's
``args.json`` is their `Options.to_dict` and is read back with `Options.from_dict`, and every
config checks itself when made, so the library, the command line and a resumed run accept and
refuse the same values. No torch here: ``--help`` answers at once.

Example::

    from prune_env.config import DataConfig, EnvConfig, RunConfig
    run = RunConfig(data=DataConfig(model="resnet20", seed=1), env=EnvConfig(target=0.6))
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from prune_env import checks
from prune_env.catalog import (
    AGENTS,
    BASELINES,
    COSTS,
    DATASETS,
    ENERGY_METERS,
    OWN_MODELS,
    POLICIES,
    REWARDS,
    SB3_ACTIONS,
    SEGMENTATION_MODELS,
)
from prune_env.checks import Options, option

#: Mixed-precision modes of training (`prune_env.training.loop.TrainConfig.amp`).
AMP = ("off", "bf16")

__all__ = ["AgentConfig", "BaselineConfig", "CompareConfig", "DataConfig", "EnvConfig",
           "EpisodeConfig", "PretrainConfig", "RayConfig", "RunConfig", "SweepConfig"]

#: The agent options only L2PF takes and only the stable-baselines3 agents take (the others,
#: such as --tries, have no effect on sb3 and are not refused).
L2PF_OPTIONS = ("init_policy", "fixed_finetune", "pace_adapt", "finetune_budget")
SB3_OPTIONS = ("sb3", "sb3_action")

#: Where the L2PF tries run when there are several (`--tries-on`).
TRIES_ON = ("processes", "ray")


@dataclass(frozen=True)
class DataConfig(Options):
    """the network and the data"""

    model: str = option("resnet20", f"architecture: {', '.join(OWN_MODELS)}, or a torchvision "
                        "classification model name such as resnet18; on segmentation data "
                        f"{', '.join(SEGMENTATION_MODELS)} (default: resnet20)")
    dataset: str = option("fashion-mnist", "data set; fashion-scenes and cityscapes are "
                          "segmentation (default: fashion-mnist, from Debian's "
                          "dataset-fashion-mnist package when installed)", choices=DATASETS)
    data_dir: str | None = option(None, "folder holding the data set (FashionMNIST/raw, "
                                  "cifar-10-batches-py, train/ and test/ class folders, or "
                                  "Cityscapes' leftImg8bit/ and gtFine/)")
    download: bool = option(False, "let torchvision download a missing data set (needs "
                            "internet)", check=checks.flag)
    synthetic_size: int = option(3000, "training images of the synthetic data set, or "
                                 "training scenes of fashion-scenes (default: 3000)",
                                 check=checks.positive)
    image_size: int | None = option(None, "resize images to this size (default: the data "
                                    "set's own; 32 for synthetic and imagefolder); the canvas "
                                    "of fashion-scenes (default 64); the rows of cityscapes "
                                    "frames, 1:2 (default 128)",
                                    check=checks.positive)
    seed: int = option(0, "seed of the train/validation split, weights and batches",
                       check=checks.seed)
    checkpoint: str | None = option(None, "base checkpoint path (default: "
                                    "checkpoints/MODEL-DATASET.pt, or "
                                    "$PRUNE_ENV_CHECKPOINTS/MODEL-DATASET.pt)")


@dataclass(frozen=True)
class PretrainConfig(Options):
    """pretraining budget (used where the base network must be trained)"""

    epochs: float = option(3.0, "passes over the training split (default: 3)",
                           check=checks.positive_real)
    batch_size: int = option(256, "images per SGD step (default: 256)", check=checks.positive)
    lr: float = option(0.2, "peak OneCycle learning rate (default: 0.2)",
                       check=checks.positive_real)
    # seeds the initial weights and the batch order: the data's seed (`RunConfig.pretraining`)
    seed: int = option(0, "", check=checks.seed, cli=False)
    # random flips and crops; off since a 3-epoch budget underfits rather than overfits
    augment: bool = option(False, "", check=checks.flag, cli=False)
    # where it trains: the environment's --device and --amp (`RunConfig.pretraining`), or the
    # pretrain command's own
    device: str = option("cpu", "", check=checks.device, cli=False)
    amp: str = option("off", "", choices=AMP, cli=False)


@dataclass(frozen=True)
class EnvConfig(Options):
    """the environment: cost, target, reward, fine-tuning, measurement"""

    cost: str = option("latency", "cost the reward uses (default: latency)", choices=COSTS)
    target: float = option(0.5, "cost target as a fraction of the base cost (default: 0.5)",
                           check=checks.share)
    reward: str = option("psi-phi", "reward form (default: psi-phi, try-and-learn's; "
                         "amc-constrained: AMC's -error, for the budget clamp of "
                         "--sb3-action ratio or amc)",
                         choices=REWARDS)
    allowed_drop: float = option(0.02, "accuracy drop b at which psi reaches 0 (default: "
                                 "0.02)", check=checks.positive_real)
    finetune_price: float = option(0.05, "reward price of a full fine-tune at one step "
                                   "(psi*phi - price*finetune; default: 0.05). A step's "
                                   "psi*phi is of order 0.1-3 (psi counts drops of b): at "
                                   "0.05 L2PF learned to fine-tune ever longer, at 1.0 "
                                   "almost not at all (its episodes' networks at chance "
                                   "accuracy before the final fine-tune; README)",
                                   check=checks.non_negative_real)
    max_finetune_steps: int = option(50, "fine-tuning SGD steps at finetune=1 (default: 50)",
                                     check=checks.non_negative)
    val_samples: int = option(2000, "validation images scored at each step (default: 2000)",
                              check=checks.positive)
    device: str = option("cpu", "where training, validation and (unless --measure-device) "
                         "latency and energy run: cpu, cuda, cuda:N (default: cpu)",
                         check=checks.device)
    measure_device: str | None = option(None, "where latency and energy are measured, when "
                                        "not where training runs: cpu, cuda, cuda:N "
                                        "(default: --device)", check=checks.device)
    amp: str = option("off", "mixed precision of fine-tuning and pretraining: bf16 or off "
                      "(default: off)", choices=AMP)
    threads: int = option(1, "CPU threads for timing (default: 1, embedded-style batch-1 "
                          "latency; on 2 cores ResNet-20 runs no faster on 2 threads and its "
                          "timings vary about 5x more)", check=checks.positive)
    latency_batch: int = option(32, "the second batch size the final report times, besides "
                                "1 (default: 32)", check=checks.positive)
    deploy_shape: str | None = option(None, "CxHxW of one deployed input, e.g. 3x512x1024 "
                                      "for a segmentation network trained on crops: latency, "
                                      "the latency table, energy, FLOPs and the ONNX files are "
                                      "measured at it (default: the data's own size)",
                                      check=checks.shape)
    latency_table: str | None = option(None, "latency lookup-table file, .json (default: "
                                       "~/.cache/prune-env/latency-table.json)",
                                       check=checks.json_file)
    correct_table: int = option(0, "check the latency table against measurement before the "
                                "run: time N copies of the base with random widths and "
                                "correct every prediction by the line fitted on them "
                                "(cached per machine; default: 0, the table as it is)",
                                check=checks.non_negative)
    correct_episodes: bool = option(False, "close the loop on the latency table: after each "
                                    "episode, time its network against the base and refit "
                                    "the correction on every network timed so far, so the "
                                    "reward's latency follows measurement (latency cost only)",
                                    check=checks.flag)
    energy_meter: str = option("auto", "energy sensor: auto (NVML on a GPU, RAPL on a CPU, "
                               "else a Jetson's INA3221), or one of nvml, rapl, jetson, zeus "
                               "(pip install 'prune-env[zeus]') (default: auto)",
                               choices=ENERGY_METERS)


@dataclass(frozen=True)
class RunConfig(Options):
    """where a run goes and how it ends"""

    data: DataConfig = field(default_factory=DataConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    runs_dir: str = option("runs", "parent of the new run directory (default: runs)")
    final_steps: int = option(300, "SGD steps of the final fine-tune (default: 300)",
                              check=checks.non_negative)
    no_export: bool = option(False, "skip the ONNX file and its onnxruntime timing "
                             "(`prune-env export` later)", check=checks.flag)
    torchscript: bool = option(False, "also write model.ts (TorchScript, by tracing; "
                               "deprecated in torch 2.14)", check=checks.flag)

    @property
    def export_formats(self) -> tuple[str, ...]:
        """The files the final stage writes."""
        if self.no_export:
            return ()
        return ("onnx", "torchscript") if self.torchscript else ("onnx",)

    @property
    def pretraining(self) -> PretrainConfig:
        """The pretraining budget, seeded by the data's seed."""
        return PretrainConfig(self.pretrain.epochs, self.pretrain.batch_size,
                              self.pretrain.lr, self.data.seed, self.pretrain.augment,
                              self.env.device, self.env.amp)


@dataclass(frozen=True)
class EpisodeConfig(Options):
    """the episode's simple policy"""

    policy: str = option("l1", "keep-all, random (seeded), or l1: keep the largest-L1 "
                         "filters (default: l1)", choices=POLICIES)
    ratio: float = option(0.5, "fraction of each group's filters kept by random and l1 "
                          "(default: 0.5)", check=checks.share)
    finetune: float = option(0.2, "fine-tune fraction chosen at every step, in [0, 1] "
                             "(default: 0.2)", check=checks.fraction)


@dataclass(frozen=True)
class AgentConfig(Options):
    """the agent, its budget and hyper-parameters"""

    agent: str = option("l2pf", "l2pf (ours: hybrid action, tries) or a stable-baselines3 "
                        "agent through a flat action, --sb3-action (default: l2pf)", choices=AGENTS)
    episodes: int = option(30, "training episodes in all; 0 runs the policy as it starts "
                           "(fresh, or from --init-policy) (default: 30)",
                           check=checks.non_negative)
    tries: int = option(4, "L2PF: actions tried on each group per update (default: 4)",
                        check=checks.positive)
    agent_lr: float = option(3e-3, "L2PF: Adam learning rate of the policy (default: 3e-3)",
                             check=checks.positive_real)
    ent_coef: float = option(0.01, "L2PF: entropy bonus (default: 0.01)",
                             check=checks.non_negative_real)
    pace_weight: float = option(10.0, "L2PF: weight of the term pacing the cost toward the "
                                "target (default: 10.0)", check=checks.non_negative_real)
    init_policy: str = option("", "L2PF: start from the policy another L2PF run learned: its "
                              "run directory, or a sweep directory (its L2PF run of this "
                              "run's seed and target), to re-prune a retrained or deeper "
                              "network with what was learned (default: a fresh policy)")
    pace_adapt: float = option(0.0, "L2PF: dual ascent on the pace weight: after each "
                               "episode it is multiplied by exp(PACE_ADAPT x (cost - target) / "
                               "target), growing while episodes miss the target (default: 0, "
                               "fixed)", check=checks.non_negative_real)
    fixed_finetune: float | str = option(
        "learned", "L2PF: how long each group is fine-tuned: 'learned' (the hybrid action), "
        "or a fraction of --max-finetune-steps used at every group, the fixed-duration "
        "ablation (default: learned)", check=checks.word_or("learned", checks.fraction))
    finetune_budget: float | None = option(
        None, "L2PF: the mean fraction of --max-finetune-steps the learned durations may "
        "spend; a price on fine-tuning adapts after each group to hold it, so the agent "
        "decides where a given compute goes (default: none, the reward's fixed price)",
        check=checks.share)
    budget_adapt: float = option(0.2, "L2PF with --finetune-budget: the price's step after "
                                 "each group, times (fraction spent - budget) / budget "
                                 "(default: 0.2)", check=checks.positive_real)
    sb3: list[str] = option([], "stable-baselines3 hyper-parameters, e.g. n_steps=48 "
                            "learning_rate=1e-4 (default: sb3's, rollouts scaled to episodes)",
                            many=True, metavar="KEY=VALUE")
    sb3_action: str = option("ratio", "the action an sb3 agent takes: 'ratio' (AMC's: the "
                             "fraction of each group's filters kept, chosen by L1 norm, and "
                             "the fine-tune fraction), 'amc' (the same within AMC's bounds: "
                             "ratios 0.2 to 1) or 'filters' (a keep score per filter "
                             "and the fine-tune fraction) (default: ratio)",
                             choices=SB3_ACTIONS)
    n_envs: int = option(1, "environments in parallel processes (sb3: SubprocVecEnv; L2PF: "
                         "tries) (default: 1)", check=checks.positive)
    checkpoint_every: int = option(1, "checkpoint every N episodes (default: 1)",
                                   check=checks.positive)
    tries_on: str = option("processes", "L2PF with --n-envs > 1: the tries run in worker "
                           "processes on this machine, or as Ray actors anywhere in the Ray "
                           "cluster (--address) (default: processes)", choices=TRIES_ON)

    def told(self, names: tuple[str, ...]) -> list[str]:
        """Which of the options ``names`` differ from their defaults (``--sb3-action ratio``
        cannot be told from the default)."""
        default = AgentConfig()
        return [name for name in names if getattr(self, name) != getattr(default, name)]

    def for_agent(self, agent: str) -> AgentConfig:
        """This config for ``agent`` in a sweep of several kinds: the options of the other
        kind (L2PF's for an sb3 agent, sb3's for L2PF) back at their defaults, so one
        command can give each kind its own."""
        other = SB3_OPTIONS if agent == "l2pf" else L2PF_OPTIONS
        default = AgentConfig()
        return replace(self, agent=agent,
                       **{name: getattr(default, name) for name in other})


@dataclass(frozen=True)
class BaselineConfig(Options):
    """the baselines' own options"""

    ratio: float | str = option("auto", "fraction of each group's filters kept by random and "
                                "l1, or 'auto': the largest uniform ratio whose predicted "
                                "cost meets the target (default: auto)",
                                check=checks.auto_or(checks.share))
    finetune: float = option(0.2, "fine-tune fraction at every step, in [0, 1] (default: 0.2)",
                             check=checks.fraction)
    joint_steps: int = option(300, "joint: SGD steps training the network and its filter "
                              "masks together (default: 300)", check=checks.positive)
    joint_weight: float = option(5.0, "joint: weight of the compression loss (default: 5)",
                                 check=checks.positive_real)
    swd_steps: int = option(300, "swd: SGD steps of the penalised warm-up (default: 300)",
                            check=checks.positive)
    alf_steps: int = option(300, "alf: SGD steps training the autoencoder blocks "
                            "(default: 300)", check=checks.positive)
    budget: float | str = option("auto", "gating: budget r of every gate, or 'auto': the "
                                 "largest r whose estimated cost meets the target minus a "
                                 "0.04 margin for drift while training (default: auto)",
                                 check=checks.auto_or(checks.share))
    gating_steps: int = option(300, "gating: SGD steps training backbone and predictors "
                               "together at the budget before the episode (default: 300)",
                               check=checks.positive)
    predictor_steps: int = option(30, "gating: predictor-only batches after each step "
                                  "(default: 30)", check=checks.non_negative)
    gating_images: int = option(100, "gating: test images (resized to --deploy-shape) the "
                                "final report times the executed network on, one at a time "
                                "(default: 100; at 512x1024 each costs a second or more)",
                                check=checks.positive)
    aim_rounds: int = option(0, "latency cost: time the chosen network against the base, "
                             "refit the table's correction on the run's own networks and run "
                             "the method again aimed by it, up to this many more times, until "
                             "the measured ratio lands at most 0.02 under the target "
                             "(default: 0, aim by the table once)", check=checks.non_negative)
    criterion: str = option("taylor", "layerprune: block importance (default: taylor)",
                            choices=("taylor", "l1", "bn", "imprinting"))
    criterion_batches: int = option(100, "layerprune: training batches of the taylor pass "
                                    "(default: 100)", check=checks.positive)


@dataclass(frozen=True)
class CompareConfig(Options):
    """where the comparison goes"""

    csv: str | None = option(None, "CSV path (default: none; sweep: SWEEP_DIR/compare.csv)")
    plot: str | None = option(None, "Pareto plots of test accuracy against measured latency, "
                              "FLOPs (and energy) as STEM-latency.png, ... (default: none; "
                              "sweep: SWEEP_DIR/pareto)", metavar="STEM")
    logdir: str | None = option(None, "also log the plots as TensorBoard images there "
                                "(default: none; sweep: SWEEP_DIR/pareto)")


@dataclass(frozen=True)
class RayConfig(Options):
    """the Ray cluster (sweeps; L2PF tries with --tries-on ray)"""

    address: str | None = option(None, "a running Ray cluster's head, HOST:PORT (made with "
                                 "`ray start --head`; default: a new local Ray instance on "
                                 "this machine)")
    ray_cpus: int | None = option(None, "CPUs the local Ray instance offers (default: all of "
                                  "this machine's; ignored with --address)",
                                  check=checks.positive)
    run_cpus: int = option(1, "CPUs each run (or try) reserves, and its torch threads "
                           "(default: 1)", check=checks.positive)
    run_gpus: float = option(0.0, "GPUs each run (or try) reserves, a fraction to share one "
                             "(default: 0; 1 with --device cuda)",
                             check=checks.non_negative_real)


@dataclass(frozen=True)
class SweepConfig(Options):
    """the sweep's grid and where its runs write"""

    seeds: list[int] = option([], "seeds of every (method, target) (default: --seed)",
                              check=checks.seed, many=True)
    models: list[str] = option([], "networks, each from its own default checkpoint "
                               "(default: --model)", many=True)
    shared_storage: bool = option(False, "the sweep directory is on storage every node sees "
                                  "at the same path: runs on other machines write there "
                                  "directly (default: runs on other machines send their "
                                  "run directories back through Ray)", check=checks.flag)


#: Every method a sweep or a baseline run can name.
METHODS = AGENTS + BASELINES
