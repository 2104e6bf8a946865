"""One settings object for the sampler: every front end reads ``SamplerConfig`` and its one validation."""

from __future__ import annotations

import inspect

import pytest

from unmask.errors import UserError
from unmask.rollouts.confidence import CONFIDENCES
from unmask.rollouts.generate import generate
from unmask.rollouts.options import CONFIDENCE_NAMES
from unmask.rollouts.sampler_config import SamplerConfig, cli_label

#: generate() arguments that are not settings: the model, the batch and what to keep
NOT_SETTINGS = {"model", "prompt_ids", "hints", "attention_mask", "seed", "record", "progress"}
BASE = {"gen_length": 8, "steps": 4, "block_length": 4}


def test_every_generate_keyword_is_a_sampler_field_with_its_default():
    params = {n: p for n, p in inspect.signature(generate).parameters.items() if n not in NOT_SETTINGS}
    assert set(params) == set(SamplerConfig.model_fields)
    for name, param in params.items():
        field = SamplerConfig.model_fields[name]
        if param.default is inspect.Parameter.empty:
            assert field.is_required(), name
        else:
            assert field.default == param.default, name


def test_confidence_names_are_the_implemented_ones():
    assert set(CONFIDENCE_NAMES) == set(CONFIDENCES)


def test_generate_kwargs_round_trip():
    config = SamplerConfig.checked(**BASE, early_exit=True, partial_head=False, dynamic_threshold=0.5)
    kwargs = config.generate_kwargs()
    assert kwargs["early_exit"] is True and kwargs["partial_head"] is False and kwargs["dynamic_threshold"] == 0.5
    assert SamplerConfig.checked(**kwargs) == config


@pytest.mark.parametrize(
    ("bad", "python", "cli"),
    [
        ({"gen_length": 10}, "gen_length (10) must be a positive multiple of block_length (4)",
         "--gen-length (10) must be a positive multiple of --block-length (4)"),
        ({"steps": 0}, "steps must be positive, got 0", "--steps must be positive, got 0"),
        ({"threshold": 0.9, "remasking": "rcr"}, "threshold and remasking rcr exclude each other: drop one of them",
         "--threshold and --remasking rcr exclude each other: drop one of them"),
        ({"early_exit": True, "remasking": "rcr"},
         "early_exit needs committed tokens to stay: it cannot be used with remasking rcr",
         "--early-exit needs committed tokens to stay: it cannot be used with --remasking rcr"),
        ({"schedule": "square"}, "unknown schedule 'square': choose from linear, cosine, pow_k, log, exp",
         "unknown --schedule 'square': choose from linear, cosine, pow_k, log, exp"),
        ({"dynamic_threshold": 0.0}, "dynamic_threshold must be in (0, 1], got 0.0",
         "--dynamic-threshold must be in (0, 1], got 0.0"),
        ({"steps": "many"}, "steps: Input should be a valid integer", "--steps: Input should be a valid integer"),
        ({"stepz": 3}, "unknown sampler setting stepz", "unknown sampler setting --stepz"),
    ],
)
def test_a_mistake_is_one_line_naming_the_setting_as_typed(bad, python, cli):
    for label, expected in ((None, python), (cli_label, cli)):
        with pytest.raises(UserError) as info:
            SamplerConfig.checked(label, **{**BASE, **bad})
        assert str(info.value).startswith(expected) and "\n" not in str(info.value)
