"""DiffusionGemma's rollout entry refuses the absorbing sampler's settings instead of ignoring them,
and takes every one at its default (the trainer and ``unmask eval`` pass all of them)."""

from __future__ import annotations

import pytest
import torch

from unmask.errors import UserError
from unmask.models.diffusion_gemma import tiny_diffusion_gemma
from unmask.recipe import RolloutConfig
from unmask.rollouts.sampler_config import SamplerConfig
from unmask.rollouts.uniform_rollout import generate_renoise

#: the settings DiffusionGemma's sampler reads (explicit arguments of ``generate_renoise``)
READ = {"gen_length", "steps", "block_length"}
#: a valid value other than the default, for every setting it does not read
OTHER = {
    "temperature": 1.0, "remasking": "rcr", "cfg_scale": 1.0, "threshold": 0.9, "dynamic_threshold": 0.9,
    "schedule": "cosine", "schedule_k": 3.0, "confidence": "margin", "cache": "prefix", "cache_refresh": 2,
    "partial_head": False, "early_exit": True,
}  # fmt: skip


@pytest.fixture(scope="module")
def model():
    return tiny_diffusion_gemma(0).eval()


def run(model, **settings):
    length = model.config.canvas_length
    prompt = torch.tensor([[5, 6, 7], [8, 9, 10]])
    return generate_renoise(model, prompt, gen_length=length, steps=3, block_length=length, seed=4, **settings)


def test_every_unread_setting_has_a_case() -> None:
    assert set(OTHER) == set(SamplerConfig.model_fields) - READ


@pytest.mark.parametrize("name", sorted(OTHER))
def test_a_non_default_absorbing_setting_is_one_clear_error(model, name: str) -> None:
    with pytest.raises(UserError, match=rf"^{name}=.*DiffusionGemma's sampler does not use it") as err:
        run(model, **{name: OTHER[name]})
    assert "\n" not in str(err.value)


def test_the_defaults_the_trainer_and_eval_pass_are_taken_and_change_nothing(model) -> None:
    plain = run(model)
    length = model.config.canvas_length
    for config in (SamplerConfig(gen_length=length, steps=3, block_length=length),
                   RolloutConfig(max_completion_length=length, steps=3, block_length=length)):
        settings = {k: v for k, v in config.generate_kwargs().items() if k not in READ}
        assert torch.equal(run(model, **settings).tokens, plain.tokens)


def test_an_unknown_setting_is_named(model) -> None:
    with pytest.raises(UserError, match="unknown sampler setting remask"):
        run(model, remask="rcr")
