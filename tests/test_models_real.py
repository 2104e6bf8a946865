"""The real LLaDA-8B-Instruct / Dream-v0-Instruct-7B files (../shared/models): tokenizers,
chat templates, configs on the meta device, and a cut-down checkpoint through ``unmask sample``."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from real_files import (
    DREAM,
    LLADA,
    PARAMETERS,
    cut_down_checkpoint,
    cut_down_folder,
    real_config,
    tokenizer_folder,
)
from safetensors import safe_open

from unmask.cli import main
from unmask.evaluation.runner import encode_prompts as encode_for_eval
from unmask.models import CheckpointError, Dream, LLaDA, load_model
from unmask.models.loading import load_tokenizer, meta_model
from unmask.rl.rollout import decode_answers
from unmask.rl.rollout import encode_prompts as encode_for_training
from unmask.rollouts.record import answer_mask


def _jsonl(path: Path, limit: int | None = None) -> list[dict]:
    with path.open() as f:
        return [json.loads(line) for line in itertools.islice(f, limit)]


def real_prompts(shared_data: Path, limit: int | None = None) -> list[str]:
    """Benchmark questions with their LaTeX, unicode and odd spacing as published."""
    gsm8k = [row["question"] for row in _jsonl(shared_data / "gsm8k_test.jsonl", limit)]
    math = [row["problem"] for row in _jsonl(shared_data / "math500_test.jsonl", limit)]
    return gsm8k + math


# -- Dream: the real vocabulary, never remote code -----------------------------------
@pytest.fixture
def dream_tokenizer(shared_models: Path) -> object:
    return load_tokenizer(shared_models / DREAM, Dream)


def test_dream_tokenizer_config_names_remote_code(shared_models: Path) -> None:
    """The premise: AutoTokenizer would have to run ``DreamTokenizer``'s remote code."""
    config = json.loads((shared_models / DREAM / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "DreamTokenizer" and "auto_map" in config


def test_dream_tokenizer_is_qwen2_bpe_with_added_tokens(dream_tokenizer, shared_models: Path) -> None:
    tok = dream_tokenizer
    assert type(tok).__name__ == "Qwen2Tokenizer"
    assert tok.mask_token == "<|mask|>" and tok.mask_token_id == 151666
    assert tok.convert_tokens_to_ids("<|beginoftext|>") == 151665
    assert (tok.eos_token_id, tok.pad_token_id) == (151643, 151643)
    added = json.loads((shared_models / DREAM / "added_tokens.json").read_text())
    assert {token: tok.convert_tokens_to_ids(token) for token in added} == added
    # real merges: whole words of the Qwen2 vocabulary, a special token kept whole
    assert tok("You are a helpful assistant.", add_special_tokens=False)["input_ids"] == [
        2610, 525, 264, 10950, 17847, 13,
    ]  # fmt: skip
    assert tok("<|mask|><|mask|>x", add_special_tokens=False)["input_ids"] == [151666, 151666, 87]


def test_dream_format_prompt_is_the_real_chat_template(shared_models: Path, shared_data: Path) -> None:
    model = meta_model(shared_models / DREAM)
    model.tokenizer = load_tokenizer(shared_models / DREAM, Dream)
    question = _jsonl(shared_data / "gsm8k_test.jsonl", 1)[0]["question"]
    expected = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert model.format_prompt(question) == expected
    ids = model.tokenizer(expected, add_special_tokens=False)["input_ids"]
    assert ids[:3] == [151644, 8948, 198] and ids[-3:] == [151644, 77091, 198]  # <|im_start|>system\n … assistant\n


def test_dream_round_trips_real_prompts(dream_tokenizer, shared_data: Path) -> None:
    for text in real_prompts(shared_data):
        ids = dream_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert max(ids) < 151643, text  # plain text never turns into special tokens
        assert dream_tokenizer.decode(ids) == text


def test_dream_answers_end_at_im_end_and_endoftext(dream_tokenizer, shared_models: Path) -> None:
    model = meta_model(shared_models / DREAM)
    assert model.eos_token_ids == (151643, 151645)
    ids = dream_tokenizer("The answer is \\boxed{4}.<|im_end|><|endoftext|><|endoftext|>",
                          add_special_tokens=False)["input_ids"]  # fmt: skip
    answers = torch.tensor([ids, [*ids[:3], 151643, *ids[4:]]])
    assert decode_answers(dream_tokenizer, answers, model.eos_token_ids) == [
        "The answer is \\boxed{4}.", dream_tokenizer.decode(ids[:3]),
    ]  # fmt: skip
    assert answer_mask(answers, model.eos_token_ids).sum(1).tolist() == [ids.index(151645) + 1, 4]  # the end token itself is the last answer token


# -- LLaDA: the real tokenizer_config over a stand-in vocabulary ---------------------
@pytest.fixture
def llada_tokenizer(shared_models: Path, tmp_path: Path) -> object:
    return load_tokenizer(tokenizer_folder(shared_models, LLADA, tmp_path), LLaDA)


def test_llada_format_prompt_is_the_real_chat_template(llada_tokenizer, shared_models: Path) -> None:
    model = meta_model(shared_models / LLADA)
    model.tokenizer = llada_tokenizer
    assert llada_tokenizer.chat_template  # read from the real tokenizer_config.json
    text = model.format_prompt("  What is 7 * 6?\n")  # the template trims the message
    assert text == (
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nWhat is 7 * 6?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    ids = llada_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[:2] == [126080, 126346] and ids.count(126347) == 2 and ids.count(126348) == 1
    assert ids[-3:-2] == [126347] and llada_tokenizer.decode(ids) == text


def test_llada_special_ids_and_answer_ends(llada_tokenizer, shared_models: Path) -> None:
    model = meta_model(shared_models / LLADA)
    assert model.mask_token_id == 126336 == llada_tokenizer.convert_tokens_to_ids("<|mdm_mask|>")
    assert model.eos_token_ids == (126081, 126348)
    assert (llada_tokenizer.eos_token_id, llada_tokenizer.bos_token_id) == (126081, 126080)
    ids = llada_tokenizer("x = 4<|eot_id|><|endoftext|><|endoftext|>", add_special_tokens=False)["input_ids"]
    assert ids[-3:] == [126348, 126081, 126081]
    cut_at_eos = [*ids[:2], 126081, *ids[3:]]
    answers = torch.tensor([ids, cut_at_eos])
    assert decode_answers(llada_tokenizer, answers, model.eos_token_ids) == ["x = 4", "x "]


def test_llada_without_vocabulary_is_one_clear_error(shared_models: Path, tmp_path: Path) -> None:
    folder = tokenizer_folder(shared_models, LLADA, tmp_path)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(Exception, match=r"tokenizer_config\.json: cannot build the tokenizer.*tokenizer\.json"):
        load_tokenizer(folder, LLaDA)


# -- configs on the meta device --------------------------------------------------------
def official_llada_tensors(c: dict) -> dict[str, tuple[int, ...]]:
    """LLaDA-8B's safetensors layout as published (models.md), written out from the config."""
    d, h, v = c["d_model"], c["mlp_hidden_size"], c["embedding_size"]
    names = {"model.transformer.wte.weight": (v, d), "model.transformer.ln_f.weight": (d,),
             "model.transformer.ff_out.weight": (v, d)}  # fmt: skip
    for n in range(c["n_layers"]):
        b = f"model.transformer.blocks.{n}."
        names |= {b + "attn_norm.weight": (d,), b + "ff_norm.weight": (d,)}
        names |= {b + f"{p}.weight": (d, d) for p in ("q_proj", "k_proj", "v_proj", "attn_out")}
        names |= {b + "ff_proj.weight": (h, d), b + "up_proj.weight": (h, d), b + "ff_out.weight": (d, h)}
    return names


def official_dream_tensors(c: dict) -> dict[str, tuple[int, ...]]:
    """Dream-7B's (Qwen2-7B's) safetensors layout, written out from the config."""
    d, h, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    kv = c["num_key_value_heads"] * d // c["num_attention_heads"]
    names = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,), "lm_head.weight": (v, d)}
    for n in range(c["num_hidden_layers"]):
        b = f"model.layers.{n}."
        names |= {b + "input_layernorm.weight": (d,), b + "post_attention_layernorm.weight": (d,)}
        for p, rows in (("q_proj", d), ("k_proj", kv), ("v_proj", kv)):
            names |= {b + f"self_attn.{p}.weight": (rows, d), b + f"self_attn.{p}.bias": (rows,)}
        names |= {b + "self_attn.o_proj.weight": (d, d)}
        names |= {b + "mlp.gate_proj.weight": (h, d), b + "mlp.up_proj.weight": (h, d), b + "mlp.down_proj.weight": (d, h)}
    return names


@pytest.mark.parametrize(("name", "family", "official"), [
    (LLADA, LLaDA, official_llada_tensors), (DREAM, Dream, official_dream_tensors),
])  # fmt: skip
def test_real_config_on_meta_device(shared_models: Path, name: str, family: type, official) -> None:
    config = real_config(shared_models, name)
    model = meta_model(shared_models / name)
    assert type(model) is family
    state = model.state_dict()
    assert {k: tuple(t.shape) for k, t in state.items()} == official(config)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS[name]
    assert round(PARAMETERS[name] / 1e9, 2) == {LLADA: 8.02, DREAM: 7.62}[name]


# -- a cut-down real checkpoint, end to end ---------------------------------------------
@pytest.mark.parametrize("name", [LLADA, DREAM])
def test_cut_down_checkpoint_loads_and_samples(
    shared_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    folder = cut_down_checkpoint(shared_models, name, tmp_path / name)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3
    model = load_model(folder)
    assert model.mask_token_id == real_config(shared_models, name)["mask_token_id"]
    assert model.tokenizer.mask_token_id == model.mask_token_id or name == LLADA
    state = model.state_dict()
    with safe_open(folder / shards[-1], framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
            assert torch.equal(state[key], f.get_tensor(key).float()), key
    again = load_model(model.save_pretrained(tmp_path / "saved"))  # what checkpoints and exports write
    prompt = model.format_prompt("What is 7 * 6? Answer in \\boxed{}.")
    assert again.format_prompt("What is 7 * 6? Answer in \\boxed{}.") == prompt
    assert again.tokenizer(prompt)["input_ids"] == model.tokenizer(prompt)["input_ids"]
    assert again.eos_token_ids == model.eos_token_ids
    code = main(["sample", "--model", str(folder), "--prompt", "What is 7 * 6?",
                 "--gen-length", "16", "--steps", "8", "--block-length", "8"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    start = {LLADA: "prompt <|startoftext|><|start_header_id|>user", DREAM: "prompt <|im_start|>system"}[name]
    assert out.startswith(start)
    assert len([line for line in out.splitlines() if line.strip()[:1].isdigit()]) == 8
    assert "\nanswer " in out and "forward passes: 8" in out


@pytest.mark.parametrize("name", [LLADA, DREAM])
def test_real_prompts_batch_with_left_padding(shared_models: Path, shared_data: Path, tmp_path: Path, name: str) -> None:
    """Evaluation's and the trainer's prompt batching on the real tokenizers: left padding
    with the config's pad id, real tokens unchanged."""
    folder = cut_down_folder(shared_models, name, tmp_path)
    model = meta_model(folder).to_empty(device="cpu")  # the cut width: only the device is read
    model.tokenizer = load_tokenizer(folder, type(model))
    texts = real_prompts(shared_data, limit=1) + ["2 + 2?"]
    single = [model.tokenizer(model.format_prompt(t), add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, single))
    ids, mask = encode_for_eval(model, texts)
    train_ids, train_mask = encode_for_training(model.tokenizer, [model.format_prompt(t) for t in texts], model.pad_token_id)
    for row, tokens in enumerate(single):
        pad = width - len(tokens)
        assert ids[row].tolist() == [model.pad_token_id] * pad + tokens == train_ids[row].tolist()
        assert mask[row].tolist() == [False] * pad + [True] * len(tokens) == train_mask[row].tolist()


@pytest.mark.parametrize("name", [LLADA, DREAM])
def test_real_folder_without_weights_is_one_clear_error(shared_models: Path, tmp_path: Path, name: str) -> None:
    with pytest.raises(CheckpointError, match="neither model.safetensors nor model.safetensors.index.json"):
        load_model(tokenizer_folder(shared_models, name, tmp_path))
