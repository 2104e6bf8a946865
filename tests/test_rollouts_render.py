"""The denoising picture shows each step's text with new tokens highlighted."""

from __future__ import annotations

import pytest
from rich.text import Text

from unmask.models.tiny import tiny
from unmask.rollouts.generate import generate
from unmask.rollouts.render import render_denoising


def test_render_highlights_tokens_committed_at_each_step():
    model = tiny({"d_model": 32, "n_heads": 2, "n_layers": 1, "mlp_hidden_size": 64}).eval()
    ids = model.tokenizer("12+30=", return_tensors="pt").input_ids
    kwargs = {"gen_length": 6, "steps": 3, "block_length": 6}
    traj = generate(model, ids, record=True, progress=True, **kwargs)
    lines = render_denoising(traj, model.tokenizer, process=model.process)
    assert [line.count("[bold green]") for line in lines] == [2, 2, 2]
    assert [line.count("░") for line in lines] == [4, 2, 0]
    answer = "".join(model.tokenizer.decode([t]) for t in traj.answer_ids[0].tolist())
    assert Text.from_markup(lines[-1]).plain == f"  2 {answer}"
    with pytest.raises(ValueError, match="record=True"):
        render_denoising(generate(model, ids, **kwargs), model.tokenizer, process=model.process)
