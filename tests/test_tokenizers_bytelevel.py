"""The byte-level alphabet and format detection of llmcore.tokenizers, against tiktoken's
and Hugging Face tokenizers' own readings of the same files."""

from __future__ import annotations

import shutil

import pytest

from llmcore.errors import TokenizerError
from llmcore.tokenizers import detect
from llmcore.tokenizers.bytelevel import bytes_to_unicode, to_bytes, to_text
from llmcore.tokenizers.gpt2_files import read_gpt2_folder
from tests.test_bpe_common import FIX, ours


def test_gpt2_files_give_tiktokens_ranks():
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    ref = data_gym_to_mergeable_bpe_ranks(
        str(FIX / "gpt2" / "vocab.bpe"), str(FIX / "gpt2" / "encoder.json")
    )
    vocab = read_gpt2_folder(FIX / "gpt2")
    assert dict(zip(vocab.tokens, vocab.id_list())) == ref


def test_alphabet_is_hf_byte_level_alphabet():
    tokenizers = pytest.importorskip("tokenizers")
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert set(table.values()) == set(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    everything = bytes(range(256))
    assert to_bytes(to_text(everything), "test") == everything
    with pytest.raises(TokenizerError, match="not in GPT-2's byte-level alphabet"):
        to_bytes("\u4e00", "test")


def test_detect_format(tmp_path):
    assert detect.detect_format(FIX / "gpt2") == (detect.GPT2, FIX / "gpt2")
    json_file = FIX / "gpt2_tokenizer.json"
    assert detect.detect_format(json_file) == (detect.TOKENIZER_JSON, json_file)
    shutil.copy(json_file, tmp_path / "tokenizer.json")
    assert detect.detect_format(tmp_path) == (detect.TOKENIZER_JSON, tmp_path / "tokenizer.json")
    ranks = FIX / "cl100k_base.tiktoken"
    assert detect.detect_format(ranks) == (detect.TIKTOKEN, ranks)
    ours("gpt2").save(tmp_path / "saved")  # the marker wins over the tokenizer.json beside it
    shutil.copy(json_file, tmp_path / "saved" / "tokenizer.json")
    marker = tmp_path / "saved" / "llmcore-tokenizer.json"
    assert detect.detect_format(tmp_path / "saved") == (detect.SAVED, tmp_path / "saved")
    assert detect.detect_format(marker) == (detect.SAVED, tmp_path / "saved")
    with pytest.raises(TokenizerError, match="no such tokenizer file or folder"):
        detect.detect_format(tmp_path / "missing")


def test_foreign_formats_are_built_by_the_plugin_that_reads_their_kind(tmp_path):
    from llmcore import plugins
    from llmcore.tokenizers import BYTE_LEVEL_BPE, CHARACTERS, load_tokenizer, tokenizer_class_for

    assert tokenizer_class_for(BYTE_LEVEL_BPE) is plugins.factory("tokenizer", "bpe")
    assert tokenizer_class_for(CHARACTERS) is plugins.factory("tokenizer", "char")
    with pytest.raises(TokenizerError, match="no registered tokenizer reads unigram"):
        tokenizer_class_for("unigram", "x.json")
    char = plugins.create("tokenizer", "char", chars="abc ")
    char.save(tmp_path / "c")
    assert load_tokenizer(tmp_path / "c").chars == list("abc ")
