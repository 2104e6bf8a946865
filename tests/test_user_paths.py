"""unmask run the way users run it: a fresh process started from the repository root.

In-process tests import unmask through pytest's own ``sys.path``; a user's ``python -c``,
``python -m unmask.cli`` or notebook puts the working directory first instead, which is
where a repository folder can hide an installed package (docs/layout.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ONE_TINY_STEP = [
    "optim.max_steps=1", "rollout.num_generations=2", "rollout.prompts_per_step=2",
    "optim.per_device_train_batch_size=4", "eval.before=false", "eval.after=false",
    "logging.progress=false", "logging.plot=false",
]


def run_from_root(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_trl_front_end_imports_from_the_root():
    done = run_from_root("-c", "import unmask.integrations.trl as t; print(t.DiffusionGRPOTrainer.__name__)")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "DiffusionGRPOTrainer"


def test_cli_train_runs_one_tiny_step_from_the_root(tmp_path):
    done = run_from_root("-m", "unmask.cli", "train", "tiny/countdown_diffu_grpo_trajectory",
                         f"output_dir={tmp_path}", *ONE_TINY_STEP)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if "loss" in s] == [1]
    assert not [s for s in steps if "phase" in s]  # eval.before/after false: no evaluation ran


def test_a_broken_install_names_the_failed_import_and_the_repair(tmp_path):
    """The original failure, rebuilt: a regular ``kernels`` package first on the path."""
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").write_text("")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}
    done = run_from_root("-m", "unmask.cli", "train", "tiny/countdown_diffu_grpo_trajectory",
                         f"output_dir={tmp_path / 'run'}", *ONE_TINY_STEP, env=env)
    assert done.returncode == 3, done.stderr[-3000:]
    message = done.stderr.strip().splitlines()
    assert message[0].startswith("error: broken install:") and "kernels" in message[0]
    assert any(line.strip().startswith("at ") and "import" in line for line in message)
    assert "make install" in message[-1]
    assert "Traceback" not in done.stderr
