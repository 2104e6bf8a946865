"""The step forwards wait for the device only where a shape is unknown to the host (issue 29 point 2).

The driver hands each step forward the number of (row, column) pairs to predict, so
the forwards select them with ``nonzero_static`` and keep their FLOP counters on the
device; the native model takes the counts of its partial forward from the caller.
Two checks: a whole step forward runs on the ``meta`` device, where any host read
raises; and real rollouts on the CPU under ``host_reads`` (a stand-in for
``torch.cuda.set_sync_debug_mode``) read only where docs/sampling.md §9 says: at most
one read per step (the driver's, carrying the forward's counts, or the forward's),
and only at a round's first step for the block cache.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch
from host_reads import host_reads
from reference_sampler import random_tiny
from test_cache_model import small_dream

from unmask.models.sdar import tiny_sdar
from unmask.rollouts.absorbing.predict import MaskedPredict
from unmask.rollouts.block_forward import BlockStepForward
from unmask.rollouts.cache import StepForward
from unmask.rollouts.generate import generate

DRIVER = "rollouts/absorbing/predict.py"  # where a data-decided rule reads its step's work
SETTINGS = {"gen_length": 12, "steps": 9, "block_length": 4, "seed": 5}
STRATEGIES = [
    {},
    {"temperature": 1.0, "threshold": 0.3},  # rows finish at different steps and leave the forward
    {"temperature": 1.0, "remasking": "rcr"},
    {"temperature": 1.0, "early_exit": True},
]


def left_padded(lengths: list[int], width: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 60, (len(lengths), width), generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, width - n :] = 1
    return ids, mask


def traced_calls(monkeypatch, forward_class: type) -> list[tuple[bool, list[tuple[str, str]]]]:
    """Per call of a step forward (or a driver's step): (first call of its round, the host reads it made)."""
    calls: list[tuple[bool, list[tuple[str, str]]]] = []
    state = {"first": True}
    call, new_block = forward_class.__call__, getattr(forward_class, "new_block", None)

    def traced(self, *args):
        with host_reads() as reads:
            logits = call(self, *args)
        calls.append((state["first"], reads))
        state["first"] = False
        return logits

    def entered(self, *args):
        state["first"] = True
        return new_block(self, *args)

    monkeypatch.setattr(forward_class, "__call__", traced)
    if new_block is not None:
        monkeypatch.setattr(forward_class, "new_block", entered)
    return calls


@pytest.mark.parametrize("cfg_scale", [0.0, 1.0])
def test_full_canvas_step_forward_runs_on_the_meta_device(cfg_scale):
    """The reference mode's step (whole canvas, head on every column) reads nothing back, model included."""
    model = random_tiny(seed=3).to("meta")
    meta, batch, plen, length = torch.device("meta"), 3, 8, 12
    prompts = torch.empty(batch, plen, dtype=torch.long, device=meta)
    mask = torch.empty(batch, plen + length, dtype=torch.long, device=meta)
    forward = StepForward(model, prompts, mask, length, cfg_scale=cfg_scale, partial_head=False)
    rows = torch.arange(2, device=meta)
    predict = torch.empty(2, length, dtype=torch.bool, device=meta)
    for _ in range(3):
        logits = forward(torch.empty(batch, length, dtype=torch.long, device=meta), rows, predict, (0, 4), 5)
        assert logits.shape == (5, model.dims.vocab)  # FLOPs were charged too: on the CPU that would raise


@pytest.mark.parametrize("settings", STRATEGIES, ids=lambda s: "-".join(map(str, s.values())) or "topk")
def test_block_cache_reads_the_device_only_at_a_rounds_first_step(monkeypatch, settings):
    calls = traced_calls(monkeypatch, BlockStepForward)
    ids, mask = left_padded([8, 4, 7])
    generate(tiny_sdar(seed=1), ids, attention_mask=mask, cache="block", **SETTINGS, **settings)
    later = [reads for first, reads in calls if not first]
    assert later and all(not reads for reads in later), later
    for _, reads in calls:  # whether the cache holds the round's rows, and a refill's prompt width
        assert len(reads) <= 2, reads
        assert all(where.startswith(("rollouts/block_forward.py", "rollouts/cache.py")) for _op, where in reads), reads


def rollout(cache: str, partial_head: bool, settings: dict, family: str = "tiny") -> None:
    ids, mask = left_padded([8, 4, 7])
    model = small_dream() if family == "dream" else random_tiny(seed=3, scale=0.3)
    generate(model, ids % model.dims.vocab, attention_mask=mask, cache=cache, partial_head=partial_head,
             **SETTINGS, **settings)


@pytest.mark.parametrize(("cache", "partial_head"), [("none", True), ("dual", True), ("dual", False), ("delayed", True)])
@pytest.mark.parametrize("settings", STRATEGIES, ids=lambda s: "-".join(map(str, s.values())) or "topk")
def test_full_canvas_forward_reads_at_most_one_count_vector_per_step(monkeypatch, cache, partial_head, settings):
    """Which columns some row reads (and, with a cache, recomputes) is data: at most one read per step.

    The native model's partial forward reads nothing itself (the caller gives it the
    count of its last block's columns): no ``unique``, no bool-mask index.
    """
    calls = traced_calls(monkeypatch, StepForward)
    rollout(cache, partial_head, settings)
    assert calls
    for _, reads in calls:
        assert [op for op, _ in reads] in ([], ["tolist"]), reads
        assert all(where.startswith("rollouts/cache.py") for _, where in reads), reads


@pytest.mark.parametrize("family", ["tiny", "dream"])
@pytest.mark.parametrize("cache", ["none", "dual", "delayed", "prefix"])
@pytest.mark.parametrize("partial_head", [True, False])
@pytest.mark.parametrize("settings", STRATEGIES, ids=lambda s: "-".join(map(str, s.values())) or "topk")
def test_a_step_reads_the_device_at_most_once(monkeypatch, family, cache, partial_head, settings):
    """Driver and forward together: a data-decided rule's read of its work carries the forward's counts too."""
    calls = traced_calls(monkeypatch, MaskedPredict)
    rollout(cache, partial_head, settings, family)
    assert calls and all(len(reads) <= 1 for _, reads in calls), calls
    if cache == "none" and not partial_head and family == "tiny":  # the reference step: only a rule's own read
        assert all(where.startswith(DRIVER) for _, reads in calls for _, where in reads), calls


@pytest.mark.parametrize("settings", STRATEGIES, ids=lambda s: "-".join(map(str, s.values())) or "topk")
def test_a_prompt_cache_reads_more_only_at_a_later_rounds_first_step(monkeypatch, settings):
    """Its cache outlives the round: whether it holds the round's rows, and then its counts, are read at the call."""
    calls = traced_calls(monkeypatch, MaskedPredict)
    blind = random_tiny(seed=3, scale=0.3)
    blind.config = dataclasses.replace(blind.config, prompt_attends_answer=False)
    ids, mask = left_padded([8, 4, 7])
    generate(blind, ids, attention_mask=mask, cache="prompt", **SETTINGS, **settings)
    later_rounds = SETTINGS["gen_length"] // SETTINGS["block_length"] - 1
    assert all(len(reads) <= 3 for _, reads in calls), calls
    assert sum(len(reads) > 1 for _, reads in calls) <= later_rounds, calls


@pytest.mark.parametrize("cache", ["none", "dual", "delayed"])
@pytest.mark.parametrize("partial_head", [True, False])
@torch.no_grad()  # as in sampling: with gradients the model runs every column's last block
def test_the_counts_read_ahead_are_those_the_forward_would_read(cache, partial_head):
    """Rows that leave the step must not count: Dream reads a row's first real token at itself (row 0 has no
    prompt), and an idle row's changed token must not make the cache recompute its column."""
    model = small_dream()
    ids, mask = left_padded([0, 4, 7])
    ids, full = ids % model.dims.vocab, torch.cat([mask, torch.ones(3, 12, dtype=torch.long)], 1)
    answer = model.process.blank(torch.zeros(3, 12, dtype=torch.long))

    def filled() -> StepForward:
        forward = StepForward(model, ids, full, 12, cache=cache, partial_head=partial_head)
        forward.new_block(0)
        forward(answer, torch.arange(3), torch.ones(3, 12, dtype=torch.bool), (4, 8), 36)  # fills the cache
        return forward

    ahead_of_time, by_itself = filled(), filled()
    answer = answer.clone()  # the forwards keep the answer they were filled with
    answer[0, 1] = answer[2, 0] = 7  # committed outside the block: row 0's change must not count
    predict = torch.zeros(3, 12, dtype=torch.bool)
    predict[1, [0, 4, 6]] = predict[2, [5, 10]] = True  # row 0 (its first real token at answer column 0) idles
    rows = torch.tensor([1, 2])
    counts = ahead_of_time.read_ahead(answer, predict, (4, 8)).tolist()
    logits = ahead_of_time(answer, rows, predict[rows], (4, 8), 5, counts)
    torch.testing.assert_close(logits, by_itself(answer, rows, predict[rows], (4, 8), 5), rtol=0, atol=0)
    if cache != "none":  # the same columns recomputed and refreshed: a wrong count would store states elsewhere
        for ours, theirs in zip(vars(ahead_of_time._cache).values(), vars(by_itself._cache).values(), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    else:
        need = torch.cat([torch.zeros(8, dtype=torch.bool), predict.any(0)])
        assert counts == by_itself._counted(need, None, full[rows], partial_head).tolist()
        whole = model.logits(torch.cat([ids, answer], 1)[rows], full[rows])  # and the logits are the model's
        at = predict[rows].nonzero()
        torch.testing.assert_close(logits, whole[at[:, 0], at[:, 1] + 8])


@pytest.mark.parametrize("settings", STRATEGIES, ids=lambda s: "-".join(map(str, s.values())) or "topk")
def test_reference_mode_forward_reads_nothing(monkeypatch, settings):
    calls = traced_calls(monkeypatch, StepForward)
    ids, mask = left_padded([8, 4, 7])
    generate(random_tiny(seed=3, scale=0.3), ids, attention_mask=mask, partial_head=False, **SETTINGS, **settings)
    assert calls and Counter(len(reads) for _, reads in calls) == Counter({0: len(calls)})


def test_host_reads_sees_every_kind_of_read():
    """The detector itself: each of these waits for a GPU, and the non-waiting forms are not flagged."""
    x = torch.arange(6).reshape(2, 3)
    bools = x > 2
    with host_reads() as reads:
        x[0, 0].item(), bool(bools.any()), int(x.max()), x.tolist(), x.cpu(), torch.equal(x, x)
        x.nonzero(), x[bools], torch.unique(x), x.masked_select(bools)
        x.clone()[bools] = 0
    assert len(reads) == 11
    with host_reads() as reads:
        torch.nonzero_static(bools, size=3), torch._assert_async(bools.any()), x[torch.tensor([0, 1])]
        x.clone().index_add_(0, torch.tensor([0]), x[:1]), bools.sum(1)
    assert reads == []


def test_a_row_joining_during_a_round_is_refused():
    """The contract that spares the row check its read: without it the cache would serve another row's states."""
    model = random_tiny(seed=3)
    ids, mask = left_padded([8, 4, 7])
    forward = StepForward(model, ids, torch.cat([mask, torch.ones(3, 12, dtype=torch.long)], 1), 12, cache="dual")
    answer = model.process.blank(torch.zeros(3, 12, dtype=torch.long))
    forward.new_block(0)
    forward(answer, torch.tensor([0, 2]), torch.ones(2, 12, dtype=torch.bool), (0, 4), 24)
    forward(answer, torch.tensor([2]), torch.ones(1, 12, dtype=torch.bool), (0, 4), 12)  # a row may leave
    with pytest.raises(RuntimeError, match="joined"):
        forward(answer, torch.tensor([1, 2]), torch.ones(2, 12, dtype=torch.bool), (0, 4), 24)
    forward.new_block(1)  # at a round's start it may: the cache is refilled
    assert forward(answer, torch.tensor([1, 2]), torch.ones(2, 12, dtype=torch.bool), (4, 8), 24).shape[0] == 24
