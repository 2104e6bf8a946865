"""Counter-based per-row uniforms: a row's draw depends only on (seed, offset, row).

The sampling step needs one uniform per row. Deriving it from a counter rather than
a generator's state makes the result independent of how rows are chunked, of which
backend runs, and of the other rows in the call. The mixer is SplitMix64's
finaliser on a Weyl sequence (a full-period 64-bit bijection), computed with
wrapping int64 tensor arithmetic; the top 53 bits give a uniform on the float64
grid ``k / 2**53``, the finest grid float64 can hold on ``[0, 1)``.
"""

from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB


def _signed(value: int) -> int:
    """A 64-bit pattern as the int64 that holds it."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's ``>>`` is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    z = (z ^ _shr(z, 30)) * _signed(_MUL1)
    z = (z ^ _shr(z, 27)) * _signed(_MUL2)
    return z ^ _shr(z, 31)


def _mix_int(z: int) -> int:
    z = ((z ^ (z >> 30)) * _MUL1) & _MASK64
    z = ((z ^ (z >> 27)) * _MUL2) & _MASK64
    return z ^ (z >> 31)


def row_uniforms(n: int, seed: int, offset: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[n]`` float64 uniforms on ``[0, 1)``, row ``r`` a function of ``(seed, offset, r)`` only.

    Different ``(seed, offset)`` pairs give independent streams: use ``offset`` for
    the step index so that every denoising step draws afresh under one seed.
    """
    key = _mix_int((_mix_int(seed & _MASK64) + (offset & _MASK64) * _GOLDEN) & _MASK64)
    rows = torch.arange(1, n + 1, dtype=torch.int64, device=device)
    bits = _mix(rows * _signed(_GOLDEN) + _signed(key))
    return _shr(bits, 11).double() * 2.0**-53
