# prune-env: `make demo` and `make test` work on a fresh machine (they create .venv).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FASHION := /usr/share/datasets/fashion-mnist

.PHONY: install data demo test lint bench clean

install: $(VENV)/.installed

# torch and torchvision first, pinned together: the pair that imports on these machines.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Fashion-MNIST from Debian's package where apt exists (no download needed at run time).
data:
	@if [ ! -d $(FASHION) ] && command -v apt-get >/dev/null; then \
		apt-get update -q && apt-get install -y -q dataset-fashion-mnist; \
	fi

# The base model is pretrained once (about 10 minutes on 2 cores), then reused.
CHECKPOINT := checkpoints/resnet20-fashion-mnist.pt

$(CHECKPOINT): | install data
	$(VENV)/bin/prune-env pretrain --model resnet20 --dataset fashion-mnist

demo: install data $(CHECKPOINT)
	$(VENV)/bin/prune-env episode --policy l1 --ratio 0.5 --model resnet20 \
		--dataset fashion-mnist --cost latency --target 0.5

lint: install
	$(VENV)/bin/ruff check .

test: install data lint
	$(PY) -m pytest -q

bench: install data
	$(PY) -m pytest -q -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
