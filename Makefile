# prune-env: `make demo` and `make test` work on a fresh machine (they create .venv).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FASHION := /usr/share/datasets/fashion-mnist

.PHONY: install data demo demo-seg test lint bench gpu clean

install: $(VENV)/.installed

# The exact versions we test with come from constraints.txt (pyproject.toml holds ranges);
# torch and torchvision first, pinned together: the pair that imports on these machines.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch torchvision
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

# Fashion-MNIST from Debian's package where apt exists (no download needed at run time).
data:
	@if [ ! -d $(FASHION) ] && command -v apt-get >/dev/null; then \
		apt-get update -q && apt-get install -y -q dataset-fashion-mnist; \
	fi

# The base model is pretrained once, then reused. The demo pretrains a shorter budget
# (1.5 epochs, about 5 minutes on 2 cores) to leave time for the agent within 20 minutes;
# `prune-env pretrain` alone uses the full default (3 epochs, about 10 minutes).
DEMO_CHECKPOINT := checkpoints/resnet20-fashion-mnist-demo.pt
DEMO_RUNS := runs/demo-$(shell date +%Y%m%d-%H%M%S)
DEMO_TARGET ?= 0.7
DEMO_ENV := --checkpoint $(DEMO_CHECKPOINT) --val-samples 500 --max-finetune-steps 20 \
	--target $(DEMO_TARGET) --final-steps 200 --runs-dir $(DEMO_RUNS)
PRUNE_ENV := $(VENV)/bin/prune-env

$(DEMO_CHECKPOINT): | install data
	$(PRUNE_ENV) pretrain --model resnet20 --dataset fashion-mnist --epochs 1.5 \
		--checkpoint $@

# Agent and baselines at the same measured-latency target, then one comparison table.
demo: install data $(DEMO_CHECKPOINT)
	$(PRUNE_ENV) train --agent l2pf --episodes 2 --tries 4 --n-envs 2 $(DEMO_ENV)
	for name in keep-all random l1; do \
		$(PRUNE_ENV) baseline $$name --no-export $(DEMO_ENV) || exit 1; \
	done
	$(PRUNE_ENV) compare $(DEMO_RUNS)/* --csv $(DEMO_RUNS)/compare.csv \
		--plot $(DEMO_RUNS)/pareto --logdir $(DEMO_RUNS)/pareto
	@echo "\nTensorBoard: $(VENV)/bin/tensorboard --logdir runs"

# Segmentation at the deployment resolution: the small FCN trained on 64x64 Fashion-MNIST
# scenes, pruned by the agent and two baselines, latency measured on 1x512x1024 frames.
SEG_CHECKPOINT := checkpoints/resnet20-fcn-fashion-scenes-demo.pt
SEG_RUNS := runs/demo-seg-$(shell date +%Y%m%d-%H%M%S)
SEG_DATA := --model resnet20-fcn --dataset fashion-scenes --synthetic-size 6000
SEG_ENV := $(SEG_DATA) --checkpoint $(SEG_CHECKPOINT) --val-samples 300 \
	--max-finetune-steps 20 --target $(DEMO_TARGET) --final-steps 200 \
	--deploy-shape 1x512x1024 --latency-batch 2 --runs-dir $(SEG_RUNS)

$(SEG_CHECKPOINT): | install data
	$(PRUNE_ENV) pretrain $(SEG_DATA) --epochs 8 --batch-size 64 --lr 0.1 --checkpoint $@

demo-seg: install data $(SEG_CHECKPOINT)
	$(PRUNE_ENV) train --agent l2pf --episodes 2 --tries 4 --n-envs 2 --no-export $(SEG_ENV)
	for name in l1 layerprune; do \
		$(PRUNE_ENV) baseline $$name --no-export --criterion imprinting $(SEG_ENV) || exit 1; \
	done
	$(PRUNE_ENV) compare $(SEG_RUNS)/* --csv $(SEG_RUNS)/compare.csv \
		--plot $(SEG_RUNS)/pareto --logdir $(SEG_RUNS)/pareto
	@echo "\nTensorBoard: $(VENV)/bin/tensorboard --logdir runs"

# ruff, the import contracts of pyproject.toml (imports point one way), the type checker
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# The tests that assert measured times first, alone on the machine (nothing left over from
# other tests, such as Ray processes shutting down), then the rest in two pytest-xdist
# workers, one per core and one torch thread each (the tests on Ray take turns in one).
test: install data lint
	$(PY) -m pytest -q -m 'timing and not bench' --durations=5
	$(PY) -m pytest -q -n 2 --dist loadgroup -m 'not bench and not timing' --durations=25

# The long checks, then the short version of every README experiment (`prune-env bench NAME
# --short`: synthetic data, one seed, a few episodes) into runs/bench-short; the full ones are
# `prune-env bench NAME` (README, "Benches").
BENCHES := learning finetune cost methods transfer
bench: install data
	$(PY) -m pytest -q -m bench
	for name in $(BENCHES); do $(PRUNE_ENV) bench $$name --short || exit 1; done

# The GPU paths (CUDA timing, NVML energy, training and whole runs on cuda); `make test`
# collects them too and skips them, with the reason, where no GPU is visible.
gpu: install data
	$(PY) -m pytest -q -rs -m gpu

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
