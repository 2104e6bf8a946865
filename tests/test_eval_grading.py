"""Evaluation grading under a deadline: a hostile MATH answer cannot stall an evaluation."""

from __future__ import annotations

import functools
import time

import pytest
import torch

from unmask.evaluation import evaluate
from unmask.evaluation.settings import EvalSettings
from unmask.models import tiny
from unmask.rewards.grading import Grader, grade_many
from unmask.rollouts.generate import generate

#: sympy evaluates this power tower for as long as it is allowed to
POWER_TOWER = r"\boxed{9^{9^{9^{9}}}}"
GEN_LENGTH = 24


def forced_answers(model, texts: list[str]) -> torch.Tensor:
    """Hints that fix every answer position: the real sampler then emits ``texts`` (EOS-padded)."""
    hints = torch.full((len(texts), GEN_LENGTH), model.eos_token_ids[0])
    for row, text in enumerate(texts):
        ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
        hints[row, : len(ids)] = torch.tensor(ids)
    return hints


def test_power_tower_answer_times_out_as_wrong_and_evaluation_finishes():
    model = tiny(seed=0)
    rows = [{"prompt": "What is 2+3?", "answer": "5"}, {"prompt": "What is 1+4?", "answer": "5"}]
    hints = forced_answers(model, [f"so {POWER_TOWER}", r"so \boxed{5}"])
    settings = EvalSettings(gen_length=GEN_LENGTH, steps=1, block_length=GEN_LENGTH)
    began = time.perf_counter()
    with Grader(deadline_s=1.0, num_workers=1) as grader:
        result = evaluate(
            model, rows, "math500", settings, batch_size=2, chat_template=False,
            generate_fn=functools.partial(generate, hints=hints), grader=grader,
        )  # fmt: skip
    assert time.perf_counter() - began < 30.0
    hostile, plain = sorted(result.records, key=lambda r: r["problem"])
    assert hostile["completion"] == f"so {POWER_TOWER}" and plain["completion"] == r"so \boxed{5}"
    assert not hostile["correct"] and hostile["grading_timeout"] and "timed out after 1 s" in hostile["error"]
    assert plain["correct"] and not plain["grading_timeout"] and plain["extracted"] == "5"
    assert sum(r["grading_timeout"] for r in result.records) == 1
    assert [s.grading_timeouts for s in result.summaries] == [1]
    assert result.accuracy() == 0.5


def test_bounded_graders_run_in_process_and_bad_references_name_the_columns():
    with Grader(deadline_s=1.0, num_workers=1) as grader:
        verdicts = grader.grade_many("gsm8k", ["#### 12", "#### 13"], [{"answer": "12"}] * 2)
        assert not grader.pool.started  # no worker start-up for graders that cannot hang
    assert [v.correct for v in verdicts] == [True, False] and not any(v.timed_out for v in verdicts)
    with pytest.raises(ValueError, match=r"columns \['solution'\] do not fit"):
        grade_many("math", [r"\boxed{5}"], [{"solution": "5"}])
    with pytest.raises(ValueError, match="unknown task 'chess'"):
        grade_many("chess", ["e4"], [{}])
