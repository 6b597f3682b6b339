"""Names of what the package offers, importable without torch (so `--help` answers at once)."""

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "imagefolder", "synthetic")
OWN_MODELS = ("resnet20", "resnet32", "resnet56", "vgg11", "vgg16", "mobilenetv2")
COSTS = ("latency", "energy", "flops", "params")
REWARDS = ("psi-phi", "amc", "accuracy-cost")
POLICIES = ("keep-all", "random", "l1")
BASELINES = (*POLICIES, "swd", "layerprune", "alf", "gating")
AGENTS = ("l2pf", "ppo", "a2c", "sac")
