"""``unmask pretrain``: data hygiene, the masked-diffusion loss, schedule, reproducible bytes."""

from __future__ import annotations

import argparse
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from unmask.assets import builtin_path
from unmask.assets.ship import sha256_file
from unmask.data.countdown import careless_solution
from unmask.errors import UserError
from unmask.evaluation.benchmarks import COUNTDOWN_EVAL_SIZE, benchmark_rows
from unmask.models import load_model, tiny
from unmask.pretrain import (
    HASH_FILE,
    PretrainConfig,
    encode,
    learning_rate,
    masked_diffusion_loss,
    problem_key,
    run_pretrain,
    training_rows,
)

SMALL = {"d_model": 32, "n_heads": 2, "n_layers": 1, "mlp_hidden_size": 64}


def test_training_rows_exclude_every_heldout_problem() -> None:
    config = PretrainConfig(pool_size=3000)
    rows = training_rows(config, seed=0)
    heldout = {problem_key(r) for r in benchmark_rows("countdown", limit=COUNTDOWN_EVAL_SIZE, generator=config.generator)}
    assert len(rows) > 500
    assert not heldout & {problem_key(r) for r in rows}
    assert training_rows(config, seed=0) == rows
    assert training_rows(config, seed=1) != rows


def test_careless_fraction_replaces_that_share_of_demonstrations_reproducibly() -> None:
    clean = training_rows(PretrainConfig(pool_size=3000, careless_fraction=0.0), seed=0)
    noisy = training_rows(PretrainConfig(pool_size=3000, careless_fraction=0.3), seed=0)
    assert [problem_key(r) for r in clean] == [problem_key(r) for r in noisy]  # same problems
    changed = [n for c, n in zip(clean, noisy, strict=True) if c["solution"] != n["solution"]]
    assert all(r["solution"] == careless_solution(r["nums"]) for r in changed)
    assert 0.2 < len(changed) / len(noisy) < 0.3  # 30 % drawn; a few sums are already right
    assert careless_solution([7, 2, 9]) == "7+2+9"
    assert training_rows(PretrainConfig(pool_size=3000, careless_fraction=0.3), seed=0) == noisy


def test_encode_left_pads_prompts_and_pads_answers_with_eos() -> None:
    model = tiny(SMALL)
    rows = [{"nums": [1, 2, 3], "target": 6, "solution": "1+2+3"}, {"nums": [10, 10, 9], "target": 100, "solution": "10*10*(9/9)"}]
    rows[1]["solution"] = "(10*10)"
    enc = encode(model, rows, gen_length=16)
    assert enc.answer_ids.shape == (2, 16)
    assert not enc.prompt_mask[0, 0] and enc.prompt_mask[:, -1].all()  # shorter prompt is left-padded
    text = model.tokenizer.decode(enc.answer_ids[0].tolist())
    assert text.startswith("<answer>1+2+3</answer>")
    assert (enc.answer_ids[0, -5:] == model.eos_token_ids[0]).all()
    with pytest.raises(UserError, match="longer than gen_length"):
        encode(model, rows, gen_length=4)


class Recording(torch.nn.Module):
    """Wraps a real model to see the noised canvas the loss feeds it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.seen: list[torch.Tensor] = []

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def forward(self, input_ids, attention_mask=None, positions=None, prompt_length=None):
        self.seen.append(input_ids.clone())  # the loss calls the model (its forward), as DDP needs
        return self.inner.logits(input_ids, attention_mask=attention_mask, prompt_length=prompt_length)


def test_loss_masks_only_answers_and_weights_by_inverse_ratio() -> None:
    model = tiny(SMALL, seed=3)
    rows = [{"nums": [2, 3, 4], "target": t, "solution": f"2*3+{t - 6}"} for t in range(7, 15)]
    enc = encode(model, rows, gen_length=16)
    recorder = Recording(model)
    loss = masked_diffusion_loss(recorder, enc, torch.Generator().manual_seed(5))
    canvas = recorder.seen[0]
    prompt_len = enc.prompt_ids.shape[1]
    assert torch.equal(canvas[:, :prompt_len], enc.prompt_ids)  # the prompt is never masked
    masked = canvas[:, prompt_len:] == model.mask_token_id
    assert masked.any()
    # the same draws by hand: t per row, then CE on masked answer tokens over t, per answer length
    g = torch.Generator().manual_seed(5)
    t = 1e-3 + (1 - 1e-3) * torch.rand(8, 1, generator=g)
    assert torch.equal(torch.rand(8, 16, generator=g) < t, masked)
    logits = model.logits(canvas, attention_mask=torch.cat([enc.prompt_mask, torch.ones_like(masked)], 1))[:, prompt_len:]
    ce = F.cross_entropy(logits.transpose(1, 2), enc.answer_ids, reduction="none")
    expected = ((ce * masked).sum(1) / t.squeeze(1) / 16).mean()
    torch.testing.assert_close(loss, expected)


def test_learning_rate_warms_up_holds_and_decays_to_zero() -> None:
    config = PretrainConfig(steps=100, warmup_steps=10, decay_fraction=0.2, learning_rate=1.0)
    rates = [learning_rate(s, config) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert rates[50] == 1.0 and rates[80] == 1.0
    assert rates[-1] == pytest.approx(1 / 20)
    assert all(a >= b for a, b in zip(rates[80:], rates[81:], strict=False))


def _args(out, steps=3, seed=0, minutes=None, task="countdown") -> argparse.Namespace:
    return argparse.Namespace(task=task, out=str(out), steps=steps, minutes=minutes, seed=seed)


def test_same_seed_and_steps_give_identical_bytes(tmp_path, monkeypatch) -> None:
    small = replace(PretrainConfig(), batch_size=8, pool_size=400, model=SMALL)
    monkeypatch.setattr("unmask.pretrain.PretrainConfig", lambda: small)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert run_pretrain(_args(tmp_path / name, seed=seed)) == 0
    weights = {n: (tmp_path / n / "model.safetensors").read_bytes() for n in "abc"}
    assert weights["a"] == weights["b"]
    assert weights["a"] != weights["c"]
    recorded = (tmp_path / "a" / HASH_FILE).read_text().split()[0]
    assert recorded == sha256_file(tmp_path / "a" / "model.safetensors")
    model = load_model(tmp_path / "a")
    assert model.config.d_model == 32 and model.tokenizer is not None
    # rewriting an existing checkpoint swaps it in whole
    assert run_pretrain(_args(tmp_path / "a", seed=1)) == 0
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == weights["c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"task": "gsm8k"}, "--task 'gsm8k'"), ({"minutes": 1.0}, "not both"), ({"steps": 0}, "positive")],
)
def test_bad_arguments_name_what_to_fix(tmp_path, kwargs, message) -> None:
    with pytest.raises(UserError, match=message):
        run_pretrain(_args(tmp_path / "x", **kwargs))


def test_builtin_path_names_the_shipped_checkpoints() -> None:
    with pytest.raises(UserError, match="no such built-in checkpoint"):
        builtin_path("builtin:nope")
