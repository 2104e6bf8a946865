"""Token log-probs with backward: Triton (interpreted) and the torch twin against float64 autograd."""

from __future__ import annotations

import pytest
import torch

from unmask.kernels.dispatch import enable_interpreter, use_backend
from unmask.kernels.ops import linear_token_logprobs, token_logprobs

pytest.importorskip("triton", reason="triton is not installed (pip install '.[dev]')")
enable_interpreter()
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

BACKENDS = ("torch", "triton")


def naive(logits: torch.Tensor, targets: torch.Tensor, temperature: float):
    """Full-tensor float64 log-prob and entropy (autograd reference).

    ``−inf`` becomes ``−1e30`` so that ``p log p`` has a finite derivative at ``p = 0``.
    """
    logp = (logits.double().clamp(min=-1e30) / temperature).log_softmax(-1)
    return logp.gather(-1, targets[:, None]).squeeze(-1), -(logp.exp() * logp).sum(-1)


def loss_of(logprob: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:
    """Uses both outputs with distinct per-row weights so every gradient term is checked."""
    weights = torch.linspace(-1.0, 2.0, logprob.numel(), dtype=logprob.dtype)
    return (logprob * weights).sum() + (entropy * weights.flip(0)).sum()


def case(vocab: int, rows: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, vocab, generator=gen) * 4
    targets = torch.randint(0, vocab, (rows,), generator=gen)
    x[1] = float("-inf")
    x[1, targets[1]] = 3.0  # all −inf but the target
    x[2] *= 1e3  # very peaked
    x[3] = x[3] * 1e-7 + 1e4  # nearly uniform, large offset
    return x, targets


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("vocab", [1, 7, 1000, 4097])
@pytest.mark.parametrize("temperature", [0.1, 1.0, 2.0])
def test_values_and_gradients(backend: str, vocab: int, temperature: float) -> None:
    x, targets = case(vocab)
    ref_in = x.clone().requires_grad_()
    ref_lp, ref_ent = naive(ref_in, targets, temperature)
    loss_of(ref_lp, ref_ent).backward()
    got_in = x.clone().requires_grad_()
    with use_backend(backend):
        lp, ent = token_logprobs(got_in, targets, temperature)
    loss_of(lp, ent).backward()
    torch.testing.assert_close(lp.double(), ref_lp.detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ent.double(), ref_ent.detach(), rtol=1e-5, atol=1e-4)
    assert torch.isfinite(got_in.grad).all()
    torch.testing.assert_close(got_in.grad, ref_in.grad, rtol=1e-4, atol=1e-4)


def test_leading_dimensions_and_bfloat16() -> None:
    x, targets = case(300, rows=8)
    x = x.clamp(-1e4, 1e4).to(torch.bfloat16).view(2, 4, 300)
    results = {}
    for backend in BACKENDS:
        inp = x.clone().requires_grad_()
        with use_backend(backend):
            lp, ent = token_logprobs(inp, targets.view(2, 4))
        lp.sum().backward()
        assert lp.shape == (2, 4) and inp.grad.dtype == torch.bfloat16
        results[backend] = (lp, ent, inp.grad.float())
    for a, b in zip(results["torch"], results["triton"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_version_matches_full_logits_and_is_bitwise_stable(backend: str) -> None:
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(11, 16, generator=gen)
    weight = torch.randn(37, 16, generator=gen) / 4
    targets = torch.randint(0, 37, (11,), generator=gen)
    ref_h, ref_w = hidden.double().requires_grad_(), weight.double().requires_grad_()
    loss_of(*naive(ref_h @ ref_w.T, targets, 0.7)).backward()
    runs = []
    for chunk_rows in (3, 3, 64):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        with use_backend(backend):
            lp, ent = linear_token_logprobs(h, w, targets, 0.7, chunk_rows=chunk_rows)
        loss_of(lp, ent).backward()
        runs.append((lp, ent, h.grad, w.grad))
    for a, b in zip(runs[0], runs[1], strict=True):
        assert torch.equal(a, b)  # same chunking, same device: bitwise identical
    lp, ent, grad_h, grad_w = runs[2]
    torch.testing.assert_close(grad_h.double(), ref_h.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad_w.double(), ref_w.grad, rtol=1e-4, atol=1e-4)
    for a, b in zip(runs[0], runs[2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_frozen_head_gets_no_weight_gradient() -> None:
    hidden = torch.randn(4, 8, requires_grad=True)
    weight = torch.randn(10, 8)
    lp, _ = linear_token_logprobs(hidden, weight, torch.tensor([0, 1, 2, 3]), chunk_rows=2)
    lp.sum().backward()
    assert hidden.grad is not None and weight.grad is None


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: token_logprobs(torch.zeros(3, 5), torch.zeros(3, dtype=torch.long), 0.0), "temperature must be > 0"),
        (lambda: token_logprobs(torch.zeros(3, 5), torch.zeros(2, dtype=torch.long)), "targets must be long"),
        (lambda: linear_token_logprobs(torch.zeros(3, 4), torch.zeros(5, 3), torch.zeros(3, dtype=torch.long)), "weight must be"),
    ],
)
def test_bad_arguments_get_one_clear_error(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
