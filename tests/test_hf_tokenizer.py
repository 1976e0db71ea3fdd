"""HF tokenizer.json through llmcore: GPT-2's file gives ids identical to HF ``tokenizers``;
llmcore's bpe and char tokenizers export to files that ``tokenizers`` and transformers'
``AutoTokenizer`` read with the same ids."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

import llmcore  # noqa: E402
from llmcore.hf import save_hf_tokenizer  # noqa: E402

logging.getLogger("transformers").setLevel(logging.ERROR)

FIXTURES = Path(__file__).parent / "fixtures" / "tokenizers"
GPT2_JSON = FIXTURES / "gpt2_tokenizer.json"
SHAKESPEARE = (Path(llmcore.__file__).parent / "datasets" / "tinyshakespeare.txt").read_text(
    encoding="utf-8"
)
TEXTS = [
    "hello world",
    "Hello, World! It's 2024 -- x's 12345678 tokens.",
    " héllo wörld 日本語 ½Ⅷ\u00a0nbsp  \n\n\t trailing   ",
    "emoji 👍🏽 and combining नमस्ते",
    SHAKESPEARE[:20000],
]


def samples() -> list[str]:
    extra = sorted((FIXTURES / "samples").glob("*.txt"))
    return TEXTS + [p.read_text(encoding="utf-8")[:5000] for p in extra]


@pytest.fixture(scope="module")
def gpt2():
    return llmcore.load_hf_tokenizer(GPT2_JSON), tokenizers.Tokenizer.from_file(str(GPT2_JSON))


def test_gpt2_tokenizer_json_ids_match_hf(gpt2):
    ours, ref = gpt2
    assert ours.name == "bpe" and ours.vocab_size == ref.get_vocab_size() == 50257
    for text in samples():
        ids = ours.encode(text)
        assert ids == ref.encode(text).ids, text[:40]
        assert ours.decode(ids) == text
    special = "a<|endoftext|>b"
    assert ours.encode(special, allowed_special="all") == ref.encode(special).ids
    assert ours.eot_id == 50256


def test_folder_with_tokenizer_json(tmp_path, gpt2):
    (tmp_path / "tokenizer.json").write_bytes(GPT2_JSON.read_bytes())
    tok = llmcore.load_hf_tokenizer(tmp_path)
    assert tok.encode("hello world") == gpt2[1].encode("hello world").ids == [31373, 995]


def check_exported(folder: Path, ours, texts: list[str]) -> None:
    ref = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    auto = transformers.AutoTokenizer.from_pretrained(folder)
    for text in texts:
        ids = ours.encode(text)
        assert ref.encode(text).ids == ids, text[:40]
        assert auto(text)["input_ids"] == ids, text[:40]
        assert auto.decode(ids) == text


def test_export_gpt2_bpe(tmp_path, gpt2):
    ours, ref = gpt2
    assert save_hf_tokenizer(ours, tmp_path) is None
    check_exported(tmp_path, ours, TEXTS)
    vocab = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    assert vocab == ref.get_vocab()
    assert llmcore.load_hf_tokenizer(tmp_path).encode(TEXTS[2]) == ours.encode(TEXTS[2])


def test_export_trained_bpe_with_cl100k_pattern(tmp_path):
    ours = llmcore.train_tokenizer(
        [SHAKESPEARE[:100000]], vocab_size=400, pattern="cl100k_base", special_tokens=["<|x|>"]
    )
    assert save_hf_tokenizer(ours, tmp_path) is None
    # the cl100k pre-tokenizer on texts where HF's regex engine and tiktoken's agree
    check_exported(tmp_path, ours, [SHAKESPEARE[100000:110000], "x's 12345 'S\n\n  z", TEXTS[3]])


def test_export_char_tokenizer(tmp_path):
    chars = sorted(set(SHAKESPEARE))
    ours = llmcore.create("tokenizer", "char", chars=chars)
    assert save_hf_tokenizer(ours, tmp_path) is None
    check_exported(tmp_path, ours, [SHAKESPEARE[:3000], "  \n\nROMEO:\n"])
    back = llmcore.load_hf_tokenizer(tmp_path)
    assert back.name == "char" and back.chars == chars


def test_tokenizer_that_cannot_be_exported(tmp_path):
    class Opaque:
        name = "opaque"
        special_tokens: dict = {}

    note = save_hf_tokenizer(Opaque(), tmp_path)
    assert "cannot be written" in note and not (tmp_path / "tokenizer.json").exists()
