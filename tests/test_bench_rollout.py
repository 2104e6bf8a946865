"""bench/rollout.py's block-model rows, run as a user runs the script (tiny shapes)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_block_rows_report_the_exact_cache_against_the_uncached_sampler():
    done = subprocess.run(
        [sys.executable, "bench/rollout.py", "--skip", "tiny", "--skip", "llada", "--sdar-shape", "32,1,2,1,16,64,100"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {cells[0]: cells for cells in (
        [c.strip() for c in line.strip("|").split("|")] for line in done.stdout.splitlines() if line.startswith("| ")
    )}
    cached = rows["block cache"]
    assert cached[-1] == "100.0"  # exact: the uncached sampler's tokens
    assert float(cached[4]) > 2  # FLOPs ÷ reference: one block per step instead of the canvas
    assert re.search(r"random SDAR-shaped block model", done.stdout)
