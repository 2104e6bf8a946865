"""Benchmark evaluation: ``evaluate`` (shared by ``unmask eval`` and the trainer), reports, comparison."""

from unmask.evaluation.benchmarks import BENCHMARKS, COUNTDOWN_EVAL_SEED, benchmark_rows
from unmask.evaluation.compare import Comparison, compare_records, compare_runs
from unmask.evaluation.report import Summary, summarize, write_report
from unmask.evaluation.runner import EvalResult, evaluate
from unmask.evaluation.settings import EvalSettings, settings_grid
from unmask.evaluation.stats import BootstrapCI, paired_bootstrap, pass_at_k
from unmask.evaluation.store import SampleLog, read_samples

__all__ = [
    "BENCHMARKS",
    "COUNTDOWN_EVAL_SEED",
    "BootstrapCI",
    "Comparison",
    "EvalResult",
    "EvalSettings",
    "SampleLog",
    "Summary",
    "benchmark_rows",
    "compare_records",
    "compare_runs",
    "evaluate",
    "paired_bootstrap",
    "pass_at_k",
    "read_samples",
    "settings_grid",
    "summarize",
    "write_report",
]
