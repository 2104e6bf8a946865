"""Shared test set-up: CPU only, one thread, deterministic, data dir discovery."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Triton kernels run on CPU tensors through the interpreter; must be set before torch
# (dynamo) imports triton in compiled mode.
os.environ.setdefault("TRITON_INTERPRET", "1")
# a local Ray started by a test (and every process it spawns) listens on 127.0.0.1 only,
# not on the machine's network address
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import torch  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True, warn_only=True)

SHARED_DATA = Path(os.environ.get("UNMASK_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The benchmark files in ../shared/data, or skip with the reason."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA} (set UNMASK_SHARED_DATA)")
    return SHARED_DATA


SHARED_MODELS = Path(os.environ.get("UNMASK_SHARED_MODELS", SHARED_DATA.parent / "models"))


@pytest.fixture(scope="session")
def shared_models() -> Path:
    """The real LLaDA / Dream config and tokenizer files in ../shared/models, or skip with the reason."""
    if not SHARED_MODELS.is_dir():
        pytest.skip(f"real model files not found at {SHARED_MODELS} (set UNMASK_SHARED_MODELS)")
    return SHARED_MODELS


@pytest.fixture(scope="module")
def ray_pool():
    """One local Ray session and one-actor LoRA pool per test module: starting them costs seconds."""
    ray = pytest.importorskip("ray")
    import functools

    from test_trainer import make_model

    from unmask.rl.trainer import lora_replica
    from unmask.rollouts.pool import RolloutPool

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    pool = RolloutPool(functools.partial(lora_replica, make_model, r=4, alpha=8), num_workers=1)
    yield pool
    pool.shutdown()
    ray.shutdown()
