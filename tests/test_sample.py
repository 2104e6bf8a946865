"""`unmask sample` as a newcomer first runs it: the shipped model, its own decoding defaults, a held-out problem."""

from __future__ import annotations

import argparse
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from unmask.cli import main
from unmask.errors import UserError
from unmask.evaluation.cli import checkpoint_lengths
from unmask.models import tiny
from unmask.models.generation import GENERATION_CONFIG, GenerationDefaults, read_generation_defaults
from unmask.rollouts.cli import settings

SHIPPED = "builtin:tiny-countdown"


def step_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if re.match(r"^\s*\d+ ", line)]


class Frames(HTMLParser):
    """Collects each ``div.frame``'s text and its ``new`` (just committed) tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[dict[str, list[str]]] = []
        self.classes: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        cls = dict(attrs).get("class") or ""
        self.classes.append(cls)
        if tag == "div" and "frame" in cls.split():
            self.frames.append({"tokens": [], "new": [], "masked": []})

    def handle_endtag(self, tag: str) -> None:
        self.classes.pop()

    def handle_data(self, data: str) -> None:
        if not self.frames or not self.classes or "tok" not in self.classes[-1].split():
            return
        frame, kind = self.frames[-1], self.classes[-1].split()
        frame["tokens"].append(data)
        for state in ("new", "masked"):
            if state in kind:
                frame[state].append(data)


def test_no_arguments_solves_a_held_out_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "denoising.html"
    assert main(["sample", "--save", str(page)]) == 0
    out = capsys.readouterr().out
    assert "countdown held-out problem" in out
    assert "Using the numbers [" in out and "<answer> </answer> tags" in out  # the pretraining prompt format
    assert "decoding: 16 tokens in 16 steps" in out  # from the checkpoint's generation_config.json
    assert len(step_lines(out)) == 16
    extracted = re.search(r"^extracted (\S+)\s+(correct|wrong)$", out, re.M)
    assert extracted is not None and extracted.group(2) == "correct"

    text = page.read_text(encoding="utf-8")
    assert not re.search(r'(src|href)="?https?:', text)  # self-contained: opens offline
    parser = Frames()
    parser.feed(text)
    assert len(parser.frames) == 16
    assert sum(len(f["new"]) for f in parser.frames) == 16  # one token committed per step
    assert [len(f["masked"]) for f in parser.frames] == list(range(15, -1, -1))
    assert extracted.group(1) in "".join(parser.frames[-1]["tokens"])
    assert not list(tmp_path.glob(".*.tmp"))


def test_problem_and_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", "--problem", "0", "--steps", "8"]) == 0
    out = capsys.readouterr().out
    assert "held-out problem 0" in out and "decoding: 16 tokens in 8 steps" in out
    assert len(step_lines(out)) == 8
    assert re.search(r"^extracted .+\s+(correct|wrong)$", out, re.M)


def test_own_prompt_uses_generation_config(capsys: pytest.CaptureFixture[str]) -> None:
    prompt = "Using the numbers [7, 7, 1], create an equation that equals 15. Put the equation in <answer> </answer> tags."
    assert main(["sample", "--prompt", prompt]) == 0
    out = capsys.readouterr().out
    assert len(step_lines(out)) == 16 and "held-out" not in out
    answer = re.search(r"^answer (.*)$", out, re.M)
    assert answer is not None and answer.group(1).startswith("<answer>")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--save", "x.gif"], "HTML page"),
        (["--prompt", "x", "--problem", "1"], "not both"),
        (["--problem", "5000"], "held-out set has"),
    ],
)
def test_sample_mistakes_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_model_without_task_needs_a_prompt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny(seed=0).save_pretrained(tmp_path / "m")
    assert main(["sample", "--model", str(tmp_path / "m")]) == 2
    assert "--prompt" in capsys.readouterr().err


def test_generation_config_file(tmp_path: Path) -> None:
    assert read_generation_defaults(tmp_path) == GenerationDefaults()
    (tmp_path / GENERATION_CONFIG).write_text(json.dumps({"max_new_tokens": 64, "steps": 32, "eos_token_id": 2}))
    assert read_generation_defaults(tmp_path) == GenerationDefaults(gen_length=64, steps=32)
    (tmp_path / GENERATION_CONFIG).write_text(json.dumps({"steps": "many"}))
    with pytest.raises(UserError, match="generation_config.json: steps: Input should be a valid integer"):
        read_generation_defaults(tmp_path)


def test_command_line_beats_checkpoint_beats_fallback() -> None:
    shipped = read_generation_defaults(SHIPPED)
    none = argparse.Namespace(gen_length=None, steps=None, block_length=None, temperature=None, remasking=None,
                              threshold=None, model=SHIPPED)
    assert settings(none, shipped)["steps"] == 16
    assert settings(argparse.Namespace(**{**vars(none), "steps": 4}), shipped)["steps"] == 4
    fallback = settings(none, GenerationDefaults())
    assert (fallback["gen_length"], fallback["steps"], fallback["block_length"]) == (32, 32, 32)
    longer = settings(argparse.Namespace(**{**vars(none), "gen_length": 64}), shipped)
    assert (longer["steps"], longer["block_length"]) == (64, 64)  # the checkpoint's 16 steps belong to 16 tokens
    # eval: the checkpoint's length, steps and block unless the command line sets a length
    assert checkpoint_lengths(argparse.Namespace(**{**vars(none), "gen_length": None}), "tiny") == ([16], [16], 16)
    assert checkpoint_lengths(argparse.Namespace(**{**vars(none), "gen_length": "32"}), "tiny") == ([32], None, None)


def test_real_llada_and_dream_generation_configs(shared_data: Path) -> None:
    """The files LLaDA and Dream ship: Dream's 512 steps apply only with its own length, which it does not give."""
    models = shared_data.parent / "models"
    if not (models / "dream-v0-instruct-7b" / GENERATION_CONFIG).is_file():
        pytest.skip(f"real model files not found in {models}")
    dream = read_generation_defaults(models / "dream-v0-instruct-7b")
    assert dream == GenerationDefaults(steps=512, temperature=0.0)
    assert read_generation_defaults(models / "llada-8b-instruct") == GenerationDefaults()
    none = argparse.Namespace(gen_length=None, steps=None, block_length=None, temperature=None, remasking=None,
                              threshold=None)
    chosen = settings(none, dream)
    assert (chosen["gen_length"], chosen["steps"], chosen["temperature"]) == (32, 32, 0.0)
