"""The TRL front end under ``accelerate launch`` with two processes (gloo): each rank draws its own masks,
on the keys the shared update engine schedules for its process index, and its loss is the one unmask's
own trainer computes on that rank for the same micro-batch and weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_multiprocess import free_port

TESTS = Path(__file__).resolve().parent


@pytest.mark.slow  # two TRL processes: 10-30 s
def test_two_ranks_draw_different_masks_and_match_unmasks_trainer(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), str(TESTS / "trl_ranks_run.py"), str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    first, second = sorted(json.loads((tmp_path / "ranks.json").read_text()), key=lambda r: r["rank"])
    assert (first["rank"], second["rank"]) == (0, 1)
    for rank in (first, second):
        assert rank["keys"] == rank["scheduled"]  # the engine's schedule, process index included
    assert set(sum(first["keys"], [])).isdisjoint(sum(second["keys"], []))  # before the engine: equal on both ranks
    assert first["prompt_masks"] and first["prompt_masks"] != second["prompt_masks"]
    for rank in (first, second):  # each rank's TRL loss is the one unmask's trainer computes on that rank
        assert rank["trl_loss"] == pytest.approx(rank["unmask_loss"], rel=1e-6, abs=1e-9)
    assert first["trl_loss"] != 0 and second["trl_loss"] != 0 and first["trl_loss"] != second["trl_loss"]
