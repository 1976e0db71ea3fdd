"""Loading the four formats, saving, the plugin, and bad files."""

from __future__ import annotations

import base64
import shutil

import pytest

import llmcore.tokenizers as lt
from llmcore import plugins
from llmcore.builtin.bpe import BPETokenizer
from llmcore.errors import TokenizerError
from tests.test_bpe_common import FIX, ours, reference

TEXT = (FIX / "samples" / "multi_udhr.txt").read_text(encoding="utf-8")[:5000]


def test_plugin_registered():
    assert plugins.factory("tokenizer", "bpe") is BPETokenizer


def test_gpt2_three_formats_agree(tmp_path):
    folder = BPETokenizer.load(FIX / "gpt2")
    hf = BPETokenizer.load(FIX / "gpt2_tokenizer.json")
    shutil.copy(FIX / "gpt2_tokenizer.json", tmp_path / "tokenizer.json")
    hf_dir = BPETokenizer.load(tmp_path)
    ids = reference("gpt2").encode_ordinary(TEXT)
    assert folder.encode(TEXT) == hf.encode(TEXT) == hf_dir.encode(TEXT) == ids
    assert folder.eot_id == hf.eot_id == 50256
    assert folder.vocab_size == hf.vocab_size == 50257


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_tiktoken_file_and_inference(tmp_path, name):
    a = BPETokenizer.load(FIX / f"{name}.tiktoken")
    assert a.encoding == name
    shutil.copy(FIX / f"{name}.tiktoken", tmp_path / "ranks.bin")
    with pytest.raises(TokenizerError, match="cannot infer"):
        BPETokenizer.load(tmp_path / "ranks.bin")
    b = BPETokenizer.load(tmp_path / "ranks.bin", encoding=name)
    c = BPETokenizer(path=tmp_path / "ranks.bin", encoding=name)
    assert (
        a.encode(TEXT) == b.encode(TEXT) == c.encode(TEXT) == reference(name).encode_ordinary(TEXT)
    )


@pytest.mark.parametrize("name", ["gpt2", "cl100k_base", "o200k_base"])
def test_save_load_roundtrip(tmp_path, name):
    tok = ours(name)
    tok.save(tmp_path / "t")
    assert (tmp_path / "t" / "llmcore-tokenizer.json").exists()
    again = lt.load_tokenizer(tmp_path / "t")
    assert isinstance(again, BPETokenizer)
    assert again.encode(TEXT) == tok.encode(TEXT)
    assert again.special_tokens == tok.special_tokens
    assert again.vocab_size == tok.vocab_size


def test_load_tokenizer_generic_paths():
    assert lt.load_tokenizer(FIX / "cl100k_base.tiktoken").encode("hi") == ours(
        "cl100k_base"
    ).encode("hi")
    assert lt.load_tokenizer(FIX / "gpt2").encode("hi") == ours("gpt2").encode("hi")


def _write_ranks(path, entries):
    path.write_bytes(
        b"".join(base64.b64encode(t) + b" " + str(r).encode() + b"\n" for t, r in entries)
    )


def _bytes_entries():
    return [(bytes([i]), i) for i in range(256)]


def test_bad_rank_files(tmp_path):
    p = tmp_path / "custom.tiktoken"
    # truncated line
    p.write_bytes((FIX / "cl100k_base.tiktoken").read_bytes()[:5000])
    with pytest.raises(TokenizerError):
        BPETokenizer.load(p, encoding="cl100k_base")
    # corrupt base64
    p.write_bytes(b"!!!! 0\n")
    with pytest.raises(TokenizerError, match="corrupt"):
        BPETokenizer.load(p, pattern="gpt2")
    # truncated at a line boundary: the wrong number of ranks for the named encoding
    lines = (FIX / "cl100k_base.tiktoken").read_bytes().splitlines()[:1000]
    p.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(TokenizerError, match="1000 ranks"):
        BPETokenizer.load(p, encoding="cl100k_base")
    # duplicate token
    _write_ranks(p, _bytes_entries() + [(b"ab", 256), (b"ab", 257)])
    with pytest.raises(TokenizerError, match="duplicate token"):
        BPETokenizer.load(p, pattern="gpt2")
    # duplicate rank
    _write_ranks(p, _bytes_entries() + [(b"ab", 256), (b"cd", 256)])
    with pytest.raises(TokenizerError, match="duplicate rank"):
        BPETokenizer.load(p, pattern="gpt2")
    # a missing byte
    _write_ranks(p, _bytes_entries()[1:])
    with pytest.raises(TokenizerError, match="256 bytes"):
        BPETokenizer.load(p, pattern="gpt2")
    # absurd ranks
    _write_ranks(p, _bytes_entries() + [(b"ab", 10**9)])
    with pytest.raises(TokenizerError, match="sparse"):
        BPETokenizer.load(p, pattern="gpt2")
    # empty
    p.write_bytes(b"")
    with pytest.raises(TokenizerError, match="empty"):
        BPETokenizer.load(p, pattern="gpt2")
    # unknown encoding / pattern
    with pytest.raises(TokenizerError, match="unknown encoding"):
        BPETokenizer.load(FIX / "cl100k_base.tiktoken", encoding="cl999k")
    with pytest.raises(TokenizerError, match="unknown pre-tokenizer"):
        BPETokenizer.load(FIX / "cl100k_base.tiktoken", pattern="nope")
    with pytest.raises(TokenizerError, match="no such"):
        BPETokenizer.load(tmp_path / "missing.tiktoken")


def test_gap_in_ranks_is_documented(tmp_path):
    p = tmp_path / "gap.tiktoken"
    _write_ranks(p, _bytes_entries() + [(b"ab", 300)])
    tok = BPETokenizer.load(p, pattern="gpt2", special_tokens={"<|endoftext|>": 301})
    assert tok.encode("ab") == [300]
    assert tok.vocab_size == 302
    assert tok.decode([300, 301]) == "ab<|endoftext|>"
    with pytest.raises(TokenizerError, match="no token"):
        tok.decode([280])


def test_bad_json_files(tmp_path):
    p = tmp_path / "tokenizer.json"
    p.write_text("{not json")
    with pytest.raises(TokenizerError):
        BPETokenizer.load(p)
    p.write_text('{"model": {"type": "Unigram"}}')
    with pytest.raises(TokenizerError, match="not BPE"):
        BPETokenizer.load(p)
    d = tmp_path / "saved"
    d.mkdir()
    (d / "llmcore-tokenizer.json").write_text('{"type": "bpe", "pattern": "gpt2"}')
    with pytest.raises(TokenizerError):
        BPETokenizer.load(d)  # no rank file
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TokenizerError, match="no llmcore-tokenizer.json"):
        BPETokenizer.load(empty)
