"""One settings object for the sampler: every front end reads ``SamplerConfig`` and its one validation."""

from __future__ import annotations

import html
import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from unmask.assets import builtin_path
from unmask.cli import build_parser, main
from unmask.errors import RecipeError, UserError
from unmask.evaluation.settings import settings_grid
from unmask.evaluation.store import SAMPLES_FILE, read_samples
from unmask.models import load_model
from unmask.models.generation import GENERATION_CONFIG, read_generation_defaults
from unmask.recipe import load_recipe
from unmask.rl.rollout import encode_prompts
from unmask.rollouts.cli import held_out
from unmask.rollouts.confidence import CONFIDENCES
from unmask.rollouts.generate import generate
from unmask.rollouts.options import CONFIDENCE_NAMES
from unmask.rollouts.render import denoising_frames
from unmask.rollouts.sampler_config import SamplerConfig, cli_label
from unmask.rollouts.sampler_flags import GRID_SETTINGS, given_settings

#: generate() arguments that are not settings: the model, the batch and what to keep
NOT_SETTINGS = {"model", "prompt_ids", "hints", "attention_mask", "seed", "record", "progress"}
BASE = {"gen_length": 8, "steps": 4, "block_length": 4}
REAL_MODELS = Path("/work/shared/models")


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


# -- one validation behind every front end -------------------------------------------------

MISTAKES = {
    # the mistake: (python keywords, the shared sentence with the setting names as python spells them)
    "threshold_rcr": ({"threshold": 0.9, "remasking": "rcr"}, "threshold and remasking rcr exclude each other: drop one of them"),
    "steps": ({"steps": 0}, "steps must be positive, got 0"),
}


def _flags(settings: dict[str, Any]) -> list[str]:
    return [item for name, value in settings.items() for item in (cli_label(name), str(value))]


def _spelled_as_python(message: str) -> str:
    return message.replace("rollout.", "").replace("--", "")


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_the_same_mistake_reads_the_same_from_every_front_end(mistake, tmp_path, capsys):
    bad, sentence = MISTAKES[mistake]
    messages = {}
    with pytest.raises(UserError) as info:
        SamplerConfig.checked(**{**BASE, **bad})
    messages["python"] = str(info.value)

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"rollout": bad}))
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe)
    messages["recipe"] = str(info.value)

    (tmp_path / GENERATION_CONFIG).write_text(json.dumps(bad))
    with pytest.raises(UserError) as info:
        read_generation_defaults(tmp_path)
    messages["generation_config.json"] = str(info.value)

    for command in (["sample"], ["eval", "--model", "builtin:tiny-countdown", "--limit", "1", "--out", str(tmp_path / "e")]):
        capsys.readouterr()
        assert main([*command, *_flags(bad)]) == 2
        messages[command[0]] = capsys.readouterr().err.strip()

    for front, message in messages.items():
        assert "\n" not in message, front
        assert _spelled_as_python(message).endswith(sentence), (front, message)
    assert "--" in messages["sample"] and "--" in messages["eval"] and "rollout." in messages["recipe"]


@pytest.mark.slow  # importing TRL takes ~10 s on the 2-core machine
def test_the_trl_front_end_checks_with_the_same_rules(tmp_path):
    from unmask.integrations.trl import DiffusionGRPOConfig

    for bad, sentence in MISTAKES.values():
        config = DiffusionGRPOConfig(str(tmp_path), use_cpu=True, bf16=False, report_to=[], **bad)
        with pytest.raises(UserError) as info:
            config.recipe()
        assert _spelled_as_python(str(info.value)).endswith(sentence)
    config = DiffusionGRPOConfig(str(tmp_path), use_cpu=True, bf16=False, report_to=[], early_exit=True,
                                 partial_head=False, schedule="cosine", max_completion_length=16)
    sampler = config.recipe().rollout.sampler()
    assert (sampler.early_exit, sampler.partial_head, sampler.schedule, sampler.gen_length) == (True, False, "cosine", 16)


def test_shipped_and_real_generation_configs_still_read():
    assert read_generation_defaults(builtin_path("builtin:tiny-countdown")).sampler_settings() == {
        "gen_length": 16, "steps": 16, "block_length": 16, "temperature": 0.0, "remasking": "low_confidence"}
    real = sorted(REAL_MODELS.glob("*/generation_config.json"))
    if not real:
        pytest.skip(f"no real model configs under {REAL_MODELS}")
    for path in real:
        declared = read_generation_defaults(path.parent).sampler_settings()
        assert set(declared) <= {"temperature", "steps"}, path  # their HF keys (top_k, do_sample, alg) stay theirs


# -- early_exit and partial_head from the command line ------------------------------------

#: a setting where early exit ends the tiny model's answer early (8 forward passes instead of 32)
EARLY = {"gen_length": 32, "steps": 32, "block_length": 8, "remasking": "margin"}


def test_sample_early_exit_gives_the_tokens_of_python_generate(tmp_path, capsys):
    page = tmp_path / "page.html"
    assert main(["sample", "--problem", "0", "--seed", "0", *_flags(EARLY), "--early-exit", "--save", str(page)]) == 0
    out = capsys.readouterr().out
    model = load_model(builtin_path("builtin:tiny-countdown"))
    (row,) = held_out("countdown", model.family, 0)
    ids, attention = encode_prompts(model.tokenizer, [model.format_prompt(row["prompt"])], model.pad_token_id)
    runs = {early: generate(model, ids, attention_mask=attention, seed=[0], record=True, early_exit=early, **EARLY)
            for early in (True, False)}
    assert int(runs[True].nfe[0]) < int(runs[False].nfe[0])  # early exit changes this run: the check can fail
    assert f"forward passes: {int(runs[True].nfe[0])}" in out
    frames = denoising_frames(runs[True], model.tokenizer, process=model.process)
    expected = [(state, html.escape("░" if state == "masked" else text)) for frame in frames for text, state in frame]
    found = re.findall(r'<span class="tok ([a-z]+)">(.*?)</span>', page.read_text())
    assert found[-len(expected):] == expected  # the page's frames (after its legend) are Python's, step by step


def test_eval_and_sample_flags_reach_the_settings():
    parser = build_parser()
    sample = parser.parse_args(["sample", "--early-exit", "--no-partial-head", "--schedule", "cosine", "--dynamic-threshold", "0.9"])
    assert given_settings(sample) == {"early_exit": True, "partial_head": False, "schedule": "cosine", "dynamic_threshold": 0.9}
    args = parser.parse_args(["eval", "--early-exit", "--no-partial-head", "--remasking", "margin"])
    (setting,) = settings_grid([16], **given_settings(args, skip=GRID_SETTINGS))
    assert (setting.early_exit, setting.partial_head, setting.remasking) == (True, False, "margin")
    assert setting.label.endswith("-margin-t0-early_exit")


def test_eval_early_exit_and_partial_head_reach_every_sample(tmp_path):
    out = tmp_path / "eval"
    flags = ["--gen-length", "32", "--steps", "32", "--block-length", "8", "--remasking", "margin"]
    assert main(["eval", "--model", "builtin:tiny-countdown", "--limit", "2", *flags, "--early-exit",
                 "--no-partial-head", "--out", str(out)]) == 0
    records = read_samples(out / SAMPLES_FILE)
    assert len(records) == 2
    for record in records:
        assert record["settings"]["early_exit"] is True and record["settings"]["partial_head"] is False
        assert record["nfe"] < 32  # early exit ended these answers before their 32 steps
