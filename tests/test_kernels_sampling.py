"""Sampling step: Triton (interpreted on the CPU) against the torch twin and a float64 reference."""

from __future__ import annotations

import pytest
import torch

from unmask.kernels.dispatch import enable_interpreter, use_backend
from unmask.kernels.ops import sample_step
from unmask.kernels.rng import row_uniforms
from unmask.kernels.sampling import sample_step_torch

pytest.importorskip("triton", reason="triton is not installed (pip install '.[dev]')")
enable_interpreter()
# padded rows of a tile compute log(0) in numpy before being masked out
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

TEMPERATURES = (0.0, 0.1, 1.0, 2.0)
#: chi-square critical value, 6 degrees of freedom, α = 0.001
CHI2_DF6_999 = 22.458


def hard_logits(vocab: int, rows: int = 5, seed: int = 0) -> torch.Tensor:
    """Random rows plus the awkward ones: all −inf but one, huge, tiny, tied maxima."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, vocab, generator=gen) * 3
    x[1] = float("-inf")
    x[1, vocab // 2] = 0.5
    x[2] = x[2] * 1e4 + 3e37
    x[3] = x[3] * 1e-6 - 1e6
    x[4, : min(vocab, 3)] = 50.0
    return x


def reference(logits: torch.Tensor, temperature: float, token: torch.Tensor) -> dict[str, torch.Tensor]:
    """Full-tensor float64 statistics of the given tokens."""
    x = logits.double()
    logp1 = x.log_softmax(-1)
    logp_t = logp1 if temperature == 0 else (x / temperature).log_softmax(-1)
    pick = token.unsqueeze(-1)
    p1 = logp1.exp()
    top = p1.topk(min(2, x.shape[1]), -1).values
    return {
        "confidence": p1.gather(-1, pick).squeeze(-1),
        "logprob": logp_t.gather(-1, pick).squeeze(-1),
        "margin": top[:, 0] - (top[:, 1] if top.shape[1] > 1 else 0),
        "entropy": torch.special.entr(p1).sum(-1),
    }


@pytest.mark.parametrize("vocab", [1, 7, 1000, 4097])
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_triton_matches_twin_and_reference(vocab: int, temperature: float) -> None:
    logits = hard_logits(vocab)
    u = row_uniforms(logits.shape[0], seed=7, offset=vocab)
    twin = sample_step_torch(logits, temperature, u)
    with use_backend("triton"):
        fused = sample_step(logits, temperature, uniforms=u)
    assert torch.equal(twin.token, fused.token)
    assert torch.isfinite(logits.gather(1, twin.token[:, None])).all()  # never a −inf token
    if temperature == 0:
        assert torch.equal(twin.token, logits.argmax(-1))
    expected = reference(logits, temperature, twin.token)
    for name, value in expected.items():
        torch.testing.assert_close(getattr(twin, name), value, rtol=1e-9, atol=1e-9, msg=name)
        torch.testing.assert_close(getattr(fused, name), value, rtol=1e-5, atol=2e-6, msg=name)


def test_low_precision_logits_and_strided_rows() -> None:
    base = hard_logits(300, rows=6, seed=1)[:, ::2]  # non-contiguous rows
    for dtype in (torch.bfloat16, torch.float16):
        logits = base.clamp(-6e4, 6e4).to(dtype)
        u = row_uniforms(6, seed=3)
        twin = sample_step_torch(logits, 1.0, u)
        with use_backend("triton"):
            fused = sample_step(logits, 1.0, uniforms=u)
        assert torch.equal(twin.token, fused.token)
        torch.testing.assert_close(twin.entropy, fused.entropy, rtol=1e-5, atol=2e-6)


def chi_square(tokens: torch.Tensor, probs: torch.Tensor) -> float:
    counts = torch.bincount(tokens, minlength=probs.numel()).double()
    expected = probs * tokens.numel()
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_samples_follow_the_tempered_softmax(backend: str, temperature: float) -> None:
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.5])
    rows = 4000
    with use_backend(backend):
        out = sample_step(logits.expand(rows, -1), temperature, seed=11, offset=int(10 * temperature))
    target = (logits.double() / temperature).softmax(-1)
    assert chi_square(out.token, target) < CHI2_DF6_999
    # the test has power: the same draws are far from the untempered distribution
    assert chi_square(out.token, logits.double().softmax(-1)) > 10 * CHI2_DF6_999


def test_twin_is_independent_of_chunking() -> None:
    logits = hard_logits(1000, rows=9, seed=2)
    u = row_uniforms(9, seed=5)
    whole = sample_step_torch(logits, 1.0, u)
    chunked = sample_step_torch(logits, 1.0, u, chunk_elements=1)
    for a, b in zip(whole, chunked, strict=True):
        assert torch.equal(a, b)


def test_row_uniforms_are_counter_based() -> None:
    u = row_uniforms(5000, seed=1, offset=2)
    assert torch.equal(row_uniforms(100, seed=1, offset=2), u[:100])
    assert not torch.equal(row_uniforms(100, seed=1, offset=3), u[:100])
    assert not torch.equal(row_uniforms(100, seed=2, offset=2), u[:100])
    assert u.dtype == torch.float64 and float(u.min()) >= 0 and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.02
    # 53-bit grid: values are not confined to float32's 2**-24 steps
    assert (u * 2**24 != (u * 2**24).floor()).any()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": -1.0}, "temperature must be >= 0"),
        ({"temperature": 1.0}, "needs uniforms= or seed="),
        ({"temperature": 1.0, "uniforms": torch.zeros(2)}, r"uniforms of shape \[3\]"),
    ],
)
def test_bad_arguments_get_one_clear_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sample_step(torch.zeros(3, 4), **kwargs)
