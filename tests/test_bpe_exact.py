"""The bpe tokenizer gives tiktoken's ids: corpus samples, hostile text, every code point."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmcore.errors import TokenizerError
from tests.test_bpe_common import (
    ENCODINGS,
    FIX,
    codepoint_sweep,
    hostile_text,
    ours,
    reference,
)

SAMPLES = sorted((FIX / "samples").glob("*.txt"))


@pytest.mark.parametrize("name", ENCODINGS)
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_corpus_samples_identical(name, sample):
    text = sample.read_text(encoding="utf-8")
    assert ours(name).encode(text) == reference(name).encode_ordinary(text)


@pytest.mark.parametrize("name", ENCODINGS)
def test_hostile_text_identical(name):
    tok, enc = ours(name), reference(name)
    rng = random.Random(1234)
    for i in range(300):
        text = hostile_text(rng, rng.randint(1, 120))
        assert tok.encode(text) == enc.encode_ordinary(text), (i, text)


@pytest.mark.parametrize("name", ENCODINGS)
def test_every_codepoint_in_context(name):
    # all of the BMP and the SMP, a stride through the rest (the full sweep is in
    # bench/check_tokenizer_exact.py --sweep)
    text = codepoint_sweep(0, 0x20000) + codepoint_sweep(0x20000, 0x110000, 61)
    ours_ids, ref_ids = ours(name).encode(text), reference(name).encode_ordinary(text)
    if ours_ids != ref_ids:  # narrow down to the first differing code point for the message
        for line in text.splitlines(keepends=True):
            if ours(name).encode(line) != reference(name).encode_ordinary(line):
                pytest.fail(f"mismatch on {line!r}")
    assert ours_ids == ref_ids


@pytest.mark.parametrize("name", ENCODINGS)
@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "  ",
        "\n",
        "a",
        "'",
        "'s",
        " 's",
        "\r\n",
        " \r\n",
        "a  ",
        "a \n",
        "a\n ",
        "  a",
        "\t\ta",
        "\u00a0a",
        "\u3000日本",
        "。日本語",
        ".bar",
        "/baz",
        "x\u200bx",
        "\x1cx",
        "\x85a",
        "1234567",
        "²½Ⅷ٣४",
        "नमस्ते",
        "I'VE 'S 'ſ",
        "don't DON'T",
        "ǅǅǅ",
        "HELLOworld helloWORLD",
        "a/b//c\n/",
        "...\r\n\r\nx",
        " \n\n \t x",
        "👨\u200d👩\u200d👧 🇺🇸🇫🇷",
        "\u0301",
        " \u0301",
        "a\u0301",
        "ʰʰ",
        "Aʰb",
        "\u0301A",
        "\u0301AB ",
        "e\u0301\u0301'S",
    ],
)
def test_edge_cases(name, text):
    assert ours(name).encode(text) == reference(name).encode_ordinary(text)


@pytest.mark.parametrize("name", ENCODINGS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=80))
def test_fuzz_against_tiktoken(name, text):
    assert ours(name).encode(text) == reference(name).encode_ordinary(text)


@pytest.mark.parametrize("name", ENCODINGS)
@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_roundtrip_str(name, text):
    tok = ours(name)
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("name", ENCODINGS)
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_roundtrip_bytes(name, data):
    tok = ours(name)
    assert tok.decode_bytes(tok.encode_bytes(data)) == data


@pytest.mark.parametrize("name", ENCODINGS)
def test_encode_bytes_matches_encode_on_valid_utf8(name):
    text = hostile_text(random.Random(7), 400)
    assert ours(name).encode_bytes(text.encode()) == ours(name).encode(text)


@pytest.mark.parametrize("name", ENCODINGS)
def test_decode_replaces_invalid_utf8_like_tiktoken(name):
    tok, enc = ours(name), reference(name)
    ids = tok.encode("日本語 😀 नमस्ते")
    for cut in range(len(ids) + 1):
        part = ids[:cut] + ids[cut + 1 :]
        assert tok.decode(part) == enc.decode(part)
        assert tok.decode_bytes(part) == enc.decode_bytes(part)


@pytest.mark.parametrize("name", ENCODINGS)
def test_lone_surrogates_like_tiktoken(name):
    text = "a\ud800b \udfff\ud83d x"
    assert ours(name).encode(text) == reference(name).encode_ordinary(text)


@pytest.mark.parametrize("name", ENCODINGS)
def test_special_tokens(name):
    tok, enc = ours(name), reference(name)
    text = "hi <|endoftext|> there<|endoftext|><|endoftext|>x <|fim_prefix|>"
    # default: special text is ordinary text (no injection)
    assert tok.encode(text) == enc.encode_ordinary(text)
    assert tok.eot_id not in tok.encode(text)
    assert tok.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
    assert tok.encode(text, allowed_special={"<|endoftext|>"}) == enc.encode(
        text, allowed_special={"<|endoftext|>"}, disallowed_special=()
    )
    assert tok.eot_id == enc.eot_token
    assert tok.special_tokens == enc._special_tokens
    assert tok.vocab_size == enc.n_vocab
    with pytest.raises(TokenizerError):
        tok.encode(text, allowed_special={"<|nope|>"})


@pytest.mark.parametrize("name", ENCODINGS)
def test_decode_errors(name):
    tok = ours(name)
    for bad in ([tok.vocab_size], [-1], [2**70], [0, 10**9]):
        with pytest.raises(TokenizerError, match="out of range"):
            tok.decode(bad)
        with pytest.raises(TokenizerError):
            tok.decode_bytes(bad)
    with pytest.raises(TypeError):
        tok.decode(["a"])
    # numpy / torch / generators work
    import numpy as np
    import torch

    ids = tok.encode("hello world")
    assert (
        tok.decode(np.array(ids))
        == tok.decode(torch.tensor(ids))
        == tok.decode(iter(ids))
        == "hello world"
    )


def test_o200k_gap_id_is_an_error():
    tok = ours("o200k_base")  # ids 199998 and 200000..200017 have no token
    with pytest.raises(TokenizerError, match="no token"):
        tok.decode([199998])


@pytest.mark.parametrize("name", ENCODINGS)
def test_batch_equals_single(name):
    tok = ours(name)
    rng = random.Random(3)
    texts = [hostile_text(rng, rng.randint(0, 50)) for _ in range(500)]
    texts += [s.read_text(encoding="utf-8") for s in SAMPLES]
    expect = [tok.encode(t) for t in texts]
    for threads in (0, 1, 2, 3):
        assert tok.encode_batch(texts, num_threads=threads) == expect
    assert tok.encode_batch([]) == []
    assert tok.encode_batch(iter(["a b"])) == [tok.encode("a b")]


@pytest.mark.parametrize("name", ENCODINGS)
@pytest.mark.parametrize("unit", [" ", "a", "1", "\n", "é", "日", ".", " a", "\u0301", "ab"])
def test_pathological_input_round_trips(name, unit):
    """Long runs of one unit (the inputs that make naive BPE quadratic) encode and decode
    back. That their cost stays near-linear is measured in bench/bench_tokenizer_linear.py:
    a unit test asserts no timing."""
    tok = ours(name)
    big = unit * 400_000
    ids = tok.encode(big)
    assert tok.decode(ids) == big


def test_large_input_and_empty():
    tok = ours("cl100k_base")
    assert tok.encode("") == [] and tok.decode([]) == "" and tok.encode_bytes(b"") == []
    text = "The quick brown fox, 12345 jumps.\r\n" * 300_000  # ~10 MB
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert ids[:40] == reference("cl100k_base").encode_ordinary(text[: 35 * 4])[:40]
