"""Generation past block_size with generate.sliding_context: nanoGPT's cropped context."""

from __future__ import annotations

import pytest
import torch

import llmcore
from llmcore.builtin.char_tokenizer import CharTokenizer
from llmcore.builtin.decoders import Greedy
from llmcore.config import load_config
from llmcore.errors import GenerationError


@pytest.fixture(scope="module")
def model_and_tokenizer():
    torch.manual_seed(0)
    cfg = load_config(
        "shakespeare-char",
        ["model.n_layer=2", "model.n_embd=32", "model.n_head=2", "model.block_size=16"],
    )
    tok = CharTokenizer("abcdefghij ")
    return llmcore.build_model(cfg, tok.vocab_size).eval(), tok


def cropped_greedy(model, ids: list[int], n: int) -> list[int]:
    """The reference: every step a full forward over the last block_size tokens."""
    block = model.config.block_size
    seq = list(ids)
    with torch.no_grad():
        for _ in range(n):
            window = torch.tensor([seq[-block:]])
            seq.append(int(model(window)[0, -1].argmax()))
    return seq[len(ids) :]


def test_sliding_context_equals_recomputing_the_last_block(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompt = "abc def"
    out = llmcore.generate(
        model, tok, prompt, max_new_tokens=40, decoder=Greedy(), sliding_context=True
    )
    assert out[0].ids == cropped_greedy(model, tok.encode(prompt), 40)


def test_prompt_longer_than_the_block_is_cropped(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompt = "abcdefghij abcdefghij abc"  # 25 characters, block 16
    out = llmcore.generate(
        model, tok, prompt, max_new_tokens=5, decoder=Greedy(), sliding_context=True
    )
    assert out[0].ids == cropped_greedy(model, tok.encode(prompt), 5)


def test_without_it_a_long_generation_is_a_clear_error(model_and_tokenizer):
    model, tok = model_and_tokenizer
    with pytest.raises(GenerationError, match="set generate.sliding_context"):
        llmcore.generate(model, tok, "abc", max_new_tokens=40, decoder=Greedy())
