"""The uniform-noise sampler: token parity with transformers' generate under the same global
RNG, per-row generators, the entropy-bound rule, and a trajectory a replay can rescore
(docs/diffusion-gemma.md)."""

from __future__ import annotations

import pytest
import torch
from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

from unmask.errors import UserError
from unmask.models.diffusion_gemma import DiffusionGemma, tiny_diffusion_gemma
from unmask.rollouts.uniform.entropy_bound import entropy_bound_accept
from unmask.rollouts.uniform_sampler import UniformSettings, generate_uniform

PROMPT = torch.tensor([[2, 5, 9, 11, 40], [2, 7, 8, 30, 31]])


def peaky() -> DiffusionGemma:
    """Confident logits (the final norm, tied to the encoder's, scaled up) so the adaptive stop fires."""
    model = tiny_diffusion_gemma(0)
    with torch.no_grad():
        model.model.decoder.norm.weight *= 60
    return model


def hf_tokens(model: DiffusionGemma, settings: UniformSettings, seed: int, **extra) -> torch.Tensor:
    kwargs = {"max_new_tokens": settings.max_new_tokens, "max_denoising_steps": settings.steps,
              "sampler_config": EntropyBoundSamplerConfig(entropy_bound=settings.entropy_bound), **extra}  # fmt: skip
    if settings.eos_token_id is not None:
        kwargs.update(eos_token_id=settings.eos_token_id, pad_token_id=settings.pad_token_id)
    torch.manual_seed(seed)
    return model.hf.generate(PROMPT, **kwargs).sequences


def ours(model: DiffusionGemma, settings: UniformSettings, seed: int, **extra):
    torch.manual_seed(seed)
    return generate_uniform(model, PROMPT, settings, **extra)


def ours_alone(model: DiffusionGemma, settings: UniformSettings, seed: int):
    torch.manual_seed(seed)
    return generate_uniform(model, PROMPT[1:], settings)


def test_entropy_bound_accepts_the_low_entropy_prefix() -> None:
    entropy = torch.tensor([[0.05, 0.5, 0.01, 0.2], [3.0, 2.0, 1.0, 4.0]])
    # row 0: sorted 0.01 0.05 0.2 0.5, sums without the current 0 0.01 0.06 0.26; row 1: only the lowest
    assert entropy_bound_accept(entropy, 0.1).tolist() == [[True, False, True, True], [False, False, True, False]]


def test_tokens_equal_transformers_generate_under_the_same_seed() -> None:
    model = tiny_diffusion_gemma(0)
    settings = UniformSettings(max_new_tokens=16, steps=12, entropy_bound=12.0)
    run = ours(model, settings, 3)
    assert torch.equal(run.sequences, hf_tokens(model, settings, 3)) and run.sequences.shape == (2, 21)
    assert (run.stop_step == 1).all()  # random weights never get confident
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    padded = ours(model, settings, 4, attention_mask=mask).sequences
    assert torch.equal(padded, hf_tokens(model, settings, 4, attention_mask=mask))

    confident = peaky()
    settings = UniformSettings(max_new_tokens=24, steps=48)
    run = ours(confident, settings, 3)
    assert torch.equal(run.sequences, hf_tokens(confident, settings, 3))
    assert run.stop_step.shape == (3, 2) and (run.stop_step > 1).any()  # the adaptive stop fired
    eos = int(run.sequences[0, 9])  # a token of row 0's first canvas: everything after it becomes padding
    pad = 0 if eos else 1
    with_eos = UniformSettings(max_new_tokens=24, steps=48, eos_token_id=eos, pad_token_id=pad)
    ended = ours(confident, with_eos, 3)
    assert torch.equal(ended.sequences, hf_tokens(confident, with_eos, 3))
    first = int(ended.sequences[0, 5:13].eq(eos).nonzero()[0])
    assert (ended.sequences[0, 6 + first :] == pad).all() and ended.sequences.shape == run.sequences.shape


def test_per_row_generators_make_rows_independent_of_the_batch() -> None:
    model = tiny_diffusion_gemma(0)
    settings = UniformSettings(max_new_tokens=16, steps=6, entropy_bound=4.0)
    batch = generate_uniform(model, PROMPT, settings, generators=[torch.Generator().manual_seed(s) for s in (7, 8)])
    alone = generate_uniform(model, PROMPT[1:], settings, generators=[torch.Generator().manual_seed(8)])
    assert torch.equal(batch.sequences[1], alone.sequences[0])
    other = generate_uniform(model, PROMPT[1:], settings, generators=[torch.Generator().manual_seed(9)])
    assert not torch.equal(other.step_canvas, alone.step_canvas)
    # the global RNG (transformers' way) couples the rows: row 1 alone draws other noise than in the batch
    assert not torch.equal(ours(model, settings, 0).step_canvas[:, 1], ours_alone(model, settings, 0).step_canvas[:, 0])

def row_major(recorded: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """``[steps, B, ...]`` recorded tensors as ``[B · steps, ...]``, row b's steps consecutive (the cache's order)."""
    picked = recorded[steps].transpose(0, 1)
    return picked.reshape(-1, *picked.shape[2:])


def test_trajectory_replays_to_the_recorded_log_probs() -> None:
    model = peaky()
    settings = UniformSettings(max_new_tokens=16, steps=12, entropy_bound=0.5)
    run = ours(model, settings, 1)
    t, b, length = run.step_canvas.shape
    assert run.step_sc.shape == (t, b, length, 32) and run.step_accept.dtype == torch.bool
    assert torch.equal(run.step_n[: settings.steps], torch.arange(settings.steps, 0, -1)[: min(t, settings.steps)])
    assert (run.step_sc[0] == 0).all() and (run.step_sc[1] != 0).any()
    read = 0
    for block in range(run.stop_step.shape[0]):  # the replay: one encoder pass and one decoder call per block
        steps = (run.step_block == block).nonzero()[:, 0]
        n_steps = len(steps)
        cache, _ = model.encode(run.sequences[:, : run.prompt_length + block * length])  # with gradient
        cache.batch_repeat_interleave(n_steps)  # row-major: row b's steps are consecutive
        temperature = run.step_temperature[steps].repeat(b)[:, None, None]
        z = (model.decode(row_major(run.step_canvas, steps), cache, row_major(run.step_sc, steps)) / temperature).view(b, n_steps, length, -1)
        z = z.transpose(0, 1)  # [steps, B, L, V]
        logp = z.log_softmax(-1).gather(-1, run.step_sample[steps][..., None])[..., 0]
        active = run.step_active[steps]
        torch.testing.assert_close(logp[active], run.step_logprob[steps][active], atol=1e-5, rtol=0)
        if block == 0:
            logp[active & run.step_accept[steps].any(-1)].sum().backward()
            for name in ("decoder.layers.0.self_attn.q_proj.weight", "decoder.layers.1.experts.gate_up_proj",
                         "decoder.self_conditioning.gate_proj.weight"):  # fmt: skip
                assert model.model.get_parameter(name).grad.abs().sum() > 0
        for i in range(n_steps - 1):  # accepted slots carry the draw into the next canvas
            keep = run.step_accept[steps[i]] & (active[i] & active[i + 1])[:, None]
            assert torch.equal(run.step_canvas[steps[i + 1]][keep], run.step_sample[steps[i]][keep])
        # the block is the argmax at the row's stop step
        rows = active & (run.step_n[steps][:, None] == run.stop_step[block][None])
        got = run.sequences[:, run.prompt_length + block * length : run.prompt_length + (block + 1) * length]
        assert torch.equal(z.argmax(-1)[rows], got.expand(n_steps, -1, -1)[rows])
        read += int(rows.sum())
    assert read == b * run.stop_step.shape[0]  # every row-block's readout checked once


def test_settings_are_checked() -> None:
    with pytest.raises(UserError, match="t_min"):
        UniformSettings(t_min=0.9, t_max=0.5)
