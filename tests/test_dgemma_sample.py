"""`unmask sample` on a tiny DiffusionGemma: the renoising canvas step by step, accepted tokens highlighted."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unmask.cli import main
from unmask.models.tiny_dgemma import tiny_dgemma
from unmask.rollouts.render import (
    UNRECORDED,
    denoising_html,
    render_denoising,
    renoise_frames,
    step_frames,
    token_texts,
)
from unmask.rollouts.uniform_rollout import generate_renoise
from unmask.rollouts.uniform_sampler import UniformSettings, generate_uniform

#: canvas 8, so a 16-token answer is two canvases (the second shows the first as committed)
SMALL = {"hidden_size": 32, "intermediate_size": 32, "canvas_length": 8}
PROMPT = "Using the numbers [1, 2, 3], create an equation that equals 6."


def rollout(steps: int = 4) -> tuple[object, object]:
    model = tiny_dgemma(SMALL, seed=0)
    ids = torch.tensor([model.tokenizer(PROMPT)["input_ids"]])
    # entropy bound 3 nats on random weights: some slots accepted, some renoised at each step
    settings = UniformSettings(max_new_tokens=16, steps=steps, entropy_bound=3.0)
    return model, generate_uniform(model, ids, settings, generators=[torch.Generator().manual_seed(5)])


def test_token_texts_keep_a_frame_on_one_line() -> None:
    tok = tiny_dgemma(SMALL).tokenizer
    ids = tok("a\nb\tc")["input_ids"]
    assert token_texts(tok, ids) == ["a", "⏎", "b", "⇥", "c"]


def test_frames_show_the_canvas_each_step_leaves() -> None:
    model, run = rollout()
    frames = renoise_frames(run, model.tokenizer)
    text = lambda ids: token_texts(model.tokenizer, ids)  # noqa: E731
    labels = [label for label, _ in frames]
    # two canvases, 4 steps each (random weights never stop early), each followed by its readout
    assert labels == ["0: 4", "0: 3", "0: 2", "0: 1", "0:out", "1: 4", "1: 3", "1: 2", "1: 1", "1:out"]
    answer = run.sequences[0, run.prompt_length :].tolist()
    steps = [i for i, label in enumerate(labels) if not label.endswith("out")]
    for t, i in enumerate(steps):
        block, frame = int(run.step_block[t]), frames[i][1]
        kept, canvas = frame[: 8 * block], frame[8 * block :]
        assert kept == [(tok, "kept") for tok in text(answer[: 8 * block])]
        accept = run.step_accept[t, 0]
        assert 0 < int(accept.sum()) < 8  # both kinds occur
        assert [s for _, s in canvas] == ["accepted" if a else "renoised" for a in accept.tolist()]
        drawn = text(run.step_sample[t, 0].tolist())
        last = t + 1 == len(run.step_block) or int(run.step_block[t + 1]) != block
        after = [UNRECORDED] * 8 if last else text(run.step_canvas[t + 1, 0].tolist())
        assert [tok for tok, _ in canvas] == [d if a else n for d, n, a in zip(drawn, after, accept.tolist(), strict=True)]
    # the readout is the committed argmax canvas
    assert frames[9][1][8:] == [(tok, "new") for tok in text(answer[8:16])]


def test_terminal_and_page_mark_accepted_and_renoised() -> None:
    model, _ = rollout()
    ids = torch.tensor([model.tokenizer(PROMPT)["input_ids"]])
    traj = generate_renoise(model, ids, gen_length=16, steps=4, seed=[5], record=True)
    lines = render_denoising(traj, model.tokenizer, process=model.process)
    frames = step_frames(traj, model.tokenizer, process=model.process)
    # the sampler's defaults (entropy bound 0.1): a canvas may stop early, each still reads out
    assert len(lines) == len(frames) >= 4 and [label for label, _ in frames if label.endswith("out")] == ["0:out", "1:out"]
    accepted = sum(s == "accepted" for _, f in frames for _, s in f)
    renoised = sum(s == "renoised" for _, f in frames for _, s in f)
    assert accepted > 0 and renoised > 0
    assert sum(line.count("[bold green]") for line in lines) == accepted + 16  # + the two readouts
    assert sum(line.count("[dim red]") for line in lines) == renoised
    page = denoising_html(frames, title="t", prompt=PROMPT, footer="f")
    assert page.count('class="tok accepted"') == accepted + 1  # + the legend's
    assert page.count('class="tok renoised"') == renoised
    assert "renoised (a fresh random token)" in page and "still masked" not in page


def test_unmask_sample_prints_the_renoising_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny_dgemma(SMALL, seed=0).save_pretrained(tmp_path / "m")
    code = main(["sample", "--model", str(tmp_path / "m"), "--prompt", PROMPT, "--no-chat-template",
                 "--gen-length", "16", "--block-length", "8", "--steps", "4", "--save", str(tmp_path / "page.html")])
    out = capsys.readouterr().out
    assert code == 0
    steps = [line.split()[0] for line in out.splitlines() if line[:1].isdigit() and ":" in line.split()[0]]
    # the default entropy bound (0.1) on random weights: the row may stop early, but every canvas reads out
    assert "0:out" in steps and "1:out" in steps and steps[0] == "0:"
    assert "uniform noise: entropy bound 0.1" in out and "argmax readout" in out
    page = (tmp_path / "page.html").read_text()
    assert "renoised (a fresh random token)" in page
