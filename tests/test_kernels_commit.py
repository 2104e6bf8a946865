"""Commit selection and backend dispatch."""

from __future__ import annotations

import pytest
import torch

from unmask.kernels.dispatch import backend_for, requested_backend, set_backend, use_backend
from unmask.kernels.ops import select_commits

NEG = float("-inf")


def test_topk_matches_per_row_topk_with_per_row_k() -> None:
    gen = torch.Generator().manual_seed(0)
    conf = torch.rand(5, 12, generator=gen)
    conf[conf < 0.3] = NEG
    k = torch.tensor([0, 1, 3, 5, 12])
    chosen = select_commits(conf, k=k)
    for row in range(5):
        eligible = int((conf[row] > NEG).sum())
        take = min(int(k[row]), eligible)
        expected = torch.zeros(12, dtype=torch.bool)
        expected[conf[row].topk(take).indices] = True
        assert torch.equal(chosen[row], expected)


def test_topk_ties_go_to_the_lower_position_and_eligible_mask_is_respected() -> None:
    conf = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.1]])
    assert select_commits(conf, k=2).tolist() == [[True, True, False, False, False]]
    eligible = torch.tensor([[False, False, True, True, True]])
    assert select_commits(conf, k=1, eligible=eligible).tolist() == [[False, False, True, False, False]]


def test_threshold_rule_with_fallback() -> None:
    conf = torch.tensor([[0.95, 0.2, 0.91, NEG], [0.3, 0.6, NEG, 0.1], [NEG, NEG, NEG, NEG]])
    chosen = select_commits(conf, threshold=0.9)
    assert chosen.tolist() == [
        [True, False, True, False],  # all above the threshold
        [False, True, False, False],  # none above: the single best
        [False, False, False, False],  # nothing eligible: nothing
    ]


def test_select_commits_needs_exactly_one_rule() -> None:
    with pytest.raises(ValueError, match="exactly one of k= or threshold="):
        select_commits(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="exactly one of k= or threshold="):
        select_commits(torch.zeros(1, 3), k=1, threshold=0.5)


def test_dispatch_env_var_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.zeros(1)
    monkeypatch.delenv("UNMASK_KERNELS", raising=False)
    assert backend_for(cpu) == "torch"  # auto on CPU
    monkeypatch.setenv("UNMASK_KERNELS", "torch")
    assert requested_backend() == "torch"
    with use_backend("auto"):
        assert requested_backend() == "auto"
    assert requested_backend() == "torch"
    set_backend("auto")
    try:
        assert requested_backend() == "auto"
    finally:
        set_backend(None)
    monkeypatch.setenv("UNMASK_KERNELS", "cuda")
    with pytest.raises(ValueError, match="UNMASK_KERNELS='cuda' is not a kernel backend"):
        backend_for(cpu)


def test_forcing_triton_on_cpu_without_the_interpreter_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("triton", reason="triton is not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with use_backend("triton"), pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        backend_for(torch.zeros(1))
