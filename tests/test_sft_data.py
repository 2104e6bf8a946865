"""SFT data: formats, windows, overflow, the prompt-prefix check, real tokenizers and templates, recipe errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from real_files import DREAM, LLADA, SDAR, tokenizer_folder

from unmask.cli import recipes_dir
from unmask.data.countdown import problem_key
from unmask.errors import RecipeError, UserError
from unmask.models import tiny
from unmask.models.loading import load_tokenizer, meta_model
from unmask.recipe import validate_recipe
from unmask.run import eval_rows
from unmask.sft.config import SFTRecipe, fed_recipe, load_sft_recipe
from unmask.sft.data import Pair, collate, encode, records, to_pair, tokenize
from unmask.sft.loss import denominator

SMALL = {"d_model": 32, "n_heads": 2, "n_layers": 1, "mlp_hidden_size": 64}


def sft_recipe(**sections: dict) -> SFTRecipe:
    raw = {"data": {"chat_template": False}, "sft": {"answer_length": 4}}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return validate_recipe(raw, "test.yaml", SFTRecipe)


def token_ids(model, text: str) -> list[int]:
    return model.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_answer_fills_its_window_with_eos_and_every_position_is_scored() -> None:
    model = tiny(SMALL)
    encoded = encode([Pair("Q", "AB")], model, sft_recipe(), 4)
    batch = collate(encoded.examples, [0], model.pad_token_id, model.eos_token_ids[0], longest=False)
    eos = model.eos_token_ids[0]
    assert batch.answer_ids.tolist() == [[*token_ids(model, "AB"), eos, eos]]  # [A, B, <end>, EOS]
    assert batch.supervised.all() and denominator(batch, "token") == 4
    assert batch.prompt_ids.tolist() == [token_ids(model, "Q")]


@pytest.mark.parametrize("policy", ["drop", "cut", "error"])
def test_an_answer_over_its_window(policy: str) -> None:
    model = tiny(SMALL)
    pairs = [Pair("Q", "AB"), Pair("Q", "ABCD")]  # the second: 4 tokens, 5 with its end token, window 4
    recipe = sft_recipe(sft={"overflow": policy})
    if policy == "error":
        with pytest.raises(UserError, match="data row 1: the answer has 5 tokens"):
            encode(pairs, model, recipe, 4)
        return
    encoded = encode(pairs, model, recipe, 4)
    assert encoded.overflow == 1 and "1 answers over their window" in encoded.summary()
    if policy == "drop":
        assert len(encoded.examples) == 1
        return
    cut = encoded.examples[1]
    assert cut.cut and cut.answer == token_ids(model, "ABCD")  # no end token: it never stops here
    batch = collate(encoded.examples, [0, 1], model.pad_token_id, model.eos_token_ids[0], longest=False)
    assert batch.supervised.tolist() == [[True] * 4, [True] * 4]


def test_eos_fill_to_the_batch_longest_and_to_max_length() -> None:
    model = tiny(SMALL)
    pairs = [Pair("Q", "A"), Pair("QQQ", "ABC")]
    longest = encode(pairs, model, sft_recipe(sft={"answer_length": 8, "eos_fill": "batch_longest"}), 8)
    batch = collate(longest.examples, [0, 1], model.pad_token_id, model.eos_token_ids[0], longest=True)
    assert batch.answer_ids.shape[1] == 4 and batch.answer_attention is None  # ABC + end
    # d1: prompt + answer = max_length, so each row's window is max_length minus its prompt
    d1 = sft_recipe(sft={"eos_fill": "max_length", "max_length": 8})
    rows = encode(pairs, model, d1, 4).examples
    assert [e.window for e in rows] == [7, 5]
    batch = collate(rows, [0, 1], model.pad_token_id, model.eos_token_ids[0], longest=False)
    assert batch.supervised.sum(1).tolist() == [7, 5]
    assert batch.window_attention.tolist()[1] == [True] * 5 + [False] * 2


def test_formats_and_column_map() -> None:
    recipe = sft_recipe(data={"columns": {"prompt": "question", "completion": "answer"}})
    assert to_pair({"question": "q", "answer": "a"}, 0, recipe) == Pair("q", "a")
    with pytest.raises(UserError, match="data row 3: no column 'question'"):
        to_pair({"q": "x"}, 3, recipe)
    chat = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
    assert to_pair({"messages": chat}, 0, sft_recipe()) == Pair(chat[:2], "a")
    assert to_pair({"text": "t"}, 0, sft_recipe()) == Pair(None, "t")
    with pytest.raises(UserError, match="data.completion_template"):
        to_pair({"prompt": "p"}, 0, sft_recipe())
    with pytest.raises(UserError, match="data row 5: no 'prompt' column, and it lacks the column 'answer'"):
        to_pair({"query": "q"}, 5, sft_recipe(data={"task": "gsm8k"}))


def split_row(record: dict) -> dict:
    """A formatting function as a user writes one."""
    return {"prompt": f"Q: {record['q']}", "completion": record["a"]}


def test_formatting_func_builds_the_pair() -> None:
    recipe = sft_recipe(data={"formatting_func": "test_sft_data:split_row"})
    assert to_pair({"q": "1+1?", "a": "2"}, 0, recipe) == Pair("Q: 1+1?", "2")
    with pytest.raises(UserError, match="data.formatting_func 'test_sft_data:nothing': module 'test_sft_data' has no"):
        to_pair({}, 0, sft_recipe(data={"formatting_func": "test_sft_data:nothing"}))
    with pytest.raises(UserError, match="row 0 gave str, not a dict"):
        to_pair({"q": "x"}, 0, sft_recipe(data={"formatting_func": "builtins:str"}))


def test_d1_layout_on_gsm8k_and_s1k_rows() -> None:
    gsm = sft_recipe(data={"task": "gsm8k", "prompt_template": "d1", "completion_template": "d1"})
    pair = to_pair({"question": "Two plus two?", "answer": "2+2=4\n#### 4"}, 0, gsm)
    assert pair.completion == "<reasoning>\n2+2=4\n</reasoning>\n<answer>\n4\n</answer>"
    assert pair.prompt.endswith("Two plus two?") and "<reasoning>" in pair.prompt
    s1k = sft_recipe(data={"task": "math", "format": "s1k", "prompt_template": "d1", "completion_template": "d1"})
    pair = to_pair({"question": "1+1?", "thinking_trajectories": ["so 2"], "attempt": "\\boxed{2}"}, 0, s1k)
    assert pair.completion == "<reasoning>\nso 2\n</reasoning>\n<answer>\n\\boxed{2}\n</answer>"
    assert pair.prompt.endswith("1+1?")


def test_text_rows_and_completion_only_loss() -> None:
    model = tiny(SMALL)
    prompt, answer = tokenize(Pair(None, "AB"), 0, model, sft_recipe())
    assert prompt == [] and answer == [*token_ids(model, "AB"), model.eos_token_ids[0]]
    with pytest.raises(RecipeError, match="completion_only_loss: false"):
        tokenize(Pair(None, "AB"), 0, model, sft_recipe(sft={"completion_only_loss": True}))
    prompt, answer = tokenize(Pair("Q", "AB"), 0, model, sft_recipe(sft={"completion_only_loss": False}))
    assert prompt == [] and answer[:1] == token_ids(model, "Q")  # the prompt is noised and scored too


def test_rows_holding_the_mask_token_are_refused() -> None:
    model = tiny(SMALL)
    with pytest.raises(UserError, match="data row 2: contains the noise"):
        tokenize(Pair("Q", "A<|mask|>B"), 2, model, sft_recipe())


def test_prompt_tokens_must_open_the_conversation() -> None:
    model = tiny(SMALL)
    # the generation prompt ends "assistant:\n\n" but the rendered answer follows "assistant: ", not a prefix
    model.tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}assistant: {{ m['content'] }}"
        "{% else %}{{ m['role'] }}: {{ m['content'] }}\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}assistant:\n\n{% endif %}"
    )
    recipe = sft_recipe(data={"chat_template": True}, sft={"assistant_through_template": True})
    with pytest.raises(UserError, match="data row 4: .* not a prefix"):
        tokenize(Pair("Q", "AB"), 4, model, recipe)
    prompt, answer = tokenize(Pair("Q", "AB"), 4, model, sft_recipe(data={"chat_template": True}))
    assert model.tokenizer.decode(prompt) == "user: Q\nassistant:\n\n"


def test_recipe_mistakes_are_one_line() -> None:
    for sft, message in [({"packing": True}, "packing: true is not supported"),
                         ({"completion_only_loss": "yes"}, "sft.completion_only_loss"),
                         ({"eos_fill": "max_length"}, "needs sft.max_length")]:
        with pytest.raises(RecipeError, match=message) as err:
            sft_recipe(sft=sft)
        assert "\n" not in str(err.value)
    for optim, message in [({"max_steps": 5, "num_train_epochs": 2}, "not both"),
                           ({"optimizer_steps_per_rollout": 1}, "an RL setting")]:
        with pytest.raises(RecipeError, match=message):
            sft_recipe(optim=optim)


def test_local_jsonl_and_parquet_files(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "p1", "completion": "c1"}, {"prompt": "p2", "completion": "c2"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.parquet"):
        assert records(sft_recipe(data={"path": str(tmp_path / name), "limit": 1})) == rows[:1]


def real_model(models: Path, name: str, out: Path):
    """The real config and tokenizer of ``name`` on the meta device (no weights needed to tokenize)."""
    folder = tokenizer_folder(models, name, out / name)
    model = meta_model(folder)
    model.tokenizer = load_tokenizer(folder, type(model))
    return model


#: what each real template writes before the answer text when it renders the assistant turn itself:
#: SDAR's (Qwen3) adds an empty thinking block that tokenizing the answer on its own never trains
OPENING = {DREAM: "", SDAR: "<think>\n\n</think>\n\n"}


@pytest.mark.parametrize("name", [DREAM, SDAR])
def test_real_templates_keep_the_prompt_a_token_prefix(name: str, shared_models, shared_data, tmp_path) -> None:
    model = real_model(shared_models, name, tmp_path)
    record = json.loads((shared_data / "gsm8k_train.jsonl").read_text().splitlines()[0])
    data = {"task": "gsm8k", "prompt_template": "d1", "completion_template": "d1", "chat_template": True}
    recipe = sft_recipe(data=data)
    pair = to_pair(record, 0, recipe)
    prompt, answer = tokenize(pair, 0, model, recipe)
    assert model.tokenizer.decode(prompt) == model.format_prompt(pair.prompt)  # the RL prompt, byte for byte
    assert answer[-1] == model.end_of_turn_id == 151645 and answer[:-1] == token_ids(model, pair.completion)
    through = sft_recipe(data=data, sft={"assistant_through_template": True})
    same_prompt, rendered = tokenize(pair, 0, model, through)  # raises if the prefix property fails
    opening = token_ids(model, OPENING[name]) if OPENING[name] else []
    assert same_prompt == prompt and rendered[: len(opening) + len(answer)] == opening + answer
    assert model.tokenizer.decode(rendered[len(opening) + len(answer):]) == "\n"


def test_llada_template_appends_an_assistant_header_after_the_answer(shared_models, tmp_path) -> None:
    # LLaDA's vocabulary is not in ../shared: its real template over a stand-in vocabulary
    model = real_model(shared_models, LLADA, tmp_path)
    data = {"chat_template": True}
    prompt, answer = tokenize(Pair("What is 2+2?", "4"), 0, model, sft_recipe(data=data))
    assert answer[-1] == model.end_of_turn_id == 126348  # the answer ends at <|eot_id|>
    _, rendered = tokenize(Pair("What is 2+2?", "4"), 0, model,
                           sft_recipe(data=data, sft={"assistant_through_template": True}))
    tail = model.tokenizer.decode(rendered[len(answer):])
    assert rendered[: len(answer)] == answer
    assert tail.startswith("<|start_header_id|>assistant<|end_header_id|>")  # trained after the answer
    assert torch.tensor(prompt).numel() > 0


def test_generated_rows_leave_out_the_fed_rl_recipes_heldout_problems() -> None:
    recipe = load_sft_recipe(recipes_dir() / "tiny/sft_countdown.yaml", ["data.limit=400", "eval.limit=8"])
    fed = fed_recipe(recipe)
    rows = records(recipe, fed)
    fed_rows = eval_rows(fed)  # the RL run's 1 000 held-out problems, not this recipe's 8
    heldout = {problem_key(r) for r in fed_rows}
    assert len(fed_rows) == fed.eval.limit == 1000 and 0 < len(rows) < 400
    assert not heldout & {problem_key(r) for r in rows}
