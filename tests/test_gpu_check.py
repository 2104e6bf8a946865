"""bench/gpu_check.py runs on the CPU at tiny shapes, so the script never reaches a GPU untested."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # the RL steps' reward is gpu_check:spread_reward
    spec.loader.exec_module(module)
    return module


def test_the_whole_check_passes_at_tiny_shapes_and_prints_every_section(tmp_path):
    """Run as a user runs it, ``python bench/gpu_check.py --tiny`` from the repository root."""
    done = subprocess.run([sys.executable, str(SCRIPT.relative_to(ROOT)), "--tiny", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout
    for expected in ("log-prob float32", "grad bfloat16", "sampled tokens", "forward+backward", "peak memory",
                     "batch 1,", "batch 8,", "batch 32,", "none / prefix / dual", "RL steps"):
        assert expected in table, expected
    assert "MISMATCH" not in table


def test_a_kernel_mismatch_is_flagged(gpu_check, monkeypatch):
    monkeypatch.setitem(gpu_check.TOLERANCE, torch.float32, (-1.0, -1.0))  # nothing can be that close
    rows = gpu_check.kernel_rows(rows=4, vocab=64, device=torch.device("cpu"))
    flagged = [r.setting for r in rows if not r.ok]
    assert any("float32" in name for name in flagged) and not any("bfloat16" in name for name in flagged)


def test_the_model_is_built_from_the_real_llada_config(gpu_check, shared_data):
    config_path = shared_data.parent / "models" / "llada-8b-instruct" / "config.json"
    if not config_path.is_file():
        pytest.skip(f"{config_path} not found")
    args = gpu_check.argparse.Namespace(config=str(config_path), layers=3, tiny=False)
    config, source = gpu_check.llada_config(args)
    assert source == str(config_path)
    assert (config.n_layers, config.d_model, config.vocab_size, config.mlp_hidden_size) == (3, 4096, 126464, 12288)
