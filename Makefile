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

.PHONY: install train eval test test-slow bench lint tiny-model clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

train: $(VENV)/.installed
ifeq ($(NPROC),1)
	$(VENV)/bin/unmask train $(RECIPE) $(ARGS)
else
	$(PY) -m accelerate.commands.launch $(if $(ACCELERATE_CONFIG),--config_file $(ACCELERATE_CONFIG),--multi_gpu) \
		--num_processes $(NPROC) -m unmask.cli train $(RECIPE) $(ARGS)
endif

eval: $(VENV)/.installed
	$(VENV)/bin/unmask eval --model $(MODEL) --bench $(BENCH) $(EVAL_ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

bench: $(VENV)/.installed
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

tiny-model: $(VENV)/.installed
	$(VENV)/bin/unmask pretrain --task countdown --out unmask/assets/tiny-countdown --seed 0

clean:
	rm -rf $(VENV) build *.egg-info
