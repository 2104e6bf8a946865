"""Statistics shared by evaluation reports: pass@k and the paired bootstrap.

Kept free of I/O so the default-run report and ``unmask eval --compare`` compute
their intervals the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import torch


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al., 2021).

    ``1 - C(n-c, k) / C(n, k)``: the chance that ``k`` samples drawn without
    replacement from the ``n`` contain a correct one. Plain "any of k correct"
    over exactly k samples is the same number but with higher variance.
    """
    if not 0 < k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 < k <= n and 0 <= c <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def mean_pass_at_k(counts: list[tuple[int, int]], ks: list[int]) -> dict[int, float]:
    """Mean unbiased pass@k over tasks given (samples, correct) per task, for each k that
    every task has enough samples for (a k some task has fewer samples than is left out)."""
    fewest = min((n for n, _ in counts), default=0)
    return {k: sum(pass_at_k(n, c, k) for n, c in counts) / len(counts) for k in ks if 0 < k <= fewest}


@dataclass(frozen=True)
class BootstrapCI:
    """Mean paired difference (B − A) with a percentile confidence interval."""

    diff: float
    low: float
    high: float
    n: int

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def paired_bootstrap(
    a: list[float],
    b: list[float],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapCI:
    """Paired bootstrap CI of ``mean(b) - mean(a)`` over problems.

    ``a[i]`` and ``b[i]`` are scores of the same problem in two runs; resampling
    problems (not runs independently) keeps the pairing, which is what makes the
    interval tight when two checkpoints agree on most problems. Seeded: the same
    inputs always give the same interval.
    """
    if len(a) != len(b):
        raise ValueError(f"paired bootstrap needs equal lengths (got {len(a)} and {len(b)})")
    if not a:
        raise ValueError("paired bootstrap needs at least one pair")
    diffs = torch.tensor(b, dtype=torch.float64) - torch.tensor(a, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(diffs), (resamples, len(diffs)), generator=gen)
    means = diffs[idx].mean(dim=1)
    tail = (1.0 - confidence) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1.0 - tail], dtype=torch.float64)).tolist()
    return BootstrapCI(diff=float(diffs.mean()), low=low, high=high, n=len(diffs))
