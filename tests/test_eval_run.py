"""``unmask eval`` end to end on a random-weight tiny model: formats, outputs, resume, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from unmask.cli import build_parser, main, resolve_recipe_path
from unmask.data import countdown
from unmask.evaluation import (
    COUNTDOWN_EVAL_SEED,
    benchmark_rows,
    evaluate,
    read_samples,
    settings_grid,
)
from unmask.evaluation.cli import apply_family_templates
from unmask.evaluation.loading import load_eval_model
from unmask.evaluation.settings import default_gen_lengths
from unmask.models import tiny

LABEL = "len8-steps4-block8-low_confidence-t0"
BENCHES = ["gsm8k", "math500", "amc", "sudoku", "countdown"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny")
    tiny(seed=0).save_pretrained(path)
    return path


def _eval(model: Path, out: Path, *extra: str) -> int:
    return main(["eval", "--model", str(model), "--gen-length", "8", "--out", str(out), *extra])


def _lines(out: Path) -> list[str]:
    return (out / "samples.jsonl").read_text().splitlines()


def _untimed(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "seconds"}


def test_every_benchmark_format_outputs_and_resume(tiny_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ("--bench", ",".join(BENCHES), "--data-dir", str(shared_data))
    assert _eval(tiny_dir, out, *args, "--limit", "2") == 0
    records = read_samples(out / "samples.jsonl")
    assert sorted((r["bench"], r["problem"]) for r in records) == sorted((b, p) for b in BENCHES for p in (0, 1))
    first = {r["bench"]: r for r in records if r["problem"] == 0}
    gsm8k_gold = json.loads((shared_data / "gsm8k_test.jsonl").open().readline())["answer"].split("####")[1]
    assert first["gsm8k"]["reference"] == {"answer": gsm8k_gold.strip().replace(",", "")}
    assert first["sudoku"]["reference"]["puzzle"] in first["sudoku"]["prompt"]
    assert first["countdown"]["reference"]["target"] == int(
        json.loads((shared_data / "countdown_cd3_test.jsonl").open().readline())["output"]
    )
    for r in records:
        assert r["setting"] == LABEL and r["settings"]["steps"] == 4 and r["settings"]["block_length"] == 8
        assert isinstance(r["completion"], str) and isinstance(r["correct"], bool)
        assert 0 <= r["answer_tokens"] <= 8 and 1 <= r["nfe"] <= 4
    table = (out / "table.md").read_text().splitlines()
    assert table[0].startswith("| benchmark | setting | n | acc % |")
    assert sorted(row.split(" | ")[0].strip("| ") for row in table[2:]) == sorted(BENCHES)
    summary = json.loads((out / "summary.json").read_text())
    assert {r["bench"]: r["problems"] for r in summary["results"]} == dict.fromkeys(BENCHES, 2)

    # resume with a larger limit: old lines untouched, only the new problems generated
    before = _lines(out)
    assert _eval(tiny_dir, out, *args, "--limit", "3") == 0
    after = _lines(out)
    assert after[: len(before)] == before and len(after) == 3 * len(BENCHES)

    # crash mid-write: the truncated record is regenerated, identically (seeded per problem)
    (out / "samples.jsonl").write_text("\n".join(after)[:-15])
    assert _eval(tiny_dir, out, *args, "--limit", "3") == 0
    healed = read_samples(out / "samples.jsonl")
    assert [_untimed(r) for r in healed] == [_untimed(json.loads(line)) for line in after]


def test_cli_agrees_with_in_memory_evaluate_on_held_out_countdown(tiny_dir: Path, tmp_path: Path) -> None:
    rows = benchmark_rows("countdown", limit=3)
    apply_family_templates({"countdown": rows}, "tiny")
    generated = countdown.generate(3, seed=COUNTDOWN_EVAL_SEED)
    assert [(r["nums"], r["target"]) for r in rows] == [(g["nums"], g["target"]) for g in generated]
    assert _eval(tiny_dir, tmp_path / "cli", "--bench", "countdown", "--limit", "3") == 0
    cli = read_samples(tmp_path / "cli" / "samples.jsonl")
    result = evaluate(load_eval_model(str(tiny_dir)), rows, "countdown", settings_grid([8]), batch_size=2)
    assert [r["completion"] for r in result.records] == [r["completion"] for r in cli]
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())["results"][0]
    assert result.accuracy() == summary["accuracy"]


def test_cli_defaults_match_the_default_runs_evaluation() -> None:
    """`unmask eval --bench countdown` on a tiny model = the default run's greedy 2 tok/step phase."""
    from unmask.recipe import load_recipe
    from unmask.run import eval_rows, eval_settings

    recipe = load_recipe(resolve_recipe_path("tiny/countdown_mdpo"))
    defaults = build_parser().parse_args(["eval"])
    (setting,) = settings_grid(default_gen_lengths("tiny"), block_length=defaults.block_length,
                               temperature=defaults.temperature, remasking=defaults.remasking)  # fmt: skip
    assert setting in eval_settings(recipe).values()
    assert defaults.seed == recipe.seed and recipe.data.chat_template is False
    rows = {"countdown": benchmark_rows("countdown")}
    apply_family_templates(rows, "tiny")
    assert [r["prompt"] for r in rows["countdown"]] == [r["prompt"] for r in eval_rows(recipe)]


def test_sampled_answers_are_seeded_per_problem_and_sample(shared_data: Path) -> None:
    model = tiny(seed=1)
    rows = benchmark_rows("sudoku", data_dir=shared_data, limit=2)
    grid = settings_grid([8], temperature=1.0)
    big = evaluate(model, rows, "sudoku", grid, num_samples=3, batch_size=6)
    small = evaluate(model, rows, "sudoku", grid, num_samples=3, batch_size=2)
    assert [r["completion"] for r in big.records] == [r["completion"] for r in small.records]
    assert len({r["seed"] for r in big.records}) == 6
    assert len({r["completion"] for r in big.records}) > 1
    (summary,) = big.summaries
    assert summary.samples_per_problem == 3 and set(summary.pass_at_k) == {3}


def test_compare_cli_lists_flipped_problems(tiny_dir: Path, tmp_path: Path, capsys) -> None:
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    assert _eval(tiny_dir, run_a, "--bench", "countdown", "--limit", "3") == 0
    shutil.copytree(run_a, run_b)
    records = read_samples(run_b / "samples.jsonl")
    records[1]["correct"] = not records[1]["correct"]
    (run_b / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    capsys.readouterr()
    assert main(["eval", "--compare", str(run_a), str(run_b)]) == 0
    shown = capsys.readouterr().out
    flipped = "gained [1]; lost -" if records[1]["correct"] else "gained -; lost [1]"
    assert f"countdown {LABEL}: {flipped}" in shown
    assert main(["eval", "--compare", str(run_a), str(tmp_path / "missing")]) == 2


def test_user_errors_name_the_benchmark_and_option(tiny_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    assert _eval(tiny_dir, tmp_path / "x", "--bench", "gsm8k", "--data-dir", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "benchmark 'gsm8k'" in err and "gsm8k_test.jsonl not found in --data-dir" in err
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    assert _eval(tiny_dir, tmp_path / "x", "--bench", "math500") == 2
    err = capsys.readouterr().err
    assert "benchmark 'math500'" in err and "--data-dir" in err and err.count("\n") == 1
    assert _eval(tmp_path / "nope", tmp_path / "x", "--bench", "countdown", "--limit", "1") == 2
    assert "--model" in capsys.readouterr().err
    assert _eval(tiny_dir, tmp_path / "y", "--bench", "countdown", "--limit", "1") == 0
    other = tmp_path / "other"
    tiny(seed=5).save_pretrained(other)
    assert _eval(other, tmp_path / "y", "--bench", "countdown", "--limit", "1") == 2
    assert "choose another --out" in capsys.readouterr().err


def test_adapter_is_merged_into_the_model(tiny_dir: Path, tmp_path: Path) -> None:
    base = tiny(seed=0)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=list(base.lora_targets), init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = load_eval_model(str(tiny_dir), str(tmp_path / "adapter"))
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        assert torch.allclose(merged.logits(ids), peft_model.logits(ids), atol=1e-5)
        assert not torch.allclose(merged.logits(ids), load_eval_model(str(tiny_dir)).logits(ids), atol=1e-3)
    assert _eval(tiny_dir, tmp_path / "z", "--adapter", str(tmp_path), "--bench", "countdown") == 2


@pytest.mark.slow
def test_ray_workers_give_the_same_answers(tiny_dir: Path, tmp_path: Path) -> None:
    args = ("--bench", "countdown", "--limit", "4", "--temperature", "0.8", "--batch-size", "4")
    assert _eval(tiny_dir, tmp_path / "one", *args) == 0
    assert _eval(tiny_dir, tmp_path / "two", *args, "--workers", "2") == 0
    one, two = (read_samples(tmp_path / name / "samples.jsonl") for name in ("one", "two"))
    assert [r["completion"] for r in one] == [r["completion"] for r in two]


def test_engine_switch_offers_only_tested_engines(capsys) -> None:
    """vLLM is not shipped untested: asking for it is one argparse error listing what exists."""
    from unmask.engines import ENGINES

    assert build_parser().parse_args(["eval", "--model", "m"]).engine == ENGINES[0] == "unmask"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "--model", "m", "--engine", "vllm"])
    assert "invalid choice: 'vllm'" in capsys.readouterr().err
