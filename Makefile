# unmask — every target runs inside .venv, created on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# On a CPU machine this takes the local CPU wheel; elsewhere PyPI's build for your platform.
TORCH_SPEC ?= torch==2.13.0
RECIPE ?= tiny/countdown_diffu_grpo_trajectory
ARGS ?=
MODEL ?= builtin:tiny-countdown
BENCH ?= countdown
EVAL_ARGS ?=
PYTEST_ARGS ?=
# training processes (data-parallel ranks); >1 runs `accelerate launch` (GPUs, or gloo for device: cpu recipes)
NPROC ?= 1
# an accelerate config, e.g. recipes/accelerate/ddp.yaml; NPROC overrides its num_processes
ACCELERATE_CONFIG ?=

.DEFAULT_GOAL := help
.PHONY: help install train eval test test-slow bench lint tiny-model clean

help:  ## list the targets (this text)
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## create .venv and install unmask with its dev tools

train: $(VENV)/.installed  ## run RECIPE (default: the tiny Countdown run, ~7 min on a CPU); ARGS="key=value ..." overrides; NPROC=2 for 2 processes
ifeq ($(NPROC),1)
	$(VENV)/bin/unmask train $(RECIPE) $(ARGS)
else
	$(PY) -m accelerate.commands.launch $(if $(ACCELERATE_CONFIG),--config_file $(ACCELERATE_CONFIG),--multi_gpu) \
		--num_processes $(NPROC) -m unmask.cli train $(RECIPE) $(ARGS)
endif

eval: $(VENV)/.installed  ## evaluate MODEL on BENCH (EVAL_ARGS for more options)
	$(VENV)/bin/unmask eval --model $(MODEL) --bench $(BENCH) $(EVAL_ARGS)

test: $(VENV)/.installed  ## run the test suite (CPU, under 10 minutes)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: $(VENV)/.installed  ## run the tests marked slow
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

bench: $(VENV)/.installed  ## run every benchmark script in bench/ (they print numbers)
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

lint: $(VENV)/.installed  ## ruff check
	$(VENV)/bin/ruff check .

tiny-model: $(VENV)/.installed  ## rebuild the shipped tiny model byte for byte (~35 min on one core)
	$(VENV)/bin/unmask pretrain --task countdown --out unmask/assets/tiny-countdown --seed 0

clean:  ## remove .venv and build outputs
	rm -rf $(VENV) build *.egg-info
