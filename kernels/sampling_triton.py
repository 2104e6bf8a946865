"""Fused sampling step in Triton: the kernel twin of :mod:`unmask.kernels.sampling`.

Each program owns ``ROWS`` rows and streams the vocabulary in ``BLOCK``-wide
tiles; nothing of size ``[N, V]`` is written. Pass 1 is an online softmax that
keeps, per row, the running max (which is also top-1), top-2, ``Σ e^{x-m}``,
``Σ e^{x-m}(x-m)`` (entropy) and, when sampling, the float64 normaliser at
temperature τ. Pass 2 (τ > 0 only) rescans the row with a float64 running
cumulative sum and stops the search at the first index whose cumulative weight
exceeds ``u · total``: the inverse CDF needs the normaliser before the scan, and
re-reading the row costs less than the ``V`` Philox draws and float64 double
logarithms a one-pass Gumbel-max would need for the same exactness. Statistics are
float32 (outputs float64 for parity of dtypes with the twin); the CDF is float64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from unmask.kernels.sampling import StepSample, check_sample_args

#: elements per tile (ROWS × BLOCK)
TILE = 2048


@triton.jit
def softmax_step(x, m, s, a, scale_by):
    """Fold a ``[ROWS, BLOCK]`` tile into the running max ``m`` of ``x`` and, with
    ``d = (x - m) · scale_by``, ``s = Σ e^d`` and ``a = Σ e^d d``; also returns the
    tile's max shift (scaled) and ``d``. Subtracting the max before scaling keeps
    ``d`` accurate for logits with a large common offset.

    ``-inf`` entries contribute nothing (never ``0 · -inf``), and an old sum that
    underflows under the new max is dropped rather than turned into NaN.
    """
    new_m = tl.maximum(m, tl.max(x, 1))
    safe = tl.where(new_m == float("-inf"), 0.0, new_m)
    shift = (m - safe) * scale_by
    scale = tl.exp(shift)
    d = (x - safe[:, None]) * scale_by
    e = tl.exp(d)
    a = tl.where(scale > 0, scale * (a + s * shift), 0.0) + tl.sum(tl.where(e > 0, e * d, 0.0), 1)
    s = scale * s + tl.sum(e, 1)
    return new_m, s, a, shift, d


@triton.jit
def softmax_finish(m, s, a):
    """The max made safe for subtraction, ``log s`` and the entropy ``log s − a/s``."""
    safe = tl.where(m == float("-inf"), 0.0, m)
    log_s = tl.log(s)
    return safe, log_s, log_s - a / s


@triton.jit
def _sample_kernel(
    X, stride, N, V, U, TAU,
    TOKEN, CONF, LOGP, MARGIN, ENT,
    GREEDY: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < N
    row_ptr = X + rows.to(tl.int64) * stride
    base = row_ptr[:, None]
    cols0 = tl.arange(0, BLOCK)[None, :]
    neg_inf = float("-inf")
    top1 = tl.full([ROWS], neg_inf, tl.float32)
    top2 = tl.full([ROWS], neg_inf, tl.float32)
    arg = tl.zeros([ROWS], tl.int32)
    s = tl.zeros([ROWS], tl.float32)
    a = tl.zeros([ROWS], tl.float32)
    st = tl.zeros([ROWS], tl.float64)
    inv_tau = 1.0 / tl.load(TAU)
    for start in range(0, V, BLOCK):
        cols = start + cols0
        x = tl.load(base + cols, mask=row_ok[:, None] & (cols < V), other=neg_inf).to(tl.float32)
        b1 = tl.max(x, 1)
        bi = tl.argmax(x, 1)
        b2 = tl.max(tl.where(cols0 == bi[:, None], neg_inf, x), 1)
        arg = tl.where(b1 > top1, start + bi, arg)
        top2 = tl.maximum(tl.minimum(top1, b1), tl.maximum(top2, b2))
        top1, s, a, shift, d = softmax_step(x, top1, s, a, 1.0)
        if not GREEDY:
            st = tl.exp(shift.to(tl.float64) * inv_tau) * st + tl.sum(tl.exp(d.to(tl.float64) * inv_tau), 1)
    safe, log_s, entropy = softmax_finish(top1, s, a)
    if GREEDY:
        token = arg
        x_tok = top1
        logp = ((x_tok - safe) - log_s).to(tl.float64)
    else:
        target = tl.load(U + rows, mask=row_ok, other=0.0) * st
        found = tl.full([ROWS], V, tl.int32)
        last = tl.zeros([ROWS], tl.int32)
        run = tl.zeros([ROWS], tl.float64)
        for start in range(0, V, BLOCK):
            cols = start + cols0
            x = tl.load(base + cols, mask=row_ok[:, None] & (cols < V), other=neg_inf)
            w = tl.exp((x.to(tl.float64) - safe[:, None].to(tl.float64)) * inv_tau)
            cum = run[:, None] + tl.cumsum(w, 1)
            found = tl.minimum(found, tl.min(tl.where(cum > target[:, None], cols, V), 1))
            last = tl.maximum(last, tl.max(tl.where(w > 0, cols, -1), 1))
            run = tl.max(cum, 1)
        token = tl.where(found < V, found, last)
        x_tok = tl.load(row_ptr + token, mask=row_ok, other=0.0).to(tl.float32)
        logp = (x_tok - safe).to(tl.float64) * inv_tau - tl.log(st)
    tl.store(TOKEN + rows, token.to(tl.int64), mask=row_ok)
    tl.store(CONF + rows, (tl.exp(x_tok - safe) / s).to(tl.float64), mask=row_ok)
    tl.store(LOGP + rows, logp, mask=row_ok)
    tl.store(MARGIN + rows, ((tl.exp(top1 - safe) - tl.exp(top2 - safe)) / s).to(tl.float64), mask=row_ok)
    tl.store(ENT + rows, entropy.to(tl.float64), mask=row_ok)


def tile_shape(width: int) -> tuple[int, int]:
    """``(ROWS, BLOCK)`` for a row width: one wide tile for big vocabularies, many rows for small ones."""
    block = min(triton.next_power_of_2(max(width, 1)), TILE)
    return max(1, min(64, TILE // block)), block


def sample_step_triton(logits: torch.Tensor, temperature: float, uniforms: torch.Tensor | None) -> StepSample:
    """Triton version of :func:`unmask.kernels.sampling.sample_step_torch` (same uniforms, same rule)."""
    check_sample_args(logits, temperature, uniforms)
    logits = logits if logits.stride(-1) == 1 else logits.contiguous()
    n, v = logits.shape
    out = [torch.empty(n, dtype=torch.long, device=logits.device)]
    out += [torch.empty(n, dtype=torch.float64, device=logits.device) for _ in range(4)]
    if n == 0:
        return StepSample(*out)
    greedy = temperature == 0
    tau = torch.tensor([1.0 if greedy else temperature], dtype=torch.float64, device=logits.device)
    u = tau if greedy else uniforms.to(device=logits.device, dtype=torch.float64).contiguous()
    rows, block = tile_shape(v)
    _sample_kernel[(triton.cdiv(n, rows),)](
        logits, logits.stride(0), n, v, u, tau, *out, GREEDY=greedy, ROWS=rows, BLOCK=block
    )
    return StepSample(*out)
