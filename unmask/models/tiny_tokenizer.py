"""The tiny family's tokenizer: printable ASCII characters plus whole task phrases.

Character-level so that any task text (Countdown, GSM8K, MATH) round-trips
exactly; the answer/reasoning tags and the recurring prompt phrases are single
tokens so that prompts stay short. Characters outside the alphabet map to
``<|unk|>``.
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {
    "pad_token": "<|pad|>",
    "bos_token": "<|bos|>",
    "eos_token": "<|eos|>",
    "unk_token": "<|unk|>",
    "mask_token": "<|mask|>",
}
TAGS = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")
#: recurring prompt wording (unmask/data/prompts.py); longest match wins
PHRASES = (
    "Using the numbers ",
    ", create an equation that equals ",
    "create an equation that equals ",
    "Put the equation in ",
    " tags.",
    "Respond in the following format:",
    "Put the final answer in ",
    "Solve the following math problem",
    "the ",
    "The ",
    " and ",
    "numbers",
    "equation",
    "answer",
    "number",
)
ALPHABET = tuple(dict.fromkeys(string.digits + "+-*/()=, " + string.printable))


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A deterministic tokenizer: special tokens first, then characters, tags, phrases."""
    specials = list(SPECIAL_TOKENS.values())
    vocab = {token: i for i, token in enumerate([*specials, *ALPHABET])}
    # BPE without merges is a character model that supports an unknown token
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=SPECIAL_TOKENS["unk_token"]))
    core.decoder = decoders.Fuse()
    core.add_special_tokens(specials)
    core.add_tokens([*TAGS, *sorted(PHRASES, key=len, reverse=True)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, clean_up_tokenization_spaces=False, **SPECIAL_TOKENS
    )
