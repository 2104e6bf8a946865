# unmask — every target runs inside .venv, created on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# On a CPU machine this takes the local CPU wheel; elsewhere PyPI's build for your platform.
TORCH_SPEC ?= torch==2.13.0
# the exact versions the suite last passed with (pip constraints); `make lock` rewrites it
LOCK := requirements-lock.txt
LOCK_VENV ?= .venv-lock
# both cores: pytest-xdist workers (`PYTEST_WORKERS=0` runs in one process)
PYTEST_WORKERS ?= 2
RECIPE ?= tiny/countdown_diffu_grpo_trajectory
SFT_RECIPE ?= tiny/sft_countdown
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
.PHONY: help install lock train sft sft-rl eval test test-slow bench lint tiny-model tiny-block-model tiny-dgemma-model clean

help:  ## list the targets (this text)
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml $(LOCK)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c $(LOCK) pip
	$(PY) -m pip install -q -c $(LOCK) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c $(LOCK) -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## create .venv and install unmask with the locked versions (requirements-lock.txt)

lock:  ## re-resolve to the newest versions pyproject.toml allows, run the tests there, rewrite the lock only if they pass
	rm -rf $(LOCK_VENV)
	python3 -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e '.[dev]'
	$(LOCK_VENV)/bin/python -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)
	{ echo "# pip constraints: the versions 'make test' last passed with; written by 'make lock'"; \
	  $(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable | sed -E 's/^(torch==[^+]*)\+.*/\1/'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCK_VENV)
	@echo "$(LOCK) rewritten from a green run; run 'make install' (or 'make clean install') to use it"

# the unmask command in one process, or under `accelerate launch` with NPROC processes
UNMASK = $(if $(filter 1,$(NPROC)),$(VENV)/bin/unmask,$(PY) -m accelerate.commands.launch \
	$(if $(ACCELERATE_CONFIG),--config_file $(ACCELERATE_CONFIG),--multi_gpu) --num_processes $(NPROC) -m unmask.cli)

train: $(VENV)/.installed  ## run RECIPE (default: the tiny Countdown run, ~4 min on a 2-core CPU); ARGS="key=value ..." overrides; NPROC=2 for 2 processes
	$(UNMASK) train $(RECIPE) $(ARGS)

sft: $(VENV)/.installed  ## masked-diffusion SFT with SFT_RECIPE (default tiny/sft_countdown, CPU); ARGS overrides; NPROC as for train
	$(UNMASK) sft $(SFT_RECIPE) $(ARGS)

sft-rl: $(VENV)/.installed  ## SFT_RECIPE, then the RL recipe it feeds (sft.feeds) on its output_dir/final
	$(UNMASK) sft $(SFT_RECIPE) $(ARGS) --then-train

eval: $(VENV)/.installed  ## evaluate MODEL on BENCH (EVAL_ARGS for more options)
	$(VENV)/bin/unmask eval --model $(MODEL) --bench $(BENCH) $(EVAL_ARGS)

test: $(VENV)/.installed  ## run the test suite (CPU, under 10 minutes)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test-slow: $(VENV)/.installed  ## run the tests marked slow
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

bench: $(VENV)/.installed  ## run every benchmark script in bench/ (they print numbers)
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

lint: $(VENV)/.installed  ## ruff check
	$(VENV)/bin/ruff check .

TINY_BUILD := runs/tiny-countdown-build
tiny-model: $(VENV)/.installed  ## rebuild the shipped tiny model through `unmask pretrain` (= unmask sft; ~35 min, one thread)
	rm -rf $(TINY_BUILD)
	OMP_NUM_THREADS=1 $(VENV)/bin/unmask pretrain output_dir=$(TINY_BUILD)
	$(PY) -m unmask.assets.ship $(TINY_BUILD)/final unmask/assets/tiny-countdown

BLOCK_BUILD := runs/tiny-countdown-block-build
# one thread: float sums then do not depend on the core count, so the bytes reproduce
tiny-block-model: $(VENV)/.installed  ## rebuild the shipped tiny block-diffusion model through `unmask sft` (~15 min, one thread)
	rm -rf $(BLOCK_BUILD)
	OMP_NUM_THREADS=1 $(VENV)/bin/unmask sft tiny/sft_countdown_block output_dir=$(BLOCK_BUILD)
	$(PY) -m unmask.assets.ship $(BLOCK_BUILD)/final unmask/assets/tiny-countdown-block

DGEMMA_BUILD := runs/tiny-countdown-dgemma-build
tiny-dgemma-model: $(VENV)/.installed  ## rebuild the shipped tiny DiffusionGemma through `unmask sft` (~12 min, one thread)
	rm -rf $(DGEMMA_BUILD)
	OMP_NUM_THREADS=1 $(VENV)/bin/unmask sft tiny/sft_countdown_dgemma output_dir=$(DGEMMA_BUILD)
	$(PY) -m unmask.assets.ship $(DGEMMA_BUILD)/final unmask/assets/tiny-countdown-dgemma

clean:  ## remove .venv and build outputs
	rm -rf $(VENV) $(LOCK_VENV) build *.egg-info
