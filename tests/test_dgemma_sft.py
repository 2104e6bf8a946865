"""DiffusionGemma's SFT loss (unmask/sft/uniform_loss.py) against transformers' own forward, by hand."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from unmask.diffusion.uniform import UniformNoise
from unmask.errors import UserError
from unmask.models.diffusion_gemma import DiffusionGemma, tiny_diffusion_gemma
from unmask.recipe import load_recipe
from unmask.rl.objective import build_objective
from unmask.rl.renoise_replay import RenoiseReplayEstimator
from unmask.sft.config import (
    FAMILY_DEFAULTS,
    answer_length,
    fed_recipe,
    load_sft_recipe,
    loss_choice,
    rl_after_sft,
)
from unmask.sft.loss import (
    LossSettings,
    RowRandom,
    SFTBatch,
    denominator,
    family_corruption,
    loss_terms,
)
from unmask.sft.uniform_loss import UniformCanvasLoss

FLAT = LossSettings(weighting="none", normalization="token")
PROMPTS = [[2, 5, 9, 11, 40], [2, 7, 8]]
#: canvas_length 8: one canvas per row; the second row's last two slots are past its answer
ANSWERS = [[60, 61, 62, 63, 64, 65, 66, 1], [70, 71, 72, 1, 1, 1, 0, 0]]
SUPERVISED = [[True] * 8, [True] * 6 + [False] * 2]


def hand_batch(pad: int = 0, answers: list[list[int]] = ANSWERS, supervised: list[list[bool]] = SUPERVISED) -> SFTBatch:
    """The rows left-padded to the longest prompt plus ``pad`` extra columns."""
    width = max(map(len, PROMPTS)) + pad
    ids = torch.tensor([[0] * (width - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[False] * (width - len(p)) + [True] * len(p) for p in PROMPTS])
    return SFTBatch(ids, mask, torch.tensor(answers), torch.tensor(supervised), seeds=[11, 12])


def softcap(model: DiffusionGemma, hidden: torch.Tensor) -> torch.Tensor:
    cap = model.text_config.final_logit_softcapping
    return torch.tanh(model.hf.lm_head(hidden).float() / cap) * cap


@torch.no_grad()
def reference(model: DiffusionGemma, row: int, canvas: torch.Tensor, sc: bool) -> torch.Tensor:
    """``[L]`` canvas CE + encoder CE of one unpadded row by transformers' forward (one canvas)."""
    prompt, answer = torch.tensor([PROMPTS[row]]), torch.tensor([ANSWERS[row]])
    first = model.hf(input_ids=prompt, decoder_input_ids=canvas[None]).logits
    out = model.hf(input_ids=prompt, decoder_input_ids=canvas[None],
                   self_conditioning_logits=first if sc else None)
    canvas_ce = F.cross_entropy(out.logits[0], answer[0], reduction="none")
    full = model.hf(input_ids=torch.cat([prompt, answer], 1), decoder_input_ids=canvas[None])
    hidden = full.encoder_last_hidden_state[0, prompt.shape[1] - 1 : -1]
    encoder_ce = F.cross_entropy(softcap(model, hidden), answer[0], reduction="none")
    return canvas_ce + encoder_ce


@dataclass(frozen=True)
class Seen(UniformCanvasLoss):
    """The objective, keeping the canvases it decoded."""

    canvases: list[torch.Tensor] = field(default_factory=list)

    def logits(self, model, batch, canvas, use_sc):  # type: ignore[override]
        self.canvases.append(canvas)
        return UniformCanvasLoss.logits(model, batch, canvas, use_sc)


@pytest.mark.parametrize("sc", [False, True])
def test_loss_equals_transformers_forward_by_hand(sc: bool) -> None:
    model = tiny_diffusion_gemma(seed=0)
    batch = hand_batch()
    objective = Seen(sc_probability=1.0 if sc else 0.0)
    terms = loss_terms(model, batch, RowRandom.keyed(batch.seeds), FLAT, objective, t=torch.tensor([[0.5], [0.25]]))
    canvas = objective.canvases[0]
    sup = torch.tensor(SUPERVISED)
    # token normalisation: (Σ canvas CE + Σ encoder CE) over the 14 supervised slots
    expected = sum(float((reference(model, r, canvas[r], sc) * sup[r]).sum()) for r in range(2))
    assert denominator(batch, "token") == 14
    assert float(terms.numerator) == pytest.approx(expected, rel=1e-5)
    # the noise is uniform ids at noised slots only: unsupervised slots keep the answer
    assert torch.equal(canvas[~sup], batch.answer_ids[~sup])
    assert int((canvas != batch.answer_ids).sum()) <= terms.noised < 14


def test_every_supervised_slot_noised_at_t_one_and_none_at_t_zero() -> None:
    model = tiny_diffusion_gemma(seed=0)
    batch = hand_batch()
    sup = torch.tensor(SUPERVISED)
    full, clean = Seen(), Seen()
    at_one = loss_terms(model, batch, RowRandom.keyed(batch.seeds), FLAT, full, t=torch.ones(2, 1))
    at_zero = loss_terms(model, batch, RowRandom.keyed(batch.seeds), FLAT, clean, t=torch.zeros(2, 1))
    assert at_one.noised == 14 and at_zero.noised == 0
    assert torch.equal(clean.canvases[0], batch.answer_ids)
    # 14 uniform draws over 128 ids: at most a couple land on the answer's own id
    assert int((full.canvases[0] != batch.answer_ids)[sup].sum()) >= 12
    # flat CE: the canvas term scores every supervised slot at any t, so ce_sum (noised slots) = elbo_sum (all) at t = 1
    assert at_one.ce_sum == pytest.approx(at_one.elbo_sum)
    assert at_zero.ce_sum == 0 and at_zero.elbo_sum > 0


def test_prompt_never_noised_and_left_padding_changes_nothing() -> None:
    model = tiny_diffusion_gemma(seed=0)
    encoded: list[torch.Tensor] = []
    encode = model.encode
    model.encode = lambda ids, *a, **k: (encoded.append(ids), encode(ids, *a, **k))[1]  # type: ignore[method-assign]
    plain, padded = hand_batch(), hand_batch(pad=3)
    a = loss_terms(model, plain, RowRandom.keyed(plain.seeds), FLAT, UniformCanvasLoss(), t=torch.ones(2, 1))
    b = loss_terms(model, padded, RowRandom.keyed(padded.seeds), FLAT, UniformCanvasLoss(), t=torch.ones(2, 1))
    assert torch.equal(encoded[0], plain.prompt_ids) and torch.equal(encoded[2], padded.prompt_ids)
    assert float(a.numerator) == pytest.approx(float(b.numerator), abs=1e-5)
    assert a.noised == b.noised == 14


def test_two_canvases_decode_against_the_clean_first() -> None:
    """A 16-slot window is two canvases; the second is scored against prompt + the clean first canvas."""
    model = tiny_diffusion_gemma(seed=0)
    answers = [ANSWERS[0] + [80 + i for i in range(7)] + [1], ANSWERS[1][:6] + [1] * 10]
    supervised = [[True] * 16, [True] * 16]
    batch = hand_batch(answers=answers, supervised=supervised)
    objective = Seen(sc_probability=0.0)
    terms = loss_terms(model, batch, RowRandom.keyed(batch.seeds), FLAT, objective, t=torch.full((2, 1), 0.5))
    canvas = objective.canvases[0]
    expected = 0.0
    for r in range(2):
        prompt, answer = torch.tensor([PROMPTS[r]]), torch.tensor([answers[r]])
        for k in range(2):
            context = torch.cat([prompt, answer[:, : 8 * k]], 1)
            logits = model.hf(input_ids=context, decoder_input_ids=canvas[r : r + 1, 8 * k : 8 * k + 8]).logits
            expected += float(F.cross_entropy(logits[0], answer[0, 8 * k : 8 * k + 8], reduction="sum"))
        hidden = model.hf(input_ids=torch.cat([prompt, answer], 1), decoder_input_ids=canvas[r : r + 1, :8])
        hidden = hidden.encoder_last_hidden_state[0, prompt.shape[1] - 1 : -1]
        expected += float(F.cross_entropy(softcap(model, hidden), answer[0], reduction="sum"))
    assert float(terms.numerator) == pytest.approx(expected, rel=1e-5)


def test_self_conditioning_trained_only_when_drawn_and_gradient_reaches_the_encoder() -> None:
    model = tiny_diffusion_gemma(seed=0).train()
    batch = hand_batch()
    grads = {}
    for p in (0.0, 1.0):
        model.zero_grad()
        terms = loss_terms(model, batch, RowRandom.keyed(batch.seeds), FLAT, UniformCanvasLoss(p), t=torch.ones(2, 1))
        terms.numerator.backward()
        grads[p] = sum(float(q.grad.abs().sum()) for q in model.model.decoder.self_conditioning.parameters()
                       if q.grad is not None)
    # zero SC input: gate(0) = up(0) = 0, so the SC block's weights get exactly no gradient
    assert grads[0.0] == 0.0 and grads[1.0] > 0.0
    # the encoder's first layer gets gradient (its keys/values feed the decoder, its output the encoder CE)
    q = model.model.encoder.language_model.layers[0].self_attn.q_proj.weight
    assert q.grad is not None and float(q.grad.abs().sum()) > 0


def test_dispatch_defaults_and_refusals() -> None:
    model = tiny_diffusion_gemma(seed=0)
    assert isinstance(family_corruption(model), UniformCanvasLoss)
    assert FAMILY_DEFAULTS[model.family] == ("none", "token")
    batch = hand_batch()
    with pytest.raises(UserError, match="sft.weighting: elbo does not apply to DiffusionGemma"):
        loss_terms(model, batch, RowRandom.keyed(batch.seeds), LossSettings(), UniformCanvasLoss())
    odd = hand_batch(answers=[a[:6] for a in ANSWERS], supervised=[s[:6] for s in SUPERVISED])
    with pytest.raises(UserError, match="multiple of DiffusionGemma's canvas_length"):
        loss_terms(model, odd, RowRandom.keyed(odd.seeds), FLAT, UniformCanvasLoss())


RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_real_sft_recipe_carries_the_published_settings_and_feeds_rl(tmp_path: Path) -> None:
    recipe = load_sft_recipe(RECIPES / "diffusion_gemma/sft_gsm8k.yaml", [f"output_dir={tmp_path}"])
    m, o, s = recipe.model, recipe.optim, recipe.sft
    assert (m.name_or_path, m.family, m.device, m.dtype) == ("google/diffusiongemma-26B-A4B-it", "diffusion_gemma",
                                                             "cuda", "bfloat16")
    assert (recipe.lora.enabled, recipe.lora.r) == (True, 8)
    assert (o.learning_rate, o.warmup_steps, o.max_steps, o.lr_scheduler_type) == (1.5e-4, 100, 2000, "cosine")
    assert (o.adam_beta1, o.adam_beta2, o.max_grad_norm, o.weight_decay, o.per_device_train_batch_size) == (
        0.95, 0.99, 1.0, 1e-4, 2)
    assert loss_choice(recipe, m.family) == ("none", "token") and s.epsilon == 1e-4 and s.max_prompt_length == 256
    fed = fed_recipe(recipe)
    assert answer_length(recipe, fed) == fed.rollout.block_length == 256  # one canvas per example
    assert fed.data.prompt_template == recipe.data.prompt_template
    assert rl_after_sft(recipe).model.name_or_path == str(tmp_path / "final")


@pytest.mark.parametrize("name", ["diffusion_gemma/gsm8k_diffu_grpo", "tiny/countdown_dgemma_diffu_grpo",
                                  "tiny/countdown_dgemma_mdpo"])
def test_rl_recipes_build_the_renoise_estimator(name: str) -> None:
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    canvas = 256 if name.startswith("diffusion_gemma") else 16
    assert recipe.rollout.block_length == canvas and recipe.rollout.max_completion_length % canvas == 0
    assert recipe.eval.block_length == canvas
    process = UniformNoise(262_144 if canvas == 256 else 124, canvas)
    built = build_objective(recipe.algorithm, process=process, temperature=recipe.rollout.temperature,
                            gen_length=recipe.rollout.max_completion_length)
    assert isinstance(built.estimator, RenoiseReplayEstimator) and built.name == recipe.algorithm.name
    if name.startswith("diffusion_gemma"):
        assert (recipe.model.device, recipe.lora.r, recipe.rollout.steps) == ("cuda", 8, 48)  # transformers' N
    else:
        assert recipe.model.name_or_path == "builtin:tiny-countdown-dgemma"
