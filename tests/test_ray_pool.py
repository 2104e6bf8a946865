"""RolloutPool on local Ray: same tokens as in-process, restarts, adapter pushes."""

from __future__ import annotations

import sys

import pytest
import torch

ray = pytest.importorskip("ray")

from unmask.models.lora import apply_lora  # noqa: E402
from unmask.models.tiny import tiny  # noqa: E402
from unmask.rollouts.generate import generate  # noqa: E402
from unmask.rollouts.pool import RolloutPool  # noqa: E402

SETTINGS = {"gen_length": 8, "steps": 4, "block_length": 4, "temperature": 0.9, "remasking": "rcr", "seed": 7}


def lora_tiny():
    """The replica every actor builds: a small tiny model wrapped with LoRA."""
    torch.set_num_threads(1)
    return apply_lora(tiny({"d_model": 32, "n_heads": 2, "n_layers": 1, "mlp_hidden_size": 64}, seed=0), r=2)


def adapter(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(p.shape, generator=gen) for name, p in lora_tiny().named_parameters() if ".lora_" in name}


@pytest.fixture(scope="module")
def pool():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    pool = RolloutPool(lora_tiny, 2)
    yield pool
    pool.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def prompts():
    return torch.randint(5, 100, (4, 6), generator=torch.Generator().manual_seed(0))


def test_pool_matches_in_process(pool, prompts):
    local = generate(lora_tiny().eval(), prompts, record=True, **SETTINGS)
    pooled = pool.generate(prompts, record=True, **SETTINGS)
    assert torch.equal(pooled.tokens, local.tokens)
    assert torch.equal(pooled.step_pred, local.step_pred) and pooled.settings["seed"] == [7, 8, 9, 10]


@pytest.mark.slow  # one more actor start: ~10 s on a busy 2-core machine
def test_killed_actor_is_replaced_and_its_rows_rerun(pool, prompts):
    local = generate(lora_tiny().eval(), prompts, **SETTINGS)
    ray.kill(pool._actors[1])
    assert torch.equal(pool.generate(prompts, **SETTINGS).tokens, local.tokens)


def test_adapter_update_reaches_every_actor(pool, prompts):
    before = [t.tokens for t in pool.map([{"prompt_ids": prompts, **SETTINGS}] * 2)]
    weights = adapter(1)
    pool.update_adapter({**weights, "model.embed.weight": torch.zeros(1)}, version=3)
    after = [t.tokens for t in pool.map([{"prompt_ids": prompts, **SETTINGS}] * 2)]
    reference = lora_tiny().eval()
    reference.load_state_dict(weights, strict=False)
    expected = generate(reference, prompts, **SETTINGS).tokens
    for old, new in zip(before, after, strict=True):
        assert not torch.equal(old, new) and torch.equal(new, expected)
    assert pool.version == 3


def test_in_process_pool_needs_no_ray(prompts):
    pool = RolloutPool(lora_tiny, 0)
    pool.update_adapter(adapter(2), version=1)
    reference = lora_tiny().eval()
    reference.load_state_dict(adapter(2), strict=False)
    assert torch.equal(pool.generate(prompts, **SETTINGS).tokens, generate(reference, prompts, **SETTINGS).tokens)


def test_the_local_ray_of_the_tests_listens_on_loopback_only(pool):
    import ray

    assert ray.is_initialized()
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
