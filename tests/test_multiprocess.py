"""Two training processes over gloo: sharding, gradient sync, main-process duties, resume across layouts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import distributed_run as run
import pytest
import torch
from safetensors.torch import load_file

from unmask.rl.checkpoint import trainable_state
from unmask.rl.logging import read_metrics
from unmask.rl.trainer import Trainer

TESTS = Path(__file__).resolve().parent
GLOBAL_PROMPTS, STEPS = 2, 3  # per step: two prompts, two answers each


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(out: Path, processes: int, resume_from: Path | None = None) -> None:
    """``accelerate launch`` of distributed_run.py with the same global batch on ``processes`` ranks."""
    spec = {
        "output_dir": str(out), "max_steps": STEPS, "prompts_per_step": GLOBAL_PROMPTS // processes,
        "gradient_accumulation_steps": 2 * GLOBAL_PROMPTS // processes,
        "resume_from": None if resume_from is None else str(resume_from),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    # accelerate's own --cpu launcher starts one process without mpirun; its torchrun launcher
    # (--multi_gpu) starts N, and the recipe's device: cpu makes them a gloo group
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), str(TESTS / "distributed_run.py"), str(out / "spec.json")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


def in_process(out: Path, resume_from: Path | None = None) -> dict[str, torch.Tensor]:
    """The same run in this one process: the reference the 2-process run must reproduce."""
    spec = {"output_dir": str(out), "max_steps": STEPS, "prompts_per_step": GLOBAL_PROMPTS,
            "gradient_accumulation_steps": 2 * GLOBAL_PROMPTS, "resume_from": resume_from and str(resume_from)}
    trainer = Trainer(run.build_recipe(spec), model_factory=run.make_model, rows=run.ROWS)
    list(trainer.steps())
    return trainable_state(trainer.unwrapped)


def assert_same_weights(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two") / "run"
    launch(out, 2)
    return out


@pytest.fixture(scope="module")
def one(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    out = tmp_path_factory.mktemp("one") / "run"
    return out, in_process(out)


def test_two_ranks_hold_identical_weights_after_every_step(two):
    ranks = json.loads((two / "ranks.json").read_text())
    assert [r["rank"] for r in ranks] == [0, 1]
    assert len(ranks[0]["digests"]) == STEPS
    assert ranks[0]["digests"] == ranks[1]["digests"]
    assert len(set(ranks[0]["digests"])) == STEPS  # the weights moved at every step


def test_each_rank_rolls_out_its_own_share_of_the_step(two, one):
    ranks = json.loads((two / "ranks.json").read_text())
    stream = Trainer(run.build_recipe({"output_dir": str(two.parent / "probe"), "max_steps": 1, "prompts_per_step": 2,
                                       "gradient_accumulation_steps": 1}),
                     model_factory=run.make_model, rows=run.ROWS).stream
    for step in range(STEPS):
        shares = [r["prompts"][step] for r in ranks]
        assert shares[0] + shares[1] == [row["prompt"] for row in stream.take(step * GLOBAL_PROMPTS, GLOBAL_PROMPTS)]
        assert not set(shares[0]) & set(shares[1])


def test_two_processes_end_with_the_one_process_weights(two, one):
    _, weights = one
    assert_same_weights(load_file(str(two / "final.safetensors")), weights)


def test_logging_evaluation_and_checkpoints_happen_once_on_the_main_process(two, one):
    records = read_metrics(two / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert (two / "evaluations.txt").read_text().splitlines() == [f"rank 0 step {s}" for s in (1, 2, 3)]
    assert sorted(p.name for p in two.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    assert not list(two.glob(".checkpoint-*"))  # no half-written directories from a second writer
    reference = read_metrics(one[0] / "metrics.jsonl")
    for got, expected in zip(records, reference, strict=True):  # metrics averaged over ranks = global batch
        assert got["reward"] == pytest.approx(expected["reward"], abs=1e-6)
        assert got["loss"] == pytest.approx(expected["loss"], rel=1e-4, abs=1e-7)


def test_a_two_process_checkpoint_resumes_in_one_process(two, one, tmp_path):
    weights = in_process(tmp_path / "resumed", resume_from=two / "checkpoint-2")
    assert_same_weights(weights, one[1])


def test_a_one_process_checkpoint_resumes_in_two_processes(one, tmp_path):
    out = tmp_path / "resumed"
    launch(out, 2, resume_from=one[0] / "checkpoint-2")
    assert_same_weights(load_file(str(out / "final.safetensors")), one[1])
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [3]
