"""Every GPU recipe (recipes/llada, recipes/dream) on real prompts and real LLaDA-8B-Instruct answers.

The development set (../shared/data/real_generations) holds LLaDA-8B-Instruct's answers
to d1's evaluation prompts. Each recipe's prompt template is rendered for those
questions and wrapped in its model's real chat template; the answers go through the
family's tokenizer and end tokens exactly as rollouts decode them, then through the
recipe's weighted rewards. The pinned verdicts are the answers' truth, read by hand.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from real_files import DREAM, LLADA, LORA_R128, PARAMETERS, tokenizer_folder

from unmask.data import render_prompt
from unmask.errors import UserError
from unmask.models.loading import load_tokenizer, meta_model
from unmask.recipe import Recipe, load_recipe
from unmask.rl.rollout import decode_answers
from unmask.rl.trainer import lora_replica
from unmask.run import reward_runner
from unmask.sft.config import is_sft_recipe

RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes"
#: the RL recipes (the sft_*.yaml beside them are SFT recipes, tests/test_sft_recipes.py)
RECIPES = sorted(p for p in [*RECIPE_DIR.glob("llada/*.yaml"), *RECIPE_DIR.glob("dream/*.yaml")] if not is_sft_recipe(p))
GENERATIONS = "real_generations/{task}_instruct_128_64_{shard}_generations.json"
#: the recipe tasks' development-set files (MATH recipes are read on MATH500)
DEV_TASK = {"gsm8k": "gsm8k", "math": "math500", "countdown": "countdown", "sudoku": "sudoku"}

#: (task, shard, index) → is the answer right? Read by hand: the final answer the model
#: states, against the reference (Countdown: every number once, value equals the target).
TRUTH: dict[tuple[str, int, int], bool] = {
    ("gsm8k", 0, 0): True,     # \boxed{18}
    ("gsm8k", 0, 1): False,    # \boxed{120\text{ minutes}}, reference 160
    ("gsm8k", 0, 2): True,     # \boxed{60\%} (no <answer> tag)
    ("gsm8k", 0, 3): True,     # \boxed{6} after </answer>
    ("gsm8k", 0, 9): True,     # \boxed{36> never closed, 36 stated
    ("gsm8k", 0, 10): True,    # \boxed{88}, cut off before </answer>
    ("gsm8k", 0, 11): False,   # \boxed{603\text{ pounds}, reference 623
    ("gsm8k", 1, 32): True,    # <answer> 10 </answer>, a bare integer
    ("gsm8k", 3, 140): False,  # <answer> 8 </answer>, well formed but wrong (25)
    ("math", 0, 0): False,     # 2 for 16\sqrt{3}
    ("math", 0, 1): True,      # 4
    ("math", 0, 3): True,      # \boxed{6} after </reasoning>, no answer tag
    ("math", 0, 6): False,     # 12 for 0
    ("math", 0, 13): False,    # 2\sqrt{2} for 7/2
    ("math", 0, 33): True,     # 15.975 = 639/40
    ("math", 0, 46): True,     # 0.25 = 1/4
    ("math", 0, 72): True,     # \frac{3}{24} = 1/8
    ("math", 1, 1): True,      # \frac{1}{4} in the answer tag, no box
    ("math", 1, 57): False,    # 216° for 36°, no box
    ("countdown", 0, 0): False,  # 55 - 53 leaves 49 out
    ("countdown", 0, 1): False,  # cut off, no expression
    ("countdown", 0, 2): True,   # 87 - 85 + 60 = 62
    ("countdown", 0, 5): False,  # 86 - 87 - 16 = -17
    ("countdown", 0, 9): True,   # 37 - 52 + 22 = 7
    ("countdown", 0, 12): False,  # (48 + 54) - 19 = 83, target 25
    ("countdown", 0, 13): True,  # 35 - 20 + 11 = 26
    ("sudoku", 0, 0): False,   # the puzzle copied back
    ("sudoku", 0, 1): True,    # 1234432121433412
    ("sudoku", 0, 3): False,   # rows 3 and 4 repeat digits
    ("sudoku", 0, 6): False,   # 15 digits over three lines
}
#: right answers whose weighted total stays under the recipe's ``correct_threshold``: d1's
#: xmlcount charges 0.001 per character after a tag that a cut-off answer never closes, so
#: the total drops below the 2.0 correctness term (docs/models.md, "GPU recipes")
BELOW_THRESHOLD = {("gsm8k", 0, 9)}
#: what a prompt must ask for so that a reward can score it
ASKS = {
    "xmlcount": ("<reasoning>", "</reasoning>", "<answer>", "</answer>"),
    "format_soft": ("<reasoning>", "</reasoning>", "<answer>", "</answer>"),
    "format_strict": ("<reasoning>", "</reasoning>", "<answer>", "</answer>"),
    "int_answer": ("<answer>", "</answer>"),
    "boxed": ("\\boxed",),
    "math": ("\\boxed",),
    "countdown": ("<answer>",),
    "sudoku": ("<answer>",),
}
#: each family's end-of-turn marker as its tokenizer writes it
END_OF_TURN = {"llada": "<|eot_id|>", "dream": "<|im_end|>"}


def dev_items(shared_data: Path, task: str) -> list[tuple[dict[str, Any], bool, bool]]:
    """The pinned development-set items of a recipe task: (item, truth, under the threshold)."""
    items = []
    for key, truth in TRUTH.items():
        if key[0] == task:
            path = shared_data / GENERATIONS.format(task=DEV_TASK[task], shard=key[1])
            items.append((json.loads(path.read_text())["generations"][key[2]], truth, key in BELOW_THRESHOLD))
    return items


def dataset_row(task: str, item: dict[str, Any]) -> dict[str, Any]:
    """The training row (columns the recipe's prompt and rewards read) of a development item."""
    gold = item["ground_truth"]
    if task == "gsm8k":
        return {"question": item["question"], "answer": f"{gold:g}"}
    if task == "math":
        return {"problem": item["question"], "answer": gold, "solution": ""}
    if task == "sudoku":
        return {"puzzle": re.search(r"\d{16}", item["question"]).group(0), "solution": gold}
    return {"nums": gold[0], "target": gold[1]}


def as_rollout_text(item: dict[str, Any], family: str) -> str:
    """The generation as the model produced it after the assistant header.

    d1's evaluation prompt ended with ``<reasoning>``, so the stored text continues
    it; the family's own end-of-turn marker replaces LLaDA's for Dream.
    """
    return "<reasoning>" + item["generations"].replace("<|eot_id|>", END_OF_TURN[family])


FOLDERS = {"llada": LLADA, "dream": DREAM}


@functools.cache
def trainable(folder: Path, r: int, alpha: int, dropout: float, targets: tuple[str, ...] | None) -> tuple[int, int]:
    """(trainable, adapted layers) of the real config wrapped the way the trainer wraps the policy."""
    policy = lora_replica(lambda: meta_model(folder), r=r, alpha=alpha, dropout=dropout, target_modules=targets)
    adapted = {name.rsplit(".lora_", 1)[0] for name, p in policy.named_parameters() if p.requires_grad}
    return policy.get_nb_trainable_parameters()[0], len(adapted)


@pytest.fixture(params=RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def recipe(request: pytest.FixtureRequest) -> Recipe:
    return load_recipe(request.param)


@pytest.fixture(scope="module")
def tokenizers(shared_models: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each family's real tokenizer (LLaDA: real config over the stand-in vocabulary), built once."""
    out = tmp_path_factory.mktemp("tokenizers")
    return {
        family: load_tokenizer(tokenizer_folder(shared_models, name, out / name), type(meta_model(shared_models / name)))
        for family, name in FOLDERS.items()
    }


@pytest.fixture
def family_model(recipe: Recipe, shared_models: Path, tokenizers: dict[str, Any]) -> Any:
    """The recipe's model family from its real config (meta device) with its real tokenizer."""
    model = meta_model(shared_models / FOLDERS[recipe.model.family])
    assert model.family == recipe.model.family
    model.tokenizer = tokenizers[model.family]
    return model


def test_recipe_prompts_on_real_questions(recipe: Recipe, family_model: Any, shared_data: Path) -> None:
    task, tok = recipe.data.task, family_model.tokenizer
    assert recipe.data.chat_template
    for item, _, _ in dev_items(shared_data, task):
        row = dataset_row(task, item)
        text = render_prompt(task, row, recipe.data.prompt_template)
        for reward in recipe.rewards.functions:
            missing = [part for part in ASKS.get(reward.name, ()) if part not in text]
            assert not missing, f"reward {reward.name} scores {missing}, which the prompt never asks for"
        prompt = family_model.format_prompt(text)
        assert text.strip() in prompt and prompt != text
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == prompt
        first = {"llada": 126080, "dream": 151644}[family_model.family]  # <|startoftext|> / <|im_start|>
        assert ids[0] == first and family_model.mask_token_id not in ids


def test_recipe_rewards_on_real_answers(recipe: Recipe, family_model: Any, shared_data: Path) -> None:
    task, tok = recipe.data.task, family_model.tokenizer
    items = dev_items(shared_data, task)
    if not items:
        pytest.skip(f"the development set holds no real {task} answers (code recipes: tests/test_code_tasks.py)")
    rows = [dataset_row(task, item) for item, _, _ in items]
    prompts = [family_model.format_prompt(render_prompt(task, row, recipe.data.prompt_template)) for row in rows]
    completions = []
    for item, _, _ in items:
        ids = tok(as_rollout_text(item, family_model.family), add_special_tokens=False)["input_ids"]
        completions += decode_answers(tok, torch.tensor([ids]), family_model.eos_token_ids)
    assert not any("<|" in text for text in completions)  # cut at the end tokens, specials dropped
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    with reward_runner(recipe) as runner:
        result = runner.score(prompts, completions, columns)
    task_reward = result.per_reward[next(f.name for f in recipe.rewards.functions if f.name in DEV_TASK)]
    assert [value == 1.0 for value in task_reward] == [truth for _, truth, _ in items]
    counted = [total >= recipe.algorithm.correct_threshold for total in result.totals]
    shaped = "xmlcount" in result.per_reward  # the 0.001-per-character charge only d1's shaping has
    assert counted == [truth and not (under and shaped) for _, truth, under in items]
    for name, values in result.per_reward.items():  # every reward tells these real answers apart
        assert len(set(values)) > 1, f"reward {name} gives {values[0]} to every real answer"


def test_recipe_trainable_parameters(recipe: Recipe, shared_models: Path) -> None:
    """LoRA recipes adapt all seven linear layers of every block (r 128); MDPO trains every weight."""
    name, lora = FOLDERS[recipe.model.family], recipe.lora
    if not lora.enabled:
        model = meta_model(shared_models / name)
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == PARAMETERS[name]
        return
    targets = None if lora.target_modules is None else tuple(lora.target_modules)
    count, layers = trainable(shared_models / name, lora.r, lora.alpha, lora.dropout, targets)
    blocks = {LLADA: 32, DREAM: 28}[name]
    assert (lora.r, layers, count) == (128, 7 * blocks, LORA_R128[name])


#: recipes with d1's GSM8K shaping (correctness 2.0 plus format terms that also sum to 2.0)
D1_GSM8K = [p for p in RECIPES if {"gsm8k", "int_answer"} <= {f.name for f in load_recipe(p).rewards.functions}]


@pytest.mark.parametrize("path", D1_GSM8K, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_gsm8k_threshold_needs_the_right_number(path: Path, shared_data: Path) -> None:
    """In the layout the prompt asks for, d1's four format terms alone reach 2.0: a
    well-formed wrong answer must not count as correct, a well-formed right one must."""
    recipe = load_recipe(path)
    item = dev_items(shared_data, "gsm8k")[0][0]
    gold = dataset_row("gsm8k", item)["answer"]
    texts = [f"<reasoning>\nworking\n</reasoning>\n<answer>\n{number}\n</answer>{end}"
             for number in (gold, int(gold) + 1) for end in ("", "\n")]  # fmt: skip
    with reward_runner(recipe) as runner:
        totals = runner.score([""] * 4, texts, {"answer": [gold] * 4}).totals
    assert max(totals[2:]) >= 2.0  # the format terms' own maximum
    assert [t >= recipe.algorithm.correct_threshold for t in totals] == [True, True, False, False]


def test_d1_style_covers_every_task_it_names_and_nothing_else() -> None:
    row = {"question": "Q", "problem": "P", "nums": [1, 2], "target": 3, "puzzle": "0" * 16}
    for task in ("gsm8k", "math", "countdown", "sudoku"):
        text = render_prompt(task, row, "d1")
        assert all(tag in text for tag in ASKS["xmlcount"]) and "{" not in text.replace("\\boxed{", "")
    with pytest.raises(UserError, match="style 'd1' has no prompt for task 'poetry'"):
        render_prompt("poetry", row, "d1")
